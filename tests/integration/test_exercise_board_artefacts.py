"""Artefacts attached from the /exercise/ board of a real agent: the upload is streamed (memory does
not grow with it) through the CLI's own ``Recorder.add_artefact`` -- the same destination, name
rules, messages and duplicate check; a refused upload (a hostile name, over the size cap, a wrong
CSRF token, cut off half-way, a form without its closing boundary or going on after its one file)
leaves the journal byte for byte as it was and nothing on disk; and
the finished exercise's sealed records hash the artefact so ``evidence verify`` passes. One
headless Chromium run attaches a file with the page's own form."""

from __future__ import annotations

import hashlib
import html
import http.client
import json
import os
import re
import socket
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
import yaml

from agent.exercises.journal import Journal
from agent.exercises.web import MAX_UPLOAD_BYTES
from tests.helpers import exercise_script as xs
from tests.helpers.common import wait_until
from tests.integration.test_exercise_board import AUTH, USER, _csrf, _request, _small_exercise, board, clicker
from tests.unit.test_exercise_status import ok, run

pytestmark = pytest.mark.integration

BOUNDARY = "----continuityTestBoundary7MA4YWxkTrZu0gW"


def multipart(fields: dict[str, str], filename: bytes, content: bytes, boundary: str = BOUNDARY) -> bytes:
    """A body as a browser sends the board's upload form: the fields, then the file."""
    out = bytearray()
    for k, v in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    out += f"--{boundary}\r\n".encode()
    out += b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
    out += b"Content-Type: application/octet-stream\r\n\r\n" + content + f"\r\n--{boundary}--\r\n".encode()
    return bytes(out)


