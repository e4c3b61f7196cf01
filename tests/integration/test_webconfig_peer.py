"""exporter-toolkit's own web-config suite, run against the agent and against node_exporter.

Every file of exporter-toolkit's ``web/testdata`` (in ``../shared/testdata/exporter-toolkit-web/``,
with its provenance) is loaded by the agent's web-config code and served by the agent's HTTP
server, and the clients of ``web/tls_config_test.go`` (TestYAMLFiles, TestServerBehaviour,
TestConfigReloading, TestUsers) are run against it: TLS versions, cipher suites, curves, client
certificates, basic-auth users, headers, rate limit, and a file replaced while serving. Where
Debian's ``prometheus-node-exporter`` is installed, the same files and clients run against it with
``--web.config.file``. The test prints a table (file, case, expected, agent, node_exporter) and
fails on any disagreement that docs/security.md ("Differences from exporter-toolkit") does not
list with a reason; none of the listed ones is the agent being more permissive.
"""

from __future__ import annotations

import http.client
import re
import shutil
import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.webconfig import CIPHER_SUITES
from tests.helpers.common import IN_CI, ROOT, free_port, need, shared_testdata, wait_until
from tests.helpers.tls import web_server

pytestmark = pytest.mark.slow

ENDPOINT = "/metrics"
CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1", "X25519": "X25519"}
HEADERS_GOOD = {
    "X-Frame-Options": "deny",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "X-XSS-Protection": "1",
    "Content-Security-Policy": "default-src 'self' *.test.example.net",
}

# Outcomes: what a client sees. Go's expected errors (tls_config_test.go's ErrorMap) map to these.
OK = "ok"  # every request answered 200
REFUSED = "refused"  # the program does not start with this file
TLS_REFUSED = "tls-refused"  # handshake refused (version, cipher, curve, client certificate)
HTTP_400 = "http-400"  # plain HTTP to the TLS port: Go's "Client sent an HTTP request to an HTTPS server."
PLAIN_SERVER = "plain-http-server"  # a TLS client talking to a plain HTTP server
UNAUTHORIZED = "401"
TOO_MANY = "429"


@dataclass(frozen=True)
class Client:
    tls: bool = False
    max_version: ssl.TLSVersion | None = None
    ciphers: tuple[str, ...] = ()  # Go names
    cipher_chosen: str = ""  # Go name the server must pick
    curve: str = ""  # Go name
    cert: str = ""  # client certificate in the testdata (name without .pem/.key)
    user: str = ""
    password: str = ""
    requests: int = 0  # as in the Go test: requests + 1 requests
    headers: tuple[tuple[str, str], ...] = ()  # response headers that must be present


@dataclass(frozen=True)
class Case:
    source: str  # the Go test (or "Go semantics" for a file no Go test uses)
    name: str
    file: str  # testdata file; "" = no web config
    client: Client | None  # None: only load / start
    expected: str
    replace_with: str = ""  # TestConfigReloading: replace the file's content, then the client again
    expected_after: str = ""


