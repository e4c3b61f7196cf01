"""Actions and corrections from the /exercise/ board of a real agent: the board writes exactly the
journal entry the CLI writes (``exercise action``, ``exercise void``, ``exercise amend``), refuses what the CLI refuses
with the CLI's message, gives a refused form back as it was typed with the journal untouched, and
keeps the board's write rules. One headless Chromium run fills in the forms as a person would."""

from __future__ import annotations

import html
import json
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent import escape
from agent.exercises.journal import Journal
from tests.helpers import exercise_script as xs
from tests.integration.test_exercise_board import USER, _csrf, _request, _small_exercise, board, clicker
from tests.unit.test_exercise_status import ok, run

pytestmark = pytest.mark.integration

HOSTILE = "DAG copy lags <script>alert(1)</script> \x1b[31mred\x1b[0m & \"quoted\" 'too'"
OWNER = "T. Lindqvist <ops>"
DUE = "2026-12-31"
VOLATILE = ("recorded_at", "at", "prev_sha256", "sha256")


def _twin(ev: Path, name: str = "ex2") -> None:
    """A second exercise declared exactly as ``ex1``: the CLI writes there what the board writes
    to ``ex1``, so the two journals can be compared entry for entry."""
    ok(ev, "start", name, "--type", "partial_recovery", "--systems", "email", "--declared-at", xs.at(0))


def _fields(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k not in VOLATILE}


def _status(ev: Path, name: str, at: str | None = None) -> tuple[dict[str, Any], str]:
    """``exercise status`` now (or as at ``at``), as JSON and as text."""
    when = ["--at", at] if at else []
    rc, out, err = run(ev, "exercise", "status", name, "--format", "json", *when)
    assert rc in (0, 1), err
    rc, text, err = run(ev, "exercise", "status", name, *when)
    assert rc in (0, 1), err
    return json.loads(out), text


def _cli_error(ev: Path, *args: str) -> str:
    """The CLI's one-line message for the same bad input (exit 2)."""
    rc, out, err = run(ev, "exercise", *args, "--actor", USER)
    assert rc == 2 and out == "", (args, out, err)
    assert err.startswith("continuity-agent: ") and err.count("\n") == 1, err
    return err.removeprefix("continuity-agent: ").rstrip("\n")


def test_an_action_from_the_board_is_the_cli_entry_shown_escaped(tmp_path: Path) -> None:
    ev = _small_exercise(tmp_path)
    _twin(ev)
    ok(ev, "action", "ex2", "email", "--description", HOSTILE, "--owner", OWNER, "--due", DUE, "--actor", USER)
    with board(tmp_path, ev) as agent:
        url = f"{agent.url}/exercise/ex1"
        status, page, _ = _request(url + "/action")
        assert status == 200 and 'id="f-action"' in page and 'http-equiv="refresh"' not in page
        assert '<option value="email">email — ' in page
        form = {"kind": "action", "runbook": "email", "description": HOSTILE, "owner": OWNER, "due": DUE}
        # A time on the form does not backdate an action: `exercise action` takes none.
        status, _, headers = _request(url, {**form, "at": xs.at(1), "form": "f-action", "csrf": _csrf(page)})
        assert status == 303 and headers["Location"] == "/exercise/ex1#actions"
        web = Journal.open(ev, "ex1").read()[-1]
        cli = Journal.open(ev, "ex2").read()[-1]
        assert _fields(web) == _fields(cli)
        assert web["description"] == HOSTILE and web["at"] == web["recorded_at"]

        status, page, _ = _request(url)
    assert status == 200
    assert f"<td>{escape.html(HOSTILE)}</td><td>{escape.html(OWNER)}</td><td>{DUE}</td>" in page
    assert '<td><a href="/exercise/ex1/journal#e-2">entry 2</a></td>' in page  # where to correct it
    assert "<script>" not in page and "\x1b" not in page and "1 open." in page
    now = datetime.now(UTC).isoformat()
    web_doc, web_text = _status(ev, "ex1", now)
    cli_doc, cli_text = _status(ev, "ex2", now)
    assert [{**a, "id": None} for a in web_doc["open_actions"]] == [{**a, "id": None} for a in cli_doc["open_actions"]]
    assert web_doc["open_actions"][0]["id"] == "ex1-A2" and web_doc["open_actions"][0]["description"] == HOSTILE
    assert "open actions: 1" in web_text and web_text.replace("ex1", "ex2") == cli_text


