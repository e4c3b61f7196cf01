#!/usr/bin/env python3
"""Build continuity-agent_<version>_<arch>.deb with Debian's own tools (dpkg-deb under fakeroot).

    make deb                                   # dist/continuity-agent_<version>_<arch>.deb
    python3 deploy/tools/build_deb.py --out dist [--version 0.1.0] [--python /usr/bin/python3]

The package carries a self-contained virtual environment in /opt/continuity-agent (as dh-virtualenv
does), made with Debian's python3 and filled from requirements.lock with hashes: only the runtime
closure of the project's dependencies, so the package does not depend on the system's Python
library versions. Around it: /usr/bin/continuity-agent, the hardened systemd unit, the sysusers
file, /etc/default/continuity-agent and /etc/continuity-agent/config.yml (conffiles), the rules,
Alertmanager example, dashboards, example configs and runbooks under /usr/share/continuity-agent,
and the docs with the licences file under /usr/share/doc/continuity-agent. Standard library only.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEBIAN = ROOT / "deploy" / "debian"
PREFIX = "/opt/continuity-agent"
MAINTAINER = "continuity-agent developers <continuity-agent@example.gov.uk>"


def run(*argv: str, **kw: object) -> None:
    subprocess.run(argv, check=True, **kw)  # type: ignore[call-overload]


def runtime_requirements(lock: Path, roots: list[str]) -> str:
    """The entries of the pip-compile lock that the runtime dependencies need (their closure, read
    from the lock's ``# via`` annotations), with their hashes."""
    blocks: dict[str, tuple[str, set[str]]] = {}
    name = ""
    for line in lock.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==", line)
        if m:
            name = m.group(1).lower()
            blocks[name] = (line + "\n", set())
        elif name and line.startswith("    --hash"):
            blocks[name] = (blocks[name][0] + line + "\n", blocks[name][1])
        elif name and line.strip().startswith("#"):
            via = line.strip().lstrip("#").strip()
            via = via.removeprefix("via").strip()
            if via:
                blocks[name][1].add(via.split()[0].lower())
    norm = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in roots}
    keep = {n for n in blocks if n.replace("_", "-") in norm}
    while True:
        more = {n for n, (_, via) in blocks.items() if n not in keep and via & keep}
        if not more:
            break
        keep |= more
    missing = norm - {n.replace("_", "-") for n in keep}
    if missing:
        raise SystemExit(f"build_deb: {lock}: no pinned entry for {', '.join(sorted(missing))}")
    return "".join(blocks[n][0] for n in sorted(keep))


def make_venv(stage: Path, python: str, requirements: str, prefix: str = PREFIX) -> Path:
    """The package's environment, made in ``stage`` for ``prefix`` (bench.core_bench makes one
    with stage ``/`` and a temporary prefix to measure the agent as the package installs it)."""
    venv = stage / prefix.lstrip("/")
    run(python, "-m", "venv", str(venv))
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as req:
        req.write(requirements)
        req.flush()
        run(*pip, "install", "--no-compile", "--require-hashes", "-r", req.name)
    with tempfile.TemporaryDirectory() as src:
        # A clean copy of the sources (no .venv, caches or build output) to build the wheel from.
        files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                                "--exclude-standard", "pyproject.toml", "README.md", "agent", "collectors"],
                               capture_output=True, check=True).stdout.split(b"\0")
        for raw in filter(None, files):
            out = Path(src) / raw.decode()
            out.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / raw.decode()).is_file():
                shutil.copy2(ROOT / raw.decode(), out)
        run(*pip, "install", "--no-compile", "--no-deps", src)
    # The package is not a development environment: no pip (postinst byte-compiles, as dh-python's
    # py3compile does), and no stray files from upstream archives.
    run(*pip, "uninstall", "-y", "pip")
    for junk in venv.rglob(".DS_Store"):
        junk.unlink()
    # The environment was made in the staging directory: point it at its installed place.
    stage_prefix = str(venv)
    for f in [*venv.joinpath("bin").iterdir(), venv / "pyvenv.cfg"]:
        if f.is_file() and not f.is_symlink():
            data = f.read_bytes()
            if stage_prefix.encode() in data:
                f.write_bytes(data.replace(stage_prefix.encode(), prefix.encode()))
    for cache in list(venv.rglob("__pycache__")):
        shutil.rmtree(cache)
    return venv


def install(src: Path, dest: Path, mode: int = 0o644) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    dest.chmod(mode)


