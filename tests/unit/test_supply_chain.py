"""Supply chain: requirements.lock pins every dependency pyproject.toml declares (runtime, test and
bench extras) at a version its specifier allows, every pin carries hashes, `make` installs from the
lock with --require-hashes, and docs/licences.md lists every locked package."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers.common import ROOT

LOCK = ROOT / "requirements.lock"


def _pins() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes)."""
    out: dict[str, tuple[str, list[str]]] = {}
    text = LOCK.read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", block)
        if m:
            out[canonicalize_name(m.group(1))] = (m.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return out


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in ("test", "bench"):
        reqs += project["optional-dependencies"][extra]
    return [Requirement(r) for r in reqs]


def test_lock_covers_every_declared_dependency() -> None:
    pins = _pins()
    missing, wrong = [], []
    for req in _declared():
        name = canonicalize_name(req.name)
        if name not in pins:
            missing.append(str(req))
        elif not req.specifier.contains(pins[name][0], prereleases=True):
            wrong.append(f"{req} locked at {pins[name][0]}")
    assert not missing, f"not in requirements.lock (run make lock): {missing}"
    assert not wrong, f"lock outside the declared range (run make lock): {wrong}"


def test_every_pin_has_hashes_and_nothing_is_unpinned() -> None:
    pins = _pins()
    assert len(pins) > 30
    assert all(h for _v, h in pins.values()), [n for n, (_v, h) in pins.items() if not h]
    for line in LOCK.read_text().splitlines():
        s = line.strip()
        if s and not s.startswith(("#", "--hash")) and not s.endswith("\\"):
            raise AssertionError(f"unexpected line in the lock: {line!r}")
    assert "--index-url" not in LOCK.read_text() and "file://" not in LOCK.read_text()


def test_make_installs_from_the_lock_with_hashes() -> None:
    mk = (ROOT / "Makefile").read_text()
    assert "pip install -q --require-hashes -r requirements.lock" in mk
    assert "pip install -q --no-deps -e ." in mk
    assert re.search(r"^test:.*\baudit\b", mk, re.M)
    assert "-e '.[" not in mk  # nothing installed around the lock


def test_installed_versions_match_the_lock() -> None:
    from importlib import metadata

    off = []
    for name, (version, _h) in _pins().items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            off.append(f"{name} not installed")
            continue
        if have != version:
            off.append(f"{name} {have} != {version}")
    assert not off, off


def test_licences_doc_is_current() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "deploy/tools/licences.py"), "--check"], capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = (ROOT / "docs" / "licences.md").read_text()
    for name in _pins():
        assert f"| {name} |" in doc
    assert "UNKNOWN" not in doc and "NOT INSTALLED" not in doc


def test_audit_reports_plainly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The audit script on a one-package lock: exit 0 or 1 (never a traceback), with the summary line
    saying how many packages were and were not audited."""
    lock = tmp_path / "requirements.lock"
    text = LOCK.read_text()
    block = re.search(r"^bcrypt==.*?(?=^\S)", text, re.M | re.S)
    assert block
    lock.write_text(block.group(0))
    r = subprocess.run([sys.executable, str(ROOT / "deploy/tools/audit_deps.py"), "--lock", str(lock)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode in (0, 1), r.stderr
    assert "Traceback" not in r.stderr
    assert re.search(r"audit: 1 locked packages; \d audited by pip-audit, \d by PyPI's latest-release data, "
                     r"\d NOT AUDITED", r.stdout), r.stdout  # fmt: skip