def _cases() -> list[Case]:
    tls = Client(tls=True)
    out = [
        Case("TestYAMLFiles", "path to config yml invalid", "somefile", None, REFUSED),
        Case("TestYAMLFiles", "empty config yml", "web_config_empty.yml", Client(), OK),
    ]
    for f in (
        "web_config_junk.yml",
        "web_config_junk_key.yml",
        "web_config_noAuth_certPath_empty.bad.yml",
        "web_config_noAuth_cert_empty.bad.yml",
        "web_config_noAuth_keyPath_empty.bad.yml",
        "web_config_noAuth_key_empty.bad.yml",
        "web_config_noAuth_certPath_keyPath_empty.bad.yml",
        "web_config_noAuth_certPath_invalid.bad.yml",
        "web_config_noAuth_keyPath_invalid.bad.yml",
        "web_config_noAuth_certPath_keyPath_invalid.bad.yml",
        "web_config_noAuth.bad.yml",
        "web_config_auth_clientCAs_invalid.bad.yml",
        "web_config_auth_user_list_invalid.bad.yml",
        "web_config_noAuth_inventedCiphers.bad.yml",
        "web_config_noAuth_inventedCurves.bad.yml",
        "web_config_noAuth_wrongTLSVersion.bad.yml",
    ):
        out.append(Case("TestYAMLFiles", "invalid config", f, None, REFUSED))
    sb = "TestServerBehaviour"
    some = "web_config_noAuth_someCiphers.good.yml"
    out += [
        Case(sb, "no web config, default client", "", Client(), OK),
        Case(sb, "no web config, TLS client", "", tls, PLAIN_SERVER),
        Case(sb, "default client", "web_config_noAuth.good.yml", Client(), HTTP_400),
        Case(sb, "tls client", "web_config_noAuth.good.yml", tls, OK),
        Case(sb, "cert and key inline", "web_config_noAuth_tlsInline.good.yml", tls, OK),
        Case(
            sb, "TLS 1.1 client", "web_config_noAuth.good.yml", Client(tls=True, max_version=ssl.TLSVersion.TLSv1_1),
            TLS_REFUSED,
        ),
        Case(sb, "all ciphers", "web_config_noAuth_allCiphers.good.yml", tls, OK),
        Case(sb, "some ciphers", some, Client(tls=True, ciphers=("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",)), OK),
        Case(
            sb, "no common cipher", some, Client(tls=True, ciphers=("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",)),
            TLS_REFUSED,
        ),
        Case(
            sb, "multiple client ciphers", some,
            Client(
                tls=True,
                ciphers=("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
                cipher_chosen="TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            ),
            OK,
        ),
        Case(
            sb, "multiple client ciphers, client chooses", "web_config_noAuth_someCiphers_noOrder.good.yml",
            Client(
                tls=True,
                ciphers=("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
                cipher_chosen="TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            ),
            OK,
        ),
        Case(sb, "all curves", "web_config_noAuth_allCurves.good.yml", tls, OK),
        Case(sb, "some curves", "web_config_noAuth_someCurves.good.yml", Client(tls=True, curve="CurveP521"), OK),
        Case(
            sb, "no common curve", "web_config_noAuth_someCurves.good.yml", Client(tls=True, curve="CurveP384"),
            TLS_REFUSED,
        ),
        Case(sb, "non-HTTP/2 ciphers, http2 off", "web_config_noAuth_noHTTP2.good.yml", tls, OK),
        Case(sb, "non-HTTP/2 ciphers, http2 on", "web_config_noAuth_noHTTP2Cipher.bad.yml", tls, REFUSED),
        Case(sb, "valid headers", "web_config_headers.good.yml", Client(headers=tuple(HEADERS_GOOD.items())), OK),
        Case(sb, "invalid X-Content-Type-Options", "web_config_headers_content_type_options.bad.yml", None, REFUSED),
        Case(sb, "invalid X-Frame-Options", "web_config_headers_frame_options.bad.yml", None, REFUSED),
        Case(sb, "header that can not be set", "web_config_headers_extra_header.bad.yml", None, REFUSED),
        Case(
            sb, "RequireAnyClientCert, certificate given", "tls_config_noAuth.requireanyclientcert.good.yml",
            Client(tls=True, cert="client_selfsigned"), OK,
        ),
        Case(
            sb, "RequireAndVerifyClientCert, certificate given",
            "tls_config_noAuth.requireandverifyclientcert.good.yml", Client(tls=True, cert="client_selfsigned"), OK,
        ),
        Case(
            sb, "allowed SAN present", "web_config_auth_client_san.good.yaml",
            Client(tls=True, cert="client2_selfsigned"), OK,
        ),
        Case(
            sb, "no allowed SAN", "web_config_auth_client_san.bad.yaml",
            Client(tls=True, cert="client2_selfsigned"), TLS_REFUSED,
        ),
        Case(sb, "rate limit off (interval 0)", "web_config_rate_limiter_nonblocking.yaml", Client(requests=10), OK),
        Case(sb, "rate limit 1s, burst 0", "web_config_rate_limiter_one_second.yaml", Client(requests=10), TOO_MANY),
        Case(
            "TestConfigReloading", "file replaced while serving", "web_config_noAuth.good.blocking.yml", tls,
            TLS_REFUSED, replace_with="web_config_noAuth.good.yml", expected_after=OK,
        ),
    ]  # fmt: skip
    tu = "TestUsers"
    for f, c in (("web_config_users_noTLS.good.yml", Client()), ("web_config_users.good.yml", tls)):
        out.append(Case(tu, "no credentials", f, c, UNAUTHORIZED))
        out.append(Case(tu, "dave", f, Client(tls=c.tls, user="dave", password="dave123"), OK))
    f = "web_config_users.good.yml"
    out += [
        Case(tu, "carol", f, Client(tls=True, user="carol", password="carol123"), OK),
        Case(tu, "bad password", f, Client(tls=True, user="dave", password="bad"), UNAUTHORIZED),
        Case(tu, "bad user", f, Client(tls=True, user="nonexistent", password="nonexistent"), UNAUTHORIZED),
    ]
    # Files that no Go test uses: what Go's crypto/tls does with them.
    gs = "Go semantics"
    out += [
        Case(
            gs, "RequireAnyClientCert (key inline), certificate given",
            "tls_config_noAuth.requireanyclientcertkeyinline.good.yml", Client(tls=True, cert="client_selfsigned"), OK,
        ),
        Case(gs, "RequireAnyClientCert, no certificate", "tls_config_noAuth.requireanyclientcert.good.yml", tls,
             TLS_REFUSED),
        Case(gs, "system roots, no certificate", "web_config_auth_clientCAs_missing.bad.yml", tls, TLS_REFUSED),
        Case(
            gs, "system roots, self-signed certificate", "web_config_auth_clientCAs_missing.bad.yml",
            Client(tls=True, cert="client_selfsigned"), TLS_REFUSED,
        ),
        Case(gs, "VerifyClientCertIfGiven, system roots, none given", "web_config_noAuth.good.yml", tls, OK),
        Case(
            gs, "VerifyClientCertIfGiven, system roots, self-signed", "web_config_noAuth.good.yml",
            Client(tls=True, cert="client_selfsigned"), TLS_REFUSED,
        ),
    ]  # fmt: skip
    return out


# -- a client as the Go test's -----------------------------------------------------------------------


def _client_context(data: Path, c: Client) -> ssl.SSLContext:
    # The server is identified by its certificate (checked after the handshake, see _one_request):
    # OpenSSL refuses the toolkit's CA chain for its key usage where Go accepts it, and the
    # server's behaviour, not the chain, is under test.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if c.max_version is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # old versions on purpose
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = c.max_version
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that the old version is offered at all
    if c.ciphers:
        ctx.set_ciphers(":".join(CIPHER_SUITES[n] for n in c.ciphers))
    if c.curve:
        ctx.set_ecdh_curve(CURVES[c.curve])
    if c.cert:
        ctx.load_cert_chain(str(data / f"{c.cert}.pem"), str(data / f"{c.cert}.key"))
    return ctx


def _server_cert(data: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert((data / "server.crt").read_text())


def _one_request(port: int, data: Path, c: Client) -> tuple[str, str]:
    import base64

    headers = {"Host": "localhost"}
    if c.user:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{c.user}:{c.password}".encode()).decode()
    conn: http.client.HTTPConnection
    if c.tls:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=_client_context(data, c))
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", ENDPOINT, headers=headers)
        r = conn.getresponse()
        body = r.read()
        sock = conn.sock
        chosen = ""
        if isinstance(sock, ssl.SSLSocket):
            cipher = sock.cipher()
            chosen = cipher[0] if cipher else ""
            if sock.getpeercert(binary_form=True) != _server_cert(data):
                return "wrong-server-certificate", ""
    except ssl.SSLError as e:
        if "WRONG_VERSION_NUMBER" in str(e) or "record layer failure" in str(e):
            return PLAIN_SERVER, str(e)
        return TLS_REFUSED, str(e)
    except (ConnectionError, http.client.HTTPException, TimeoutError, OSError) as e:
        return (TLS_REFUSED if c.tls else "no-answer"), f"{type(e).__name__}: {e}"
    finally:
        conn.close()
    if r.status == 400 and b"Client sent an HTTP request to an HTTPS server." in body:
        return HTTP_400, body.decode(errors="replace").strip()
    if r.status == 200:
        if c.cipher_chosen and chosen != CIPHER_SUITES[c.cipher_chosen]:
            return "wrong-cipher", chosen
        missing = [f"{k}: {v}" for k, v in c.headers if r.getheader(k) != v]
        return (OK, "") if not missing else ("missing-headers", "; ".join(missing))
    if r.status == 401:
        return UNAUTHORIZED, ""
    if r.status == 429:
        return TOO_MANY, ""
    return f"http-{r.status}", body[:80].decode(errors="replace")


def _run_client(port: int, data: Path, c: Client) -> tuple[str, str]:
    for _ in range(c.requests + 1):
        outcome = _one_request(port, data, c)
        if outcome[0] != OK:
            return outcome
    return OK, ""


# -- the two servers ---------------------------------------------------------------------------------


@contextmanager
def _node_exporter(binary: str, config: Path | None, log: Path) -> Iterator[int | str]:
    port = free_port()
    args = [binary, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults"]
    if config is not None:
        args.append(f"--web.config.file={config}")
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:

        def settled() -> bool:
            if proc.poll() is not None:
                return True
            text = log.read_text(errors="replace")
            if "TLS is enabled" not in text and "TLS is disabled" not in text:
                return False
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True

        wait_until(settled, timeout=20, what="node_exporter started or refused")
        time.sleep(0.3)  # Go's HTTP/2 cipher check fails just after "TLS is enabled"
        yield REFUSED if proc.poll() is not None else port
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


# -- the documented differences ------------------------------------------------------------------------


def documented_differences() -> dict[tuple[str, str, str], str]:
    """(program, file, case) -> reason, from the table in docs/security.md."""
    text = (ROOT / "docs" / "security.md").read_text()
    section = text.split("### Differences from exporter-toolkit", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in section.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] in ("agent", "node_exporter"):
            out[(cells[0], cells[1], cells[2])] = cells[4]
    return out


@dataclass
class Row:
    case: Case
    agent: str
    node: str
    detail: list[str] = field(default_factory=list)


def _outcome(start: Callable[[Path | None], object], case: Case, data: Path, workdir: Path) -> tuple[str, str]:
    """Start a server on the case's file, run the case's client (and the replacement), return
    the outcome and a detail."""
    config = (workdir / case.file) if case.file else None
    with start(config) as port:  # type: ignore[attr-defined]
        if isinstance(port, str):
            return REFUSED, ""
        if case.client is None:
            return "started", ""
        got, detail = _run_client(port, data, case.client)
        if case.replace_with and config is not None:
            shutil.copyfile(data / case.replace_with, config)
            time.sleep(0.05)
            after, d2 = _run_client(port, data, case.client)
            return f"{got}→{after}", f"{detail} / {d2}".strip(" /")
        return got, detail


def _expected(case: Case) -> str:
    if case.client is None:
        return REFUSED if case.expected == REFUSED else "started"
    return f"{case.expected}→{case.expected_after}" if case.replace_with else case.expected


def test_exporter_toolkit_web_testdata(tmp_path: Path) -> None:
    data = shared_testdata("exporter-toolkit-web")
    # Under CI=true a missing node_exporter fails the run; on a developer machine without it the
    # agent's column still counts and node_exporter's reads "not installed".
    node_bin: str | None = need("prometheus-node-exporter") if IN_CI else shutil.which("prometheus-node-exporter")
    allowed = documented_differences()
    rows: list[Row] = []
    for i, case in enumerate(_cases()):
        # Each case on its own copy of the testdata (TestConfigReloading rewrites its file).
        work = tmp_path / f"case{i}"
        shutil.copytree(data, work)
        for p in work.rglob("*"):
            p.chmod(0o600 if p.suffix == ".key" else 0o644)
        agent, adetail = _outcome(web_server, case, data, work)
        if case.replace_with:  # a fresh copy for the second program
            shutil.copyfile(data / case.file, work / case.file)
        node, ndetail = ("not installed", "")
        if node_bin is not None:
            node, ndetail = _outcome(
                lambda cfg, i=i, b=node_bin: _node_exporter(b, cfg, tmp_path / f"node{i}.log"),  # type: ignore[misc]
                case,
                data,
                work,
            )
        rows.append(Row(case, agent, node, [d for d in (adetail, ndetail) if d]))

    width = max(len(r.case.file or "(none)") for r in rows)
    lines = [f"{'file':<{width}}  {'case':<52} {'expected':<18} {'agent':<18} node_exporter"]
    failures = []
    for r in rows:
        exp = _expected(r.case)
        marks = []
        for who, got in (("agent", r.agent), ("node_exporter", r.node)):
            if got != exp and got != "not installed":
                key = (who, r.case.file or "(none)", r.case.name)
                if key in allowed:
                    marks.append(f"{who}: listed")
                else:
                    marks.append(f"{who}: NOT LISTED")
                    failures.append(f"{who} {key[1]} [{r.case.name}]: expected {exp}, got {got} {r.detail}")
        lines.append(
            f"{r.case.file or '(none)':<{width}}  {r.case.name[:52]:<52} {exp:<18} {r.agent:<18} {r.node}"
            + (f"   ({', '.join(marks)})" if marks else "")
        )
    print("\n" + "\n".join(lines))
    # Every file in the testdata directory is covered.
    files = {p.name for p in data.iterdir() if re.search(r"\.ya?ml$", p.name)}
    assert files <= {r.case.file for r in rows}, files - {r.case.file for r in rows}
    assert not failures, "\n".join(failures)
    # A listed difference must never be the agent letting through more than exporter-toolkit does.
    for r in rows:
        if r.agent != _expected(r.case):
            assert _openness(r.agent) <= _openness(_expected(r.case)), (r.case.file, r.case.name, r.agent)


def _openness(outcome: str) -> int:
    """How much a client got: nothing (the program refused the file), an error answer, service."""
    last = outcome.split("→")[-1]
    return {REFUSED: 0, OK: 2, "started": 2}.get(last, 1)
