"""The board's artefact upload on a real agent, against someone who may write in the evidence
directory and against slow senders:

- the file being received has no name until it is complete (an unnamed ``O_TMPFILE`` in its
  directory): nobody can swap it for another file meanwhile, so the artefact recorded is the one
  uploaded, its hash the one in the journal; on a file system without unnamed files (a real FUSE
  mount, bindfs, refusing ``O_TMPFILE``) the upload still goes through, by a temporary file;
- a sender slower than 1 Mbit/s (a remote site's ADSL upstream) keeps its upload slot while
  nobody else needs one, and is taken whole; with both slots held by crawlers, the next upload
  cuts one of them and is taken, rather than wait the 2 hours they would hold them; real uploads
  over remote-site links (network namespaces shaped by tbf): 64 MiB over 2 Mbit/s, a photo over
  0.32 Mbit/s, both taken whole.
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
from tests.helpers.common import AgentProcess, need, need_root, unavailable, wait_until
from tests.helpers.netns import Peer, peer
from tests.integration.test_exercise_board import AUTH, PASSWORD, USER, _request, _small_exercise, board
from tests.integration.test_exercise_board_artefacts import BOUNDARY, _error, _form, multipart, post_upload, receiving
from tests.integration.test_http_stream import PacedSender, _response
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


def _paced(agent: AgentProcess, form: dict[str, str], name: bytes, content: bytes, rate: int) -> PacedSender:
    """An upload of ``content`` as ``name`` at ``rate`` bytes/s (a tenth of it every 0.1 s)."""
    url = f"{agent.url}/exercise/ex1"
    body = multipart(form, name, content)

    def connect() -> socket.socket:
        return socket.create_connection(("127.0.0.1", agent.port), timeout=120)

    up = PacedSender(connect, _head(url, len(body)), body, rate // 10, 0.1)
    up.start()
    return up


def test_alone_a_sender_slower_than_the_floor_is_taken_whole(tmp_path: Path) -> None:
    """A photo sent at 40 kB/s (0.32 Mbit/s, a remote site's ADSL upstream) while nobody else
    uploads: behind the 1 Mbit/s floor from its 15th second on, and taken whole all the same."""
    ev = _small_exercise(tmp_path)
    with board(tmp_path, ev) as agent:
        form = _form(_request(f"{agent.url}/exercise/ex1")[1])
        content = os.urandom(720_000)
        up = _paced(agent, form, b"console.jpg", content, 40_000)
        up.join(timeout=120)
        assert up.answer[0] == 303, up.answer
        # Longer than the floor allows (10 s + its size at 1 Mbit/s): the floor did not bite.
        assert up.took > 10 + len(content) / MIN_UPLOAD_RATE, up.took
        assert (ev / "artefacts/ex1/email/console.jpg").read_bytes() == content
        print(f"alone at 40 kB/s: {len(content)} bytes taken in {up.took:.1f} s")


def test_a_new_upload_cuts_a_crawler_holding_a_slot_and_is_taken(tmp_path: Path) -> None:
    """Both slots held by signed-in uploads of 64 MiB at 10 kB/s (they would hold them for 2 h):
    while neither is yet behind the floor (its first 10 s) another upload gets the 503; after,
    the next one cuts the crawler furthest behind -- its page saying why -- and is taken; the
    other crawler goes on."""
    ev = _small_exercise(tmp_path)
    with board(tmp_path, ev) as agent:
        url = f"{agent.url}/exercise/ex1"
        form = _form(_request(url)[1])
        crawl = b"c" * (MAX_UPLOAD_BYTES - 4096)
        crawlers = []
        try:
            for i in range(MAX_STREAMS):
                crawlers.append(_paced(agent, form, f"crawl-{i}.bin".encode(), crawl, 10_000))
                wait_until(lambda: len(receiving(agent.proc.pid, ev)) == len(crawlers), 20, what="the slot taken")
                # The first one furthest behind, by half a second: only its start (0 to 0.1 s before
                # the next one's, by when the poll above saw it) set them apart.
                time.sleep(0.5)
            assert post_upload(url, multipart(form, b"next.bin", b"n" * 200_000))[0] == 503
            time.sleep(12)  # both behind the floor now: 10 s, and not 1 Mbit/s since
            t0 = time.monotonic()
            status, page, _ = post_upload(url, multipart(form, b"next.bin", b"n" * 200_000))
            took = time.monotonic() - t0
            assert status == 303, page[:500]
            crawlers[0].join(timeout=20)  # the first one, furthest behind
            assert [c.is_alive() for c in crawlers] == [False, True]
            status, page = crawlers[0].answer[0], crawlers[0].answer[1].decode()
            print(
                f"a newcomer was answered in {took:.3f} s; the crawler it cut: {status} after {crawlers[0].took:.1f} s"
            )
            # The page with the reason, unless the crawler was reset first (it was still sending).
            assert status in (400, 0), crawlers[0].answer
            if status == 400:
                assert _error(page) == (
                    "the upload: cannot read: the request body arrived slower than "
                    f"{MIN_UPLOAD_RATE * 8 / 1e6:g} Mbit/s while another upload was waiting for its slot"
                )
            assert (ev / "artefacts/ex1/email/next.bin").read_bytes() == b"n" * 200_000
            assert len(receiving(agent.proc.pid, ev)) == 1  # the other crawler, still going
        finally:
            for c in crawlers:
                c.stop()
                c.join(timeout=20)
        wait_until(lambda: not receiving(agent.proc.pid, ev), 20, what="the crawlers' files gone")
        assert sorted(p.name for p in (ev / "artefacts/ex1/email").iterdir()) == ["next.bin"]


def _curl_upload(p: Peer, url: str, form: dict[str, str], path: Path) -> tuple[str, float, float]:
    """Upload ``path`` from the board form at ``url`` by curl in namespace ``p``, as a browser
    sends the form (``Expect: 100-continue``): the status, seconds taken and Mbit/s."""
    fields = [a for k, v in form.items() for a in ("-F", f"{k}={v}")]
    r = p.exec(
        need("curl"), "-sS", "-o", "/dev/null", "-w", "%{http_code} %{time_total} %{speed_upload}",
        "-u", f"{USER}:{PASSWORD}", *fields, "-F", f"file=@{path}", url,
        timeout=1200,
    )  # fmt: skip
    code, total, speed = r.stdout.split()
    return code, float(total), float(speed) * 8 / 1e6


@pytest.mark.slow
def test_a_64_mib_upload_over_a_2_mbit_link_is_taken_whole(tmp_path: Path) -> None:
    """The largest upload the board takes, from a remote site on a 2 Mbit/s line (a network
    namespace whose veth is shaped by tbf both ways), by curl: taken whole."""
    with peer("up") as p:
        p.shape(2_000_000)
        ev = _small_exercise(tmp_path)
        with board(tmp_path, ev, host=p.host_ip) as agent:
            url = f"{agent.url}/exercise/ex1"
            form = _form(_request(url)[1])
            content = os.urandom(MAX_UPLOAD_BYTES)
            (tmp_path / "big.bin").write_bytes(content)
            code, total, mbit = _curl_upload(p, url, form, tmp_path / "big.bin")
            print(f"64 MiB over 2 Mbit/s: {code} in {total:.1f} s, {mbit:.2f} Mbit/s")
            assert code == "303"
            got = _recorded(ev, "big.bin")
            assert got["sha256"] == hashlib.sha256(content).hexdigest()
            assert (ev / got["path"]).read_bytes() == content


@pytest.mark.slow
def test_a_photo_over_a_0_32_mbit_link_keeps_its_slot_and_is_taken_whole(tmp_path: Path) -> None:
    """A 4 MB photo of a console from a remote site on ADSL (0.32 Mbit/s upstream; a network
    namespace shaped by tbf both ways), by curl: behind the 1 Mbit/s floor from its 15th second
    on, it keeps its slot -- an upload that comes meanwhile takes the other, free one and leaves
    it be -- and is taken whole."""
    with peer("adsl") as p:
        p.shape(320_000)
        ev = _small_exercise(tmp_path)
        with board(tmp_path, ev, host=p.host_ip) as agent:
            url = f"{agent.url}/exercise/ex1"
            form = _form(_request(url)[1])
            content = os.urandom(4_000_000)
            (tmp_path / "console.jpg").write_bytes(content)
            done: list[tuple[str, float, float]] = []
            th = threading.Thread(target=lambda: done.append(_curl_upload(p, url, form, tmp_path / "console.jpg")))
            t0 = time.monotonic()
            th.start()
            try:
                wait_until(lambda: receiving(agent.proc.pid, ev), 30, what="the photo arriving")
                time.sleep(max(0.0, t0 + 30 - time.monotonic()))  # well behind the floor by now
                assert post_upload(url, multipart(form, b"log.txt", b"l" * 1_000_000))[0] == 303
            finally:
                th.join(timeout=600)
            [(code, total, mbit)] = done
            print(f"a 4 MB photo over 0.32 Mbit/s: {code} in {total:.1f} s, {mbit:.3f} Mbit/s")
            assert code == "303"
            assert total > 10 + len(content) / MIN_UPLOAD_RATE  # longer than the floor allows
            got = _recorded(ev, "console.jpg")
            assert got["sha256"] == hashlib.sha256(content).hexdigest()
            assert (ev / "artefacts/ex1/email/log.txt").read_bytes() == b"l" * 1_000_000
