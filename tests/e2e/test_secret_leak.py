"""The secret-leak test. A unique string is planted in every secret the agent can hold — HTTP
basic-auth passwords, SNMP v1/v2c communities and v3 auth/priv passwords, the SSH key passphrase,
the restic repository password, the backup push token, the web config's basic-auth password —
right and wrong ones, so that every success and every error path runs (wrong community, wrong
priv password, wrong passphrase, wrong repository password, wrong token, wrong login, closed
ports, hung peers, bad command output). The agent runs with every collector at debug log level,
behind TLS and basic auth; then collect-once runs each target, check-config --dump prints the
config and a DR report is written in every format. Every byte the agent put out is searched:
its log, /metrics, /api/v1/status, the status page, /reports/, the reports, collect-once
output, check-config output and every file under the state directory (SQLite DB, WAL).
Zero occurrences."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from collectors.registry import collectors
from tests.helpers.common import AGENT_BIN, free_port, need, wait_until
from tests.helpers.httpserve import serve_http
from tests.helpers.tls import bcrypt_hash, make_pki


def _marker(name: str) -> str:
    return f"LEAK{name}{secrets.token_hex(5)}"


M = {
    n: _marker(n)
    for n in (
        "http", "httpwrong", "v2c", "v2cwrong", "v1", "v3auth", "v3priv", "v3privwrong", "sshpass",
        "sshpasswrong", "restic", "resticwrong", "push", "pushwrong", "web", "webwrong",
    )
}  # fmt: skip


CONTROL = _marker("control")  # not a secret: must be found where it is printed


def _variants(value: str) -> list[bytes]:
    """The secret as bytes, and base64 forms in which it could slip out (Basic auth headers)."""
    v = value.encode()
    out = [v]
    for prefix in (b"", b"user:", b"prometheus:", b"u:"):
        out.append(base64.b64encode(prefix + v).rstrip(b"="))
    return out


def _write_secret(d: Path, name: str, value: str) -> Path:
    p = d / name
    p.write_text(value + "\n")
    p.chmod(0o600)
    return p


class _BasicAuthHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    expected = ""

    def log_message(self, *a: object) -> None:
        pass

    def do_GET(self) -> None:
        want = "Basic " + base64.b64encode(f"user:{self.expected}".encode()).decode()
        code = 200 if self.headers.get("Authorization") == want else 401
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextlib.contextmanager
def _hung_tcp() -> Iterator[int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    try:
        yield int(s.getsockname()[1])
    finally:
        s.close()


def _restic_repo(d: Path, password_file: Path) -> Path:
    restic = need("restic")
    repo = d / "restic-repo"
    data = d / "data"
    data.mkdir()
    (data / "file.txt").write_text("payroll\n")
    env = {**os.environ, "RESTIC_CACHE_DIR": str(d / "restic-cache")}
    for args in (["init"], ["backup", "--host=fs1", str(data)]):
        subprocess.run(
            [restic, f"--repo={repo}", f"--password-file={password_file}", *args],
            check=True, capture_output=True, env=env, timeout=120,
        )  # fmt: skip
    return repo


def _https(port: int, path: str, ca: Path, auth: tuple[str, str] | None, method: str = "GET",
           headers: dict[str, str] | None = None, body: bytes | None = None) -> tuple[int, bytes]:  # fmt: skip
    ctx = ssl.create_default_context(cafile=str(ca))
    req = urllib.request.Request(f"https://127.0.0.1:{port}{path}", method=method, data=body)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.slow
def test_no_secret_anywhere_the_agent_writes(tmp_path: Path) -> None:
    from tests.helpers.snmp import snmpd
    from tests.helpers.sshd import keygen, start_sshd

    kinds = set(collectors())
    sec = tmp_path / "secrets"
    sec.mkdir()
    files = {n: _write_secret(sec, n, v) for n, v in M.items()}
    outputs: dict[str, bytes] = {}

    pki = make_pki(tmp_path / "pki")
    web = tmp_path / "web.yml"
    web.write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)},
                "basic_auth_users": {"prometheus": bcrypt_hash(M["web"])},
            }
        )
    )

    targets: list[dict[str, Any]] = []
    auths: dict[str, Any] = {}
    extra_snmpd = (
        f"rocommunity {M['v2c']} 127.0.0.1\n"
        f"rocommunity {M['v1']} 127.0.0.1\n"
        f"createUser leakuser SHA-256 {M['v3auth']} AES {M['v3priv']}\n"
        "rouser leakuser priv\n"
    )
    stack = contextlib.ExitStack()
    with stack:
        http_port = stack.enter_context(serve_http(type("H", (_BasicAuthHandler,), {"expected": M["http"]})))
        hung = stack.enter_context(_hung_tcp())
        closed = free_port()
        auths["web-ok"] = {"type": "http_basic", "username": "user", "password_file": str(files["http"])}
        auths["web-wrong"] = {"type": "http_basic", "username": "user", "password_file": str(files["httpwrong"])}
        targets += [
            {"name": "http-ok", "kind": "probe", "module": "http", "url": f"http://127.0.0.1:{http_port}/",
             "auth": "web-ok"},
            {"name": "http-wrong", "kind": "probe", "module": "http", "url": f"http://127.0.0.1:{http_port}/",
             "auth": "web-wrong"},
            {"name": "http-hung", "kind": "probe", "module": "http", "url": f"http://127.0.0.1:{hung}/",
             "auth": "web-ok", "timeout": "1s"},
            {"name": "http-closed", "kind": "probe", "module": "http", "url": f"http://127.0.0.1:{closed}/",
             "auth": "web-ok"},
            {"name": "host", "kind": "host", "processes": [CONTROL]},
        ]  # fmt: skip

        if "snmp" in kinds:
            need("snmpd")
            sd = stack.enter_context(snmpd(tmp_path, extra=extra_snmpd, name="leak-snmpd"))
            auths.update(
                {
                    "v2c-ok": {"type": "snmp_v2c", "community_file": str(files["v2c"])},
                    "v2c-wrong": {"type": "snmp_v2c", "community_file": str(files["v2cwrong"])},
                    "v1-ok": {"type": "snmp_v1", "community_file": str(files["v1"])},
                    "v3-ok": {"type": "snmp_v3", "username": "leakuser", "security_level": "authPriv",
                              "auth_protocol": "SHA256", "auth_password_file": str(files["v3auth"]),
                              "priv_protocol": "AES", "priv_password_file": str(files["v3priv"])},
                    "v3-wrong": {"type": "snmp_v3", "username": "leakuser", "security_level": "authPriv",
                                 "auth_protocol": "SHA256", "auth_password_file": str(files["v3auth"]),
                                 "priv_protocol": "AES", "priv_password_file": str(files["v3privwrong"])},
                }
            )  # fmt: skip
            for name, auth in (("v2c-ok", "v2c-ok"), ("v2c-wrong", "v2c-wrong"), ("v1-ok", "v1-ok"),
                               ("v3-ok", "v3-ok"), ("v3-wrong", "v3-wrong"), ("v2c-pysnmp", "v2c-ok")):
                t = {"name": f"snmp-{name}", "kind": "snmp", "host": "127.0.0.1", "port": sd.port, "auth": auth,
                     "interval": "5s", "timeout": "4s"}
                if name == "v2c-pysnmp":
                    t["v2c_engine"] = "pysnmp"
                targets.append(t)  # fmt: skip
            targets.append({"name": "snmp-closed", "kind": "snmp", "host": "127.0.0.1", "port": closed,
                            "auth": "v3-ok", "timeout": "2s"})  # fmt: skip

        if "backup" in kinds:
            need("sshd")
            sshd = start_sshd(tmp_path / "sshd")
            stack.callback(sshd.stop)
            key = keygen(tmp_path / "enc_key", passphrase=M["sshpass"])
            with open(sshd.dir / "authorized_keys", "a") as f:
                f.write(key.with_suffix(".pub").read_text())
            repo = _restic_repo(tmp_path, files["restic"])
            ssh_common = {"type": "ssh", "user": sshd.user, "key_file": str(key), "known_hosts": str(sshd.known_hosts),
                          "port": sshd.port, "connect_timeout": "3s", "auth_timeout": "3s"}  # fmt: skip
            auths["ssh-ok"] = {**ssh_common, "passphrase_file": str(files["sshpass"])}
            auths["ssh-wrong"] = {**ssh_common, "passphrase_file": str(files["sshpasswrong"])}
            auths["ssh-closed"] = {**ssh_common, "port": closed, "passphrase_file": str(files["sshpass"])}
            env = {"RESTIC_CACHE_DIR": str(tmp_path / "restic-cache")}
            restic_common = {"kind": "backup", "type": "restic", "rpo": "24h", "repository": str(repo), "env": env,
                             "timeout": "20s"}  # fmt: skip
            targets += [
                {**restic_common, "name": "restic-local-ok", "password_file": str(files["restic"])},
                {**restic_common, "name": "restic-local-wrong", "password_file": str(files["resticwrong"])},
                {**restic_common, "name": "restic-ssh-ok", "password_file": str(files["restic"]),
                 "host": "127.0.0.1", "port": sshd.port, "auth": "ssh-ok"},
                {**restic_common, "name": "restic-ssh-wrong-passphrase", "password_file": str(files["restic"]),
                 "host": "127.0.0.1", "port": sshd.port, "auth": "ssh-wrong"},
                {**restic_common, "name": "restic-ssh-closed", "password_file": str(files["restic"]),
                 "host": "127.0.0.1", "port": closed, "auth": "ssh-closed"},
                {"kind": "backup", "type": "push", "name": "push", "rpo": "24h", "token_file": str(files["push"])},
                {"kind": "backup", "type": "command", "name": "cmd-bad", "rpo": "24h",
                 "command": ["/bin/sh", "-c", "echo 'not json {'"]},
            ]  # fmt: skip

        if "link" in kinds:
            targets.append({"name": "link-closed", "kind": "link", "host": "127.0.0.1", "method": "tcp",
                            "port": closed, "count": 3, "packet_interval": "50ms", "standards": False})  # fmt: skip

        state = tmp_path / "state"
        reports_dir = tmp_path / "reports"
        reports_dir.mkdir()
        cfg: dict[str, Any] = {
            "agent": {"site": "hq", "state_dir": str(state), "secret_file_mode": "refuse"},
            "defaults": {"interval": "3s", "timeout": "2500ms", "start_jitter": 0.2},
            "auths": auths,
            "targets": targets,
            "reports": {"output_dir": str(reports_dir), "schedule": None},
        }
        cfg_path = tmp_path / "agent.yml"
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))

        chk = subprocess.run([str(AGENT_BIN), "check-config", "--dump", str(cfg_path)], capture_output=True,
                             timeout=60)  # fmt: skip
        assert chk.returncode == 0, chk.stderr.decode()
        assert b"<secret>" in chk.stdout
        outputs["check-config --dump"] = chk.stdout + chk.stderr

        port = free_port()
        log_path = tmp_path / "agent.log"
        with open(log_path, "wb") as log:
            agent = subprocess.Popen(
                [str(AGENT_BIN), "--log-level", "debug", "run", "--config", str(cfg_path),
                 "--web.listen-address", f"127.0.0.1:{port}", "--web.config.file", str(web)],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            good = ("prometheus", M["web"])

            def ready() -> bool:
                assert agent.poll() is None, log_path.read_text()
                try:
                    return _https(port, "/-/ready", pki.ca, good)[0] == 200
                except OSError:
                    return False

            wait_until(ready, timeout=30, what="agent ready")

            def all_ran() -> bool:
                st = json.loads(_https(port, "/api/v1/status", pki.ca, good)[1])
                return all(t["last_run"] is not None for t in st["targets"])

            wait_until(all_ran, timeout=60, what="every target ran")
            if "backup" in kinds:
                for token in (M["push"], M["pushwrong"]):
                    _https(port, "/api/v1/backup/push/success", pki.ca, None, "POST",
                           {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                           b'{"size_bytes": 1}')  # fmt: skip
            assert _https(port, "/metrics", pki.ca, ("prometheus", M["webwrong"]))[0] == 401
            time.sleep(4)  # a second round of every target, errors included
            for path in ("/metrics", "/api/v1/status", "/", "/reports/", "/-/healthy"):
                status, body = _https(port, path, pki.ca, good)
                assert status == 200, (path, status)
                outputs[f"GET {path}"] = body
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(30)
        assert agent.returncode == 0, log_path.read_text()[-3000:]

        for fmt in ("html", "md", "json"):
            out = reports_dir / f"leak-report.{fmt}"
            r = subprocess.run([str(AGENT_BIN), "report", "dr", "--config", str(cfg_path), "--format", fmt,
                                "--output", str(out)], capture_output=True, timeout=120)  # fmt: skip
            assert r.returncode in (0, 1), r.stderr.decode()
            outputs[f"report dr --format {fmt} (stdout/stderr)"] = r.stdout + r.stderr
        for t in targets:
            for fmt in ("text", "json"):
                r = subprocess.run(
                    [str(AGENT_BIN), "--log-level", "debug", "collect-once", "--config", str(cfg_path),
                     "--format", fmt, t["name"]],
                    capture_output=True, timeout=120,
                )  # fmt: skip
                assert r.returncode in (0, 1), (t["name"], r.stderr.decode()[-2000:])
                outputs[f"collect-once {t['name']} --format {fmt}"] = r.stdout + r.stderr

    outputs["agent log"] = log_path.read_bytes()
    for d in (state, reports_dir):
        for p in d.rglob("*"):
            if p.is_file():
                outputs[str(p)] = p.read_bytes()

    # The test must have exercised what it claims to: both outcomes happened where expected.
    status = {t["name"]: t for t in json.loads(outputs["GET /api/v1/status"])["targets"]}
    must_fail = ["http-wrong", "http-hung", "http-closed"]
    must_work = ["http-ok", "host"]
    if "snmp" in kinds:
        must_fail += ["snmp-v2c-wrong", "snmp-v3-wrong", "snmp-closed"]
        must_work += ["snmp-v2c-ok", "snmp-v1-ok", "snmp-v3-ok", "snmp-v2c-pysnmp"]
    if "backup" in kinds:
        must_fail += ["restic-local-wrong", "restic-ssh-wrong-passphrase", "restic-ssh-closed", "cmd-bad"]
        must_work += ["restic-local-ok", "restic-ssh-ok"]
    for name in must_fail:
        assert status[name]["last_error"], (name, status[name])
    for name in must_work:
        assert status[name]["last_success"] is not None, (name, status[name])  # the right secret worked
    assert "http-ok" in outputs["GET /metrics"].decode()
    assert any(p.endswith("state.db") for p in outputs)
    assert sum(1 for p in outputs if "leak-report" in p) == 3

    # Positive control: a non-secret value planted the same way is found, so the search works.
    assert CONTROL.encode() in outputs["check-config --dump"]

    found = []
    for where, data in outputs.items():
        for name, value in M.items():
            for v in _variants(value):
                if v in data:
                    i = data.index(v)
                    found.append(f"{name} in {where}: ...{data[max(0, i - 80): i + 40]!r}...")
    assert not found, "secrets leaked:\n" + "\n".join(found)
