"""Docs are code: every command a doc gives parses with the real CLI, every config snippet loads, every
metric, recording rule, alert and config key a doc names exists. tests/e2e/test_docs_run.py runs
the commands that need only loopback and the shipped files."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from agent.catalogue import catalogue
from agent.cli import build_parser, main
from tests.helpers.docsnippets import (
    DOC_FILES,
    ROOT,
    Snippet,
    agent_argv,
    all_snippets,
    shell_commands,
)

pytestmark = pytest.mark.unit

SNIPPETS = all_snippets()


def _parse(argv: list[str]) -> str | None:
    """None when the real parser accepts ``argv``, else its complaint."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as e:
        if e.code:
            return err.getvalue().strip().splitlines()[-1]
    return None


def agent_commands() -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    for s in SNIPPETS:
        if s.lang in ("inline", "header"):
            argv = agent_argv(s.body)
            if argv is not None:
                out.append((s.where, argv))
        elif s.lang in ("sh", "text") and s.mark not in ("usage", "output"):
            for _, cmd in shell_commands(s.body):
                argv = agent_argv(cmd)
                if argv is not None:
                    out.append((s.where, argv))
    return out


def test_the_docs_give_commands_to_check() -> None:
    # The harvester itself must keep finding what is there (a broken regex would pass everything).
    assert len(agent_commands()) >= 30
    assert sum(s.lang == "yaml" for s in SNIPPETS) >= 10


def test_every_continuity_agent_command_in_the_docs_parses() -> None:
    bad = [f"{where}: continuity-agent {' '.join(argv)}: {why}" for where, argv in agent_commands()
           if (why := _parse(argv))]
    assert not bad, "\n".join(bad)


def _usage_lines() -> list[tuple[str, str]]:
    out = []
    for s in SNIPPETS:
        if s.lang == "text" and s.mark == "usage":
            out += [(s.where, line) for line in s.body.splitlines() if line.startswith("continuity-agent ")]
    return out


def test_usage_synopses_name_real_subcommands_and_flags() -> None:
    assert _usage_lines(), "README's command synopsis is marked <!-- doc-test: usage -->"
    parser = build_parser()
    bad = []
    for where, line in _usage_lines():
        words = line.split("#")[0].split()[1:]
        node = parser
        path = []
        for w in words:
            subs = [a for a in node._actions if a.__class__.__name__ == "_SubParsersAction"]
            if subs and w in subs[0].choices:  # type: ignore[attr-defined]
                node = subs[0].choices[w]  # type: ignore[attr-defined]
                path.append(w)
            else:
                break
        known = {o for a in node._actions for o in a.option_strings}
        for flag in re.findall(r"(?<![\w-])--[a-z][\w.-]*", line):
            if flag not in known:
                bad.append(f"{where}: continuity-agent {' '.join(path)}: no flag {flag}")
        if not path and words and not words[0].startswith("-"):
            bad.append(f"{where}: no subcommand {words[0]!r}")
    assert not bad, "\n".join(bad)


def test_every_shell_block_runs_or_says_why_not() -> None:
    bad = [s.where for s in SNIPPETS if s.lang == "sh" and s.mark not in ("run", "output")
           and not (s.mark == "not run" and len(s.why) > 10)]
    assert not bad, ("shell blocks need <!-- doc-test: run --> or <!-- doc-test: not run: REASON --> "
                     "on the line before: " + ", ".join(bad))


def _yaml_snippets() -> list[Snippet]:
    return [s for s in SNIPPETS if s.lang == "yaml"]


def _json_snippets() -> list[Snippet]:
    return [s for s in SNIPPETS if s.lang == "json"]


@pytest.mark.parametrize("snippet", _yaml_snippets(), ids=lambda s: s.where)
def test_yaml_snippets_are_yaml(snippet: Snippet) -> None:
    try:
        yaml.safe_load(snippet.body)
    except yaml.YAMLError as e:
        pytest.fail(f"{snippet.where}: not YAML: {e}")


@pytest.mark.parametrize("snippet", _json_snippets(), ids=lambda s: s.where)
def test_json_snippets_are_json(snippet: Snippet) -> None:
    json.loads(snippet.body)