def test_a_refused_form_says_what_the_cli_says_and_keeps_what_was_typed(tmp_path: Path) -> None:
    ev = _small_exercise(tmp_path)
    journal = ev / "exercises" / "ex1.journal.jsonl"
    good = {"runbook": "email", "description": "Mail queue <stuck> on DAG2", "owner": "K. Moore", "due": DUE}
    flags = {"description": "--description", "owner": "--owner", "due": "--due"}
    bad_values = [("due", "31/12/2026"), ("owner", "   "), ("description", "two\nlines"), ("runbook", "payroll")]
    with board(tmp_path, ev) as agent:
        url = f"{agent.url}/exercise/ex1"
        token = _csrf(_request(url + "/action")[1])
        before = journal.read_bytes()
        for key, value in bad_values:
            form = {**good, key: value}
            status, page, _ = _request(url, {**form, "kind": "action", "form": "f-action", "csrf": token})
            args = ["action", "ex1", form["runbook"], *(x for k, f in flags.items() for x in (f, form[k]))]
            message = _cli_error(ev, *args)
            assert status == 400, (key, page[:500])
            assert page.count('role="alert"') == 1 and escape.html(message) in page, (key, message)
            assert "<title>DR exercise ex1: record an action: not recorded</title>" in page
            assert 'http-equiv="refresh"' not in page  # nothing typed is reloaded away
            for k, v in form.items():
                if k == "runbook" and v == "email":
                    assert '<option value="email" selected>' in page
                elif "\n" not in v and k != "runbook":
                    assert f'name="{k}" id="f-action-{k}" value="{html.escape(v)}"' in page, (key, k)
            assert journal.read_bytes() == before, key

        # A refused step on the board: the board comes back with the operator typed, unrefreshed.
        status, page, _ = _request(
            url,
            {"kind": "step", "runbook": "email", "step": "mail-flow", "state": "done", "operator": "J. Bloggs",
             "at": xs.at(1), "form": "f-email-mail-flow-start", "csrf": token},
        )
        message = _cli_error(ev, "step", "ex1", "email", "mail-flow", "done", "--at", xs.at(1),
                             "--operator", "J. Bloggs")
        assert status == 400 and page.count('role="alert"') == 1 and escape.html(message) in page
        assert 'id="f-email-mail-flow-operator" value="J. Bloggs"' in page
        assert 'http-equiv="refresh"' not in page and journal.read_bytes() == before


