"""``continuity-agent`` command line. Exit codes: 0 fine, 1 findings/failures, 2 bad input."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent import logs as agent_logs
from agent.escape import label_value, terminal

if TYPE_CHECKING:
    import argparse  # loaded by build_parser: a plain `run` command line is parsed without it

log = logging.getLogger("continuity-agent")

# Modules adding subcommands: each has ``register(subparsers)`` and sets ``func(args) -> int``.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "agent.reports.cli",
    "agent.evidence.cli",
    "agent.standards_cli",
    "agent.exercises.cli",
)

# The commands this module defines: for them the subcommand modules above need not load.
OWN_COMMANDS: tuple[str, ...] = ("run", "check-config", "collect-once")
_GLOBAL_OPTIONS = ("--log-format", "--log-level")

EXIT_OK, EXIT_FINDINGS, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(Exception):
    """Bad input the user can fix: printed as one line, exit 2."""


def _err(msg: str) -> None:
    print(f"continuity-agent: {terminal(msg)}", file=sys.stderr)


@contextlib.contextmanager
def progress(label: str) -> Iterator[None]:
    """A spinner on stderr while slow work runs, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield
        return
    stop = threading.Event()
    t0 = time.monotonic()

    def spin() -> None:
        frames = "|/-\\"
        i = 0
        while not stop.wait(0.1):
            sys.stderr.write(f"\r{frames[i % 4]} {label} ({time.monotonic() - t0:.1f}s)")
            sys.stderr.flush()
            i += 1

    th = threading.Thread(target=spin, daemon=True)
    th.start()
    try:
        yield
    finally:
        stop.set()
        th.join()
        sys.stderr.write("\r" + " " * (len(label) + 20) + "\r")
        sys.stderr.flush()


def _load(path: str) -> Any:
    from agent.config import ConfigError, load_config

    try:
        loaded = load_config(path)
    except ConfigError as e:
        for issue in e.issues:
            _err(str(issue))
        raise SystemExit(EXIT_BAD_INPUT) from None
    for w in loaded.warnings:
        log.warning("%s", w)
    return loaded


def cmd_check_config(args: argparse.Namespace) -> int:
    from agent.config import ConfigError, dump_config, load_config

    try:
        loaded = load_config(args.file)
    except ConfigError as e:
        for issue in e.issues:
            print(str(issue), file=sys.stderr)
        print(f"{args.file}: {len(e.issues)} error(s)", file=sys.stderr)
        return EXIT_BAD_INPUT
    for w in loaded.warnings:
        print(f"{args.file}: warning: {w}", file=sys.stderr)
    if args.dump:
        print(dump_config(loaded.config), end="")
    else:
        cfg = loaded.config
        print(f"{args.file}: OK ({len(cfg.targets)} targets, {len(cfg.sites) or 1} sites, {len(cfg.auths)} auths)")
    return EXIT_OK


def cmd_run(args: argparse.Namespace | SimpleNamespace) -> int:
    from agent.service import Agent

    loaded = _load(args.config)
    web_config = None
    if args.web_config_file:
        from agent.webconfig import WebConfigError, load_web_config

        try:
            web_config = load_web_config(args.web_config_file, loaded.config.agent.refuses_loose_secret_files)
        except WebConfigError as e:
            _err(str(e))
            return EXIT_BAD_INPUT

    async def main() -> int:
        agent = Agent(loaded, listen=args.listen_address, web_config=web_config)
        try:
            await agent.start()
        except OSError as e:
            _err(f"cannot listen on {args.listen_address or loaded.config.agent.listen_address}: {e.strerror or e}")
            await agent.stop()
            return EXIT_BAD_INPUT
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(agent.reload()))
        await stop.wait()
        log.info("shutting down")
        await agent.stop()
        return EXIT_OK

    return asyncio.run(main())


