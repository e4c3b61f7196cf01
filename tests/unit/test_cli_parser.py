"""The command line parser built for one of the CLI's own commands (run, check-config,
collect-once) without the other subcommands' modules parses and refuses exactly as the parser of
every command; help, other commands and anything unusual before the command get every command.
A plain `run` line is parsed without argparse, to what argparse gives."""

from __future__ import annotations

import argparse
import functools
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.cli import OWN_COMMANDS, _own_command, _run_args, build_parser, main


@pytest.mark.parametrize(
    ("argv", "own"),
    [
        (["run", "--config", "a.yml"], True),
        (["check-config", "a.yml"], True),
        (["collect-once", "--config", "a.yml", "t"], True),
        (["--log-level", "debug", "run", "--config", "a.yml"], True),
        (["--log-format=json", "--log-level", "DEBUG", "run"], True),
        (["run", "--help"], True),  # run's own help: the same subparser
        ([], False),
        (["-h", "run"], False),  # the top-level help lists every command
        (["--help", "run"], False),
        (["--version"], False),
        (["--log-l", "debug", "run"], False),  # an abbreviation: left to the full parser
        (["--log-level", "run"], False),  # "run" is the option's value here, not the command
        (["--", "run"], False),
        (["evidence", "verify", "run"], False),
        (["report", "run"], False),
        (["runbooks", "check"], False),
    ],
)
def test_own_command(argv: list[str], own: bool) -> None:
    assert _own_command(argv) is own


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--config", "a.yml"],
        ["run", "--config", "a.yml", "--web.listen-address", "127.0.0.1:1", "--web.config.file", "w.yml"],
        ["--log-level", "DEBUG", "run", "--config", "a.yml", "--log-format", "json"],
        ["check-config", "a.yml", "--dump"],
        ["collect-once", "--config", "a.yml", "--format", "json", "--task", "", "--use-state", "t"],
    ],
)
def test_own_commands_parse_as_with_every_command(argv: list[str]) -> None:
    assert _own_command(argv)
    own = vars(build_parser(every_command=False).parse_args(argv))
    full = vars(build_parser().parse_args(argv))
    assert own == full
    assert own["command"] in OWN_COMMANDS


@pytest.mark.parametrize(
    "argv",
    [
        ["run"],  # --config missing
        ["run", "--config"],
        ["run", "--config", "a.yml", "--bogus"],
        ["check-config"],
        ["collect-once", "--config", "a.yml", "--format", "xml", "t"],
        ["--log-level", "debug", "run", "--config", "a.yml", "--log-level", "loud"],
        ["run", "--help"],
        ["check-config", "-h"],
    ],
)
def test_own_commands_refuse_and_help_as_with_every_command(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _own_command(argv)
    outputs = []
    for parser in (build_parser(every_command=False), build_parser()):
        with pytest.raises(SystemExit) as e:
            parser.parse_args(argv)
        cap = capsys.readouterr()
        outputs.append((e.value.code, cap.out, cap.err))
    assert outputs[0] == outputs[1]
    assert outputs[0][1] or outputs[0][2]


def test_help_and_other_commands_get_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    listed = re.findall(r"^    (\S+)", capsys.readouterr().out, re.M)
    assert listed == ["run", "check-config", "collect-once", "report", "runbooks", "evidence", "sites", "exercise"]
    with pytest.raises(SystemExit) as e:
        main(["evidence", "--help"])
    assert e.value.code == 0
    assert "seal" in capsys.readouterr().out


# A plain `run` command line is parsed without argparse (agent.cli._run_args): to the same result.
@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--config", "a.yml"],
        ["run", "--config=a.yml"],
        ["run", "--config", ""],
        ["run", "--config=--odd=name.yml"],
        ["run", "--config", "run"],
        ["run", "--web.listen-address", "127.0.0.1:1", "--config", "a.yml", "--web.config.file", "w.yml"],
        ["run", "--config", "a.yml", "--web.listen-address=[::1]:9072", "--web.config.file=w.yml"],
        ["--log-level", "DEBUG", "run", "--config", "a.yml", "--log-format", "JSON"],
        ["--log-level=Warning", "--log-format=json", "run", "--config", "a.yml"],
        ["--log-level", "debug", "run", "--config", "a.yml", "--log-level", "error", "--log-level=INFO"],
        ["run", "--config", "a.yml", "--config", "b.yml"],
    ],
)
def test_a_plain_run_line_parses_without_argparse_as_with_it(argv: list[str]) -> None:
    fast = _run_args(argv)
    assert fast is not None
    own, full = build_parser(every_command=False).parse_args(argv), build_parser().parse_args(argv)
    assert vars(fast) == vars(own) == vars(full)


