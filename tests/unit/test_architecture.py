"""Dependencies point one way (issue #15): read the import statements of every module in agent/
and collectors/ and fail on agent -> collectors (outside the registry) and on any import cycle;
importing the agent loads no collector's heavy library."""

from __future__ import annotations

import ast
import graphlib
import json
import subprocess
import sys
from pathlib import Path

from agent.cli import SUBCOMMAND_MODULES
from tests.helpers.exercise_script import RUNBOOKS, evidence_copy, running_exercise

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agent", "collectors")
# The one module in agent/ that names collector modules (as strings) and loads them lazily.
REGISTRY = "agent.registry"
HEAVY = ("paramiko", "pysnmp", "cryptography", "jinja2", "openpyxl")
# What the demo agent (deploy/examples/demo.yml: no web config, no reports, no SNMP, SSH or backup
# target) does not use, so must not load: the web config (TLS, basic auth, bcrypt; only with
# --web.config.file), APScheduler's cron trigger (only for a cron schedule: reports, throughput
# tests), the exercise board's pages (on the first request to /exercise/) and its write path
# (recording and uploads, with unicodedata: with the pages or an `exercise` command), the report
# machinery (only when a report is made, or the exercise board draws a chart), the collectors of
# kinds it has no target of, ctypes' Python classes (glibc's mallopt is called through _ctypes) and
# the status page's verdicts (agent.outcomes: with the first request for the status).
# An exercise's status (replay, critical path): from the first exercise the board finds.
EXERCISE_STATUS = ("agent.exercises.status", "agent.exercises.model", "agent.jsonfields")
DEMO_UNUSED = (
    "bcrypt",
    "ctypes",
    "agent.exercises.record",
    "agent.multipart",
    "unicodedata",
    "agent.webconfig",
    "agent.openssl",
    "apscheduler.triggers.cron",
    "agent.exercises.web",
    "agent.reports.model",
    "agent.reports.runner",
    "collectors.snmp",
    "collectors.ssh",
    "collectors.backup",
    "agent.reports.svg",
    "agent.outcomes",
    *EXERCISE_STATUS,
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, modules: set[str], top_level_only: bool = False) -> set[str]:
    """Project modules a module imports at run time: top-level and inside functions (only the
    top level with ``top_level_only``), without ``if TYPE_CHECKING:`` blocks. ``from pkg import
    name`` counts as ``pkg.name`` when that is a module, else as ``pkg``."""
    name = _module_name(path)
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if top_level_only and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for a in node.names:
                out.add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.add(sub if sub in modules else mod)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    # Keep project modules only; an import of a package also runs its __init__.
    return {m for m in out if m in modules and m != name}


def _graph(top_level_only: bool = False) -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {_module_name(p) for p in files}
    graph: dict[str, set[str]] = {}
    for p in files:
        graph[_module_name(p)] = _imports(p, modules, top_level_only)
    return graph


def test_the_import_reader_sees_imports() -> None:
    # Guards the test itself: the reader must see both kinds of edges it polices.
    graph = _graph()
    assert "agent.plugin" in graph["collectors.base"]
    assert "collectors.base" in graph["collectors.link"]
    assert "agent.configtypes" in graph["agent.config"]
    assert any(d.startswith("agent") for d in graph["collectors.standards"])


def test_agent_never_imports_collectors() -> None:
    bad = sorted(
        f"{m} imports {d}"
        for m, deps in _graph().items()
        if m.split(".")[0] == "agent" and m != REGISTRY
        for d in deps
        if d.split(".")[0] == "collectors"
    )
    assert bad == [], "agent/ must not import collectors/ (only agent/registry.py names them):\n" + "\n".join(bad)


def test_collectors_do_not_load_the_config_when_imported() -> None:
    # agent.config builds the target union from the registry when it is imported, so a collector
    # module that imports it (directly or through another module) at its top level would be
    # imported half-way through loading the config: it imports it where it uses it instead.
    graph = _graph(top_level_only=True)
    bad = []
    for m in sorted(graph):
        if m.split(".")[0] != "collectors":
            continue
        seen, todo = set(), [m]
        while todo:
            cur = todo.pop()
            for d in graph.get(cur, ()):
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        if "agent.config" in seen:
            bad.append(m)
    assert bad == [], "collector modules loading agent.config at import: " + ", ".join(bad)


def test_registry_names_collectors_only_as_strings() -> None:
    graph = _graph()
    assert not {d for d in graph[REGISTRY] if d.split(".")[0] == "collectors"}


def test_no_import_cycles() -> None:
    graph = _graph()
    # Strongly connected components (Tarjan) larger than one module are cycles.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    assert cycles == [], "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)
    # The same graph has a topological order (what graphlib would refuse on a cycle).
    assert list(graphlib.TopologicalSorter(graph).static_order())


def test_cycle_detection_catches_a_cycle(tmp_path: Path) -> None:
    ts = graphlib.TopologicalSorter({"a": {"b"}, "b": {"a"}})
    try:
        list(ts.static_order())
    except graphlib.CycleError:
        return
    raise AssertionError("graphlib did not report the cycle")


def _loaded_after(code: str, modules: tuple[str, ...] = HEAVY) -> dict[str, bool]:
    probe = f"import sys\n{code}\nimport json\nprint(json.dumps({{m: m in sys.modules for m in {list(modules)!r}}}))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_importing_the_agent_loads_no_heavy_library() -> None:
    loaded = _loaded_after("import agent.cli")
    assert not any(loaded.values()), loaded


