"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.sshd import Sshd, start_sshd


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A real OpenSSH sshd on a free loopback port, one per test module (under CI=true a missing
    sshd fails the run)."""
    s = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield s
    s.stop()
