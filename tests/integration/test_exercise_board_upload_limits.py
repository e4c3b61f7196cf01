"""The board's artefact upload on a real agent, against someone who may write in the evidence
directory and against slow senders:

- the file being received has no name until it is complete (an unnamed ``O_TMPFILE`` in its
  directory): nobody can swap it for another file meanwhile, so the artefact recorded is the one
  uploaded, its hash the one in the journal; on a file system without unnamed files (a real FUSE
  mount, bindfs, refusing ``O_TMPFILE``) the upload still goes through, by a temporary file;
- a signed-in sender slower than 1 Mbit/s loses its upload slot within seconds, not the 17 minutes
  a 64 MiB body took at the old 64 KiB/s (the next upload then goes through), while a real 64 MiB
  upload over a 2 Mbit/s remote-site link (a network namespace shaped by tbf) is taken whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from agent.exercises.journal import Journal
from agent.exercises.web import MAX_UPLOAD_BYTES
from agent.http import MAX_STREAMS, MIN_UPLOAD_RATE
from tests.helpers import exercise_script as xs
from tests.helpers.common import need, need_root, unavailable, wait_until
from tests.helpers.netns import peer
from tests.integration.test_exercise_board import AUTH, PASSWORD, USER, _request, _small_exercise, board
from tests.integration.test_exercise_board_artefacts import BOUNDARY, _error, _form, multipart, post_upload, receiving
from tests.integration.test_http_stream import _response
from tests.unit.test_exercise_status import ok

pytestmark = pytest.mark.integration


def _head(url: str, length: int) -> bytes:
    u = urlsplit(url)
    return (
        f"POST {u.path} HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _recorded(ev: Path, name: str) -> dict[str, str]:
    [entry] = [e for e in Journal.open(ev, "ex1").read() if e["action"] == "artefact" and e["path"].endswith(name)]
    return {"path": entry["path"], "sha256": entry["file_sha256"]}


def test_the_file_being_received_has_no_name_anyone_could_swap(tmp_path: Path) -> None:
    ev = _small_exercise(tmp_path)
    with board(tmp_path, ev) as agent:
        url = f"{agent.url}/exercise/ex1"
        form = _form(_request(url)[1])
        assert post_upload(url, multipart(form, b"first.txt", b"1"))[0] == 303
        lane = ev / "artefacts/ex1/email"
        evil = tmp_path / "evil"
        content = os.urandom(3 * 2**20)
        body = multipart(form, b"report.bin", content)
        stop = threading.Event()
        swapped: list[str] = []

        def attacker() -> None:  # may write the lane's directory: replaces any other file appearing there
            while not stop.is_set():
                for p in lane.iterdir():
                    if p.name not in ("first.txt", "report.bin"):  # the upload, not the artefacts
                        evil.write_bytes(b"not what was uploaded")
                        with contextlib.suppress(OSError):
                            os.replace(evil, p)
                            swapped.append(p.name)
                time.sleep(0.001)

        th = threading.Thread(target=attacker)
        th.start()
        try:
            with socket.create_connection(("127.0.0.1", agent.port), timeout=60) as s:
                s.sendall(_head(url, len(body)) + body[: 2**20])
                wait_until(lambda: receiving(agent.proc.pid, ev), 20, what="the upload being written")
                time.sleep(0.3)  # the attacker's turn, with the upload half-way
                held = receiving(agent.proc.pid, ev)
                s.sendall(body[2**20 :])
                status, _ = _response(s.makefile("rb"))
        finally:
            stop.set()
            th.join()
        assert status == 303
        got = _recorded(ev, "report.bin")
        assert (ev / got["path"]).read_bytes() == content
        assert got["sha256"] == hashlib.sha256(content).hexdigest()
        # While it was written the file had no name in the lane: the agent held it open, unnamed.
        assert [h.rpartition("/")[2][:1] for h in held] == ["#"], held
        assert swapped == [], swapped
        assert (ev / got["path"]).stat().st_mode & 0o777 == 0o600
        assert sorted(p.name for p in lane.iterdir()) == ["first.txt", "report.bin"]


@contextlib.contextmanager
def _bindfs(source: Path, mountpoint: Path) -> Iterator[Path]:
    """``source`` seen through a FUSE file system (bindfs) at ``mountpoint``."""
    need_root("mounting a FUSE file system")
    bindfs = need("bindfs")
    if not Path("/dev/fuse").exists():
        unavailable("no /dev/fuse")
    source.mkdir(parents=True, exist_ok=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([bindfs, str(source), str(mountpoint)], capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        unavailable(f"cannot mount bindfs: {r.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True)


def test_where_the_file_system_has_no_unnamed_files_the_upload_uses_a_temporary_file(tmp_path: Path) -> None:
    with _bindfs(tmp_path / "disk", tmp_path / "ev") as ev:
        with pytest.raises(OSError) as refused:  # a real file system that refuses them
            os.close(os.open(ev, os.O_TMPFILE | os.O_WRONLY, 0o600))
        assert refused.value.errno == 95  # EOPNOTSUPP
        ok(ev, "start", "ex1", "--type", "partial_recovery", "--systems", "email", "--declared-at", xs.at(0))
        with board(tmp_path, ev) as agent:
            url = f"{agent.url}/exercise/ex1"
            form = _form(_request(url)[1])
            content = os.urandom(2 * 2**20)
            body = multipart(form, b"report.bin", content)
            with socket.create_connection(("127.0.0.1", agent.port), timeout=60) as s:
                s.sendall(_head(url, len(body)) + body[: 2**20])
                wait_until(lambda: receiving(agent.proc.pid, ev), 20, what="the upload being written")
                [held] = receiving(agent.proc.pid, ev)
                s.sendall(body[2**20 :])
                status, _ = _response(s.makefile("rb"))
            assert status == 303
            assert held.startswith("artefacts/ex1/email/.report.bin.") and held.endswith(".tmp"), held
            got = _recorded(ev, "report.bin")
            assert (ev / got["path"]).read_bytes() == content
            assert got["sha256"] == hashlib.sha256(content).hexdigest()
            assert sorted(p.name for p in (ev / "artefacts/ex1/email").iterdir()) == ["report.bin"]
            # A refused upload there leaves nothing either.
            status, page, _ = post_upload(url, multipart(form, b"report.bin", b"again"))
            assert status == 400 and "already recorded" in _error(page)
            assert sorted(p.name for p in (ev / "artefacts/ex1/email").iterdir()) == ["report.bin"]


def test_a_sender_slower_than_the_minimum_rate_loses_its_slot_within_seconds(tmp_path: Path) -> None:
    """Both slots taken by signed-in uploads of 64 MiB sent at 10 kB/s (they would have held them
    for 17 minutes): each is refused once it falls behind 1 Mbit/s -- some 10 s in -- with a page
    saying so, and the next upload goes through."""
    ev = _small_exercise(tmp_path)
    with board(tmp_path, ev) as agent:
        url = f"{agent.url}/exercise/ex1"
        form = _form(_request(url)[1])
        body = multipart(form, b"crawl.bin", b"c" * (MAX_UPLOAD_BYTES - 4096))
        stop = threading.Event()
        answers: dict[int, tuple[int, str, float]] = {}

        def crawler(i: int) -> None:
            with socket.create_connection(("127.0.0.1", agent.port), timeout=120) as s:
                t0 = time.monotonic()
                s.sendall(_head(url, len(body)))

                def send() -> None:
                    pos = 0
                    while not stop.is_set() and pos < len(body):
                        try:
                            s.sendall(body[pos : pos + 1000])
                        except OSError:
                            return
                        pos += 1000
                        time.sleep(0.1)

                sender = threading.Thread(target=send)
                sender.start()
                try:
                    status, page = _response(s.makefile("rb"))
                    answers[i] = (status, page.decode(), time.monotonic() - t0)
                finally:
                    stop.set()
                    sender.join()

        threads = [threading.Thread(target=crawler, args=(i,)) for i in range(MAX_STREAMS)]
        for th in threads:
            th.start()
        try:
            wait_until(lambda: len(receiving(agent.proc.pid, ev)) == MAX_STREAMS, 20, what="both slots taken")
            assert post_upload(url, multipart(form, b"next.bin", b"n" * 200_000))[0] == 503
        finally:
            for th in threads:
                th.join(timeout=90)
        assert sorted(answers) == list(range(MAX_STREAMS)), answers
        for status, page, took in answers.values():
            assert status == 400
            assert _error(page) == (
                "the upload: cannot read: the request body arrived slower than "
                f"{MIN_UPLOAD_RATE * 8 / 1e6:g} Mbit/s, the least this server takes"
            )
            print(f"a 10 kB/s sender lost its slot after {took:.1f} s")
        # The slots are free: the next upload is taken; the refused ones left nothing.
        assert post_upload(url, multipart(form, b"next.bin", b"n" * 200_000))[0] == 303
        assert sorted(p.name for p in (ev / "artefacts/ex1/email").iterdir()) == ["next.bin"]


@pytest.mark.slow
def test_a_64_mib_upload_over_a_2_mbit_link_is_taken_whole(tmp_path: Path) -> None:
    """The largest upload the board takes, from a remote site on a 2 Mbit/s line (a network
    namespace whose veth is shaped by tbf both ways), by curl as a browser would send the form
    (``Expect: 100-continue``): taken whole, well within the minimum rate."""
    curl = need("curl")
    with peer("up") as p:
        p.shape(2_000_000)
        ev = _small_exercise(tmp_path)
        with board(tmp_path, ev, host=p.host_ip) as agent:
            url = f"{agent.url}/exercise/ex1"
            form = _form(_request(url)[1])
            content = os.urandom(MAX_UPLOAD_BYTES)
            (tmp_path / "big.bin").write_bytes(content)
            fields = [a for k, v in form.items() for a in ("-F", f"{k}={v}")]
            t0 = time.monotonic()
            r = p.exec(
                curl, "-sS", "-o", "/dev/null", "-w", "%{http_code} %{time_total} %{speed_upload}",
                "-u", f"{USER}:{PASSWORD}", *fields, "-F", f"file=@{tmp_path / 'big.bin'}", url,
                timeout=1200,
            )  # fmt: skip
            took = time.monotonic() - t0
            code, total, speed = r.stdout.split()
            mbit = float(speed) * 8 / 1e6
            print(f"64 MiB over 2 Mbit/s: {code} in {float(total):.1f} s ({took:.1f} s), {mbit:.2f} Mbit/s")
            assert code == "303", (r.stdout, r.stderr)
            got = _recorded(ev, "big.bin")
            assert got["sha256"] == hashlib.sha256(content).hexdigest()
            assert (ev / got["path"]).read_bytes() == content
