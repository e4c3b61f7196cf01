"""Attacks on the /exercise/ board's artefact upload of a real agent, by someone who may write in
the evidence directory (the exercise team) or who knows the board's password: a directory on the
way to the artefact swapped for a symbolic link while uploads run never gets a file written
outside the evidence directory; names that show as another name (an invisible character, a
right-to-left override, a second spelling of the same name) are refused or made one; an upload that
fills the disk leaves the journal as it was (not a torn last line that bricks the exercise) and no
file behind; two uploads arriving slowly (a colleague on a slow link, or on purpose) take both
upload slots but never stop the team recording steps on the board, nor a scrape; scrapes are
answered during a 64 MiB upload while an attacker's refused body is drained; a client without the
board's password never takes an upload slot, nor learns whether one is free: a flood of its uploads
never turns the team's away."""

from __future__ import annotations

import base64
import contextlib
import ctypes
import os
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from agent.exercises.journal import Journal
from agent.exercises.web import MAX_UPLOAD_BYTES
from agent.http import MAX_STREAMS
from tests.helpers import exercise_script as xs
from tests.helpers.common import wait_until
from tests.integration.test_crash_safety import tiny_tmpfs
from tests.integration.test_exercise_board import AUTH, USER, _request, _small_exercise, board
from tests.integration.test_exercise_board_artefacts import (
    BOUNDARY,
    _error,
    _files,
    _form,
    multipart,
    post_upload,
    receiving,
)
from tests.unit.test_exercise_status import ok, run

pytestmark = pytest.mark.integration

_libc = ctypes.CDLL(None, use_errno=True)


def _exchange(a: Path, b: Path) -> None:
    """renameat2(RENAME_EXCHANGE): ``a`` and ``b`` swap names in one step (Linux 3.15+)."""
    if _libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), 2) != 0:  # AT_FDCWD, RENAME_EXCHANGE
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def test_a_directory_swapped_for_a_symlink_during_uploads_gets_nothing_written_outside(tmp_path: Path) -> None:
    ev = _small_exercise(tmp_path)
    outside = tmp_path / "outside"  # say the agent's own state directory, or ~/.ssh
    outside.mkdir()
    with board(tmp_path, ev) as agent:
        url = f"{agent.url}/exercise/ex1"
        form = _form(_request(url)[1])
        assert post_upload(url, multipart(form, b"first.txt", b"1"))[0] == 303
        real = ev / "artefacts/ex1/email"
        swap = ev / "artefacts/ex1/swap"
        swap.symlink_to(outside)
        stop = threading.Event()
        flips = 0

        def swapper() -> None:  # the real directory and the link trade places, as fast as they can
            nonlocal flips
            while not stop.is_set():
                _exchange(real, swap)
                flips += 1

        th = threading.Thread(target=swapper)
        th.start()
        codes: dict[int, int] = {}
        try:
            deadline = time.monotonic() + 20
            for i in range(150):
                if time.monotonic() > deadline:
                    break
                status = post_upload(url, multipart(form, f"f{i}.txt".encode(), b"payload"))[0]
                codes[status] = codes.get(status, 0) + 1
                assert not list(outside.iterdir()), (i, codes, sorted(p.name for p in outside.iterdir()))
        finally:
            stop.set()
            th.join()
        if real.is_symlink():  # put the real directory back where it belongs
            _exchange(real, swap)
        assert flips > 100 and sum(codes.values()) > 20, (flips, codes)
        assert set(codes) <= {303, 400}, codes
        assert not list(outside.iterdir())
        # Every recorded artefact is where its entry says, byte for byte; nothing else is there.
        entries = [e for e in Journal.open(ev, "ex1").read() if e["action"] == "artefact"]
        assert len(entries) == 1 + codes.get(303, 0)
        for e in entries:
            assert (ev / e["path"]).is_file() and not (ev / e["path"]).is_symlink(), e["path"]
        assert sorted(p.name for p in real.iterdir()) == sorted(e["path"].rpartition("/")[2] for e in entries)
        assert _request(url)[0] == 200