def test_void_a_mistaken_entry_from_the_journal_page(tmp_path: Path) -> None:
    ev = _small_exercise(tmp_path)
    _twin(ev)
    for name in ("ex1", "ex2"):
        ok(ev, "step", name, "email", "activate-dag", "start", "--at", xs.at(1), "--operator", "Wrong Person")
        ok(ev, "action", name, "email", "--description", "Typo'd action", "--owner", "nobody", "--due", DUE)
    reason = "recorded against the wrong <b>system</b>"
    ok(ev, "void", "ex2", "2", "--reason", reason, "--actor", USER)
    journal = ev / "exercises" / "ex1.journal.jsonl"
    with board(tmp_path, ev) as agent:
        url = f"{agent.url}/exercise/ex1"
        status, page, _ = _request(url + "/journal")
        assert status == 200 and 'http-equiv="refresh"' not in page
        # Newest first; the start cannot be voided, so it has no form.
        assert page.index('id="e-3"') < page.index('id="e-2"') < page.index('id="e-1"')
        assert 'id="f-void-2"' in page and 'id="f-void-3"' in page and 'id="f-void-1"' not in page
        token = _csrf(page)

        before = journal.read_bytes()
        for seq, why, args in (
            ("2", "  ", ["void", "ex1", "2", "--reason", "  "]),
            ("1", "oops", ["void", "ex1", "1", "--reason", "oops"]),
            ("9", "oops", ["void", "ex1", "9", "--reason", "oops"]),
        ):
            form = {"kind": "void", "seq": seq, "reason": why, "form": f"f-void-{seq}", "csrf": token}
            status, page, _ = _request(url, form)
            message = _cli_error(ev, *args)
            assert status == 400 and page.count('role="alert"') == 1 and escape.html(message) in page, message
            assert journal.read_bytes() == before
            if seq == "2":  # the reason comes back as typed, in its own entry's form
                assert f'name="reason" id="f-void-2-reason" value="{why}"' in page
        status, page, _ = _request(
            url, {"kind": "void", "seq": "2", "reason": "x\ny", "form": "f-void-2", "csrf": token}
        )
        assert status == 400 and "--reason must be one line" in page and journal.read_bytes() == before

        status, _, headers = _request(url, {"kind": "void", "seq": "2", "reason": reason, "csrf": token})
        assert status == 303 and headers["Location"] == "/exercise/ex1/journal#e-2"
        assert _fields(Journal.open(ev, "ex1").read()[-1]) == _fields(Journal.open(ev, "ex2").read()[-1])
        status, page, _ = _request(url + "/journal")
        assert status == 200 and 'id="f-void-2"' not in page
        assert f'voided by entry 4: {escape.html(reason)}' in page and '<span class="voided">' in page
        now = datetime.now(UTC).isoformat()
        web_doc, _ = _status(ev, "ex1", now)
        cli_doc, _ = _status(ev, "ex2", now)
        assert web_doc["systems"] == cli_doc["systems"]
        assert web_doc["systems"][0]["steps"][0]["id"] == "activate-dag"
        assert web_doc["systems"][0]["steps"][0]["state"] == "ready"  # the mistaken start is gone

        # Voiding the mistaken action closes it on the board.
        status, _, _ = _request(url, {"kind": "void", "seq": "3", "reason": "duplicate", "csrf": token})
        assert status == 303
        status, page, _ = _request(url)
        assert status == 200 and "0 open." in page and "Typo&#x27;d action" not in page
    assert _status(ev, "ex1")[0]["open_actions"] == []


def test_amend_a_mistaken_entry_from_the_journal_page(tmp_path: Path) -> None:
    ev = _small_exercise(tmp_path)
    _twin(ev)
    for name in ("ex1", "ex2"):
        ok(ev, "step", name, "email", "activate-dag", "start", "--at", xs.at(1), "--operator", "Wrong Person")
        ok(ev, "step", name, "email", "activate-dag", "done", "--at", xs.at(3))
        ok(ev, "action", name, "email", "--description", "Check DAG lag", "--owner", "K. Moore", "--due", DUE)
    # What the CLI records for the three corrections the board makes below.
    ok(ev, "amend", "ex2", "3", "--at", xs.at(2.5), "--actor", USER)
    ok(ev, "amend", "ex2", "2", "--operator", "T. Lindqvist", "--actor", USER)
    ok(ev, "amend", "ex2", "4", "--due", "2027-01-15", "--owner", "J. Reid", "--actor", USER)
    journal = ev / "exercises" / "ex1.journal.jsonl"
    done_by = Journal.open(ev, "ex1").read()[2]["operator"]  # the CLI's login name
    with board(tmp_path, ev) as agent:
        url = f"{agent.url}/exercise/ex1"
        status, page, _ = _request(url + "/journal")
        assert 'id="amend-3"' in page and 'id="amend"' not in page and 'id="amend-1"' in page  # T0's time
        assert 'href="/exercise/ex1/journal?amend=3#amend"' in page
        status, page, _ = _request(url + "/journal?amend=3")
        assert status == 200 and 'id="amend"' in page
        # The entry's amendable fields, filled in as they stand.
        assert f'name="at" id="f-amend-at" value="{xs.at(3)}"' in page
        assert f'name="operator" id="f-amend-operator" value="{html.escape(done_by)}"' in page
        assert 'name="note" id="f-amend-note" ' in page and 'id="f-amend-due"' not in page
        token = _csrf(page)
        step_done = {"kind": "amend", "seq": "3", "at": xs.at(3), "operator": done_by, "form": "f-amend"}

        before = journal.read_bytes()
        for changed, args in (
            ({"at": "yesterday"}, ["--at", "yesterday"]),
            ({"at": xs.at(0.5)}, ["--at", xs.at(0.5)]),  # done before it started
            ({"operator": " "}, ["--operator", " "]),
            ({}, []),
        ):
            status, page, _ = _request(url, {**step_done, **changed, "csrf": token})
            message = _cli_error(ev, "amend", "ex1", "3", *args)
            assert status == 400 and page.count('role="alert"') == 1 and escape.html(message) in page, message
            assert 'id="amend"' in page and "<title>DR exercise ex1: journal: not recorded</title>" in page
            typed = {**step_done, **changed}
            assert f'name="at" id="f-amend-at" value="{html.escape(typed["at"])}"' in page
            assert journal.read_bytes() == before

        status, _, headers = _request(url, {**step_done, "at": xs.at(2.5), "csrf": token})
        assert status == 303 and headers["Location"] == "/exercise/ex1/journal#e-3"
        status, _, _ = _request(
            url, {"kind": "amend", "seq": "2", "at": xs.at(1), "operator": "T. Lindqvist", "note": "", "csrf": token}
        )
        assert status == 303
        status, _, _ = _request(
            url,
            {"kind": "amend", "seq": "4", "description": "Check DAG lag", "owner": "J. Reid", "due": "2027-01-15",
             "csrf": token},
        )
        assert status == 303
        status, page, _ = _request(url + "/journal")
        assert "amended by entry 5" in page and "amended by entry 6" in page and "amended by entry 7" in page
    web, cli = Journal.open(ev, "ex1").read(), Journal.open(ev, "ex2").read()
    assert [_fields(x) for x in web] == [_fields(x) for x in cli]
    now = datetime.now(UTC).isoformat()
    web_doc, cli_doc = _status(ev, "ex1", now)[0], _status(ev, "ex2", now)[0]
    assert web_doc["systems"] == cli_doc["systems"]
    step = web_doc["systems"][0]["steps"][0]
    assert (step["operator"], step["ended_offset_seconds"]) == ("T. Lindqvist", 2.5 * 3600)
    assert [(a["owner"], a["due"]) for a in web_doc["open_actions"]] == [("J. Reid", "2027-01-15")]


