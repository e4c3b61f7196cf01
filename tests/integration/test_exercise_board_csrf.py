"""Form tokens of a real agent's /exercise/ board expire after CSRF_LIFETIME (12 h), and an expired
one never costs what was typed: the answer (403) says the form expired and nothing was recorded, and
gives the form back filled in with a fresh token, so sending it again -- as a browser sends the
page's form, nothing retyped -- records the entry. A token that is not the board's is refused as
ever; an upload with an expired token asks for the file again and writes nothing. One headless
Chromium run sends a form left open too long, then sends it again with one click."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from agent.exercises.config import CSRF_KEY_FILE
from agent.exercises.journal import Journal
from agent.exercises.web import CSRF_EXPIRED, CSRF_EXPIRED_UPLOAD, CSRF_LIFETIME, CSRF_REFUSED, csrf_token
from tests.integration.test_exercise_board import USER, _request, _small_exercise, board, clicker
from tests.integration.test_exercise_board_artefacts import _error, _files, _form, multipart, post_upload

pytestmark = pytest.mark.integration


class _FormFields(HTMLParser):
    """What a browser sends for the form ``form_id`` of a page: its inputs' names and values and
    each select's selected option."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id, self.inside, self.select = form_id, False, ""
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        elif self.inside and tag == "input" and a.get("name"):
            self.fields[a["name"]] = a.get("value", "")
        elif self.inside and tag == "select":
            self.select = a.get("name", "")
        elif self.inside and tag == "option" and "selected" in a and self.select:
            self.fields[self.select] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False


def _fields(page: str, form_id: str) -> dict[str, str]:
    p = _FormFields(form_id)
    p.feed(page)
    assert p.fields, page[:3000]
    return p.fields


ACTION = {
    "kind": "action",
    "form": "f-action",
    "runbook": "email",
    "description": "DAG failover runbook names the old witness server",
    "owner": "K. Osei",
    "due": "2026-12-31",
}


def test_an_expired_token_gives_the_form_back_filled_in_and_sending_it_again_records(tmp_path: Path) -> None:
    ev = _small_exercise(tmp_path)
    journal = ev / "exercises" / "ex1.journal.jsonl"
    with board(tmp_path, ev) as agent:
        url = f"{agent.url}/exercise/ex1"
        key = (tmp_path / "state" / CSRF_KEY_FILE).read_bytes()
        assert _request(url + "/action")[0] == 200
        before = journal.read_bytes()
        # The action page opened 12 hours and a minute ago, then sent.
        old = csrf_token(key, USER, "ex1", time.time() - CSRF_LIFETIME - 60)
        status, page, _ = _request(url, {**ACTION, "csrf": old})
        assert status == 403
        assert _error(page) == CSRF_EXPIRED
        assert journal.read_bytes() == before
        again = _fields(page, "f-action")
        assert {k: again[k] for k in ACTION} == ACTION  # everything typed is there
        assert again["csrf"] != old
        # Sent again as it stands: recorded.
        status, _, headers = _request(url, again)
        assert status == 303 and headers["Location"] == "/exercise/ex1#actions"
        last = Journal.open(ev, "ex1").read()[-1]
        assert (last["action"], last["description"], last["owner"], last["due"]) == (
            "action",
            ACTION["description"],
            ACTION["owner"],
            ACTION["due"],
        )
        # Within its lifetime (a form opened 11 hours ago) a token is taken.
        fresh = csrf_token(key, USER, "ex1", time.time() - CSRF_LIFETIME + 3600)
        status, _, _ = _request(url, {"kind": "participant", "name": "Ann", "role": "scribe", "csrf": fresh})
        assert status == 303
        # A void form on the journal page comes back with its reason.
        void = {"kind": "void", "seq": "2", "reason": "recorded twice", "form": "f-void-2", "csrf": old}
        status, page, _ = _request(url, void)
        assert status == 403 and _error(page) == CSRF_EXPIRED
        assert _fields(page, "f-void-2")["reason"] == "recorded twice"
        # A token the board did not make, or for another exercise, is refused as ever.
        before = journal.read_bytes()
        forged = old[:8] + ("0" if old[8] != "0" else "1") + old[9:]
        other = csrf_token(key, USER, "ex2", time.time())
        for token in (forged, other, "0" * 64, "not a token"):
            status, body, _ = _request(url, {**ACTION, "csrf": token})
            assert (status, body.encode()) == (403, CSRF_REFUSED), token
        # A token of the agent from before tokens expired (a form open across the upgrade): expired.
        unexpiring = hmac.new(key, f"{USER}\nex1".encode(), hashlib.sha256).hexdigest()
        status, page, _ = _request(url, {**ACTION, "csrf": unexpiring})
        assert status == 403 and _error(page) == CSRF_EXPIRED
        assert journal.read_bytes() == before


