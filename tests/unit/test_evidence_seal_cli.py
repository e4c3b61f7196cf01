"""Sealing, the hash chain, the CLI's exit codes, schemas, hashing and the shipped example."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from agent.evidence import EvidenceInputError, check_runbooks, hashing, seal, verify
from agent.evidence.hashing import CHUNK, HashCache, resolve_artefact, sha256_file
from agent.evidence.schema import SCHEMA_DIR, generate, render
from tests.helpers.evidence_kit import AT, make, records, run_cli

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_RUNBOOKS = ROOT / "runbooks"
SHIPPED_EVIDENCE = ROOT / "runbooks" / "evidence"
SHIPPED_AT = "2026-07-01T09:00:00+01:00"


# -- seal ---------------------------------------------------------------------------------------


def test_seal_fills_hashes_sequence_and_chain(tmp_path: Path) -> None:
    kit = make(tmp_path)
    docs = {n: yaml.safe_load(kit.record_path(n).read_text()) for n in records()}
    assert [docs[n]["sequence"] for n in sorted(docs)] == [1, 2, 3]
    assert docs["01-base.yml"]["prev_record_sha256"] is None
    def sha(name: str) -> str:
        return hashlib.sha256(kit.record_path(name).read_bytes()).hexdigest()

    assert docs["02-app.yml"]["prev_record_sha256"] == sha("01-base.yml")
    assert docs["03-aux.yml"]["prev_record_sha256"] == sha("02-app.yml")
    assert docs["02-app.yml"]["runbook_sha256"] == hashlib.sha256((kit.runbooks / "app.yml").read_bytes()).hexdigest()
    art = kit.evidence / "artefacts" / "app-log.txt"
    assert docs["02-app.yml"]["artefacts"][0]["sha256"] == hashlib.sha256(art.read_bytes()).hexdigest()
    # timestamps stay text, in the order written
    assert "declared_at: 2025-01-10T08:00:00+00:00" in kit.record_path("01-base.yml").read_text()
    assert verify(kit.runbooks, kit.evidence, AT).chain_head == hashlib.sha256(
        kit.record_path("03-aux.yml").read_bytes()).hexdigest()


def test_seal_then_edit_artefact_gives_hash_mismatch_via_cli(tmp_path: Path) -> None:
    kit = make(tmp_path)
    args = ["evidence", "verify", "--runbooks", str(kit.runbooks), "--evidence", str(kit.evidence),
            "--at", AT.isoformat()]
    assert run_cli(*args)[0] == 0
    (kit.evidence / "artefacts" / "aux-log.txt").write_text("tampered\n")
    rc, out, _ = run_cli(*args)
    assert rc == 1 and "artefact_hash_mismatch: record 03-aux.yml, runbook aux" in out


def test_edit_earlier_record_gives_chain_broken_via_cli(tmp_path: Path) -> None:
    kit = make(tmp_path)
    p = kit.record_path("01-base.yml")
    p.write_text(p.read_text() + "# harmless-looking comment\n")
    rc, out, _ = run_cli("evidence", "verify", "--runbooks", str(kit.runbooks), "--evidence", str(kit.evidence),
                         "--at", AT.isoformat(), "--format", "json")
    doc = json.loads(out)
    assert rc == 1 and doc["ok"] is False
    broken = [f for f in doc["findings"] if f["rule"] == "chain_broken"]
    assert broken and broken[0]["record"] == "02-app.yml" and "01-base.yml" in broken[0]["message"]


def test_seal_refuses_sealed_record(tmp_path: Path) -> None:
    kit = make(tmp_path)
    before = kit.record_path("01-base.yml").read_bytes()
    rc, _, err = run_cli("evidence", "seal", "--runbooks", str(kit.runbooks), "--evidence", str(kit.evidence),
                         str(kit.record_path("01-base.yml")))
    assert rc == 2 and "01-base.yml: runbook_sha256: record is already sealed" in err
    assert kit.record_path("01-base.yml").read_bytes() == before


def test_seal_refuses_schema_invalid_record(tmp_path: Path) -> None:
    kit = make(tmp_path, recs={})
    rec = records()["01-base.yml"]
    rec["declared_at"] = "2025-01-10T08:00:00"  # naive
    kit.write_record("01-base.yml", rec)
    rc, _, err = run_cli("evidence", "seal", "--runbooks", str(kit.runbooks), "--evidence", str(kit.evidence),
                         str(kit.record_path("01-base.yml")))
    assert rc == 2 and "01-base.yml: declared_at:" in err and "UTC offset" in err
    assert "sequence" not in kit.record_path("01-base.yml").read_text()


@pytest.mark.parametrize(("path", "needle"), [
    ("../outside.txt", "'..'"), ("/etc/hostname", "absolute path"), ("artefacts/nothere.txt", "does not exist"),
])
def test_seal_refuses_bad_artefacts(tmp_path: Path, path: str, needle: str) -> None:
    kit = make(tmp_path / "k", recs={})
    rec = records()["01-base.yml"]
    rec["artefacts"] = [{"path": path}]
    p = kit.evidence / "01-base.yml"
    from agent.evidence import dump_yaml

    p.write_text(dump_yaml(rec))
    rc, _, err = run_cli("evidence", "seal", "--runbooks", str(kit.runbooks), "--evidence", str(kit.evidence), str(p))
    assert rc == 2 and "artefacts[0].path" in err and needle in err


def test_seal_refuses_unknown_runbook_and_outside_file(tmp_path: Path) -> None:
    kit = make(tmp_path, recs={})
    rec = records()["01-base.yml"]
    rec["runbook"] = "nosuch"
    kit.write_record("x.yml", rec)
    with pytest.raises(EvidenceInputError, match="no runbook 'nosuch'"):
        seal(kit.runbooks, kit.evidence, kit.record_path("x.yml"))
    other = tmp_path / "elsewhere.yml"
    other.write_text("runbook: base\n")
    with pytest.raises(EvidenceInputError, match="directly in the evidence directory"):
        seal(kit.runbooks, kit.evidence, other)


def test_concurrent_seals_take_distinct_sequences(tmp_path: Path) -> None:
    kit = make(tmp_path, recs={})
    base = records()["03-aux.yml"]
    names = [f"r{i:02}.yml" for i in range(8)]
    for n in names:
        kit.write_record(n, base)
    errors: list[BaseException] = []

    def run(n: str) -> None:
        try:
            seal(kit.runbooks, kit.evidence, kit.record_path(n))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    seqs = sorted(yaml.safe_load(kit.record_path(n).read_text())["sequence"] for n in names)
    assert seqs == list(range(1, 9))
    assert "chain_broken" not in kit.rules()


# -- CLI exit codes -------------------------------------------------------------------------------


def test_verify_exit_codes(tmp_path: Path) -> None:
    kit = make(tmp_path)
    base = ["evidence", "verify", "--runbooks", str(kit.runbooks), "--evidence", str(kit.evidence)]
    rc, out, _ = run_cli(*base, "--at", AT.isoformat())
    assert rc == 0 and "HOLDS" in out
    rc, out, _ = run_cli(*base, "--at", "2027-01-01T00:00:00+00:00")
    assert rc == 1 and "evidence_overdue" in out and "DOES NOT HOLD" in out
    rc, _, err = run_cli(*base, "--at", "2025-02-01T00:00:00")
    assert rc == 2 and "no UTC offset" in err
    rc, _, err = run_cli(*base, "--at", "yesterday")
    assert rc == 2 and "not an ISO 8601 timestamp" in err
    rc, _, err = run_cli("evidence", "verify", "--runbooks", str(tmp_path / "nope"), "--evidence", str(kit.evidence))
    assert rc == 2 and "runbooks directory does not exist" in err


def test_verify_json_shape(tmp_path: Path) -> None:
    kit = make(tmp_path)
    rc, out, _ = run_cli("evidence", "verify", "--runbooks", str(kit.runbooks), "--evidence", str(kit.evidence),
                         "--at", AT.isoformat(), "--format", "json")
    doc = json.loads(out)
    assert rc == 0 and doc["ok"] is True and doc["findings"] == []
    assert {"runbook", "last_test", "achieved_rto_seconds", "rto_seconds", "within_rto", "valid_until"} <= set(
        doc["systems"][0])
    assert {"objective_seconds", "planned_seconds", "projected_seconds", "measured_seconds", "path"} <= set(
        doc["critical_path"])
    app = next(s for s in doc["systems"] if s["runbook"] == "app")
    assert app["achieved_rto_seconds"] == 6.5 * 3600 and app["rto_seconds"] == 72 * 3600 and app["within_rto"]
    assert app["valid_until"] == "2026-01-10T08:00:00+00:00"
    cp = doc["critical_path"]
    assert (cp["objective_seconds"], cp["planned_seconds"], cp["measured_seconds"]) == (72 * 3600, 5 * 3600, 6.5 * 3600)
    # projected: base 0:10->2:30 (2h20m) + app 3:00->6:30 (3h30m)
    assert cp["projected_seconds"] == (2 * 60 + 20 + 3 * 60 + 30) * 60 and cp["path"] == ["base", "app"]
    ex = doc["exercises"][0]
    assert ex["id"] == "ex1" and ex["joint"] and ex["measured_seconds"] == 6.5 * 3600
    step = ex["systems"][0]["steps"][0]
    assert step["start_offset_seconds"] == 600 and step["end_offset_seconds"] == 4200
    assert doc["chain"]["length"] == 3


def test_runbooks_check_exit_codes(tmp_path: Path) -> None:
    kit = make(tmp_path)
    rc, out, _ = run_cli("runbooks", "check", str(kit.runbooks))
    assert rc == 0 and "OK: 3 runbooks" in out and "base -> app" in out
    (kit.runbooks / "aux.yml").write_text((kit.runbooks / "aux.yml").read_text().replace("- base", "- aux2"))
    rc, out, _ = run_cli("runbooks", "check", str(kit.runbooks))
    assert rc == 1 and "unknown_runbook: runbook aux: depends_on names 'aux2'" in out
    (kit.runbooks / "aux.yml").write_text((kit.runbooks / "aux.yml").read_text().replace("expected_duration: 2h",
                                                                                      "expected_duration: soon"))
    rc, _, err = run_cli("runbooks", "check", str(kit.runbooks))
    assert rc == 2 and "aux.yml: recovery_steps[0].expected_duration:" in err


@pytest.mark.parametrize(("change", "key", "needle"), [
    (lambda rb: rb["recovery_steps"][1].update(after=["zz"]), "recovery_steps[1].after[0]", "unknown step 'zz'"),
    (lambda rb: rb["recovery_steps"][0].update(after=["s2"]), "recovery_steps", "cycle"),
    (lambda rb: rb["recovery_steps"][1].update(id="s1"), "recovery_steps[1].id", "more than once"),
    (lambda rb: rb.update(id="other"), "id", "must equal the file name"),
    (lambda rb: rb["objectives"].update(rto="30h"), "objectives", "longer than mtpd"),
    (lambda rb: rb.update(colour="red"), "colour", "Extra inputs"),
    (lambda rb: rb.update(version="1"), "version", "integer"),
])
def test_step_graph_and_schema_errors_name_the_key(tmp_path: Path, change, key: str, needle: str) -> None:  # type: ignore[no-untyped-def]
    from tests.helpers.evidence_kit import runbooks

    rbs = runbooks()
    change(rbs["base"])
    kit = make(tmp_path, rbs=rbs, recs={})
    rc, _, err = run_cli("runbooks", "check", str(kit.runbooks))
    assert rc == 2, err
    assert f"base.yml: {key}" in err and needle in err, err
    assert "Traceback" not in err


def test_duplicate_keys_and_aliases_are_refused(tmp_path: Path) -> None:
    kit = make(tmp_path, recs={})
    p = kit.runbooks / "base.yml"
    p.write_text(p.read_text() + "tier: 2\n")
    rc, _, err = run_cli("runbooks", "check", str(kit.runbooks))
    assert rc == 2 and "duplicate key 'tier'" in err
    p.write_text("a: &x [1, 2]\nb: *x\n")
    rc, _, err = run_cli("runbooks", "check", str(kit.runbooks))
    assert rc == 2 and "anchors and aliases are not allowed" in err


def test_real_entry_point_exit_code() -> None:
    """Once through the installed console script (the rest of the CLI tests run in-process)."""
    exe = Path(sys.executable).parent / "continuity-agent"
    p = subprocess.run([str(exe), "evidence", "verify", "--runbooks", str(SHIPPED_RUNBOOKS), "--evidence",
                        str(SHIPPED_EVIDENCE), "--at", SHIPPED_AT], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "the recovery promise HOLDS (0 errors" in p.stdout


# -- the shipped example ------------------------------------------------------------------------------


def test_shipped_runbooks_pass_check() -> None:
    rc, out, err = run_cli("runbooks", "check", str(SHIPPED_RUNBOOKS))
    assert rc == 0, out + err
    res = check_runbooks(SHIPPED_RUNBOOKS)
    names = set(res.estate.runbooks)
    assert names == {"recovery-centre", "core-network", "active-directory", "sql-cluster", "file-services", "email",
                     "intranet", "crm", "fmis", "payroll", "personnel", "pamis", "mapping-lpg"}
    assert res.planned_seconds is not None and res.planned_seconds <= 72 * 3600


def test_shipped_exercise_passes_verify() -> None:
    rc, out, err = run_cli("evidence", "verify", "--runbooks", str(SHIPPED_RUNBOOKS), "--evidence",
                           str(SHIPPED_EVIDENCE), "--at", SHIPPED_AT, "--format", "json")
    assert rc == 0, out + err
    doc = json.loads(out)
    assert doc["ok"] and doc["findings"] == []
    assert all(s["valid"] and s["within_rto"] for s in doc["systems"])
    assert doc["latest_joint_exercise"] == "2026-03-joint-dr"
    assert doc["chain"]["length"] == 15
    cp = doc["critical_path"]
    assert cp["measured_seconds"] <= cp["objective_seconds"] == 72 * 3600
    # every record's artefacts exist and are hashed
    for rec in SHIPPED_EVIDENCE.glob("*.yml"):
        d = yaml.safe_load(rec.read_text())
        assert d["artefacts"] and all(len(a["sha256"]) == 64 for a in d["artefacts"])


# -- schemas ----------------------------------------------------------------------------------


def test_shipped_schemas_equal_generated() -> None:
    gen = generate()
    assert set(gen) == {"runbook.schema.json", "evidence.schema.json", "estate.schema.json"}
    for name, schema in gen.items():
        shipped = (SCHEMA_DIR / name).read_text(encoding="utf-8")
        assert shipped == render(schema), f"{name} is stale: run python -m agent.evidence.schema"


def test_schema_describes_yaml_as_written() -> None:
    rb = generate()["runbook.schema.json"]
    rto = rb["$defs"]["Objectives"]["properties"]["rto"]
    assert rto["type"] == "string" and "pattern" in rto
    ev = generate()["evidence.schema.json"]
    assert ev["properties"]["declared_at"]["format"] == "date-time"
    assert ev["additionalProperties"] is False


# -- hashing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
def test_sha256_file_equals_hashlib(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    p = tmp_path / "a.bin"
    p.write_bytes(data)
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()


def test_hash_cache_rehashes_changed_files(tmp_path: Path) -> None:
    p = tmp_path / "a.txt"
    p.write_text("one")
    c = HashCache()
    assert c.sha256(p) == hashlib.sha256(b"one").hexdigest()
    assert c.sha256(p) == hashlib.sha256(b"one").hexdigest() and c.hits == 1
    st = p.stat()
    p.write_text("two")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: ctime still changes
    assert c.sha256(p) == hashlib.sha256(b"two").hexdigest()


def test_hash_cache_kept_in_a_file_and_saved_while_hashing(tmp_path: Path) -> None:
    """The evidence collector's child keeps its digests between runs; with ``save_every`` it saves
    while hashing, so a run killed mid-way (SIGKILL: no chance to save at the end) leaves what
    it hashed."""
    kept = tmp_path / "hashes.json"
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.bin")
        files[-1].write_bytes(str(i).encode())
    c = HashCache.load(kept, save_every=0.0)
    assert not kept.exists()
    c.sha256(files[0])
    c.sha256(files[1])
    assert len(json.loads(kept.read_text())) == 2  # saved after each digest, no save() called
    assert kept.stat().st_mode & 0o777 == 0o600
    again = HashCache.load(kept)
    assert again.sha256(files[0]) == hashlib.sha256(b"0").hexdigest() and (again.hits, again.misses) == (1, 0)
    again.sha256(files[2])
    assert len(json.loads(kept.read_text())) == 2  # without save_every: only save() writes
    again.save(kept)
    assert len(json.loads(kept.read_text())) == 3
    # Garbage or a wrong shape in the file: an empty cache, everything hashed again.
    good = kept.read_text()
    nested = "[" * 5000 + "]" * 5000
    key = "[1, 2, 3, 4, 5]"
    for bad in ("{not json", '{"a": 1}', "[[1, 2]]", f'[[["x", 1, 2, 3, 4], "{"a" * 64}"]]', nested,
                f'[[[Infinity, 2, 3, 4, 5], "{"a" * 64}"]]', f'[[{key}, "not-a-digest"]]', f'[[{key}, "{"A" * 64}"]]'):
        kept.write_text(bad)
        fresh = HashCache.load(kept)
        assert fresh.sha256(files[0]) == hashlib.sha256(b"0").hexdigest() and fresh.misses == 1, bad[:40]
    # Only the agent's own regular file counts (a digest in it is believed): not one others may
    # write, not a link, not a FIFO (which would block the read), nothing larger than the cap.
    kept.write_text(good)
    assert HashCache.load(kept)._d
    kept.chmod(0o620)
    assert not HashCache.load(kept)._d
    kept.chmod(0o600)
    link = tmp_path / "link.json"
    link.symlink_to(kept)
    assert not HashCache.load(link)._d
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    assert not HashCache.load(fifo)._d
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(hashing.MAX_CACHE_FILE + 1)
    assert not HashCache.load(big)._d


def test_hash_cache_prunes_what_the_run_did_not_use_and_survives_a_failed_save(tmp_path: Path) -> None:
    kept = tmp_path / "hashes.json"
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    c = HashCache.load(kept)
    c.sha256(a)
    c.sha256(b)
    c.save(kept)
    b.unlink()  # deleted since: the next run does not look it up
    c = HashCache.load(kept)
    c.sha256(a)
    c.save(kept, prune=True)
    assert len(json.loads(kept.read_text())) == 1
    # A directory it cannot write: the failure is kept (for the agent to log), and autosave tries
    # again only after save_every, not after every digest.
    gone = tmp_path / "gone" / "hashes.json"
    c = HashCache.load(gone, save_every=3600.0)
    c._last_save -= 7200
    tries = []
    real_save = c.save
    c.save = lambda path, prune=False: (tries.append(path), real_save(path, prune))[1]  # type: ignore[method-assign]
    for i in range(5):
        f = tmp_path / f"{i}.x"
        f.write_bytes(bytes([i]))
        c.sha256(f)
    assert len(tries) == 1 and c.save_error and "cannot keep the artefact digests" in c.save_error
    assert str(gone) in c.save_error


def test_resolve_artefact(tmp_path: Path) -> None:
    (tmp_path / "ev").mkdir()
    assert resolve_artefact(tmp_path / "ev", "a/b.txt").ok
    assert not resolve_artefact(tmp_path / "ev", "a/../../b.txt").ok
    assert not resolve_artefact(tmp_path / "ev", "/etc/passwd").ok
    assert not resolve_artefact(tmp_path / "ev", "C:\\x").ok


def test_seal_lock_does_not_follow_a_symlink(tmp_path: Path) -> None:
    """Issue 19 (low): ``evidence/.seal.lock`` followed a symlink and created the target."""
    kit = make(tmp_path, seal_records=False)
    target = tmp_path / "elsewhere" / "created-by-the-sealer"
    target.parent.mkdir()
    (kit.evidence / ".seal.lock").symlink_to(target)
    rc, _, err = run_cli("evidence", "seal", "--runbooks", str(kit.runbooks), "--evidence", str(kit.evidence),
                         str(kit.record_path("01-base.yml")))
    assert rc == 2 and ".seal.lock: cannot open the lock file: it is a symlink" in err, err
    assert not target.exists()
    assert "sequence:" not in kit.record_path("01-base.yml").read_text()
    (kit.evidence / ".seal.lock").unlink()
    kit.seal("01-base.yml")  # a real lock file: fine, and private
    assert (kit.evidence / ".seal.lock").stat().st_mode & 0o077 == 0
