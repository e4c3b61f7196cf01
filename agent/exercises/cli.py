"""``continuity-agent exercise ...``: record a DR exercise as it happens, watch it, seal it.

Exit codes: 0 done (``status``: on track), 1 (``status``: the projection exceeds the objective;
``finish``: the evidence verdict does not hold), 2 bad input: one line naming what is wrong, and
nothing written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any, NoReturn

from agent.exercises.journal import ExerciseInputError
from agent.exercises.journal import given_time as parse_time

EXIT_OK, EXIT_FINDINGS, EXIT_BAD_INPUT = 0, 1, 2


class _OneLineParser(argparse.ArgumentParser):
    """Usage mistakes are one line and exit 2, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {message}\n")


def _err(msg: str) -> None:
    one = " ".join(msg.split("\n"))
    print(f"continuity-agent: {one}", file=sys.stderr)


def default_actor() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _recorder(args: argparse.Namespace) -> Any:
    from agent.exercises.record import Recorder

    return Recorder(args.runbooks, args.evidence, args.name, args.actor or default_actor())


def _opt_time(args: argparse.Namespace, attr: str = "at", flag: str = "--at") -> datetime | None:
    v = getattr(args, attr, None)
    return parse_time(v, flag) if v is not None else None


def _done(e: dict[str, Any], name: str) -> int:
    print(f"exercise {name}: entry {e['seq']} recorded ({e['action']} at {e['at']})")
    return EXIT_OK


def cmd_start(a: argparse.Namespace) -> int:
    systems = [s.strip() for s in a.systems.split(",")] if a.systems else None
    if systems is not None and not all(systems):
        raise ExerciseInputError("--systems: an empty runbook id")
    declared = _opt_time(a, "declared_at", "--declared-at")
    return _done(_recorder(a).start(a.type, systems, declared), a.name)


def cmd_step(a: argparse.Namespace) -> int:
    return _done(
        _recorder(a).step(a.runbook, a.step, a.state, at=_opt_time(a), operator=a.operator, note=a.note), a.name
    )


def cmd_restored(a: argparse.Namespace) -> int:
    return _done(_recorder(a).restored(a.runbook, _opt_time(a)), a.name)


def cmd_validate(a: argparse.Namespace) -> int:
    return _done(_recorder(a).validate(a.runbook, a.validation, a.result, a.by, _opt_time(a)), a.name)


def cmd_action(a: argparse.Namespace) -> int:
    return _done(_recorder(a).action(a.runbook, a.description, a.owner, a.due), a.name)


def cmd_participant(a: argparse.Namespace) -> int:
    return _done(_recorder(a).participant(a.who, a.role), a.name)


def cmd_artefact(a: argparse.Namespace) -> int:
    return _done(_recorder(a).artefact(a.runbook, a.file), a.name)


def cmd_sign_off(a: argparse.Namespace) -> int:
    return _done(_recorder(a).sign_off(a.runbook, a.by, a.role, _opt_time(a)), a.name)


def cmd_amend(a: argparse.Namespace) -> int:
    from agent.exercises.record import amend_changes

    fields = ("at", "operator", "note", "by", "role", "description", "owner")
    changes = amend_changes(**{k: getattr(a, k) for k in fields}, name=a.who, result=a.result, due=a.due)
    return _done(_recorder(a).amend(a.seq, changes), a.name)


def cmd_void(a: argparse.Namespace) -> int:
    return _done(_recorder(a).void(a.seq, a.reason), a.name)


def cmd_status(a: argparse.Namespace) -> int:
    from agent.exercises.journal import Journal, check_name
    from agent.exercises.model import load_estate
    from agent.exercises.status import render_text, status

    check_name(a.name)
    at = _opt_time(a) or datetime.now(UTC)
    estate = load_estate(a.runbooks)
    st = status(a.name, Journal.open(a.evidence, a.name).read(), estate, at)
    if a.format == "json":
        print_json(st.to_json())
    else:
        print(render_text(st))
    return EXIT_OK if st.on_track else EXIT_FINDINGS


def cmd_finish(a: argparse.Namespace) -> int:
    from agent.evidence import EvidenceInputError, verify
    from agent.evidence.cli import render_text
    from agent.exercises.finish import finish

    rec = _recorder(a)
    res = finish(rec, _opt_time(a))
    for s in res.seals:
        print(f"{s.path}: sealed as record {s.sequence} ({s.artefacts} artefacts hashed); sha256 {s.sha256}")
    print(f"exercise {a.name}: finished; the journal accepts no more entries")
    try:
        rep = verify(a.runbooks, a.evidence)
    except EvidenceInputError as e:
        raise ExerciseInputError(str(e.issues[0]) if e.issues else str(e)) from None
    print(render_text(rep))
    return EXIT_OK if rep.ok else EXIT_FINDINGS


def cmd_import(a: argparse.Namespace) -> int:
    from agent.exercises.importer import import_file

    systems = [s.strip() for s in a.systems.split(",")] if a.systems else None
    new = import_file(_recorder(a), a.source, timezone=a.timezone, type_=a.type, systems=systems)
    print(f"exercise {a.name}: {len(new)} entries imported from {a.source} (entries {new[0]['seq']}-{new[-1]['seq']})")
    return EXIT_OK


