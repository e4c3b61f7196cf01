"""Harvests what the docs tell a reader to type or paste: fenced blocks, inline commands and the
commands in deploy/examples' comment headers. Used by the doc tests (tests/unit/test_docs.py,
tests/e2e/test_docs_run.py)."""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

DOC_FILES = sorted(
    [ROOT / "README.md", ROOT / "runbooks" / "README.md", *(ROOT / "docs").glob("*.md"),
     *(ROOT / "grafana").glob("README.md"), *(ROOT / "deploy").glob("*/README.md")]
)
EXAMPLE_FILES = sorted((ROOT / "deploy" / "examples").glob("*.yml"))

FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^[ \t]*```[ \t]*$", re.M | re.S)
MARK = re.compile(r"<!--\s*doc-test:\s*(?P<what>run|not run|output|usage)\b:?\s*(?P<why>.*?)\s*-->")
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
HEADER_COMMAND = re.compile(
    r"(?:[A-Z_]+=\S+\s+)*(?:\S*/)?continuity-agent\s+(?:run|check-config|collect-once|report|runbooks|evidence|sites|"
    r"exercise)\b.*"
)
COMMAND_PREFIXES = ("continuity-agent ", ".venv/bin/continuity-agent ", "/usr/bin/continuity-agent ")


@dataclass(frozen=True)
class Snippet:
    file: Path
    line: int
    lang: str  # sh, yaml, json, text, inline, header
    body: str
    mark: str = ""  # "run", "not run", "output", "usage" or ""
    why: str = ""

    @property
    def where(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}"


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def fenced(path: Path) -> Iterator[Snippet]:
    text = path.read_text()
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip().splitlines()[-1:] or [""]
        mark = MARK.search(before[0])
        lang = {"": "text", "console": "sh", "shell": "sh", "bash": "sh", "yml": "yaml"}.get(m["lang"], m["lang"])
        body = "\n".join(line[len(m["indent"]):] for line in m["body"].splitlines())
        yield Snippet(path, _line_of(text, m.start()) + 1, lang, body,
                      mark["what"] if mark else "", mark["why"] if mark else "")


def inline_commands(path: Path) -> Iterator[Snippet]:
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), path.read_text())
    for m in INLINE.finditer(text):
        code = m.group(1).strip()
        if code.startswith(COMMAND_PREFIXES):
            yield Snippet(path, _line_of(text, m.start()), "inline", code)


def header_commands(path: Path) -> Iterator[Snippet]:
    """``continuity-agent ...`` commands in the comment block at the top of an example config."""
    logical: list[tuple[int, str]] = []
    pending = ""
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.startswith("#"):
            break
        text = line[1:].strip()
        if pending:
            text, pending = pending + text, ""
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        logical.append((n, text))
    for n, text in logical:
        for m in INLINE.finditer(text):
            if m.group(1).strip().startswith(COMMAND_PREFIXES):
                yield Snippet(path, n, "inline", m.group(1).strip())
        m2 = HEADER_COMMAND.search(INLINE.sub("", text))
        if m2:
            yield Snippet(path, n, "header", m2.group(0).strip())


def all_snippets() -> list[Snippet]:
    out: list[Snippet] = []
    for f in DOC_FILES:
        out += list(fenced(f)) + list(inline_commands(f))
    for f in EXAMPLE_FILES:
        out += list(header_commands(f))
    return out


def shell_commands(body: str) -> Iterator[tuple[int, str]]:
    """Logical lines of a shell block (backslash continuations joined, ``$ `` prompts dropped)."""
    pending, first = "", 0
    for n, raw in enumerate(body.splitlines()):
        line = raw.rstrip()
        if not pending:
            first = n
            if line.startswith("$ "):
                line = line[2:]
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full and not full.startswith("#"):
            yield first, full


def agent_argv(command: str) -> list[str] | None:
    """The arguments of a ``continuity-agent`` command line (environment assignments, the path of the
    binary, pipes, redirections and comments dropped), or None when the line runs something else."""
    # <site>, <runbooks-dir>: placeholders for the reader, not redirections.
    command = re.sub(r"<([A-Za-z][\w-]*)>", r"PLACEHOLDER-\1", command)
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words = list(lexer)
    except ValueError:
        return None
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        words.pop(0)
    if words[:1] == ["sudo"]:
        words.pop(0)
        while words and words[0].startswith("-"):
            words.pop(0)
    if not words or Path(words[0]).name != "continuity-agent":
        return None
    argv: list[str] = []
    for w in words[1:]:
        if w and set(w) <= set(";&|<>"):
            break
        argv.append(w)
    return argv


def fresh_copy(dest: Path) -> None:
    """What a clone has: the tracked files (as they are in the work tree) and new, not ignored ones."""
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=True, timeout=60,
    ).stdout.split(b"\0")
    for raw in files:
        if not raw:
            continue
        rel = raw.decode()
        src = ROOT / rel
        if not src.is_file():
            continue
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(src.read_bytes())
        out.chmod(src.stat().st_mode & 0o777)