def test_names_that_show_as_another_name_are_refused_or_made_one(tmp_path: Path) -> None:
    ev = _small_exercise(tmp_path)
    journal = ev / "exercises" / "ex1.journal.jsonl"
    with board(tmp_path, ev) as agent:
        url = f"{agent.url}/exercise/ex1"
        form = _form(_request(url)[1])
        assert post_upload(url, multipart(form, "caf\u00e9.txt".encode(), b"composed"))[0] == 303
        before, files = journal.read_bytes(), _files(ev)
        # The same name spelt decomposed: the same artefact, refused as recorded already.
        status, page, _ = post_upload(url, multipart(form, "cafe\u0301.txt".encode(), b"decomposed"))
        assert status == 400
        assert _error(page) == "artefact artefacts/ex1/email/caf\u00e9.txt is already recorded in this exercise"
        # A right-to-left override (shows as "invexe.txt"), a zero-width space, a byte order mark,
        # a line separator, a trailing space: refused with the CLI's own message.
        for name in ("inv\u202etxt.exe", "a\u200bb.txt", "\ufeffx.txt", "two\u2028lines", "x.txt "):
            status, page, _ = post_upload(url, multipart(form, name.encode(), b"data"))
            assert status == 400, name
            f = tmp_path / "cli" / name
            f.parent.mkdir(exist_ok=True)
            f.write_bytes(b"data")
            rc, out, err = run(ev, "exercise", "artefact", "ex1", "email", str(f), "--actor", "cli")
            assert (rc, out) == (2, "")
            assert _error(page) == err.removeprefix("continuity-agent: ").rstrip("\n"), name
            assert "\u202e" not in page
        assert (journal.read_bytes(), _files(ev)) == (before, files)


def test_an_upload_that_fills_the_disk_leaves_the_journal_and_directory_as_they_were(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "ev", size="1m") as ev:
        ok(ev, "start", "ex1", "--type", "partial_recovery", "--systems", "email", "--declared-at", xs.at(0))
        journal = ev / "exercises" / "ex1.journal.jsonl"
        # The journal's last page nearly full: the artefact's entry needs a new one.
        while journal.stat().st_size % 4096 < 4096 - 200:
            ok(ev, "participant", "ex1", "--name", "n" * 40, "--role", "r")
        (ev / "artefacts" / "ex1" / "email").mkdir(parents=True)
        with board(tmp_path, ev) as agent:
            url = f"{agent.url}/exercise/ex1"
            form = _form(_request(url)[1])
            before, files = journal.read_bytes(), _files(ev)
            # Larger than the free space: refused while it is written.
            st = os.statvfs(ev)
            status, page, _ = post_upload(url, multipart(form, b"huge.bin", b"h" * (st.f_bavail * st.f_frsize + 1)))
            assert status == 400 and _error(page).endswith("huge.bin: cannot write: No space left on device")
            assert (journal.read_bytes(), _files(ev)) == (before, files)
            # Exactly the free space: the file fits, its journal entry does not.
            st = os.statvfs(ev)
            status, page, _ = post_upload(url, multipart(form, b"fit.bin", b"f" * (st.f_bavail * st.f_frsize)))
            assert status == 400
            assert _error(page) == f"{journal}: cannot write: No space left on device"
            assert (journal.read_bytes(), _files(ev)) == (before, files)
            # Room again: the same upload is taken, the journal reads whole.
            status, _, _ = post_upload(url, multipart(form, b"fit.bin", b"f" * 1000))
            assert status == 303
            assert Journal.open(ev, "ex1").read()[-1]["path"] == "artefacts/ex1/email/fit.bin"
            assert (ev / "artefacts/ex1/email/fit.bin").read_bytes() == b"f" * 1000


