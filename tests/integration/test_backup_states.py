"""Every backup state produced by a real check (command and files types, locally and over SSH),
the size-drop flag, a hanging check isolated from the others, and the push endpoint through the
agent's real HTTP server (refusals change nothing; accepted pushes survive a restart)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from agent.runner import run_task
from agent.service import build_collectors
from agent.state import StateStore
from collectors.base import CollectorContext
from tests.helpers.backups import where, write_agent_config
from tests.helpers.collect import assert_declared, collect, value
from tests.helpers.common import agent_process, http_get, metric_value, need, wait_until
from tests.helpers.sshd import Sshd

MODES = ["local", "ssh"]


def state_of(r: Any) -> str:
    states = [s.labels["state"] for s in r.samples if s.name == "continuity_backup_state" and s.value == 1]
    assert len(states) == 1, (r.message, r.partial_errors, r.samples)
    assert len([s for s in r.samples if s.name == "continuity_backup_state"]) == 6
    return str(states[0])


def status_file(tmp_path: Path, name: str, doc: Any) -> list[str]:
    p = tmp_path / f"{name}.json"
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return ["cat", str(p)]


@pytest.mark.parametrize("mode", MODES)
def test_every_state_from_a_command(sshd: Sshd, tmp_path: Path, mode: str) -> None:
    now = time.time()
    h = 3600.0
    cases: dict[str, Any] = {
        "fresh": {"ok": True, "last_success": now - h, "last_attempt": now - h, "size_bytes": 1000},
        "late": {"ok": True, "last_success": now - 3 * h, "last_attempt": now - 3 * h},
        "stale": {"ok": True, "last_success": now - 5 * h, "last_attempt": now - 5 * h},
        "failed": {"ok": False, "last_success": now - h, "last_attempt": now - 60, "message": "tape full"},
        "never_ran": {"ok": True, "last_success": None, "last_attempt": None},
    }
    targets = [
        {
            "name": f"job-{state}",
            "type": "command",
            "command": status_file(tmp_path, state, doc),
            "rpo": "2h",
            "grace": "2h",
            **where(mode, sshd),
        }
        for state, doc in cases.items()
    ]
    targets += [
        {"name": "job-exit", "type": "command", "command": ["sh", "-c", "echo oops >&2; exit 4"], **where(mode, sshd)},
        {
            "name": "job-garbage",
            "type": "command",
            "command": status_file(tmp_path, "garbage", "{not json"),
            **where(mode, sshd),
        },
    ]
    cfg = write_agent_config(tmp_path / "agent.yml", targets, sshd)
    for state, doc in cases.items():
        r = collect(cfg, f"job-{state}")
        assert r.ok and not r.partial_errors, (state, r.partial_errors)
        assert_declared(r)
        assert state_of(r) == state
        if doc["last_success"] is not None:
            assert value(r, "continuity_backup_last_success_timestamp_seconds") == doc["last_success"]
            assert value(r, "continuity_backup_last_attempt_timestamp_seconds") == doc["last_attempt"]
        else:
            assert value(r, "continuity_backup_last_success_timestamp_seconds") is None
    assert value(collect(cfg, "job-fresh"), "continuity_backup_size_bytes") == 1000
    for name, reason in (("job-exit", "command_failed"), ("job-garbage", "bad_output")):
        r = collect(cfg, name)
        assert r.ok
        assert state_of(r) == "unknown"  # never stale: the check itself failed
        assert [p[0] for p in r.partial_errors] == [reason]
        assert value(r, "continuity_backup_last_success_timestamp_seconds") is None
        assert value(r, "continuity_backup_rpo_seconds") == 86400
    assert "oops" in collect(cfg, "job-exit").partial_errors[0][1]


def test_unknown_keeps_the_last_success_it_knew_across_a_restart(tmp_path: Path) -> None:
    """The check cannot be made (state unknown): the last success the agent knew is still exported,
    from the state store, after a restart too, so BackupCheckFailing's critical reads its age from
    the plain series however long the outage lasts. The state stays unknown: no alert on the state
    (BackupStale, BackupLate) reads it as fresh, and an old timestamp is still old."""
    now = time.time()
    doc = {"ok": True, "last_success": now - 3600, "last_attempt": now - 3600}
    cmd = status_file(tmp_path, "job", doc)
    cfg = write_agent_config(tmp_path / "agent.yml", [{"name": "job", "type": "command", "command": cmd}])
    store = StateStore(tmp_path / "state")
    first = collect(cfg, "job", store=store)
    assert state_of(first) == "fresh"
    store.put(first)
    (tmp_path / "job.json").write_text("{not json")  # the check fails from now on
    second = collect(cfg, "job", store=store)
    assert state_of(second) == "unknown" and [p[0] for p in second.partial_errors] == ["bad_output"]
    assert value(second, "continuity_backup_last_success_timestamp_seconds") == doc["last_success"]
    assert value(second, "continuity_backup_last_attempt_timestamp_seconds") is None  # only the success is kept
    store.put(second)
    store.close()
    store = StateStore(tmp_path / "state")  # a restart, still unknown
    third = collect(cfg, "job", store=store)
    assert state_of(third) == "unknown"
    assert value(third, "continuity_backup_last_success_timestamp_seconds") == doc["last_success"]
    store.close()
    # Without a stored success there is nothing to export: never a made-up time.
    never = collect(cfg, "job", store=StateStore(None))
    assert value(never, "continuity_backup_last_success_timestamp_seconds") is None


def test_command_size_drop_across_runs(tmp_path: Path) -> None:
    now = time.time()
    doc = {"ok": True, "last_success": now - 7200, "size_bytes": 10_000}
    cmd = status_file(tmp_path, "sz", doc)
    cfg = write_agent_config(tmp_path / "agent.yml", [{"name": "sz", "type": "command", "command": cmd}])
    store = StateStore(tmp_path / "state")
    shared: dict[str, Any] = {}
    assert value(collect(cfg, "sz", store=store, shared=shared), "continuity_backup_size_drop") == 0
    status_file(tmp_path, "sz", {**doc, "last_success": now - 60, "size_bytes": 9_000})
    assert value(collect(cfg, "sz", store=store, shared=shared), "continuity_backup_size_drop") == 0
    status_file(tmp_path, "sz", {**doc, "last_success": now - 30, "size_bytes": 1_000})
    r = collect(cfg, "sz", store=store, shared=shared)
    assert value(r, "continuity_backup_size_drop") == 1
    assert r.info["previous_size_bytes"] == 9_000
    # the same success seen again keeps comparing with the one before it
    assert value(collect(cfg, "sz", store=store, shared=shared), "continuity_backup_size_drop") == 1
    store.flush()
    store.close()
    # the size history survives a restart (state store)
    store2 = StateStore(tmp_path / "state")
    r = collect(cfg, "sz", store=store2, shared={})
    assert value(r, "continuity_backup_size_drop") == 1
    store2.close()


def dump(directory: Path, name: str, size: int, age: float) -> None:
    p = directory / name
    p.write_bytes(b"x" * size)
    t = time.time() - age
    os.utime(p, (t, t))


@pytest.mark.parametrize("mode", MODES)
def test_files_dumps(sshd: Sshd, tmp_path: Path, mode: str) -> None:
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    (tmp_path / "empty").mkdir()
    dump(dumps, "payroll-1.sql.gz", 5000, 2 * 86400)
    dump(dumps, "payroll-2.sql.gz", 4800, 3600)
    dump(dumps, "unrelated.txt", 10, 60)
    base = {"type": "files", "pattern": "payroll-*.sql.gz", "min_size": 1024, **where(mode, sshd)}
    cfg = write_agent_config(
        tmp_path / "agent.yml",
        [
            {"name": "payroll", "directory": str(dumps), **base},
            {"name": "none-yet", "directory": str(tmp_path / "empty"), **base},
            {"name": "no-dir", "directory": str(tmp_path / "missing"), **base},
        ],
        sshd,
    )
    r = collect(cfg, "payroll")
    assert_declared(r)
    assert state_of(r) == "fresh"
    assert value(r, "continuity_backup_size_bytes") == 4800
    assert value(r, "continuity_backup_snapshots") == 2
    assert value(r, "continuity_backup_last_success_timestamp_seconds") == pytest.approx(
        (dumps / "payroll-2.sql.gz").stat().st_mtime, abs=1e-3
    )
    assert value(r, "continuity_backup_size_drop") == 0
    # A 0-byte dump is not a backup: the last attempt failed after the last success.
    dump(dumps, "payroll-3.sql.gz", 0, 600)
    r = collect(cfg, "payroll")
    assert state_of(r) == "failed"
    assert value(r, "continuity_backup_last_attempt_timestamp_seconds") == pytest.approx(
        (dumps / "payroll-3.sql.gz").stat().st_mtime, abs=1e-3
    )
    assert value(r, "continuity_backup_size_bytes") == 4800
    assert "below min_size" in r.info["detail"]
    # A good dump, but a fraction of the previous one.
    dump(dumps, "payroll-4.sql.gz", 1500, 60)
    r = collect(cfg, "payroll")
    assert state_of(r) == "fresh"
    assert value(r, "continuity_backup_size_drop") == 1
    assert state_of(collect(cfg, "none-yet")) == "never_ran"
    r = collect(cfg, "no-dir")
    assert state_of(r) == "unknown" and [p[0] for p in r.partial_errors] == ["command_failed"]


def test_hanging_check_times_out_and_others_are_unaffected(sshd: Sshd, tmp_path: Path) -> None:
    now = time.time()
    ok = status_file(tmp_path, "ok", {"ok": True, "last_success": now - 60})
    cfg = write_agent_config(
        tmp_path / "agent.yml",
        [
            {"name": "hangs", "type": "command", "command": ["sleep", "30"], "timeout": "3s", **where("ssh", sshd)},
            {"name": "hangs-local", "type": "command", "command": ["sleep", "30"], "timeout": "3s"},
            {"name": "remote-ok", "type": "command", "command": ok, "timeout": "3s", **where("ssh", sshd)},
            {"name": "local-ok", "type": "command", "command": ok, "timeout": "3s"},
        ],
        sshd,
    )
    loaded = load_config(cfg)

    async def main() -> dict[str, Any]:
        with ThreadPoolExecutor(8) as ex:
            c = CollectorContext(auths=loaded.config.auths, executor=ex, state_dir=tmp_path, shared={})
            cols = build_collectors(loaded, c)
            results = await asyncio.gather(*(run_task(col, col.tasks()[0], site="hq") for col in cols.values()))
            return {r.target: r for r in results}

    t0 = time.monotonic()
    res = asyncio.run(main())
    assert time.monotonic() - t0 < 8
    for name in ("hangs", "hangs-local"):
        assert state_of(res[name]) == "unknown"
        assert [p[0] for p in res[name].partial_errors] == ["timeout"]
    for name in ("remote-ok", "local-ok"):
        assert state_of(res[name]) == "fresh" and not res[name].partial_errors


# -- push ---------------------------------------------------------------------------------------


def post(url: str, token: str | None = None, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, method="POST")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_push_endpoint(tmp_path: Path) -> None:
    token = "push-token-7f3a9c1e"
    (tmp_path / "token").write_text(token + "\n")
    (tmp_path / "token").chmod(0o600)
    (tmp_path / "other-token").write_text("other-token-5521\n")
    (tmp_path / "other-token").chmod(0o600)
    cfg = write_agent_config(
        tmp_path / "agent.yml",
        [
            {
                "name": "veeam-nightly",
                "type": "push",
                "token_file": str(tmp_path / "token"),
                "interval": "1s",
                "timeout": "1s",
            },
            {
                "name": "other",
                "type": "push",
                "token_file": str(tmp_path / "other-token"),
                "interval": "1s",
                "timeout": "1s",
            },
            {"name": "not-push", "type": "command", "command": ["true"], "interval": "1h"},
        ],
    )

    def state(text: str) -> str | None:
        for s in ("fresh", "late", "stale", "failed", "never_ran", "unknown"):
            if metric_value(text, "continuity_backup_state", backup="veeam-nightly", state=s) == 1:
                return s
        return None

    with agent_process(cfg) as agent:
        url = agent.url + "/api/v1/backup/veeam-nightly/success"
        wait_until(lambda: state(agent.metrics()) == "never_ran", 15, what="first collection")
        refusals = [
            (post(url), 401),
            (post(url, "wrong-token"), 403),
            (post(url, "other-token-5521"), 403),  # another backup's token
            (post(agent.url + "/api/v1/backup/unknown/success", token), 403),  # as a wrong token
            (post(agent.url + "/api/v1/backup/not-push/success", token), 403),
            (post(agent.url + "/api/v1/backup/veeam-nightly/explode", token), 404),
            (post(url, token, b"[1, 2]"), 400),
            (post(url, token, b'{"size_bytes": -1}'), 400),
        ]
        for (status, _body), expected in refusals:
            assert status == expected
        time.sleep(1.5)  # at least one more collection after the refusals
        text = agent.metrics()
        assert state(text) == "never_ran"
        assert metric_value(text, "continuity_backup_last_attempt_timestamp_seconds", backup="veeam-nightly") is None
        assert http_get(url)[0] == 405  # a GET is not a push
    store = StateStore(tmp_path / "state")  # and nothing was stored
    assert store.get_kv("backup/veeam-nightly/push") is None
    store.close()

    with agent_process(cfg) as agent:
        t0 = time.time()
        status, body = post(agent.url + "/api/v1/backup/veeam-nightly/success", token, b'{"size_bytes": 123456}')
        assert status == 200 and body["recorded"] == "success"
        wait_until(lambda: state(agent.metrics()) == "fresh", 15, what="push seen")
        text = agent.metrics()
        last = metric_value(text, "continuity_backup_last_success_timestamp_seconds", backup="veeam-nightly")
        assert last is not None and t0 - 1 <= last <= time.time() + 1
        assert metric_value(text, "continuity_backup_size_bytes", backup="veeam-nightly") == 123456
        assert post(agent.url + "/api/v1/backup/veeam-nightly/fail", token)[0] == 200
        wait_until(lambda: state(agent.metrics()) == "failed", 15, what="fail push seen")
        text = agent.metrics()
        lint = subprocess.run(
            [need("promtool"), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
        )
        assert lint.returncode == 0 and not (lint.stdout + lint.stderr).strip(), lint.stdout + lint.stderr
        log = agent.log()
    assert token not in log
    # Restart: the pushes were stored and are still there.
    with agent_process(cfg) as agent:
        wait_until(lambda: state(agent.metrics()) == "failed", 15, what="state after restart")
        text = agent.metrics()
        assert metric_value(text, "continuity_backup_last_success_timestamp_seconds", backup="veeam-nightly") == last
        assert metric_value(text, "continuity_backup_state", backup="other", state="never_ran") == 1


def test_ssh_failures_are_unknown_with_their_reason(sshd: Sshd, tmp_path: Path) -> None:
    from tests.helpers.sshd import keygen

    marker = tmp_path / "ran"
    cmd = ["sh", "-c", f'touch {marker}; echo \'{{"ok": true, "last_success": 1}}\'']
    cfg = write_agent_config(
        tmp_path / "agent.yml", [{"name": "t", "type": "command", "command": cmd, **where("ssh", sshd)}], sshd
    )
    text = cfg.read_text()
    other = keygen(tmp_path / "other_host")
    (tmp_path / "kh-replaced").write_text(sshd.known_hosts_line(other.with_suffix(".pub")))
    wrong = keygen(tmp_path / "wrong_user_key")
    before = sshd.accepted()
    for variant, reason in (
        (text.replace(str(sshd.known_hosts), str(tmp_path / "kh-replaced")), "host_key"),
        (text.replace(str(sshd.user_key), str(wrong)), "auth"),
    ):
        cfg.write_text(variant)
        r = collect(cfg, "t")
        assert state_of(r) == "unknown"
        assert [p[0] for p in r.partial_errors] == [reason]
    assert not marker.exists() and sshd.accepted() == before  # nothing ran, nobody logged in
    cfg.write_text(text)
    assert state_of(collect(cfg, "t")) == "stale" and marker.exists()  # the control: same config, right keys


def test_jobs_of_one_repository_never_overlap(tmp_path: Path) -> None:
    """Main check, integrity check and restore test of one repository take turns (a stand-in
    restic logs when each invocation starts and ends); a main check that finds the repository busy
    reports its previous facts instead of waiting out its timeout."""
    log = tmp_path / "calls.log"
    now = time.time()
    snap = {"id": "a" * 64, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60))}
    fake = tmp_path / "restic"
    fake.write_text(f"""#!/bin/sh