def post_upload(url: str, body: bytes, auth: str | None = AUTH) -> tuple[int, str, dict[str, str]]:
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        if auth:
            headers["Authorization"] = auth
        conn.request("POST", u.path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read().decode(), dict(r.getheaders())
    finally:
        conn.close()


def _form(page: str, runbook: str = "email") -> dict[str, str]:
    return {"csrf": _csrf(page), "form": f"f-{runbook}-artefact", "kind": "artefact", "runbook": runbook}


def _files(ev: Path) -> list[str]:
    return sorted(str(p.relative_to(ev)) for p in ev.rglob("*") if not p.name.endswith(".journal.lock"))


def receiving(pid: int, ev: Path) -> list[str]:
    """The uploads agent ``pid`` is writing under ``ev`` now: its unnamed files there (open, shown
    in /proc as ``<dir>/#<inode> (deleted)``) and any named temporary file (``.<name>.<hex>.tmp``,
    where the file system has no unnamed files)."""
    out = [f for f in _files(ev) if Path(f).name.startswith(".") and f.endswith(".tmp")]
    root = str(ev.resolve()) + "/"
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith(root) and "/#" in target and target.endswith(" (deleted)"):
            out.append(target.removeprefix(root))
    return out


def _error(page: str) -> str:
    m = re.search(r'<p class="error" role="alert" id="error"><strong>Not recorded:</strong> (.*?)</p>', page)
    assert m, page[:3000]
    return html.unescape(m.group(1))


def _cli_error(ev: Path, name: str, runbook: str, file: str) -> str:
    rc, out, err = run(ev, "exercise", "artefact", name, runbook, file, "--actor", USER)
    assert rc == 2 and out == "", (out, err)
    return err.removeprefix("continuity-agent: ").rstrip("\n")


def _hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_an_upload_is_the_cli_entry_and_refusals_leave_nothing(tmp_path: Path) -> None:
    ev = _small_exercise(tmp_path)
    ok(ev, "start", "ex2", "--type", "partial_recovery", "--systems", "email", "--declared-at", xs.at(0))
    journal = ev / "exercises" / "ex1.journal.jsonl"
    content = os.urandom(300_000) + b"\r\n--" + BOUNDARY.encode()[:-1] + b"\r\n"  # a near-boundary inside
    src = tmp_path / "restore-log.txt"
    src.write_bytes(content)
    with board(tmp_path, ev) as agent:
        url = f"{agent.url}/exercise/ex1"
        status, page, _ = _request(url)
        assert status == 200 and 'enctype="multipart/form-data"' in page and 'id="f-email-artefact-file"' in page
        form = _form(page)
        # Who may write: as every other form of the board, nothing written.
        before, files = journal.read_bytes(), _files(ev)
        assert post_upload(url, multipart(form, b"x.txt", b"x"), auth=None)[0] == 401
        assert post_upload(url, multipart({**form, "csrf": "0" * 64}, b"x.txt", b"x"))[0] == 403
        assert post_upload(url, multipart({k: v for k, v in form.items() if k != "csrf"}, b"x.txt", b"x"))[0] == 403
        assert (journal.read_bytes(), _files(ev)) == (before, files)

        status, _, headers = post_upload(url, multipart(form, b"restore-log.txt", content))
        assert status == 303 and headers["Location"].startswith("/exercise/ex1/journal#e-"), headers
        ok(ev, "artefact", "ex2", "email", str(src))
        web, cli = Journal.open(ev, "ex1").read()[-1], Journal.open(ev, "ex2").read()[-1]
        assert web["actor"] == USER and web["path"] == "artefacts/ex1/email/restore-log.txt"
        assert {k: web[k] for k in ("action", "runbook", "file_sha256")} == {
            k: cli[k] for k in ("action", "runbook", "file_sha256")
        }
        assert set(web) == set(cli)
        assert web["file_sha256"] == hashlib.sha256(content).hexdigest()
        assert (ev / web["path"]).read_bytes() == content
        status, jpage, _ = _request(f"{url}/journal")
        assert status == 200 and "email: artefact artefacts/ex1/email/restore-log.txt" in jpage

        # Refused: the CLI's message, escaped, on the board page (400); nothing changed on disk.
        before, files = journal.read_bytes(), _files(ev)
        hostile = {
            b"restore-log.txt": None,  # the same name again
            b".hidden": ".hidden",
            b"a\x1b[31mred.txt": "a\x1b[31mred.txt",
            b"evil<script>\\x.txt": "evil<script>\\x.txt",
            b"\xff\xfe.txt": os.fsdecode(b"\xff\xfe.txt"),
            ("é" * 101).encode(): "é" * 101,
        }
        for sent, on_disk in hostile.items():
            status, page2, _ = post_upload(url, multipart(form, sent, b"data"))
            assert status == 400, (sent, page2[:500])
            assert "<script" not in page2
            msg = _error(page2)
            if on_disk is None:
                assert msg == "artefact artefacts/ex1/email/restore-log.txt is already recorded in this exercise"
            else:  # the very message `exercise artefact` prints for a file of that name
                (tmp_path / "cli").mkdir(exist_ok=True)
                f = tmp_path / "cli" / on_disk
                f.write_bytes(b"data")
                assert msg == _cli_error(ev, "ex2", "email", str(f)), sent
        # A file name with a path is taken as its base name only.
        status, _, _ = post_upload(url, multipart(form, b"../../exercises/ex1.journal.jsonl", b"not the journal"))
        assert status == 303
        assert Journal.open(ev, "ex1").read()[-1]["path"] == "artefacts/ex1/email/ex1.journal.jsonl"
        assert journal.read_bytes().startswith(before)
        before, files = journal.read_bytes(), _files(ev)
        # No file chosen; a system not in the exercise; malformed multipart: 400, nothing written.
        for body in (
            multipart(form, b"", b""),
            multipart({**form, "runbook": "../../x"}, b"y.txt", b"y"),
            multipart(form, b"z.txt", b"z")[:-40],
            b"--" + BOUNDARY.encode() + b"\r\nno headers here\r\n\r\n",
        ):
            status, page3, _ = post_upload(url, body)
            assert status == 400, page3[:500]
            assert _error(page3)
        assert (journal.read_bytes(), _files(ev)) == (before, files)
        assert not any(".tmp" in f for f in _files(ev))


def test_the_form_is_read_to_its_end_one_file_then_only_the_epilogue(tmp_path: Path) -> None:
    ev = _small_exercise(tmp_path)
    journal = ev / "exercises" / "ex1.journal.jsonl"
    b = BOUNDARY.encode()
    with board(tmp_path, ev) as agent:
        url = f"{agent.url}/exercise/ex1"
        form = _form(_request(url)[1])
        before, files = journal.read_bytes(), _files(ev)
        for size in (10, 200_000):  # read whole before the handler runs; streamed
            whole = multipart(form, b"a.bin", b"a" * size)
            end = f"\r\n--{BOUNDARY}--\r\n".encode()
            assert whole.endswith(end)
            upto = whole[: -len(end)]  # the form up to the end of its file
            second = b'Content-Disposition: form-data; name="file"; filename="b.bin"\r\n\r\nsecond file'
            refused = {
                upto: "the form ended early (no closing boundary): was the upload cut off?",
                upto + b"\r\n--" + b: "the form ended early (no closing boundary): was the upload cut off?",
                upto + b"\r\n--" + b + b"\r\n": "the form ended early (no closing boundary): was the upload cut off?",
                upto + b"\r\n--" + b + b"\r\n" + second + end: (
                    "the form goes on after its file with a second file: the board attaches one file per form, "
                    "as its last part"
                ),
                upto + b"\r\n--" + b + b'\r\nContent-Disposition: form-data; name="runbook"\r\n\r\nx' + end: (
                    "the form goes on after its file with field 'runbook': the board attaches one file per form, "
                    "as its last part"
                ),
                upto + b"\r\n--" + b + b"--junk\r\n": (
                    "the form's closing boundary is followed by more than its line end"
                ),
            }
            for body, message in refused.items():
                status, page, _ = post_upload(url, body)
                assert status == 400, (size, status, body[-80:])
                assert _error(page) == message, (size, body[-80:])
                assert (journal.read_bytes(), _files(ev)) == (before, files), (size, body[-80:])
        # The closing boundary then an epilogue (ignored), or then the end of the body: taken.
        assert post_upload(url, multipart(form, b"e.bin", b"e") + b"an epilogue\r\n" * 10_000)[0] == 303
        assert post_upload(url, multipart(form, b"f.bin", b"f")[:-2])[0] == 303
        assert (ev / "artefacts/ex1/email/e.bin").read_bytes() == b"e"
        assert [e["path"] for e in Journal.open(ev, "ex1").read()[-2:]] == [
            "artefacts/ex1/email/e.bin",
            "artefacts/ex1/email/f.bin",
        ]


def test_size_cap_413_cut_off_upload_and_memory(tmp_path: Path) -> None:
    ev = _small_exercise(tmp_path)
    journal = ev / "exercises" / "ex1.journal.jsonl"
    with board(tmp_path, ev) as agent:
        url = f"{agent.url}/exercise/ex1"
        form = _form(_request(url)[1])
        before, files = journal.read_bytes(), _files(ev)
        u = urlsplit(url)
        head = (
            f"POST {u.path} HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        )
        # Over the cap by its Content-Length: 413 with the board page at once, the body never read.
        with socket.create_connection((u.hostname, u.port), timeout=30) as s:
            s.sendall(f"{head}Content-Length: {10 * MAX_UPLOAD_BYTES}\r\n\r\n".encode() + b"x" * 1000)
            reply = s.makefile("rb").read().decode()
        assert reply.startswith("HTTP/1.1 413 "), reply[:300]
        assert "Connection: close" in reply
        assert f"larger than {MAX_UPLOAD_BYTES // 2**20} MiB, the most the board takes" in _error(reply)
        # Within the Content-Length allowance but the file itself one byte over the cap: 413 after
        # streaming it; the temporary file is gone.
        big = multipart(form, b"big.bin", b"\0" * (MAX_UPLOAD_BYTES + 1))
        status, page, _ = post_upload(url, big)
        assert status == 413 and "'big.bin' is larger than 64 MiB" in _error(page)
        # Cut off half-way: the client goes away; nothing is left.
        body = multipart(form, b"cut.bin", b"\1" * 2_000_000)
        with socket.create_connection((u.hostname, u.port), timeout=30) as s:
            s.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body[:1_000_000])
        wait_until(lambda: _files(ev) == files, 20, what="the cut-off upload cleaned away")
        assert journal.read_bytes() == before
        assert _request(url)[0] == 200  # the agent serves on

        # A 64 MiB upload is streamed: the agent's peak RSS grows by far less than the file.
        pid = agent.proc.pid
        hwm = _hwm_kib(pid)
        content = os.urandom(MAX_UPLOAD_BYTES - 4096)
        status, _, _ = post_upload(url, multipart(form, b"export.bin", content))
        assert status == 303
        growth = _hwm_kib(pid) - hwm
        assert growth < 24 * 1024, f"peak RSS grew by {growth} KiB for a 64 MiB upload"
        assert (ev / "artefacts/ex1/email/export.bin").read_bytes() == content


def test_attach_by_the_page_form_in_chromium_then_evidence_verify(tmp_path: Path) -> None:
    ev = xs.evidence_copy(tmp_path / "web")
    ok(ev, "start", xs.NAME, "--type", "tabletop", "--systems", "email", "--declared-at", xs.at(0))
    shot = tmp_path / "owa-login screenshot.png"
    shot.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(50_000))
    with board(tmp_path, ev) as agent:
        with clicker(f"{agent.url}/exercise/{quote(xs.NAME)}") as (dev, c):
            c.navigate(c.base)
            node = dev.send("Runtime.evaluate", {"expression": "document.getElementById('f-email-artefact-file')"})
            dev.send("DOM.setFileInputFiles", {"files": [str(shot)], "objectId": node["result"]["objectId"]})
            c.click("f-email-artefact-submit", expect_title=f"DR exercise {xs.NAME}: journal")
            assert f"email: artefact artefacts/{xs.NAME}/email/owa-login screenshot.png" in dev.evaluate(
                "document.body.innerText"
            )
            assert dev.console_errors() == []
            # The same form refuses the same file again, with the CLI's message on the board.
            c.navigate(c.base)
            assert dev.evaluate("document.getElementById('artefacts-email').innerText") == "owa-login screenshot.png"
            node = dev.send("Runtime.evaluate", {"expression": "document.getElementById('f-email-artefact-file')"})
            dev.send("DOM.setFileInputFiles", {"files": [str(shot)], "objectId": node["result"]["objectId"]})
            c.click("f-email-artefact-submit", expect_title=f"DR exercise {xs.NAME}: not recorded")
            assert "is already recorded in this exercise" in dev.evaluate("document.getElementById('error').innerText")
            # Over the cap: the browser shows the board's 413 page saying so (the body is drained).
            big = tmp_path / "full-export.bin"
            with big.open("wb") as f:
                f.truncate(MAX_UPLOAD_BYTES + 1)
            c.navigate(c.base)
            node = dev.send("Runtime.evaluate", {"expression": "document.getElementById('f-email-artefact-file')"})
            dev.send("DOM.setFileInputFiles", {"files": [str(big)], "objectId": node["result"]["objectId"]})
            c.click("f-email-artefact-submit", expect_title=f"DR exercise {xs.NAME}: not recorded")
            assert "'full-export.bin' is larger than 64 MiB" in dev.evaluate(
                "document.getElementById('error').innerText"
            )
    entry = [e for e in Journal.open(ev, xs.NAME).read() if e["action"] == "artefact"]
    assert not [p for p in ev.rglob("*") if "full-export" in p.name]  # no half-written file
    assert [(e["actor"], e["file_sha256"]) for e in entry] == [(USER, hashlib.sha256(shot.read_bytes()).hexdigest())]
    assert run(ev, "exercise", "finish", xs.NAME, "--at", xs.at(2))[0] in (0, 1)
    record = yaml.safe_load((ev / f"{xs.NAME}-email.yml").read_text())
    arts = {a["path"]: a["sha256"] for a in record["artefacts"]}
    assert arts[f"artefacts/{xs.NAME}/email/owa-login screenshot.png"] == entry[0]["file_sha256"]
    rc, out, _ = run(ev, "evidence", "verify", "--at", xs.VERIFY_AT, "--format", "json")
    mine = [f for f in json.loads(out)["findings"] if f["record"] == f"{xs.NAME}-email.yml"]
    assert rc == 0 and mine == [], mine
