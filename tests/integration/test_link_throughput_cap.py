"""The daily byte cap is a promise (issue 13, point 2), and ``collect-once --use-state`` stores a
throughput test the way a scheduled run does (points 3 and 5).

Real iperf3 on a 20 Mbit/s tbf link into a namespace. What crossed the link is read from the
iperf3 *server's* own JSON reports (every interval, the ``--omit`` ones included), not from the
agent's arithmetic: across several tests in a day it never passes ``max_bytes_per_day``."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.state import StateStore
from collectors.link import ledger_kv_key
from tests.helpers.collect import write_config
from tests.helpers.common import need
from tests.helpers.linkrig import Rig
from tests.helpers.netns import peer

pytestmark = [pytest.mark.netns, pytest.mark.integration]

AGENT = Path(sys.executable).parent / "continuity-agent"
RATE = 20e6

CONFIG = """
agent: {{site: hq, state_dir: {state}}}
sites: [{{name: hq, class: c}}, {{name: branch, class: c{contract}}}]
site_classes:
  c: {{min_download: 1Mbit/s, hysteresis: 1}}
targets:
  - {{name: standards, kind: standards}}
  - name: branch-link
    kind: link
    site: branch
    host: {ip}
    throughput: {{duration: 2s, omit: 1s, interval: 6h, max_tests_per_day: 20, busy_retries: 2,
                 busy_retry_delay: 1s{cap}}}
"""


def server_bytes(log: Path) -> list[int]:
    """Bytes each test moved, from the iperf3 server's JSON reports (all intervals)."""
    text, dec, pos, out = log.read_text(), json.JSONDecoder(), 0, []
    while True:
        while pos < len(text) and text[pos] not in "{":
            pos += 1
        if pos >= len(text):
            return out
        report, pos = dec.raw_decode(text, pos)
        out.append(sum(int(iv["sum"]["bytes"]) for iv in report.get("intervals", [])))


@pytest.mark.parametrize(
    ("cap", "contract"),
    [
        ("1MB", ""),  # no contracted rate, no earlier test: the first test is sized by the cap
        ("3MB", ""),
        ("3MB", ", contracted_download: 2Mbit/s, contracted_upload: 2Mbit/s"),  # the line is 10x faster
    ],
)
def test_bytes_moved_never_pass_the_daily_cap(tmp_path: Path, cap: str, contract: str) -> None:
    need("tc")
    limit = {"1MB": 1_000_000, "3MB": 3_000_000}[cap]
    with peer("cap") as p:
        p.shape(RATE)
        log = tmp_path / "iperf3-server.json"
        p.iperf3_server(log=log, json=True)
        path = write_config(
            tmp_path,
            CONFIG.format(
                state=tmp_path / "state", ip=p.ns_ip, contract=contract, cap=f", max_bytes_per_day: {cap}"
            ),
        )
        rig = Rig(path, StateStore(tmp_path / "state"))
        try:
            results = [asyncio.run(rig.run("branch-link", "throughput")) for _ in range(4)]
            rig.store.flush()
            ledger = rig.store.get_kv(ledger_kv_key("branch"))
        finally:
            rig.close()
        moved = server_bytes(log)
    ran = [r for r in results if r.ok]
    refused = [r for r in results if not r.ok]
    assert ran and results[0].ok, [r.message for r in results]
    assert refused and all(r.reason == "throughput_cap" for r in refused), [r.message for r in refused]
    assert len(moved) == 2 * len(ran)  # one server report per direction per test that ran
    assert sum(moved) <= limit, (moved, limit)
    # The agent's ledger (the client's JSON: the larger of bytes sent and received, omit included)
    # never counts less than the server saw arrive, and it too stays within the cap.
    assert sum(moved) <= sum(e[1] for e in ledger) <= limit, (ledger, moved)
    for r in ran:
        assert r.info["download"]["bytes_per_second"] > 1e6 / 8
    for r in refused:
        msg = r.message or ""
        assert "~0B" not in msg and " 0B" not in msg, msg
        m = re.search(r"moved ([\d.]+[kMG]?B) in (\d+) throughput tests? in the last 24h", msg)
        assert m, msg
        assert f"max_bytes_per_day {cap}" in msg, msg
        assert ("next allowed at" in msg) != ("more than the whole cap" in msg), msg
    if contract:
        # The contracted 2 Mbit/s sized the first test; the second knows the line's real rate.
        assert results[0].info["download_byte_limit"] < 2e6 * 3 / 8
        # ... which at 2 x 3 s is more than the whole 3 MB cap: no test fits until the cap is raised.
        assert "download last measured" in (refused[0].message or ""), refused[0].message
        assert "more than the whole cap" in (refused[0].message or ""), refused[0].message


def test_collect_once_use_state_stores_the_measurement(tmp_path: Path) -> None:
    with peer("once") as p:
        p.shape(RATE)
        p.iperf3_server()
        path = write_config(
            tmp_path, CONFIG.format(state=tmp_path / "state", ip=p.ns_ip, contract="", cap="")
        )
        once = subprocess.run(
            [str(AGENT), "collect-once", "--config", str(path), "--task", "throughput", "--use-state", "branch-link"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert once.returncode == 0, once.stdout + once.stderr
    values = {
        (m.group(1), m.group(2)): m.group(3)
        for m in re.finditer(r"^(continuity_link_throughput_\w+)\{([^}]*)\} (\S+)$", once.stdout, re.M)
    }
    assert values, once.stdout
    store = StateStore(tmp_path / "state")
    try:
        stored = store.snapshot().last_success.get(("branch-link", "throughput"))
    finally:
        store.close()
    assert stored is not None and stored.ok  # the measurement, not only the byte ledger
    for s in stored.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        text = values[(s.name, labels)]
        # Printed exactly: the shortest repr that reads back as the stored float.
        assert text == repr(s.value) and float(text) == s.value, (text, s.value)
    stamp = values[("continuity_link_throughput_test_timestamp_seconds", 'class="c"')]
    assert "e+" not in stamp and float(stamp) > 1.7e9

    sites = subprocess.run(
        [str(AGENT), "sites", "--config", str(path), "--site", "branch", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sites.returncode in (0, 1), sites.stderr
    download = next(
        c for c in json.loads(sites.stdout)["sites"][0]["criteria"] if c["criterion"] == "download"
    )
    down = next(s.value for s in stored.samples if s.labels.get("direction") == "download")
    assert download["value"] == down and download["value"] > 1e6