echo "start $*" >> {log}
case "$*" in
  *" check"*) sleep "$(cat {tmp_path / "check_sleep"} 2>/dev/null || echo 0.3)" ;;
  *) sleep 0.3 ;;
esac
echo "end" >> {log}
case "$*" in
  *snapshots*) echo '[{json.dumps(snap)}]' ;;
  *stats*) echo '{{"total_size": 1000}}' ;;
  *ls*) echo '{{"struct_type": "snapshot"}}' ;;
  *) echo 'no errors were found' ;;
esac
""")
    fake.chmod(0o755)
    target = {
        "name": "r",
        "type": "restic",
        "repository": str(tmp_path / "repo"),
        "binary": str(fake),
        "timeout": "3s",
        "integrity": {"interval": "1d", "timeout": "1m"},
        "restore_test": {"interval": "1d", "timeout": "1m", "sample_files": 1, "scratch_dir": str(tmp_path)},
    }
    cfg = write_agent_config(tmp_path / "agent.yml", [target, {**target, "name": "r2"}])
    loaded = load_config(cfg)

    async def main() -> dict[str, Any]:
        with ThreadPoolExecutor(8) as ex:
            c = CollectorContext(auths={}, executor=ex, state_dir=tmp_path, shared={})
            cols = build_collectors(loaded, c)
            jobs = [run_task(col, t, site="hq") for col in cols.values() for t in col.tasks()]
            results = await asyncio.gather(*jobs)
            return {f"{r.target}/{r.task}": r for r in results}

    res = asyncio.run(main())
    assert len(res) == 6, res
    for k, r in res.items():
        # The stand-in's snapshot holds no files: the restore test runs to the verdict "nothing to
        # restore", a failed restore test (not a success); the other jobs succeed.
        assert (r.reason == "restore_failed") if k.endswith("/restore_test") else r.ok, (k, r.reason, r.message)
    lines = log.read_text().splitlines()
    assert len(lines) >= 12
    for i in range(0, len(lines), 2):  # strictly start, end, start, end...: never two at once
        assert lines[i].startswith("start") and lines[i + 1] == "end", lines

    # Busy: a long integrity check holds the repository; the main check reuses its last facts.
    (tmp_path / "check_sleep").write_text("4\n")  # children do not inherit the agent's environment
    try:

        async def busy() -> tuple[Any, Any, Any]:
            with ThreadPoolExecutor(8) as ex:
                c = CollectorContext(auths={}, executor=ex, state_dir=tmp_path, shared={})
                col = build_collectors(loaded, c)["r"]
                main_task, integrity = col.tasks()[0], col.tasks()[1]
                first = await run_task(col, main_task, site="hq")
                check = asyncio.create_task(run_task(col, integrity, site="hq"))
                await asyncio.sleep(0.5)
                second = await run_task(col, main_task, site="hq")
                return first, second, await check

        first, second, check = asyncio.run(busy())
    finally:
        (tmp_path / "check_sleep").unlink()
    assert state_of(first) == "fresh" and state_of(second) == "fresh"
    assert "repository busy" in second.info["note"]
    assert second.duration < 3
    assert value(second, "continuity_backup_last_success_timestamp_seconds") == value(
        first, "continuity_backup_last_success_timestamp_seconds"
    )
    assert value(check, "continuity_backup_integrity_ok") == 1


def test_restore_test_that_finds_the_repository_busy_is_not_run(tmp_path: Path) -> None:
    """A restore test that waits its whole time for the repository lock (held here by a long
    integrity check of the same repository) is not run, reason repository_busy, and counted."""
    fake = tmp_path / "restic"
    fake.write_text('#!/bin/sh\ncase "$*" in *" check"*) sleep 4 ;; esac\necho "no errors were found"\n')
    fake.chmod(0o755)
    base = {"type": "restic", "repository": str(tmp_path / "repo"), "binary": str(fake), "timeout": "3s"}
    cfg = write_agent_config(
        tmp_path / "agent.yml",
        [
            {**base, "name": "checker", "integrity": {"interval": "1d", "timeout": "1m"}},
            {
                **base,
                "name": "restorer",
                "restore_test": {"interval": "1d", "timeout": "2s", "sample_files": 1, "scratch_dir": str(tmp_path)},
            },
        ],
    )
    loaded = load_config(cfg)

    async def main() -> tuple[Any, Any]:
        with ThreadPoolExecutor(4) as ex:
            c = CollectorContext(auths={}, executor=ex, state_dir=tmp_path, shared={})
            cols = build_collectors(loaded, c)
            check = asyncio.create_task(run_task(cols["checker"], cols["checker"].tasks()[1], site="hq"))
            await asyncio.sleep(0.5)
            restore = await run_task(cols["restorer"], cols["restorer"].tasks()[1], site="hq")
            return restore, await check

    restore, check = asyncio.run(main())
    assert check.ok, check.message
    assert not restore.ok and restore.reason == "repository_busy", (restore.reason, restore.message)
    assert restore.info["result"] == "not_run" and "stayed busy" in (restore.message or "")
    assert value(restore, "continuity_backup_restore_test_not_run_total", reason="repository_busy") == 1
    assert value(restore, "continuity_backup_restore_test_not_run_total", reason="repository_locked") == 0
    assert value(restore, "continuity_backup_restore_test_ok") is None
    assert_declared(restore)