def test_slow_uploads_holding_every_slot_never_stop_the_board_forms_or_scrapes(tmp_path: Path) -> None:
    ev = _small_exercise(tmp_path)
    journal = ev / "exercises" / "ex1.journal.jsonl"
    with board(tmp_path, ev) as agent:
        url = f"{agent.url}/exercise/ex1"
        u = urlsplit(url)
        form = _form(_request(url)[1])
        head = (
            f"POST {u.path} HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        )
        slow = []
        try:
            for i in range(MAX_STREAMS):  # each sends its head and a little, then waits (< the 10 s read timeout)
                body = multipart(form, f"slow-{i}.bin".encode(), b"s" * 10_000_000)
                s = socket.create_connection((u.hostname, u.port), timeout=30)
                s.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body[:300_000])
                slow.append(s)
            # Both hold their slot (each is writing its file) before another comes: on a busy machine
            # the third's worker could otherwise take a slot first.
            wait_until(
                lambda: len(receiving(agent.proc.pid, ev)) == MAX_STREAMS, 30, what="the slow uploads in their slots"
            )
            # Another upload waits its turn (503, Retry-After) ...
            status, page, headers = post_upload(url, multipart(form, b"third.bin", b"t" * 200_000))
            assert status == 503 and headers.get("Retry-After") == "10", (status, page[:200])
            # ... but a step, a participant, any small form of the board is recorded, and scrapes answer.
            status, page, _ = _request(
                url, {"csrf": form["csrf"], "form": "f-p", "kind": "participant", "name": "Ann", "role": "observer"}
            )
            assert status == 303, page[:500]
            assert Journal.open(ev, "ex1").read()[-1]["name"] == "Ann"
            status, page, _ = post_upload(url, multipart(form, b"small.txt", b"a small log"))
            assert status == 303, page[:500]
            assert (ev / "artefacts/ex1/email/small.txt").read_bytes() == b"a small log"
            assert _request(agent.url + "/metrics")[0] == 200
            assert _request(agent.url + "/-/healthy")[0] == 200
        finally:
            for s in slow:
                s.close()
        before = journal.read_bytes()
        wait_until(
            lambda: not receiving(agent.proc.pid, ev) and not [f for f in _files(ev) if "slow-" in f],
            30,
            what="the cut-off uploads cleaned away",
        )
        assert journal.read_bytes() == before


def test_scrapes_are_served_during_a_64_mib_upload_and_an_attack_on_the_other_slot(tmp_path: Path) -> None:
    ev = _small_exercise(tmp_path)
    with board(tmp_path, ev) as agent:
        url = f"{agent.url}/exercise/ex1"
        u = urlsplit(url)
        form = _form(_request(url)[1])
        # The other slot: a wrong CSRF token on a 32 MiB body sent slowly (refused, then drained).
        attacker = socket.create_connection((u.hostname, u.port), timeout=60)
        bad = multipart({**form, "csrf": "0" * 64}, b"x.bin", b"")
        head = (
            f"POST {u.path} HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        )
        attacker.sendall(f"{head}Content-Length: {32 * 2**20}\r\n\r\n".encode() + bad[:-40])
        content = os.urandom(MAX_UPLOAD_BYTES - 4096)
        got: dict[str, int] = {}

        def upload() -> None:  # in 1 MiB pieces, a little apart: in progress for a second or more
            body = multipart(form, b"big.bin", content)
            with socket.create_connection((u.hostname, u.port), timeout=60) as s:
                s.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode())
                for i in range(0, len(body), 2**20):
                    s.sendall(body[i : i + 2**20])
                    time.sleep(0.02)
                got["status"] = int(s.makefile("rb").readline().split()[1])

        th = threading.Thread(target=upload)
        th.start()
        scrapes = []
        try:
            wait_until(lambda: receiving(agent.proc.pid, ev), 30, what="the upload arriving")
            # Both slots taken (the upload, the attacker): a third large upload waits its turn.
            assert post_upload(url, multipart(form, b"third.bin", b"t" * 200_000))[0] == 503
            while th.is_alive() or len(scrapes) < 4:
                for path in ("/metrics", "/-/healthy"):
                    t0 = time.monotonic()
                    status = _request(agent.url + path)[0]
                    scrapes.append((path, status, time.monotonic() - t0))
                with contextlib.suppress(OSError):  # the agent drops it when the drain's 30 s are up
                    attacker.send(b"z")  # a byte now and then: the drain goes on
                time.sleep(0.1)
        finally:
            th.join()
            attacker.close()
        assert got == {"status": 303}
        assert (ev / "artefacts/ex1/email/big.bin").read_bytes() == content
        # Every scrape answered, none queued behind the upload or the attacker (their read timeout is 10 s).
        assert all(status == 200 for _, status, _ in scrapes), scrapes
        assert max(took for _, _, took in scrapes) < 5, scrapes