def cmd_collect_once(args: argparse.Namespace) -> int:
    from agent.plugin import CollectorContext
    from agent.runner import run_task
    from agent.service import build_collectors

    loaded = _load(args.config)
    cfg = loaded.config
    target = cfg.target(args.target)
    if target is None:
        names = ", ".join(t.name for t in cfg.targets) or "none"
        _err(f"{args.config}: no target named {args.target!r} (targets: {names})")
        return EXIT_BAD_INPUT

    async def main() -> int:
        from concurrent.futures import ThreadPoolExecutor

        from agent.state import StateStore

        store = StateStore(cfg.agent.state_dir if args.use_state else None)
        with ThreadPoolExecutor(max_workers=8) as ex:
            ctx = CollectorContext(
                auths=cfg.auths, executor=ex, state_dir=cfg.agent.state_dir, shared={}, store=store, config=cfg
            )
            col = build_collectors(
                loaded.__class__(loaded.path, cfg.model_copy(update={"targets": [target]}), loaded.sha256), ctx
            )[target.name]
            rc = EXIT_OK
            results = []
            known = [task.name for task in col.tasks()]
            if args.task is not None and args.task not in known:
                await col.close()
                store.close()
                shown = ", ".join(repr(name) if name else "'' (the main task)" for name in known)
                _err(f"{args.config}: target {target.name!r} has no task {args.task!r} (tasks: {shown})")
                return EXIT_BAD_INPUT
            try:
                for task in col.tasks():
                    if args.task is not None and task.name != args.task:
                        continue
                    label = f"collecting {target.name}" + (f"/{task.name}" if task.name else "")
                    with progress(label):
                        r = await run_task(col, task, site=cfg.site_of(target))
                    if args.use_state:  # the whole result (and its outcomes), as a scheduled run stores it
                        store.put(r)
                    results.append(r)
            finally:
                await col.close()
                store.close()
        for r in results:
            if args.format == "json":
                print(
                    json.dumps(
                        {
                            "target": r.target,
                            "task": r.task,
                            "ok": r.ok,
                            "reason": r.reason,
                            "message": r.message,
                            "duration_seconds": r.duration,
                            "partial_errors": r.partial_errors,
                            "info": r.info,
                            "samples": [
                                {"name": s.name, "labels": dict(s.labels), "value": s.value} for s in r.samples
                            ],
                        },
                        indent=1,
                        default=str,
                    )
                )
            else:
                # Device and tool strings are hostile: terminal-safe, label values quoted as
                # the exposition format does (agent.escape).
                head = f"{r.target}" + (f" [{r.task}]" if r.task else "")
                print(f"# {terminal(head)}: {'OK' if r.ok else 'FAILED'} in {r.duration!r}s")
                if not r.ok:
                    print(f"# error ({terminal(r.reason)}): {terminal(r.message)}")
                for reason, msg in r.partial_errors:
                    print(f"# partial error ({terminal(reason)}): {terminal(msg)}")
                for k, v in r.info.items():
                    print(f"# {terminal(k)}: {terminal(json.dumps(v, default=str) if not isinstance(v, str) else v)}")
                for s in r.samples:
                    labels = ",".join(f'{k}="{label_value(v)}"' for k, v in sorted(s.labels.items()))
                    # Exact: the shortest repr that reads back as the same float (1796150123.25, not 1.79615e+09).
                    print(f"{s.name}{{{labels}}} {s.value!r}" if labels else f"{s.name} {s.value!r}")
            if not r.ok:
                rc = EXIT_FINDINGS
        return rc

    return asyncio.run(main())


def build_parser(*, every_command: bool = True) -> argparse.ArgumentParser:
    """The command line parser; without ``every_command`` only with the commands of this module
    (:data:`OWN_COMMANDS`), which parse exactly as with every command."""
    import argparse

    p = argparse.ArgumentParser(
        prog="continuity-agent",
        description="Measures availability, link speed, backups and DR recovery evidence as Prometheus metrics.",
    )
    p.add_argument("--version", action="version", version=f"continuity-agent {__version__}")
    _add_global_options(p, top=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="run the agent")
    r.add_argument("--config", required=True, help="agent config file (YAML)")
    r.add_argument(
        "--web.listen-address",
        dest="listen_address",
        default=None,
        help="HOST:PORT to serve /metrics on (default from config, 127.0.0.1:9072)",
    )
    r.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default=None,
        help="TLS and basic auth config in the Prometheus exporter-toolkit format (docs/security.md)",
    )
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check-config", help="validate a config file; exit 2 listing every error")
    c.add_argument("file")
    c.add_argument("--dump", action="store_true", help="print the effective config, secrets masked")
    c.set_defaults(func=cmd_check_config)

    o = sub.add_parser("collect-once", help="collect one target now and print its samples and errors")
    o.add_argument("--config", required=True)
    o.add_argument("--format", choices=("text", "json"), default="text")
    o.add_argument("--task", default=None, help="only this task of the target ('' for the main one)")
    o.add_argument("--use-state", action="store_true", help="read and write the agent's state database")
    o.add_argument("target")
    o.set_defaults(func=cmd_collect_once)

    if every_command:
        for mod in SUBCOMMAND_MODULES:
            importlib.import_module(mod).register(sub)
    _global_options_everywhere(p)
    return p


