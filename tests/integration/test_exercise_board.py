"""The /exercise/ board of a real agent: who may write (401/403 rules), escaping, the board and the
CLI writing one journal at once, and the scripted exercise recorded by clicking in headless
Chromium, which must give the same records as the CLI."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import yaml

from agent.exercises.journal import Journal
from tests.helpers import exercise_script as xs
from tests.helpers.chromium import DevTools
from tests.helpers.common import ROOT, AgentProcess, free_port, wait_until
from tests.helpers.tls import bcrypt_hash
from tests.unit.test_exercise_status import cli_event, ok, run, start

pytestmark = pytest.mark.integration

USER, PASSWORD = "dr-lead", "board-password-1"
AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def _request(url: str, data: dict[str, str] | None = None, auth: str | None = AUTH) -> tuple[int, str, dict[str, str]]:
    body = urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, method="POST" if data is not None else "GET")
    if auth:
        req.add_header("Authorization", auth)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a: Any, **k: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=20) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


@contextlib.contextmanager
def board(
    tmp_path: Path, ev: Path, runbooks: Path = xs.RUNBOOKS, users: bool = True, host: str = "127.0.0.1"
) -> Iterator[AgentProcess]:
    """A real agent serving the board of ``ev`` on ``host`` (a test namespace's veth address, say)."""
    cfg = tmp_path / "agent.yml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "agent": {"site": "hq", "state_dir": str(tmp_path / "state")},
                "exercises": {"runbooks_dir": str(runbooks), "evidence_dir": str(ev)},
            }
        )
    )
    args: list[str] = []
    if users:
        web = tmp_path / "web.yml"
        web.write_text(yaml.safe_dump({"basic_auth_users": {USER: bcrypt_hash(PASSWORD, rounds=4)}}))
        args = ["--web.config.file", str(web)]
    port = free_port()
    agent = AgentProcess(cfg, port=port, extra_args=[*args, "--web.listen-address", f"{host}:{port}"])
    agent.url = f"http://{host}:{port}"
    try:
        if users:  # /-/ready asks for the password too

            def ready() -> bool:
                assert agent.proc.poll() is None, agent.log()[-3000:]
                try:
                    return _request(agent.url + "/-/ready")[0] == 200
                except OSError:
                    return False

            wait_until(ready, 30, what="the agent with basic auth")
        else:
            agent.wait_ready()
        yield agent
    finally:
        agent.stop()


def _csrf(page: str) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert m, page[:2000]
    return m.group(1)


def _small_exercise(tmp_path: Path) -> Path:
    ev = tmp_path / "ev"
    ev.mkdir()
    ok(ev, "start", "ex1", "--type", "partial_recovery", "--systems", "email", "--declared-at", xs.at(0))
    return ev


def test_write_rules_401_403_and_nothing_written(tmp_path: Path) -> None:
    ev = _small_exercise(tmp_path)
    journal = ev / "exercises" / "ex1.journal.jsonl"
    before = journal.read_bytes()
    form = {"kind": "step", "runbook": "email", "step": "activate-dag", "state": "start", "at": xs.at(1)}
    with board(tmp_path, ev) as agent:
        url = f"{agent.url}/exercise/ex1"
        assert _request(url, form, auth=None)[0] == 401
        assert _request(url, form, auth="Basic " + base64.b64encode(b"dr-lead:wrong").decode())[0] == 401
        assert _request(url, form)[0] == 403  # no CSRF token
        assert _request(url, {**form, "csrf": "0" * 64})[0] == 403
        assert journal.read_bytes() == before
        status, page, _ = _request(url)
        assert status == 200 and "Recording as <strong>dr-lead</strong>" in page
        assert '<meta http-equiv="refresh" content="30">' in page and "<script" not in page
        status, _, headers = _request(url, {**form, "csrf": _csrf(page)})
        assert status == 303 and headers["Location"].startswith("/exercise/ex1?at=")
        e = Journal.open(ev, "ex1").read()[-1]
        assert (e["actor"], e["operator"], e["step"], e["at"]) == (USER, USER, "activate-dag", xs.at(1))
        # Bad input from the page: 400 naming the problem, nothing written.
        before = journal.read_bytes()
        status, page2, _ = _request(url, {**form, "csrf": _csrf(page)})
        assert status == 400 and "already in progress" in page2
        assert journal.read_bytes() == before
    with board(tmp_path, ev, users=False) as agent:
        url = f"{agent.url}/exercise/ex1"
        status, page, _ = _request(url, auth=None)
        assert status == 200 and "Recording from this page is off" in page and "<form" not in page
        assert _request(url, {**form, "state": "done"}, auth=None)[0] == 403
        assert journal.read_bytes() == before
        status, listing, _ = _request(f"{agent.url}/exercise/", auth=None)
        assert status == 200 and 'href="/exercise/ex1"' in listing