def test_an_upload_with_an_expired_token_asks_for_the_file_again(tmp_path: Path) -> None:
    ev = _small_exercise(tmp_path)
    journal = ev / "exercises" / "ex1.journal.jsonl"
    with board(tmp_path, ev) as agent:
        url = f"{agent.url}/exercise/ex1"
        key = (tmp_path / "state" / CSRF_KEY_FILE).read_bytes()
        form = _form(_request(url)[1])
        before, files = journal.read_bytes(), _files(ev)
        old = csrf_token(key, USER, "ex1", time.time() - CSRF_LIFETIME - 60)
        status, page, _ = post_upload(url, multipart({**form, "csrf": old}, b"log.txt", b"x" * 500_000))
        assert status == 403 and _error(page) == CSRF_EXPIRED_UPLOAD
        assert (journal.read_bytes(), _files(ev)) == (before, files)
        again = {k: v for k, v in _fields(page, "f-email-artefact").items() if k != "file"}
        assert again["csrf"] != old
        status, _, _ = post_upload(url, multipart(again, b"log.txt", b"x" * 500_000))
        assert status == 303
        assert (ev / "artefacts/ex1/email/log.txt").read_bytes() == b"x" * 500_000


def test_a_form_left_open_past_the_lifetime_is_sent_again_in_chromium_without_retyping(tmp_path: Path) -> None:
    """In a browser: the action form typed in, its page's token 12 hours old by the time it is sent
    (set as the page would hold it); the answer says so with everything typed still in the form,
    and one more click records it."""
    ev = _small_exercise(tmp_path)
    with board(tmp_path, ev) as agent:
        key = (tmp_path / "state" / CSRF_KEY_FILE).read_bytes()
        with clicker(f"{agent.url}/exercise/ex1") as (dev, c):
            c.navigate(f"{agent.url}/exercise/ex1/action")
            for field in ("runbook", "description", "owner", "due"):
                c.fill(f"f-action-{field}", ACTION[field])
            old = csrf_token(key, USER, "ex1", time.time() - CSRF_LIFETIME - 60)
            assert dev.evaluate(
                f"(() => {{ document.querySelector('#f-action input[name=csrf]').value = {json.dumps(old)};"
                " return true; })()"
            )
            c.click("f-action", expect_title="DR exercise ex1: record an action: not recorded")
            assert dev.evaluate("document.getElementById('error').innerText") == f"Not recorded: {CSRF_EXPIRED}"
            for field in ("runbook", "description", "owner", "due"):
                assert dev.evaluate(f"document.getElementById('f-action-{field}').value") == ACTION[field], field
            assert len(Journal.open(ev, "ex1").read()) == 1
            c.click("f-action", expect_title="DR exercise ex1")
            assert dev.evaluate("location.hash") == "#actions"
        last = Journal.open(ev, "ex1").read()[-1]
        assert (last["action"], last["description"], last["owner"]) == (
            "action",
            ACTION["description"],
            ACTION["owner"],
        )
