"""Attaching an artefact from the exercise board against attaching it from the command line, in the
same run, on the same files.

python -m bench.board_upload [--repeat 5] [--no-docs]

A real agent (``continuity-agent run`` with a web config user) on loopback; each upload is one
multipart POST of the board's attach form through http.client, timed from sending the request to
reading the 303. The peer is ``Recorder.artefact`` (what ``exercise artefact`` runs, without the
interpreter start-up) copying the same file into another exercise. The agent's peak RSS (VmHWM)
is read before and after the 64 MiB uploads: it must not grow with the file (the body is
streamed to disk, never held whole). Results go into docs/PERFORMANCE.md, section "Exercise
board: artefact upload".
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import bcrypt
import yaml

from bench.common import free_port, update_performance_md

SECTION = "Exercise board: artefact upload"
ROOT = Path(__file__).resolve().parents[1]
USER, PASSWORD = "bench", "bench-password-1"
AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
BOUNDARY = "----benchBoundary0123456789"
MIB = 2**20


def _hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _request(port: int, method: str, path: str, body: bytes | None = None, ctype: str = "") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        headers = {"Authorization": AUTH, **({"Content-Type": ctype} if ctype else {})}
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def _upload(port: int, csrf: str, name: str, content: bytes) -> float:
    head = "".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in {"csrf": csrf, "kind": "artefact", "runbook": "email"}.items()
    )
    file_head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'
    body = head.encode() + file_head.encode() + content + f"\r\n--{BOUNDARY}--\r\n".encode()
    t0 = time.perf_counter()
    status, text = _request(port, "POST", "/exercise/bench", body, f"multipart/form-data; boundary={BOUNDARY}")
    took = time.perf_counter() - t0
    if status != 303:
        raise RuntimeError(f"upload {name}: {status} {text[:300]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args()
    from agent import cli
    from agent.exercises.record import Recorder

    runbooks = ROOT / "runbooks"
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as td:
        tmp = Path(td)
        ev = tmp / "ev"
        ev.mkdir()
        for name in ("bench", "peer"):
            rc = cli.main(["exercise", "start", "--runbooks", str(runbooks), "--evidence", str(ev), name,
                           "--type", "tabletop", "--systems", "email"])  # fmt: skip
            assert rc == 0
        port = free_port()
        (tmp / "agent.yml").write_text(yaml.safe_dump({
            "agent": {"site": "bench", "state_dir": str(tmp / "state"), "listen_address": f"127.0.0.1:{port}"},
            "exercises": {"runbooks_dir": str(runbooks), "evidence_dir": str(ev)},
        }))  # fmt: skip
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
        (tmp / "web.yml").write_text(yaml.safe_dump({"basic_auth_users": {USER: hashed}}))
        exe = Path(sys.executable).with_name("continuity-agent")
        proc = subprocess.Popen(
            [str(exe), "run", "--config", str(tmp / "agent.yml"), "--web.config.file", str(tmp / "web.yml")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    status, page = _request(port, "GET", "/exercise/bench")
                    if status == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("agent not ready")
                time.sleep(0.2)
            m = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
            assert m
            csrf = m.group(1)
            time.sleep(2)  # settle: first collections, imports
            idle_hwm = _hwm(proc.pid)
            rows = []
            for size in (10 * MIB, 64 * MIB - 4096):
                content = os.urandom(size)
                src = tmp / "src.bin"
                src.write_bytes(content)
                hwm0 = _hwm(proc.pid)
                ups = [_upload(port, csrf, f"u{size}-{i}.bin", content) for i in range(args.repeat)]
                hwm1 = _hwm(proc.pid)
                rec = Recorder(runbooks, ev, "peer", "bench")
                peers = []
                for i in range(args.repeat):
                    dst = tmp / f"p{size}-{i}.bin"
                    os.link(src, dst)
                    t0 = time.perf_counter()
                    rec.artefact("email", dst)
                    peers.append(time.perf_counter() - t0)
                up, peer = statistics.median(ups), statistics.median(peers)
                rows.append((size, up, peer, hwm1 - hwm0, hwm1))
                print(f"{size / MIB:.0f} MiB: upload median {up * 1000:.0f} ms ({size / up / MIB:.0f} MiB/s), "
                      f"CLI copy median {peer * 1000:.0f} ms, ratio {up / peer:.2f}; "
                      f"agent peak RSS {hwm0 / MIB:.1f} -> {hwm1 / MIB:.1f} MiB", flush=True)  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    table = "\n".join(
        f"| {s / MIB:.0f} MiB | {u * 1000:.0f} ms ({s / u / MIB:.0f} MiB/s) | {p * 1000:.0f} ms | {u / p:.2f} | "
        f"+{g / MIB:.1f} MiB (to {h / MIB:.1f} MiB) |"
        for s, u, p, g, h in rows
    )
    body = f"""Measured {date.today().isoformat()} on {platform.machine()}, {os.cpu_count()} CPUs, loopback
(`python -m bench.board_upload`, median of {args.repeat}). One multipart POST of the board's attach
form to a real agent, against `Recorder.artefact` (the command's copy, without interpreter start-up)
on the same file. The agent's peak RSS was {idle_hwm / MIB:.1f} MiB before the first upload.

| file | board upload | command-line copy | ratio | agent peak RSS during the uploads |
| --- | --- | --- | --- | --- |
{table}

The upload is streamed (reads of up to 256 KiB into an unnamed file, O_TMPFILE, in the artefact's
directory, hashed on the way): the agent's peak memory does not grow with the file. The time over
the command's copy is the loopback transfer, the multipart scan and the fsync of a file written
while it arrives."""
    if not args.no_docs:
        update_performance_md(SECTION, body)


if __name__ == "__main__":
    main()
