"""The command line parser built for one of the CLI's own commands (run, check-config,
collect-once) without the other subcommands' modules parses and refuses exactly as the parser of
every command; help, other commands and anything unusual before the command get every command."""

from __future__ import annotations

import re

import pytest

from agent.cli import OWN_COMMANDS, _own_command, build_parser, main


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