def build(out_dir: Path, version: str, python: str) -> Path:
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    with tempfile.TemporaryDirectory(prefix="continuity-deb-") as tmp:
        stage = Path(tmp) / "root"
        make_venv(stage, python, runtime_requirements(ROOT / "requirements.lock", project["dependencies"]))
        (stage / "usr/bin").mkdir(parents=True)
        os.symlink(f"{PREFIX}/bin/continuity-agent", stage / "usr/bin/continuity-agent")
        install(ROOT / "deploy/systemd/continuity-agent.service", stage / "lib/systemd/system/continuity-agent.service")
        install(ROOT / "deploy/systemd/continuity-agent.sysusers", stage / "usr/lib/sysusers.d/continuity-agent.conf")
        install(ROOT / "deploy/default/continuity-agent", stage / "etc/default/continuity-agent")
        install(DEBIAN / "config.yml", stage / "etc/continuity-agent/config.yml")
        share = stage / "usr/share/continuity-agent"
        shutil.copytree(ROOT / "deploy/prometheus", share / "prometheus")
        shutil.copytree(ROOT / "deploy/alertmanager", share / "alertmanager")
        shutil.copytree(ROOT / "grafana/dashboards", share / "grafana/dashboards")
        shutil.copytree(ROOT / "grafana/provisioning", share / "grafana/provisioning")
        shutil.copytree(ROOT / "deploy/examples", share / "examples")
        shutil.copytree(ROOT / "runbooks", share / "runbooks")
        doc = stage / "usr/share/doc/continuity-agent"
        shutil.copytree(ROOT / "docs", doc, ignore=shutil.ignore_patterns("*.png"))
        install(ROOT / "README.md", doc / "README.md")
        install(DEBIAN / "copyright", doc / "copyright")
        changelog = (f"continuity-agent ({version}) unstable; urgency=medium\n\n"
                     f"  * Release {version}.\n\n -- {MAINTAINER}  Tue, 01 Dec 2026 00:00:00 +0000\n")
        (doc / "changelog.gz").write_bytes(gzip.compress(changelog.encode(), 9, mtime=0))
        man = stage / "usr/share/man/man1/continuity-agent.1.gz"
        man.parent.mkdir(parents=True)
        man.write_bytes(gzip.compress((DEBIAN / "continuity-agent.1").read_bytes(), 9, mtime=0))
        install(DEBIAN / "lintian-overrides", stage / "usr/share/lintian/overrides/continuity-agent")
        for p in stage.rglob("*"):  # no stray write bits from the checkout
            if not p.is_symlink():
                p.chmod(0o755 if p.is_dir() or os.access(p, os.X_OK) else 0o644)
        control = stage / "DEBIAN"
        control.mkdir()
        for script in ("postinst", "prerm", "postrm"):
            install(DEBIAN / script, control / script, 0o755)
        (control / "conffiles").write_text("/etc/continuity-agent/config.yml\n/etc/default/continuity-agent\n")
        sums = []
        for p in sorted(stage.rglob("*")):
            if p.is_file() and not p.is_symlink() and control not in p.parents:
                sums.append(f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.relative_to(stage)}\n")  # noqa: S324
        (control / "md5sums").write_text("".join(sums))
        size = sum(p.stat().st_size for p in stage.rglob("*") if p.is_file() and not p.is_symlink()) // 1024
        (control / "control").write_text(
            f"Package: continuity-agent\nVersion: {version}\nArchitecture: {arch}\nMaintainer: {MAINTAINER}\n"
            f"Installed-Size: {size}\nDepends: python3 (>= 3.11), python3 (<< 3.12), libc6 (>= 2.17), adduser, "
            "init-system-helpers (>= 1.54~)\n"
            "Section: net\nPriority: optional\nHomepage: https://continuity-agent.example/\n"
            f"Description: {project['description'][:70].rstrip('. ,')}\n"
            " Measures a UK council's ICT business-continuity promises: availability,\n"
            " link speed, backup status and DR recovery-test evidence against runbooks,\n"
            " as Prometheus metrics (port 9072), with alert rules, Grafana dashboards\n"
            " and DR test reports.\n"
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        deb = out_dir / f"continuity-agent_{version}_{arch}.deb"
        run("fakeroot", "dpkg-deb", "--build", "-Zxz", "--root-owner-group", str(stage), str(deb),
            stdout=subprocess.DEVNULL)
        return deb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "dist")
    ap.add_argument("--version", default=None, help="package version (default: pyproject's)")
    ap.add_argument("--python", default="/usr/bin/python3", help="Debian's python3, which the package depends on")
    args = ap.parse_args(argv)
    version = args.version or tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    print(build(args.out, version, args.python))
    return 0


if __name__ == "__main__":
    sys.exit(main())
