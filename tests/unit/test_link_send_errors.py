"""Which send errors are the link's (a lost probe) and which are the agent's (a failed run)."""

from __future__ import annotations

import errno
import os
from collections import Counter

import pytest

from collectors import icmp


@pytest.mark.parametrize(
    "code",
    [
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
        errno.ECONNREFUSED,
        errno.EADDRNOTAVAIL,
        errno.EACCES,
        errno.EPERM,
    ],
)
def test_path_down_errors_are_lost_probes(code: int) -> None:
    assert icmp.path_down(OSError(code, os.strerror(code))) == os.strerror(code)


@pytest.mark.parametrize("code", [errno.EINVAL, errno.EMSGSIZE, errno.EBADF, errno.ENOMEM])
def test_other_send_errors_are_the_agents(code: int) -> None:
    assert icmp.path_down(OSError(code, os.strerror(code))) is None


def test_send_errors_are_described_with_their_counts() -> None:
    assert icmp.Burst([0.01, None]).describe_send_errors() == ""
    one = icmp.Burst([None] * 20, Counter({"Network is unreachable": 20}))
    assert one.unsent == 20
    assert one.describe_send_errors() == "20 probes could not be sent (Network is unreachable)"
    mixed = icmp.Burst([None] * 3, Counter({"Network is unreachable": 2, "Permission denied": 1}))
    assert mixed.describe_send_errors() == (
        "3 probes could not be sent (Network is unreachable x2, Permission denied x1)"
    )
    assert icmp.Burst([None], Counter({"No route to host": 1})).describe_send_errors() == (
        "1 probe could not be sent (No route to host)"
    )
