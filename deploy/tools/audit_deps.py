"""Known vulnerabilities in the locked dependencies (requirements.lock), for `make test`.

    python deploy/tools/audit_deps.py [--lock requirements.lock] [--strict]

1. pip-audit against the lock (hashes required, nothing installed). pip-audit asks PyPI's
   per-release JSON API or OSV; where neither is reachable (e.g. a build network that only
   mirrors the package index), every package comes back "could not be audited".
2. For packages pip-audit could not audit, the project-level PyPI JSON (which many mirrors do
   serve) lists the vulnerabilities of the *latest* release: when the pinned version is the
   latest, that list is the answer for the pin.

Exit 1 when a known vulnerability is found. Packages that could not be checked either way are
listed plainly as NOT AUDITED; that alone exits 0 (the network is not a test failure) unless
--strict is given.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", re.M)


def pins(lock: Path) -> dict[str, str]:
    return {m.group(1).lower().replace("_", "-"): m.group(2) for m in PIN.finditer(lock.read_text())}


def reachable(url: str, method: str = "GET", data: bytes | None = None) -> str:
    """'' when ``url`` answers 200, else what happened (one probe, 10 s)."""
    req = urllib.request.Request(url, method=method, data=data, headers={"Content-Type": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - fixed https URLs
            return "" if resp.status == 200 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code}"
    except (OSError, ValueError) as e:
        return str(getattr(e, "reason", e))


def pick_service(index: str, probe: tuple[str, str]) -> tuple[str | None, str]:
    """The pip-audit vulnerability service this machine can reach: ('pypi'|'osv'|None, why not)."""
    name, version = probe
    pypi = reachable(f"{index}/pypi/{name}/{version}/json")
    if not pypi:
        return "pypi", ""
    osv_q = json.dumps({"package": {"name": name, "ecosystem": "PyPI"}, "version": version}).encode()
    osv = reachable("https://api.osv.dev/v1/query", "POST", osv_q)
    if not osv:
        return "osv", ""
    return None, f"PyPI per-release JSON: {pypi}; OSV: {osv}"


def run_pip_audit(lock: Path, service: str) -> tuple[dict[str, list[str]], set[str], str]:
    """({package: [vuln ids]}, audited packages, note)."""
    exe = shutil.which("pip-audit") or str(Path(sys.executable).parent / "pip-audit")
    if not Path(exe).exists():
        return {}, set(), "pip-audit is not installed"
    try:
        r = subprocess.run(
            [exe, "-r", str(lock), "--require-hashes", "--disable-pip", "--progress-spinner", "off",
             "--format", "json", "--timeout", "15", "--vulnerability-service", service],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {}, set(), "pip-audit timed out"
    try:
        data = json.loads(r.stdout)
    except json.JSONDecodeError:
        first = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return {}, set(), f"pip-audit failed: {first}"
    vulns: dict[str, list[str]] = {}
    audited: set[str] = set()
    for dep in data.get("dependencies", []):
        name = str(dep.get("name", "")).lower()
        if "skip_reason" in dep:
            continue
        audited.add(name)
        ids = [str(v.get("id")) for v in dep.get("vulns", [])]
        if ids:
            vulns[name] = ids
    return vulns, audited, ""


def pypi_latest(name: str, version: str, index: str) -> tuple[str, list[str] | None]:
    """(name, vulnerability ids) when ``version`` is the latest release; None when unknown."""
    try:
        with urllib.request.urlopen(f"{index}/pypi/{name}/json", timeout=15) as resp:  # noqa: S310 - fixed https URL
            data = json.load(resp)
    except (OSError, ValueError):
        return name, None
    if str(data.get("info", {}).get("version")) != version or "vulnerabilities" not in data:
        return name, None
    return name, [str(v.get("id")) for v in data["vulnerabilities"] if not v.get("withdrawn")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lock", type=Path, default=ROOT / "requirements.lock")
    ap.add_argument("--index", default="https://pypi.org")
    ap.add_argument("--strict", action="store_true", help="fail when any package could not be audited")
    args = ap.parse_args(argv)
    pinned = pins(args.lock)
    if not pinned:
        print(f"audit: no pins in {args.lock}")
        return 1
    probe = next(iter(sorted(pinned.items())))
    service, why = pick_service(args.index, probe)
    if service is None:
        vulns, audited = {}, set()
        print(f"audit: pip-audit skipped, no vulnerability database reachable from here ({why})")
    else:
        vulns, audited, note = run_pip_audit(args.lock, service)
        if note:
            print(f"audit: {note}")
    rest = {n: v for n, v in pinned.items() if n not in audited}
    via_json: set[str] = set()
    project_json = reachable(f"{args.index}/pypi/{probe[0]}/json") if rest else "not needed"
    if project_json:
        rest = {}
        if project_json != "not needed":
            print(f"audit: PyPI project JSON not reachable either ({project_json})")
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as ex:
        for name, ids in ex.map(lambda nv: pypi_latest(nv[0], nv[1], args.index), rest.items()):
            if ids is None:
                continue
            via_json.add(name)
            if ids:
                vulns[name] = ids
    not_audited = sorted(set(pinned) - audited - via_json)
    print(
        f"audit: {len(pinned)} locked packages; {len(audited)} audited by pip-audit, "
        f"{len(via_json)} by PyPI's latest-release data, {len(not_audited)} NOT AUDITED"
    )
    if not_audited:
        print("audit: NOT AUDITED (pinned below the latest release, no database reachable): " + ", ".join(
            f"{n}=={pinned[n]}" for n in not_audited))  # fmt: skip
    for name, ids in sorted(vulns.items()):
        print(f"audit: VULNERABLE {name}=={pinned.get(name, '?')}: {', '.join(ids)}")
    if vulns:
        return 1
    if not_audited and args.strict:
        return 1
    print("audit: no known vulnerabilities" + (" in the packages that could be audited" if not_audited else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