@pytest.mark.parametrize(
    "argv",
    [
        ["run"],
        ["run", "--config"],
        ["run", "--config", "-a.yml"],  # argparse's call: an option or a value
        ["run", "--conf", "a.yml"],  # an abbreviation
        ["run", "--config", "a.yml", "--bogus"],
        ["run", "--config", "a.yml", "extra"],
        ["run", "--help"],
        ["--config", "a.yml", "run"],
        ["--log-level", "loud", "run", "--config", "a.yml"],
        ["--log-level", "run", "--config", "a.yml"],
        ["--version", "run", "--config", "a.yml"],
        ["run", "--config", "a.yml", "run"],
        ["check-config", "a.yml"],
        [],
    ],
)
def test_anything_else_is_left_to_argparse(argv: list[str]) -> None:
    assert _run_args(argv) is None


TOKENS = (
    "run", "--config", "--config=", "--config=a.yml", "a.yml", "", "-", "-a", "-h", "--help", "--", "x y",
    "--log-level", "--log-level=", "--log-level=DEBUG", "debug", "Info", "loud", "--log-format", "--log-format=Json",
    "json", "TEXT", "--web.listen-address", "--web.listen-address=127.0.0.1:1", "127.0.0.1:1", "--web.config.file",
    "--web.config.file=w.yml", "w.yml", "--conf", "--web.l", "--version", "check-config", "collect-once", "-1",
)


VALUES = {
    "--log-level": ("DEBUG", "info", "Warning", "error", "debug", "loud", ""),
    "--log-format": ("json", "TEXT", "Json", "xml"),
    "--config": ("a.yml", "b.yml", "", "run", "a=b", "x y", "-a", "--config"),
    "--web.listen-address": ("127.0.0.1:1", "[::1]:2", "", "-"),
    "--web.config.file": ("w.yml", "v.yml", "-w"),
    "--conf": ("a.yml",),  # sorted first: the plain options are sorted(VALUES)[1:6]
    "-x": ("a",),
}


@st.composite
def option_lines(draw: st.DrawFn) -> list[str]:
    """Options and values around `run`, in both spellings, --config mostly given: mostly plain
    lines, some not."""

    def options(config: bool) -> list[str]:
        names = st.sampled_from(sorted(VALUES) if draw(st.integers(0, 3)) == 0 else sorted(VALUES)[1:6])
        pairs = draw(st.lists(names, max_size=3)) + (["--config"] if config else [])
        out: list[str] = []
        for name in draw(st.permutations(pairs)):
            value = draw(st.sampled_from(VALUES[name]))
            out += [f"{name}={value}"] if draw(st.booleans()) else [name, value]
        return out

    return [*options(False), "run", *options(draw(st.integers(0, 4)) > 0)]


@functools.cache
def _parser(every_command: bool) -> argparse.ArgumentParser:
    return build_parser(every_command=every_command)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.lists(st.sampled_from(TOKENS), max_size=9), option_lines()))
def test_the_plain_run_parser_never_disagrees_with_argparse(argv: list[str]) -> None:
    fast = _run_args(argv)
    if fast is None:
        return
    parsed = []
    for parser in (_parser(False), _parser(True)):
        try:
            parsed.append(vars(parser.parse_args(argv)))
        except SystemExit as e:
            raise AssertionError(f"{argv}: argparse refuses ({e.code}) what _run_args took: {vars(fast)}") from None
    assert parsed[0] == parsed[1] == vars(fast), argv