def _guard(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except ExerciseInputError as e:
            for line in getattr(e, "lines", None) or [str(e)]:
                _err(line)
            return EXIT_BAD_INPUT
        except OSError as e:
            _err(f"{getattr(e, 'filename', None) or 'exercise'}: {e.strerror or e}")
            return EXIT_BAD_INPUT

    return run


def register(subparsers: Any) -> None:
    ex = subparsers.add_parser(
        "exercise", help="record a DR exercise as it happens, watch it against the objective, seal it"
    )
    sub = ex.add_subparsers(dest="exercise_command", metavar="COMMAND", required=True, parser_class=_OneLineParser)

    common = _OneLineParser(add_help=False)
    common.add_argument("--runbooks", required=True, help="runbooks directory")
    common.add_argument("--evidence", required=True, help="evidence directory")
    common.add_argument("--actor", default=None, help="who is recording (default: the login name)")
    common.add_argument("name", help="the exercise id (as in the evidence records)")

    def cmd(name: str, func: Any, help_: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, parents=[common], help=help_)
        p.set_defaults(func=_guard(func))
        return p

    p = cmd("start", cmd_start, "declare the incident (T0)")
    p.add_argument("--type", required=True, choices=("full_recovery", "partial_recovery", "tabletop"))
    p.add_argument("--systems", default=None, help="runbook ids, comma-separated (default: every runbook)")
    p.add_argument(
        "--declared-at", dest="declared_at", default=None, help="when the incident was declared (default now)"
    )

    p = cmd("step", cmd_step, "a recovery step started, is done or failed")
    p.add_argument("runbook")
    p.add_argument("step")
    p.add_argument("state", choices=("start", "done", "failed"))
    p.add_argument("--at", default=None, help="when it happened (ISO 8601 with offset; default now)")
    p.add_argument("--operator", default=None, help="who did it (default: the actor)")
    p.add_argument("--note", default=None)

    p = cmd("restored", cmd_restored, "the service is restored (service_restored_at)")
    p.add_argument("runbook")
    p.add_argument("--at", default=None)

    p = cmd("validate", cmd_validate, "a validation passed or failed")
    p.add_argument("runbook")
    p.add_argument("validation")
    p.add_argument("result", choices=("pass", "fail"))
    p.add_argument("--by", required=True)
    p.add_argument("--at", default=None)

    p = cmd("action", cmd_action, "an issue found and the action to fix it")
    p.add_argument("runbook")
    p.add_argument("--description", required=True)
    p.add_argument("--owner", required=True)
    p.add_argument("--due", required=True, help="YYYY-MM-DD")

    p = cmd("participant", cmd_participant, "someone taking part")
    p.add_argument("--name", dest="who", required=True)
    p.add_argument("--role", required=True)

    p = cmd("artefact", cmd_artefact, "copy a file under the evidence directory and record its sha256")
    p.add_argument("runbook")
    p.add_argument("file")

    p = cmd("sign-off", cmd_sign_off, "a system's recovery signed off")
    p.add_argument("runbook")
    p.add_argument("--by", required=True)
    p.add_argument("--role", required=True)
    p.add_argument("--at", default=None)

    p = cmd("amend", cmd_amend, "correct an earlier entry (a new entry; nothing is rewritten)")
    p.add_argument("seq", type=int)
    p.add_argument("--at", default=None, help="the corrected time of the event")
    for k in ("operator", "note", "by", "role", "description", "owner", "due"):
        p.add_argument(f"--{k}", default=None)
    p.add_argument("--name", dest="who", default=None, help="a participant's corrected name")
    p.add_argument("--result", choices=("pass", "fail"), default=None)

    p = cmd("status", cmd_status, "where the exercise stands and its projection against the objective; exit 1 over it")
    p.add_argument("--at", default=None, help="as at this time (ISO 8601 with offset; default now)")
    p.add_argument("--format", choices=("text", "json"), default="text")

    p = cmd("finish", cmd_finish, "close the journal, write and seal one evidence record per system, verify")
    p.add_argument("--at", default=None, help="when the exercise ended (default now)")

    p = cmd("import", cmd_import, "import an exercise logged in a spreadsheet (.csv or .xlsx), all rows or none")
    p.add_argument("--from", dest="source", required=True, help="the .csv or .xlsx file")
    p.add_argument("--timezone", default="Europe/London", help="for times without a UTC offset (default Europe/London)")
    p.add_argument("--type", default="full_recovery", choices=("full_recovery", "partial_recovery", "tabletop"))
    p.add_argument(
        "--systems", default=None, help="runbook ids when the sheet declares the exercise (default: those in the sheet)"
    )

    p = cmd("void", cmd_void, "void an earlier entry (a new entry; nothing is rewritten)")
    p.add_argument("seq", type=int)
    p.add_argument("--reason", required=True)


def print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2))