def test_write_rules_for_actions_and_voids(tmp_path: Path) -> None:
    ev = _small_exercise(tmp_path)
    _twin(ev)
    _twin(ev, "ex3")
    journal = ev / "exercises" / "ex1.journal.jsonl"
    before = journal.read_bytes()
    action = {"kind": "action", "runbook": "email", "description": "d", "owner": "o", "due": DUE}
    void = {"kind": "void", "seq": "1", "reason": "r"}
    amend = {"kind": "amend", "seq": "1", "at": xs.at(0.5)}
    with board(tmp_path, ev) as agent:
        url = f"{agent.url}/exercise/ex1"
        other = _csrf(_request(f"{agent.url}/exercise/ex2/action")[1])  # a token for another exercise
        for form in (action, void, amend):
            assert _request(url, form, auth=None)[0] == 401
            assert _request(url, form)[0] == 403
            assert _request(url, {**form, "csrf": other})[0] == 403
        assert journal.read_bytes() == before
        # The exercise is finished (from the command line) while its action page is open: the page's
        # form gets the CLI's refusal, and the pages then offer no forms.
        token = _csrf(_request(f"{agent.url}/exercise/ex3/action")[1])
        assert run(ev, "exercise", "finish", "ex3", "--at", xs.at(1))[0] in (0, 1)
        closed = ev / "exercises" / "ex3.journal.jsonl"
        finished = closed.read_bytes()
        status, body, _ = _request(f"{agent.url}/exercise/ex3", {**action, "form": "f-action", "csrf": token})
        message = _cli_error(ev, "action", "ex3", "email", "--description", "d", "--owner", "o", "--due", DUE)
        assert status == 400 and "is finished" in message and escape.html(message) in body
        assert "What was typed: runbook: email; description: d; owner: o; due: 2026-12-31" in body
        assert closed.read_bytes() == finished
        for page in ("/action", "/journal"):
            status, body, _ = _request(f"{agent.url}/exercise/ex3{page}")
            assert status == 200 and "The exercise is finished" in body and "<form" not in body
    with board(tmp_path, ev, users=False) as agent:
        url = f"{agent.url}/exercise/ex1"
        for page in ("/action", "/journal", "/journal?amend=1"):
            status, body, _ = _request(url + page, auth=None)
            assert status == 200 and "Recording from this page is off" in body and "<form" not in body
        for form in (action, void, amend):
            assert _request(url, form, auth=None)[0] == 403
        assert _request(url + "/nope", auth=None)[0] == 404
    assert journal.read_bytes() == before