LOG_LEVELS = ("debug", "info", "warning", "error")


def _add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``--log-format`` and ``--log-level``; on a subcommand they default to "not given" so that the
    value given before the subcommand (or the top-level default) stands."""
    import argparse

    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        type=str.lower,
        default="text" if top else argparse.SUPPRESS,
        help="log line format (default text)",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        type=str.lower,
        default="info" if top else argparse.SUPPRESS,
        help="debug, info, warning or error, any case (default info)",
    )


def _global_options_everywhere(parser: argparse.ArgumentParser) -> None:
    """Global options are accepted after any subcommand too (``collect-once --log-level DEBUG ...``)."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for child in action.choices.values():
                if id(child) in seen:  # aliases share one parser
                    continue
                seen.add(id(child))
                _add_global_options(child, top=False)
                _global_options_everywhere(child)


def _own_command(argv: Sequence[str]) -> bool:
    """True when ``argv`` names one of :data:`OWN_COMMANDS` with nothing before it but global options
    written in full (``--log-level debug``, ``--log-level=debug``). Anything else (help, an
    abbreviated option, another command, none) gets the parser of every command, whose help and
    errors list them all."""
    it = iter(argv)
    for arg in it:
        if arg in _GLOBAL_OPTIONS:
            next(it, None)
        elif not arg.startswith(tuple(f"{o}=" for o in _GLOBAL_OPTIONS)):
            return arg in OWN_COMMANDS
    return False


# The options of a plain `run` command line (see _run_args): the dest of each, and its choices.
_RUN_OPTIONS = {"--config": "config", "--web.listen-address": "listen_address", "--web.config.file": "web_config_file"}
_GLOBAL_CHOICES = {"--log-format": ("log_format", ("text", "json")), "--log-level": ("log_level", LOG_LEVELS)}


def _run_args(argv: Sequence[str]) -> SimpleNamespace | None:
    """The arguments of a plain ``run`` command line, parsed without argparse, which the agent then
    never loads (0.4 MiB for as long as it runs); None for anything else, which build_parser's
    parser handles as ever (help, abbreviations, other commands, every error). Plain: the global
    options before ``run``, then ``run``'s own options and the global options again, each written in
    full as ``--option VALUE`` (a value not starting with ``-``) or ``--option=VALUE``, and
    ``--config`` given. The result equals the full parser's (tests/unit/test_cli_parser.py)."""
    before: dict[str, str] = {}
    after: dict[str, str] = {}
    seen = before
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "run" and seen is before:
            seen = after
            i += 1
            continue
        name, eq, value = arg.partition("=")
        if not eq:
            if i + 1 == len(argv) or argv[i + 1].startswith("-"):
                return None
            value = argv[i + 1]
            i += 1
        i += 1
        if name in _GLOBAL_CHOICES:
            dest, choices = _GLOBAL_CHOICES[name]
            value = value.lower()
            if value not in choices:
                return None
            seen[dest] = value
        elif name in _RUN_OPTIONS and seen is after:
            seen[_RUN_OPTIONS[name]] = value
        else:
            return None
    if seen is before or "config" not in after:
        return None
    defaults = {"log_format": "text", "log_level": "info", "listen_address": None, "web_config_file": None}
    return SimpleNamespace(**{**defaults, **before, **after, "command": "run", "func": cmd_run})


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args: Any = _run_args(argv)
    parser = None
    if args is None:
        # `run` may go on for months: the code of the other subcommands need not be loaded meanwhile.
        parser = build_parser(every_command=not _own_command(argv))
        args = parser.parse_args(argv)
    agent_logs.setup(args.log_level, args.log_format)
    if parser is not None and not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    del parser  # the agent may run for months: the parser of every subcommand need not stay
    try:
        return int(args.func(args))
    except UsageError as e:
        _err(str(e))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error worth a traceback.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