def _unauthenticated(url: str, auth: str | None, length: int = 8 * 2**20) -> bytes:
    """The head of a large upload without the right password (its body is never sent): the reply
    as it comes, but for its Date header."""
    u = urlsplit(url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(
            (
                f"POST {u.path} HTTP/1.1\r\nHost: x\r\n"
                + (f"Authorization: {auth}\r\n" if auth else "")
                + f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {length}\r\n\r\n"
            ).encode()
        )
        reply = s.makefile("rb").read()
    return b"\r\n".join(line for line in reply.split(b"\r\n") if not line.startswith(b"Date: "))


WRONG = "Basic " + base64.b64encode(f"{USER}:not-the-password".encode()).decode()


def test_an_unauthenticated_upload_gets_401_whether_or_not_the_slots_are_full(tmp_path: Path) -> None:
    ev = _small_exercise(tmp_path)
    journal = ev / "exercises" / "ex1.journal.jsonl"
    with board(tmp_path, ev) as agent:
        url = f"{agent.url}/exercise/ex1"
        u = urlsplit(url)
        form = _form(_request(url)[1])
        before = journal.read_bytes()
        free = {auth: _unauthenticated(url, auth) for auth in (None, WRONG)}
        for reply in free.values():
            assert reply.startswith(b"HTTP/1.1 401 ") and b"Retry-After" not in reply, reply
        head = (
            f"POST {u.path} HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        )
        slow = []
        try:
            for i in range(MAX_STREAMS):  # the team's uploads on a slow link hold every slot
                body = multipart(form, f"slow-{i}.bin".encode(), b"s" * 10_000_000)
                s = socket.create_connection((u.hostname, u.port), timeout=30)
                s.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body[:300_000])
                slow.append(s)
            wait_until(lambda: len(receiving(agent.proc.pid, ev)) == MAX_STREAMS, 10, what="both slots")
            assert post_upload(url, multipart(form, b"third.bin", b"t" * 200_000))[0] == 503
            # Without the password: the very same 401 as when the slots were free, never the 503.
            for auth, reply in free.items():
                assert _unauthenticated(url, auth) == reply, auth
            # Guessing on: 401, then the failed-login limit's 429 -- never a word about the slots.
            guesses = [_unauthenticated(url, WRONG)[:12] for _ in range(15)]
            assert set(guesses) == {b"HTTP/1.1 401", b"HTTP/1.1 429"} and guesses[-1] == b"HTTP/1.1 429", guesses
            assert _request(url)[0] == 200  # the team's password still passes
        finally:
            for s in slow:
                s.close()
        wait_until(
            lambda: not receiving(agent.proc.pid, ev) and not [f for f in _files(ev) if "slow-" in f],
            30,
            what="the cut-off uploads cleaned away",
        )
        assert journal.read_bytes() == before


def test_an_unauthenticated_flood_never_turns_the_teams_uploads_away(tmp_path: Path) -> None:
    ev = _small_exercise(tmp_path)
    with board(tmp_path, ev) as agent:
        url = f"{agent.url}/exercise/ex1"
        form = _form(_request(url)[1])
        stop = threading.Event()
        flood: dict[bytes, int] = {}
        lock = threading.Lock()

        def flooder() -> None:  # large uploads without the password, one after another
            deadline = time.monotonic() + 60
            for _ in range(5000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    status = _unauthenticated(url, None)[:12]
                except OSError:
                    status = b"error"
                with lock:
                    flood[status] = flood.get(status, 0) + 1

        threads = [threading.Thread(target=flooder) for _ in range(6)]
        for th in threads:
            th.start()
        codes = []
        try:
            wait_until(lambda: sum(flood.values()) > 50, 20, what="the flood under way")
            content = os.urandom(2 * 2**20)
            for i in range(30):
                codes.append(post_upload(url, multipart(form, f"team-{i}.bin".encode(), content))[0])
        finally:
            stop.set()
            for th in threads:
                th.join()
        assert codes == [303] * 30, {c: codes.count(c) for c in codes}
        assert set(flood) == {b"HTTP/1.1 401"} and sum(flood.values()) > 100, flood
        names = sorted(p.name for p in (ev / "artefacts/ex1/email").iterdir())
        assert names == sorted(f"team-{i}.bin" for i in range(30))