def test_hostile_names_are_escaped(tmp_path: Path) -> None:
    rb = tmp_path / "runbooks"
    rb.mkdir()
    shutil.copy(xs.RUNBOOKS / "estate.yml", rb / "estate.yml")
    doc = yaml.safe_load((xs.RUNBOOKS / "recovery-centre.yml").read_text())
    doc["depends_on"] = []
    doc["recovery_steps"][0]["title"] = "<script>alert('step')</script>"
    (rb / "recovery-centre.yml").write_text(yaml.safe_dump(doc))
    ev = tmp_path / "ev"
    ev.mkdir()
    assert run(ev, "exercise", "start", "x1", "--type", "tabletop", runbooks=rb)[0] == 0
    assert (
        run(ev, "exercise", "participant", "x1", "--name", "<script>alert(1)</script>", "--role", '"><b>', runbooks=rb)[
            0
        ]
        == 0
    )
    with board(tmp_path, ev, runbooks=rb) as agent:
        status, page, _ = _request(f"{agent.url}/exercise/x1")
    assert status == 200
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;step&#x27;)&lt;/script&gt;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; (&quot;&gt;&lt;b&gt;)" in page


WRITER = r"""
import sys
from agent import cli
rb, ev, who, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
for i in range(n):
    assert cli.main(["exercise", "participant", "--runbooks", rb, "--evidence", ev, "--actor", who, "ex1",
                     "--name", f"{who}-{i}", "--role", "Tester"]) == 0
"""


@pytest.mark.slow
def test_two_cli_writers_and_the_board_write_300_entries_at_once(tmp_path: Path) -> None:
    ev = _small_exercise(tmp_path)
    n = 100
    with board(tmp_path, ev) as agent:
        url = f"{agent.url}/exercise/ex1"
        token = _csrf(_request(url)[1])
        procs = [
            subprocess.Popen([sys.executable, "-c", WRITER, str(xs.RUNBOOKS), str(ev), who, str(n)], cwd=ROOT)
            for who in ("cli-a", "cli-b")
        ]
        errors: list[str] = []

        def web() -> None:
            for i in range(n):
                status, body, _ = _request(
                    url, {"kind": "participant", "name": f"web-{i}", "role": "Tester", "csrf": token}
                )
                if status != 303:
                    errors.append(f"{status} {body[:200]}")

        t = threading.Thread(target=web)
        t.start()
        for p in procs:
            assert p.wait(timeout=300) == 0
        t.join(300)
    assert not errors
    entries = Journal.open(ev, "ex1").read()  # the chain verifies: nothing interleaved
    names = [e["name"] for e in entries if e["action"] == "participant"]
    for who in ("cli-a", "cli-b", "web"):
        assert [x for x in names if x.startswith(who + "-")] == [f"{who}-{i}" for i in range(n)]
    assert len(names) == 3 * n
    assert {e["actor"] for e in entries if e["action"] == "participant" and e["name"].startswith("web-")} == {USER}


# -- the scripted exercise by clicking --------------------------------------------------------------


@contextlib.contextmanager
def clicker(base: str) -> Iterator[tuple[DevTools, Clicker]]:
    """Headless Chromium signed in as USER (basic auth on every request) and a Clicker on ``base``."""
    dev = DevTools()
    try:
        dev.open("about:blank")
        dev.send("Network.setExtraHTTPHeaders", {"headers": {"Authorization": AUTH}})
        yield dev, Clicker(dev, base)
    finally:
        dev.close()