def _demo_agent(tmp_path: Path, evidence: Path | None = None, active: tuple[str, ...] = (), parser: bool = True) -> str:
    """Code that starts the demo agent (HTTP, scheduler, subcommands registered unless not
    ``parser``, as `run` does), runs every target and the exercise board's status job once, and
    scrapes /metrics; with ``evidence``, the board reads its exercises there, and finds the
    ``active`` ones (in its metrics too)."""
    exercises = (
        f",\n  'exercises': ExercisesConfig(runbooks_dir={str(RUNBOOKS)!r}, evidence_dir={str(evidence)!r})"
        if evidence
        else ""
    )
    return (
        "import asyncio\n"
        "import agent.cli\n"
        f"{'agent.cli.build_parser()' if parser else ''}\n"
        "from agent.config import load_config\n"
        "from agent.exercises.config import ExercisesConfig\n"
        "from agent.service import Agent\n"
        "loaded = load_config('deploy/examples/demo.yml')\n"
        "cfg = loaded.config.model_copy(update={'agent': loaded.config.agent.model_copy("
        f"update={{'state_dir': __import__('pathlib').Path({str(tmp_path)!r})}}){exercises}}})\n"
        "loaded = type(loaded)(path=loaded.path, config=cfg, sha256=loaded.sha256)\n"
        "async def main():\n"
        "    a = Agent(loaded, listen='127.0.0.1:0')\n"
        "    await a.start()\n"
        # The board's form key is made at start, as ever, though its pages load on first use.
        f"    assert (__import__('pathlib').Path({str(tmp_path)!r}) / 'exercise-board.key').exists()\n"
        "    for t in cfg.targets:\n"
        "        await a.run_now(t.name)\n"
        "    assert {k[0] for k in a.store.snapshot().latest} == {t.name for t in cfg.targets}\n"
        # The board's status job (every 30 s at idle) lists the journals and reads each.
        "    await asyncio.to_thread(a.exercise_board.refresh)\n"
        "    assert a.exercise_board.errors == {}\n"
        "    exercises = sorted(a.exercise_board.snapshots)\n"
        # A scrape, by a client that loads nothing the agent does not (urllib's getaddrinfo of a
        # str host would load the IDNA codec and unicodedata).
        "    r, w = await asyncio.wait_for(asyncio.open_connection('127.0.0.1', a.http.port), 10)\n"
        "    w.write(b'GET /metrics HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n')\n"
        "    body = await asyncio.wait_for(r.read(), 10)\n"
        "    w.close()\n"
        "    assert body.startswith(b'HTTP/1.1 200') and b'continuity_probe_success' in body, body[:200]\n"
        "    shown = [n for n in exercises if f'continuity_exercise_active{{exercise=\"{n}\"}} 1.0'.encode() in body]\n"
        f"    assert exercises == shown == {sorted(active)!r}, (exercises, shown)\n"
        "    await a.stop()\n"
        "asyncio.run(main())\n"
    )


def test_running_the_demo_agent_loads_no_heavy_library(tmp_path: Path) -> None:
    # The demo has no SSH, SNMP or backup target, no reports and no exercise: none of their
    # libraries and modules load, even with the agent started and every target run.
    loaded = _loaded_after(_demo_agent(tmp_path), HEAVY + DEMO_UNUSED)
    assert not any(loaded.values()), loaded


def test_the_evidence_collector_leaves_the_verifier_out_of_the_agent(tmp_path: Path) -> None:
    # The demo's evidence target runs (its result stored, like every target's) in a child
    # process: neither the verifier nor the loader nor the evidence models load in the agent.
    verifier = ("agent.evidence", "agent.evidence.verifier", "agent.evidence.loader", "agent.evidence.models")
    loaded = _loaded_after(_demo_agent(tmp_path, parser=False), verifier)
    assert not any(loaded.values()), loaded


def test_an_exercise_under_way_loads_its_status_but_not_the_write_path(tmp_path: Path) -> None:
    # An exercise recorded (by this process) in the board's evidence directory: the status job
    # reads it with the status code, still without the board's pages and write path.
    evidence = evidence_copy(tmp_path / "ev")
    running_exercise(evidence)
    loaded = _loaded_after(_demo_agent(tmp_path, evidence, ("live-1",)), HEAVY + DEMO_UNUSED)
    assert {m for m, v in loaded.items() if v} == set(EXERCISE_STATUS), loaded


def test_the_run_command_loads_no_other_subcommand() -> None:
    # `run` parses its arguments without the modules of the other subcommands (which stay loaded
    # for as long as the agent runs); they load for the command that needs them.
    def command(argv: list[str]) -> str:
        return f"import agent.cli\ntry:\n    agent.cli.main({argv!r})\nexcept SystemExit:\n    pass\n"

    # A plain `run` line is parsed without argparse (agent.cli._run_args).
    parsing = ("argparse", "gettext")
    run = _loaded_after(command(["run", "--config", "/nonexistent/agent.yml"]), SUBCOMMAND_MODULES + parsing)
    assert not any(run.values()), run
    other = _loaded_after(command(["evidence", "verify", "--runbooks", "/nonexistent"]), SUBCOMMAND_MODULES + parsing)
    assert other["agent.evidence.cli"] and other["argparse"]


def test_an_ssh_target_loads_paramiko_when_it_is_used() -> None:
    # The other side of lazy loading: the library does load where it is needed.
    loaded = _loaded_after("import collectors.ssh\ncollectors.ssh.host_key_policy()")
    assert loaded["paramiko"]