def test_a_form_open_across_an_agent_restart_still_goes_through(tmp_path: Path) -> None:
    """The form key is kept in the state directory (0600): a form loaded before the agent restarted
    is accepted after it; a key planted readable by others is not trusted."""
    ev = _small_exercise(tmp_path)
    form = {"kind": "action", "runbook": "email", "description": "Restart drill", "owner": "K. Moore", "due": DUE}
    with board(tmp_path, ev) as agent:
        url = f"{agent.url}/exercise/ex1"
        token = _csrf(_request(url + "/action")[1])
    key = tmp_path / "state" / "exercise-board.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
    with board(tmp_path, ev) as agent:
        url = f"{agent.url}/exercise/ex1"
        status, _, _ = _request(url, {**form, "form": "f-action", "csrf": token})
        assert status == 303
    assert Journal.open(ev, "ex1").read()[-1]["description"] == "Restart drill"
    key.chmod(0o644)
    before = (ev / "exercises" / "ex1.journal.jsonl").read_bytes()
    with board(tmp_path, ev) as agent:
        status, _, _ = _request(f"{agent.url}/exercise/ex1", {**form, "form": "f-action", "csrf": token})
        assert status == 403
    assert (ev / "exercises" / "ex1.journal.jsonl").read_bytes() == before
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_record_amend_and_void_an_action_in_chromium(tmp_path: Path) -> None:
    ev = _small_exercise(tmp_path)
    with board(tmp_path, ev) as agent:
        with clicker(f"{agent.url}/exercise/ex1") as (dev, c):
            c.navigate(f"{agent.url}/exercise/ex1")
            c.click_link("Record an action")
            assert dev.evaluate("document.title") == "DR exercise ex1: record an action"
            c.fill("f-action-runbook", "email")
            c.fill("f-action-description", HOSTILE)
            c.fill("f-action-owner", "   ")  # passes the browser's `required`; the agent refuses it
            c.fill("f-action-due", DUE)
            c.click("f-action", expect_title="DR exercise ex1: record an action: not recorded")
            assert dev.evaluate("document.getElementById('error').innerText") == "Not recorded: --owner is empty"
            # What was typed is still there: only the owner needs typing again.
            assert dev.evaluate("document.getElementById('f-action-description').value") == HOSTILE
            assert dev.evaluate("document.getElementById('f-action-runbook').value") == "email"
            assert dev.evaluate("document.getElementById('f-action-due').value") == DUE
            assert len(Journal.open(ev, "ex1").read()) == 1
            c.fill("f-action-owner", OWNER)
            c.click("f-action", expect_title="DR exercise ex1")
            assert dev.evaluate("location.hash") == "#actions"
            row = dev.evaluate(
                "document.querySelector('#open-actions tbody tr').innerText"
            )
            assert row.split("\t") == ["ex1-A2", "email", escape.terminal(HOSTILE), OWNER, DUE, "entry 2"]
            assert dev.evaluate("document.querySelectorAll('script').length") == 0

            c.click_link("entry 2")  # the action's row links to its journal entry
            assert dev.evaluate("location.hash") == "#e-2"
            c.click_link("amend entry 2…")
            assert dev.evaluate("document.getElementById('f-amend-owner').value") == OWNER
            c.fill("f-amend-owner", "J. Reid")
            c.click("f-amend", expect_title="DR exercise ex1: journal")
            assert "amended by entry 3" in dev.evaluate("document.getElementById('e-2').innerText")
            c.fill("f-void-2-reason", "raised twice")
            c.click("f-void-2", expect_title="DR exercise ex1: journal")
            assert "voided by entry 4: raised twice" in dev.evaluate("document.getElementById('e-2').innerText")
            assert dev.console_errors() == []
    entries = Journal.open(ev, "ex1").read()
    assert [(e["action"], e["actor"]) for e in entries] == [
        ("start", entries[0]["actor"]), ("action", USER), ("amend", USER), ("void", USER)
    ]
    assert entries[2]["changes"] == {"owner": "J. Reid"}
    assert entries[1]["description"] == HOSTILE and entries[1]["owner"] == OWNER
    assert _status(ev, "ex1")[0]["open_actions"] == []