class Clicker:
    def __init__(self, dev: DevTools, base: str) -> None:
        self.dev, self.base = dev, base

    def load(self, at: str) -> None:
        self.navigate(f"{self.base}?{urlencode({'at': at})}")

    def navigate(self, url: str) -> None:
        self.dev.events.clear()
        self.dev.send("Page.navigate", {"url": url})
        self.dev.wait_event("Page.loadEventFired")

    def click_link(self, text: str) -> None:
        self.dev.events.clear()
        assert self.dev.evaluate(
            f"(() => {{ const a = [...document.querySelectorAll('a')].find(a => a.innerText === {json.dumps(text)});"
            " if (!a) return false; a.click(); return true; })()"
        ), text
        self.dev.wait_event("Page.loadEventFired")

    def fill(self, element_id: str, value: str) -> None:
        assert self.dev.evaluate(
            f"(() => {{ const el = document.getElementById({json.dumps(element_id)});"
            f" if (!el) return false; el.value = {json.dumps(value)}; return true; }})()"
        ), element_id

    def click(self, element_id: str, expect_title: str | None = None) -> None:
        self.dev.events.clear()
        clicked = self.dev.evaluate(
            f"(() => {{ const el = document.getElementById({json.dumps(element_id)});"
            " if (!el) return false; const b = el.tagName === 'FORM' ? el.querySelector('button') : el;"
            " b.click(); return true; })()"
        )
        assert clicked, element_id
        self.dev.wait_event("Page.loadEventFired")
        title = self.dev.evaluate("document.title")
        ok = title == expect_title if expect_title is not None else title.startswith("DR exercise")
        assert ok, (element_id, title, self.dev.evaluate("document.body.innerText"))


def _records(ev: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for rid in xs.SYSTEMS:
        doc = yaml.safe_load((ev / f"{xs.NAME}-{rid}.yml").read_text())
        doc.pop("prev_record_sha256")  # the chain links in the journal's hash, which differs
        doc["artefacts"] = [a["path"] for a in doc["artefacts"]]
        out[rid] = doc
    return out


@pytest.mark.slow
def test_scripted_exercise_by_clicking_gives_the_cli_records(tmp_path: Path) -> None:
    # The CLI version.
    cli_ev = xs.evidence_copy(tmp_path / "cli")
    start(cli_ev)
    xs.play(cli_event(cli_ev))
    assert run(cli_ev, "exercise", "finish", xs.NAME, "--at", xs.at(43))[0] in (0, 1)

    # The board version: the start from the CLI (the board records what happens during the
    # exercise), everything else by clicking.
    ev = xs.evidence_copy(tmp_path / "web")
    ok(ev, "start", xs.NAME, "--type", "full_recovery", "--systems", ",".join(xs.SYSTEMS), "--declared-at", xs.at(0))
    with board(tmp_path, ev) as agent:
        with clicker(f"{agent.url}/exercise/{quote(xs.NAME)}") as (dev, c):
            c.load(xs.at(0))
            for who, role in xs.PARTICIPANTS:
                c.fill("f-participant-name", who)
                c.fill("f-participant-role", role)
                c.click("f-participant")
            # The action by its form (one entry, as `exercise action` writes it), seen on the board.
            rid, desc, owner, due = xs.ACTION
            c.click_link("Record an action")
            for field, value in (("runbook", rid), ("description", desc), ("owner", owner), ("due", due)):
                c.fill(f"f-action-{field}", value)
            c.click("f-action")
            assert desc in dev.evaluate("document.getElementById('open-actions').innerText")
            for h, kind, args in xs.events():
                c.load(xs.at(h))
                if kind == "step":
                    rid, sid, state, who = args
                    if state == "start":
                        c.fill(f"f-{rid}-{sid}-operator", who)
                    c.click(f"f-{rid}-{sid}-{state}")
                elif kind == "restored":
                    c.click(f"f-{args[0]}-restored")
                elif kind == "validate":
                    rid, vid, result, by = args
                    c.fill(f"f-{rid}-{vid}-by", by)
                    c.click(f"f-{rid}-{vid}-{result}")
                else:
                    rid, by, role = args
                    c.fill(f"f-{rid}-sign-off-by", by)
                    c.fill(f"f-{rid}-sign-off-role", role)
                    c.click(f"f-{rid}-sign-off")
            assert dev.console_errors() == []
    assert run(ev, "exercise", "finish", xs.NAME, "--at", xs.at(43))[0] in (0, 1)
    web_entries = Journal.open(ev, xs.NAME).read()
    written = ("step", "restored", "validate", "sign_off", "action", "participant")
    assert {e["actor"] for e in web_entries if e["action"] in written} == {USER}
    assert _records(ev) == _records(cli_ev)
    assert _records(ev)["sql-cluster"]["issues"][0]["description"] == xs.ACTION[1]
    # The sealed records pass `evidence verify`, the board's action among them.
    rc, out, _ = run(ev, "evidence", "verify", "--at", xs.VERIFY_AT, "--format", "json")
    ours = {f"{xs.NAME}-{r}.yml" for r in xs.SYSTEMS}
    assert rc == 0 and [f for f in json.loads(out)["findings"] if f["record"] in ours] == []
