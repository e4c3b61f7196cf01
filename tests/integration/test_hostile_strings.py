"""Hostile strings are inert everywhere (issue #19, M4).

A real SNMP agent (snmpsim, serving a recording made for this test) reports an interface whose
ifName carries a label-breaking quote (``"} injected{x="``) and whose ifAlias carries ESC/BEL
sequences (a terminal title rewrite, a colour change) and a newline followed by a fake sample.
A ``type: command`` backup's tool fails with the same bytes in its message, and a runbook and an
evidence record carry them with live Markdown (an image, a ``javascript:`` link, a newline that
starts a heading). Checked: collect-once (text and JSON), /metrics, the status page, the JSON
API, the agent's debug log (including a request line with an ESC), and ``report dr`` in Markdown
and HTML. No raw control character reaches any of them; label values parse back to the escaped
text; the Markdown renders no image, link or heading from data.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import yaml
from markdown_it import MarkdownIt
from prometheus_client.parser import text_string_to_metric_families

from agent.escape import terminal
from tests.helpers.common import AGENT_BIN, agent_process, http_get, wait_until
from tests.helpers.dr_estate import build_estate
from tests.helpers.snmp import snmpsim

ESC_ALIAS = "\x1b]0;pwned-title\x07\x1b[31mWAN link\nfake_metric_total 1"
QUOTE_NAME = 'Gi0/1"} injected{x="'
RAW = ("\x1b", "\x07")
MD_EVIL = "Mail \x1b[2J![img](http://127.0.0.1:9/x.png) [click](javascript:alert(1))\n# Injected heading"


def _hex(s: str) -> str:
    return s.encode().hex()


def recording() -> str:
    """IF-MIB for one interface, in snmprec form (``4x`` = OCTET STRING given in hex)."""
    rows = [
        ("1.3.6.1.2.1.1.1.0", "4", "hostile test device"),
        ("1.3.6.1.2.1.1.3.0", "67", "8640000"),
        ("1.3.6.1.2.1.1.5.0", "4x", _hex("dev\x1b[5mice")),
        ("1.3.6.1.2.1.2.1.0", "2", "1"),
        ("1.3.6.1.2.1.2.2.1.2.1", "4", "GigabitEthernet0/1"),
        ("1.3.6.1.2.1.2.2.1.5.1", "66", "100000000"),
        ("1.3.6.1.2.1.2.2.1.7.1", "2", "1"),
        ("1.3.6.1.2.1.2.2.1.8.1", "2", "1"),
        ("1.3.6.1.2.1.31.1.1.1.1.1", "4x", _hex(QUOTE_NAME)),
        ("1.3.6.1.2.1.31.1.1.1.18.1", "4x", _hex(ESC_ALIAS)),
    ]
    return "".join(f"{oid}|{typ}|{val}\n" for oid, typ, val in rows)


def _no_raw(what: str, data: bytes | str) -> None:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    for c in RAW:
        assert c not in text, f"{what}: raw {c!r} in the output"


def test_hostile_strings_are_inert(tmp_path: Path) -> None:
    est = build_estate(tmp_path / "estate", action_text=MD_EVIL)
    rb = yaml.safe_load((est.runbooks / "mapping.yml").read_text())
    rb["name"] = MD_EVIL
    rb["owner"] = "GIS <b>team</b> | *lead*"
    rb["recovery_steps"][0]["title"] = MD_EVIL
    (est.runbooks / "mapping.yml").write_text(yaml.safe_dump(rb, sort_keys=False))
    tool = tmp_path / "backup-status"
    tool.write_text(
        f"#!{sys.executable}\nimport json, sys\nsys.stderr.write({ESC_ALIAS!r})\n"
        f"print(json.dumps({{'ok': False, 'last_attempt': 1, 'message': {ESC_ALIAS!r}}}))\n"
    )
    tool.chmod(0o755)
    failing = tmp_path / "backup-broken"
    failing.write_text(f"#!{sys.executable}\nimport sys\nsys.stderr.write({ESC_ALIAS!r})\nsys.exit(3)\n")
    failing.chmod(0o755)
    with snmpsim(tmp_path, {"hostile": recording()}) as port:
        cfg = tmp_path / "agent.yml"
        cfg.write_text(yaml.safe_dump({
            "agent": {"site": "hq", "state_dir": str(tmp_path / "state")},
            "defaults": {"interval": "1h", "start_jitter": 0},
            "auths": {"v2": {"type": "snmp_v2c", "community": "${HOSTILE_COMMUNITY}"}},
            "targets": [
                {"name": "sw", "kind": "snmp", "host": "127.0.0.1", "port": port, "auth": "v2"},
                {"name": "bk", "kind": "backup", "type": "command", "command": [str(tool)], "rpo": "1d"},
                {"name": "bk2", "kind": "backup", "type": "command", "command": [str(failing)], "rpo": "1d"},
            ],
            "reports": {"runbooks_dir": str(est.runbooks), "evidence_dir": str(est.evidence), "schedule": None},
        }))  # fmt: skip
        env = {"HOSTILE_COMMUNITY": "hostile"}
        full_env = {**os.environ, **env}

        # collect-once, text: no raw control; label values parse back to the escaped text.
        out = subprocess.run(
            [str(AGENT_BIN), "collect-once", "--config", str(cfg), "sw"],
            capture_output=True, env=full_env, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        _no_raw("collect-once", out.stdout)
        text = out.stdout.decode()
        assert not any(line.startswith("fake_metric") for line in text.splitlines())
        samples = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
        fams = list(text_string_to_metric_families("\n".join(samples) + "\n"))
        up = [s for f in fams for s in f.samples if s.name == "continuity_interface_up"]
        assert len(up) == 1 and up[0].labels == {"interface": terminal(QUOTE_NAME), "alias": terminal(ESC_ALIAS)}
        assert all(f.name.startswith("continuity_") for f in fams), [f.name for f in fams]
        assert "x" not in up[0].labels  # the quote did not open a label
        # collect-once of the command backups: the JSON message and the stderr are escaped too.
        for name in ("bk", "bk2"):
            out = subprocess.run(
                [str(AGENT_BIN), "collect-once", "--config", str(cfg), name],
                capture_output=True, env=full_env, timeout=60,
            )  # fmt: skip
            _no_raw(f"collect-once {name}", out.stdout + out.stderr)
            assert b"pwned-title" in out.stdout, out.stdout
        # JSON format: data stays data (JSON escapes controls).
        out = subprocess.run(
            [str(AGENT_BIN), "collect-once", "--format", "json", "--config", str(cfg), "sw"],
            capture_output=True, env=full_env, timeout=60,
        )  # fmt: skip
        _no_raw("collect-once --format json", out.stdout)
        doc = json.loads(out.stdout)
        assert any(s["labels"].get("alias") == ESC_ALIAS for s in doc["samples"])

        with agent_process(cfg, env=env) as agent:
            def collected() -> bool:
                m = agent.metrics()
                return "continuity_interface_up{" in m and 'target="bk"' in m and 'target="bk2"' in m

            wait_until(collected, timeout=30, what="both targets collected")
            metrics = http_get(agent.url + "/metrics")[1]
            _no_raw("/metrics", metrics)
            fams = list(text_string_to_metric_families(metrics.decode()))
            up = [s for f in fams for s in f.samples if s.name == "continuity_interface_up"]
            assert up[0].labels["interface"] == terminal(QUOTE_NAME)
            assert up[0].labels["alias"] == terminal(ESC_ALIAS)
            assert not any(f.name.startswith("fake_metric") for f in fams)

            page = http_get(agent.url + "/")[1]
            _no_raw("status page", page)
            assert b"\\x1b]0;pwned-title\\x07" in page  # shown, as visible escapes

            api = http_get(agent.url + "/api/v1/status")[1]
            _no_raw("/api/v1/status", api)
            bk = next(t for t in json.loads(api)["targets"] if t["name"] == "bk2")
            assert "pwned-title" in (bk["last_error"] or "")

            # A request line with ESC and BEL in the path, logged at debug level.
            with socket.create_connection(("127.0.0.1", agent.port), timeout=5) as sock:
                sock.sendall(b"GET /\x1b]0;log-title\x07 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                while sock.recv(65536):
                    pass
            wait_until(lambda: "log-title" in agent.log(), timeout=10, what="request logged")
            log = agent.log()
            _no_raw("agent log", log)
            assert not any(line.startswith("fake_metric") for line in log.splitlines())

    reports = {}
    for fmt in ("md", "html"):
        out = subprocess.run(
            [str(AGENT_BIN), "report", "dr", "--config", str(cfg), "--format", fmt, "--output", "-"],
            capture_output=True, env=full_env, timeout=120,
        )  # fmt: skip
        assert out.returncode in (0, 1), out.stderr
        _no_raw(f"report dr --format {fmt}", out.stdout)
        reports[fmt] = out.stdout.decode()
    md = reports["md"]
    assert r"Mail \\x1b\[2J!\[img\]" in md  # shown as visible escapes (a backslash escaped for Markdown)
    rendered = MarkdownIt("commonmark").enable("table").render(md)
    assert "<img" not in rendered and "<a " not in rendered
    assert not re.search(r"<h\d>[^<]*Injected heading", rendered), "a newline in data started a heading"
    assert "Injected heading" in rendered  # the text is there, as text
    assert "<b>" not in rendered and "&lt;b&gt;team" in rendered
    html = reports["html"]
    assert "<b>team" not in html and "&lt;b&gt;team" in html
    assert "\\x1b[2J" in html
