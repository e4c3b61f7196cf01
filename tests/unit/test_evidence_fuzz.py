"""Fuzz the runbook and evidence loaders through the CLI: invalid input exits 2 naming the file
and the key, and nothing ever escapes as a traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.evidence_kit import AT, make, records, run_cli, runbooks

PREFIX = "continuity-agent: "

junk = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=24),
    st.sampled_from(["2025-01-10T08:00:00", "2025-13-40T99:00:00+00:00", "30x", "-4h", "P", "", "ok", "pass",
                     "2025-01-10", "../../etc/passwd", "a" * 3000, "full_recovery"]),
    st.lists(st.integers(), max_size=3), st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=6), st.integers(), max_size=3),
)


def paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += paths(v, (*prefix, i))
    return out


def mutate(doc: Any, path: tuple[Any, ...], action: str, value: Any) -> None:
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "extra" and isinstance(parent[last], dict):
        parent[last]["unexpected_key"] = value
    else:
        parent[last] = value


def check_output(rc: int, out: str, err: str, fname: str, top_key: str, action: str) -> None:
    assert "Traceback" not in out + err
    assert "{value" not in err and "!r}" not in err, err  # message templates filled in
    assert rc in (0, 1, 2), (rc, err)
    if rc == 2:
        lines = [x for x in err.splitlines() if x]
        assert lines, "exit 2 without a message"
        assert all(x.startswith(PREFIX) for x in lines), err
        assert any(fname in x for x in lines), err
        if action != "delete":
            # the key path (or, for whole-file problems, the file alone) is named
            assert any(f"{fname}: {top_key}" in x or (x.startswith(f"{PREFIX}") and top_key in x) for x in lines), err


MUTATION = st.tuples(st.sampled_from(["replace", "delete", "extra"]), junk)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(data=st.data(), mutation=MUTATION)
def test_fuzz_runbook_loader(data: st.DataObject, mutation: tuple[str, Any]) -> None:
    rbs = runbooks()
    path = data.draw(st.sampled_from(paths(rbs["base"])))
    action, value = mutation
    mutate(rbs["base"], path, action, value)
    with tempfile.TemporaryDirectory() as d:
        kit = make(Path(d), rbs={"base": rbs["base"]}, recs={})
        rc, out, err = run_cli("runbooks", "check", str(kit.runbooks))
        check_output(rc, out, err, "base.yml", str(path[0]), action)


@FUZZ
@given(data=st.data(), mutation=MUTATION)
def test_fuzz_evidence_loader(data: st.DataObject, mutation: tuple[str, Any]) -> None:
    rec = records()["01-base.yml"]
    path = data.draw(st.sampled_from(paths(rec)))
    action, value = mutation
    mutate(rec, path, action, value)
    with tempfile.TemporaryDirectory() as d:
        kit = make(Path(d), recs={})
        (kit.evidence / "artefacts").mkdir()
        (kit.evidence / "artefacts" / "base-log.txt").write_text("log\n")
        (kit.evidence / "01-base.yml").write_text(yaml.safe_dump(rec, sort_keys=False))
        rc, out, err = run_cli("evidence", "verify", "--runbooks", str(kit.runbooks), "--evidence",
                               str(kit.evidence), "--at", AT.isoformat())
        check_output(rc, out, err, "01-base.yml", str(path[0]), action)
        # sealing the same input never tracebacks either
        rc, out, err = run_cli("evidence", "seal", "--runbooks", str(kit.runbooks), "--evidence",
                               str(kit.evidence), str(kit.evidence / "01-base.yml"))
        assert rc in (0, 2) and "Traceback" not in err


@FUZZ
@given(raw=st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_fuzz_raw_bytes(raw: bytes | str) -> None:
    with tempfile.TemporaryDirectory() as d:
        kit = make(Path(d), recs={})
        data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
        (kit.runbooks / "base.yml").write_bytes(data)
        (kit.evidence / "r.yml").write_bytes(data)
        rc, _out, err = run_cli("runbooks", "check", str(kit.runbooks))
        assert rc == 2 and "base.yml" in err and "Traceback" not in err, (rc, err)
        rc, _out, err = run_cli("evidence", "verify", "--runbooks", str(kit.runbooks), "--evidence", str(kit.evidence))
        assert rc == 2 and "Traceback" not in err