def _doc_texts() -> dict[str, str]:
    texts = {str(f.relative_to(ROOT)): f.read_text() for f in DOC_FILES}
    for f in sorted((ROOT / "deploy" / "examples").glob("*.yml")):
        texts[str(f.relative_to(ROOT))] = f.read_text()
    return texts


def _rule_names() -> tuple[set[str], set[str]]:
    alerts, records = set(), set()
    for f in (ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"):
        for group in yaml.safe_load(f.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    alerts.add(rule["alert"])
                else:
                    records.add(rule["record"])
    return alerts, records


# Words that look like metric names and are not: a PostgreSQL role in the backup example.
NOT_METRICS = {"continuity_ro"}


def test_every_metric_and_recording_rule_a_doc_names_exists() -> None:
    from collectors.snmp.config import METRIC_PREFIX as SNMP_MAPPED  # names the operator maps

    names = set(catalogue()) | {SNMP_MAPPED}
    _, records = _rule_names()
    bad = []
    for doc, text in _doc_texts().items():
        for n, line in enumerate(text.splitlines(), 1):
            for m in re.finditer(r"(?<![\w:.])([a-z_]+:)?(continuity_[a-z0-9_]+)(:[a-z_:]+)?([*{<])?", line):
                full, metric = m.group(0), m.group(2)
                if m.group(4) or metric.endswith("_"):  # a family: continuity_backup_*, continuity_x_{a,b}, _<name>
                    if not any(x.startswith(metric) for x in names | records):
                        bad.append(f"{doc}:{n}: no metric matches {full}")
                elif m.group(1) or m.group(3):
                    if full not in records:
                        bad.append(f"{doc}:{n}: no recording rule {full}")
                elif metric not in names and metric not in NOT_METRICS:
                    bad.append(f"{doc}:{n}: no metric {metric}")
    assert not bad, "\n".join(sorted(set(bad)))


def test_every_alert_has_its_section_and_every_section_an_alert() -> None:
    alerts, _ = _rule_names()
    text = (ROOT / "docs" / "alerts.md").read_text()
    # An alert's section: its name as the heading, then "*severity · category · for ...*".
    sections = set(re.findall(r"^## ([A-Z][A-Za-z0-9]+)\s*\n+\*[a-z][^*\n]* · ", text, re.M))
    assert len(sections) >= 10
    assert sections - alerts == set(), "sections for alerts that do not exist"
    assert alerts - sections == set(), "alerts with no section in docs/alerts.md"


def _config_fields() -> dict[str, set[str]]:
    from agent.config import AgentConfig

    out: dict[str, set[str]] = {}
    for name, field in AgentConfig.model_fields.items():
        ann = field.annotation
        inner = getattr(ann, "model_fields", None)
        if inner is None:
            for arg in getattr(ann, "__args__", ()):
                inner = getattr(arg, "model_fields", None) or inner
        if inner:
            out[field.alias or name] = {f.alias or k for k, f in inner.items()}
    return out


def test_every_dotted_config_key_a_doc_names_exists() -> None:
    fields = _config_fields()
    assert {"agent", "defaults"} <= set(fields)
    bad = []
    for doc, text in _doc_texts().items():
        for m in re.finditer(r"`(agent|defaults|reports|exercises)\.([a-z_]+)`", text):
            section, key = m.groups()
            python_module = (ROOT / section / key).is_dir() or (ROOT / section / f"{key}.py").is_file()
            if section in fields and key not in fields[section] and not python_module:
                bad.append(f"{doc}: `{section}.{key}` is not a config key")
    assert not bad, "\n".join(bad)


AGENT_KEYS = {"agent", "defaults", "sites", "site_classes", "auths", "targets", "reports", "exercises"}
# Where the docs tell a reader to keep secrets and data on a server; stubbed under a temporary directory.
SERVER_PATHS = ("/etc/continuity-agent/", "/srv/continuity/", "/var/lib/continuity-agent", "/etc/backup/")


def _stub_server_paths(text: str, tmp: Path) -> str:
    for prefix in SERVER_PATHS:
        text = text.replace(prefix, f"{tmp}/server{prefix}")
    for m in re.finditer(r"(?<![\w-])(\w+_file|\w+_dir|dir|known_hosts):\s*([^\s#{}\[\],]+)", text):
        key, value = m.groups()
        p = Path(value) if value.startswith("/") else tmp / value
        shipped = ROOT / "deploy" / "examples" / value
        if not value.startswith("/") and shipped.is_file():  # the bank holidays list
            shutil.copy(shipped, p)
        elif key.endswith("_dir") or key == "dir":
            p.mkdir(parents=True, exist_ok=True)
        elif not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("doc-test-secret\n")
            p.chmod(0o600)
    return text


@pytest.mark.parametrize("snippet", [s for s in _yaml_snippets()
                                     if set(yaml.safe_load(s.body)) <= AGENT_KEYS], ids=lambda s: s.where)
def test_config_snippets_pass_check_config(snippet: Snippet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    text = _stub_server_paths(snippet.body, tmp_path)
    data = yaml.safe_load(text)
    for name in re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", text):
        monkeypatch.setenv(name, "doc-test-secret")
    if "agent" not in data:  # a fragment: the reader adds it to their config
        sites = [s["name"] for s in data.get("sites") or []]
        sites += [t["site"] for t in data.get("targets", []) if "site" in t]
        site = (sites or ["hq"])[0]
        text = f"agent: {{site: {site}, state_dir: state}}\n" + text
    cfg = tmp_path / "agent.yml"
    cfg.write_text(text)
    rc = main(["check-config", str(cfg)])
    assert rc == 0, f"{snippet.where}:\n{capsys.readouterr().err}"


@pytest.mark.parametrize("snippet", [s for s in _yaml_snippets()
                                     if {"id", "recovery_steps"} <= set(yaml.safe_load(s.body))], ids=lambda s: s.where)
def test_runbook_snippets_are_valid_runbooks(snippet: Snippet) -> None:
    from agent.evidence.models import Runbook

    Runbook.model_validate(yaml.safe_load(snippet.body))


@pytest.mark.parametrize("snippet", [s for s in _yaml_snippets()
                                     if {"runbook", "steps"} <= set(yaml.safe_load(s.body))], ids=lambda s: s.where)
def test_evidence_snippets_are_valid_records(snippet: Snippet) -> None:
    from agent.evidence.models import EvidenceRecord

    data = yaml.safe_load(snippet.body)
    for seal_field in ("runbook_sha256", "sequence", "prev_record_sha256", "record_sha256"):
        data.pop(seal_field, None)  # written by sealing; shown as … in the docs
    for artefact in data.get("artefacts", []):
        artefact["sha256"] = "0" * 64
    EvidenceRecord.model_validate(data)


def _config_models() -> list[tuple[str, type]]:
    from agent.config import AgentConfig
    from collectors.registry import auth_models, collectors

    out: list[tuple[str, type]] = [("", AgentConfig)]
    out += [(kind, c.config_model) for kind, c in collectors().items()]
    out += [(f"auths ({kind})", m) for kind, m in auth_models().items()]
    return out


def test_every_config_key_is_documented() -> None:
    """Every key of every config model (agent sections, each target kind, each auth type, nested
    blocks) is named in the docs or the example configs: in backticks, or as a YAML key."""
    import typing

    from pydantic import BaseModel

    texts = "\n".join(_doc_texts().values())

    def documented(key: str) -> bool:
        k = re.escape(key)
        return re.search(rf"`{k}`|`{k}:|`[a-z_.]*\.{k}`|^\s*#?\s*-?\s*{k}:|[{{,]\s*{k}:", texts, re.M) is not None

    def models(ann: object) -> list[type[BaseModel]]:
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            return [ann]
        return [m for a in typing.get_args(ann) for m in models(a)]

    seen: set[type] = set()
    missing: list[str] = []

    def walk(model: type[BaseModel], path: str) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():
            key = field.alias or name
            if not documented(key):
                missing.append(f"{path}.{key}".lstrip("."))
            for inner in models(field.annotation):
                walk(inner, f"{path}.{key}")

    for path, model in _config_models():
        walk(model, path)
    assert len(seen) >= 20
    assert not missing, "config keys no doc names: " + ", ".join(missing)
