"""The one bounded YAML loader (agent/yamlfile.py) and the escaping helpers (agent/escape.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from pydantic import BaseModel

from agent import escape
from agent.childenv import child_env
from agent.configtypes import Secret
from agent.yamlfile import MAX_DEPTH, FileInputError, format_loc, load_yaml, parse_yaml, read_file, validate


def _err(text: str, aliases: bool = False) -> str:
    with pytest.raises(FileInputError) as ei:
        parse_yaml(text, "f.yml", aliases=aliases)
    assert len(ei.value.issues) == 1
    return str(ei.value.issues[0])


def test_aliases_refused_unless_allowed_and_then_capped() -> None:
    assert "anchors and aliases are not allowed" in _err("a: &x 1\nb: *x\n")
    assert parse_yaml("base: &b {x: 1}\nt: {<<: *b, y: 2}\n", "f", aliases=True) == {
        "base": {"x": 1},
        "t": {"x": 1, "y": 2},
    }
    bomb = "a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcde", "bcdef", strict=True)
    )
    assert _err(bomb, aliases=True) == "f.yml: refused: aliases expand to more than 100000 values"
    assert "refers to the node that contains it" in _err("a: &a [*a, *a]\n", aliases=True)
    # Depth after expansion: each alias adds its whole nesting.
    nest = "a: &a " + "[" * 40 + "1" + "]" * 40 + "\nb: " + "[" * 30 + "*a" + "]" * 30 + "\n"
    assert "more than 64 levels" in _err(nest, aliases=True)


def test_depth_values_duplicates_and_types() -> None:
    deep = f"f.yml: refused: nested too deeply (more than {MAX_DEPTH} levels)"
    assert _err("a: " + "[" * 5000) == deep
    assert _err("a: " + "{b: " * 100 + "1" + "}" * 100) == deep
    assert "more than 100000 values" in _err("[" + ",".join(["1"] * 100_001) + "]")
    assert "duplicate key 'a'" in _err("a: 1\na: 2\n")
    assert "could not determine a constructor" in _err("a: !!python/object/apply:os.system [echo]\n")
    assert parse_yaml("t: 2025-03-14T18:00:00Z\n", "f") == {"t": "2025-03-14T18:00:00Z"}  # timestamps stay text
    assert "not UTF-8" in _err(b"a: \xff\n")  # type: ignore[arg-type]
    assert _err("a: [1\n").startswith("f.yml: invalid YAML: line 2, column 1:")
    assert "\x1b" not in _err("a: \x1b\n")  # the reason is one inert line


def test_read_file_caps_size_and_refuses_non_files(tmp_path: Path) -> None:
    big = tmp_path / "big.yml"
    big.write_bytes(b"a: 1\n" * 1000)
    with pytest.raises(FileInputError, match="larger than 100 bytes"):
        read_file(big, max_bytes=100)
    fifo = tmp_path / "fifo.yml"
    os.mkfifo(fifo)
    with pytest.raises(FileInputError, match="not a regular file"):
        read_file(fifo)  # refused without opening (opening a FIFO would block)
    with pytest.raises(FileInputError, match="cannot read: No such file"):
        load_yaml(tmp_path / "missing.yml")
    (tmp_path / "ok.yml").write_text("a: [1, 2]\n")
    assert load_yaml(tmp_path / "ok.yml") == ({"a": [1, 2]}, b"a: [1, 2]\n")


class _Inner(BaseModel):
    port: int


class _Model(BaseModel):
    items: list[_Inner]
    labels: dict[str, int] = {}


def test_one_key_path_format() -> None:
    assert format_loc(("targets", 3, "probe", "url"), frozenset({"probe"})) == "targets[3].url"
    assert format_loc(("auths", "core", "snmp_v2c", "community"), frozenset({"snmp_v2c"}), ("auths",)) == (
        "auths.core.community"
    )
    assert format_loc(("labels", "a b", "function-after[x]")) == "labels['a b']"
    with pytest.raises(FileInputError) as ei:
        validate(_Model, {"items": [{"port": 1}, {"port": "x"}], "labels": {"a b": "y"}}, "m.yml")
    assert [str(i) for i in ei.value.issues] == [
        "m.yml: items[1].port: Input should be a valid integer, unable to parse string as an integer",
        "m.yml: labels['a b']: Input should be a valid integer, unable to parse string as an integer",
    ]
    with pytest.raises(FileInputError, match="must be a YAML mapping, not a list"):
        validate(_Model, [1], "m.yml")


def test_terminal_label_and_log() -> None:
    evil = "a\x1b]0;t\x07b\nc\u202ed\x9b"
    assert escape.terminal(evil) == "a\\x1b]0;t\\x07b\\nc\\u202ed\\x9b"
    assert escape.terminal("plain \u2013 ü") == "plain \u2013 ü"
    assert escape.label_value('x"} y{z="\n\\') == 'x\\"} y{z=\\"\\\\n\\\\'
    assert escape.log("x" * 10, limit=5) == "xxxx…"
    assert escape.html('<a href="x">\x07') == "&lt;a href=&quot;x&quot;&gt;\\x07"


@pytest.mark.parametrize(
    "text",
    [
        "# heading",
        "text\n# heading after a newline",
        "![img](http://127.0.0.1/x.png)",
        "[click](javascript:alert(1))",
        "<http://127.0.0.1/>",
        "http://127.0.0.1/bare and www.example.org",
        "<img src=x onerror=alert(1)>",
        "- list item",
        "1. ordered",
        "---",
        "    indented code",
        "`code` *em* _em_ ~~strike~~ | cell",
        "text\n===",
    ],
)
def test_markdown_field_is_inert(text: str) -> None:
    field = escape.markdown(text)
    assert "\n" not in field
    html = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(f"Value: {field}\n\n{field}\n")
    for tag in ("<h1", "<h2", "<img", "<a ", "<ul", "<ol", "<hr", "<pre", "<code", "<em", "<s>", "<table"):
        assert tag not in html, (text, field, html)
    assert html.count("<p>") == 2


def test_child_env_is_minimal() -> None:
    env = child_env(
        {"RESTIC_CACHE_DIR": "/c", "KEY": Secret("s3cr3t-value")},
        environ={"PATH": "/bin", "HOME": "/h", "SNMP_PRIV": "x", "LC_ALL": "C.UTF-8", "AWS_SECRET_ACCESS_KEY": "y"},
    )
    assert env == {"PATH": "/bin", "HOME": "/h", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8",
                   "RESTIC_CACHE_DIR": "/c", "KEY": "s3cr3t-value"}  # fmt: skip
    assert child_env(environ={})["PATH"].startswith("/usr/local/sbin")


def test_exercise_journal_is_read_bounded(tmp_path: Path) -> None:
    from agent.exercises.journal import ExerciseInputError, Journal, journal_path

    j = Journal.open(tmp_path, "ex-1")
    p = journal_path(tmp_path, "ex-1")
    p.parent.mkdir(parents=True)
    p.write_bytes(b"[" * 5000 + b"]" * 5000 + b"\n")
    with pytest.raises(ExerciseInputError, match="line 1: nested too deeply"):
        j.read()
    p.unlink()
    os.mkfifo(p)
    with pytest.raises(ExerciseInputError, match="not a regular file"):
        j.read()
