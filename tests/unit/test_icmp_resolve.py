"""The ICMP/link target resolver answers address literals itself, exactly as the system resolver
does, and leaves names (and literals it cannot read) to getaddrinfo."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agent.plugin import CollectorError
from collectors.icmp import resolve

ROOT = Path(__file__).resolve().parents[2]
HOSTS = ["127.0.0.1", "127.1", "::1", "::0001", "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1", "localhost"]


async def _system(host: str, family: int) -> tuple[int, str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, family=family, type=socket.SOCK_DGRAM)
    return int(infos[0][0]), str(infos[0][4][0])


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("family", [socket.AF_UNSPEC, socket.AF_INET, socket.AF_INET6])
def test_resolve_answers_as_getaddrinfo(host: str, family: int) -> None:
    async def both() -> tuple[object, object]:
        out: list[object] = []
        for fn in (resolve, _system):
            try:
                out.append(await fn(host, family))
            except (CollectorError, socket.gaierror):
                out.append("error")
        return out[0], out[1]

    ours, system = asyncio.run(both())
    assert ours == system


def test_an_address_literal_needs_no_resolver() -> None:
    code = (
        "import asyncio, sys\n"
        "from collectors.icmp import resolve\n"
        "print(asyncio.run(resolve('127.0.0.1')), asyncio.run(resolve('::1')), 'encodings.idna' in sys.modules)\n"
    )
    cmd = [sys.executable, "-c", code]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.split() == ["(2,", "'127.0.0.1')", "(10,", "'::1')", "False"]
