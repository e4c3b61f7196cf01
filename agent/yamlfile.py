"""One bounded loader for every YAML file the agent reads: the config, the web config, runbooks,
the estate file, evidence records and what reports read.

Every file is read with the same limits, so a small hostile file cannot take the agent's memory,
time or stack:

* **size**: at most ``max_bytes`` (a regular file; read no further than the cap);
* **depth**: at most :data:`MAX_DEPTH` levels of nesting, also after aliases are expanded;
* **values**: at most :data:`MAX_NODES` values, also after aliases are expanded (a 7-level
  "billion laughs" is refused before anything is built from it);
* **aliases**: refused unless the caller allows them (the agent config and web config do;
  runbooks and evidence records, which are sealed and hashed, do not);
* duplicate mapping keys are refused (a file must mean one thing), timestamps stay text (the
  models decide what a valid time is), only the safe YAML tags exist.

Anything else that goes wrong — not UTF-8, a syntax error, RecursionError, MemoryError — becomes
one :class:`FileIssue` naming the file and the reason. :func:`validate` puts the data into a
pydantic model and lists every problem with the same key-path format (``targets[2].auth``,
``recovery_steps[0].after[1]``), so all loaders report errors one way.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from agent.escape import terminal

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 100_000


@dataclass(frozen=True)
class FileIssue:
    """One problem in one file: ``file: key: message`` (key empty for the whole file)."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        f, k, m = terminal(self.file), terminal(self.key), terminal(self.message)
        return f"{f}: {k}: {m}" if k else f"{f}: {m}"


class FileInputError(Exception):
    """An unreadable or invalid input file; carries every problem found (the CLI exits 2)."""

    def __init__(self, issues: list[FileIssue]) -> None:
        super().__init__("\n".join(str(i) for i in issues))
        self.issues = issues


def _fail(name: str, message: str, key: str = "") -> FileInputError:
    return FileInputError([FileIssue(name, key, message)])


# -- reading ---------------------------------------------------------------------------------------


def _size(n: int) -> str:
    return f"{n // 2**20} MiB" if n % 2**20 == 0 else f"{n} bytes"


def read_file(path: str | Path, name: str | None = None, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """A regular file's bytes, at most ``max_bytes``."""
    name = str(path) if name is None else name
    try:
        st = os.stat(path)  # before opening: a FIFO or device is refused, never read
        if not stat.S_ISREG(st.st_mode):
            raise _fail(name, "not a regular file")
        if st.st_size > max_bytes:
            raise _fail(name, f"file is larger than {_size(max_bytes)}")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise _fail(name, f"cannot read: {e.strerror or e}") from None
    if len(data) > max_bytes:
        raise _fail(name, f"file is larger than {_size(max_bytes)}")
    return data


# -- parsing ---------------------------------------------------------------------------------------


class _Limit(yaml.YAMLError):
    pass


class _Loader(yaml.SafeLoader):
    """SafeLoader counting depth and values while composing, refusing aliases unless allowed."""

    allow_aliases = False
    max_depth = MAX_DEPTH
    max_nodes = MAX_NODES

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        ev = self.peek_event()  # type: ignore[no-untyped-call]
        if not self.allow_aliases and (
            isinstance(ev, yaml.AliasEvent) or getattr(ev, "anchor", None) is not None
        ):
            raise yaml.composer.ComposerError(None, None, "anchors and aliases are not allowed", ev.start_mark)
        self._nodes += 1
        if self._nodes > self.max_nodes:
            raise _Limit(f"more than {self.max_nodes} values")
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                raise _Limit(f"nested too deeply (more than {self.max_depth} levels)")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        """Repeated keys refused: PyYAML would keep the last silently; Go's strict decoding (the
        exporter-toolkit's web config) refuses them, and a sealed record must mean one thing."""
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base`: keys given here override the merged ones
            key = self.construct_object(key_node, deep=True)
            try:
                dup = key in seen
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "mapping keys must be plain values", key_node.start_mark
                ) from None
            if dup:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _AliasLoader(_Loader):
    allow_aliases = True


def _expanded(root: Any, max_nodes: int, max_depth: int) -> None:
    """Refuse a node graph whose aliases expand past the limits (or refer to themselves)."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) once expanded
    active: set[int] = set()

    def walk(node: Any) -> tuple[int, int]:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _Limit("an alias refers to the node that contains it")
        count, depth = 1, 0
        if isinstance(node, yaml.SequenceNode | yaml.MappingNode):
            active.add(key)
            children = node.value if isinstance(node, yaml.SequenceNode) else [n for kv in node.value for n in kv]
            for child in children:
                c, d = walk(child)
                count += c
                depth = max(depth, d)
                if count > max_nodes:
                    raise _Limit(f"aliases expand to more than {max_nodes} values")
            active.discard(key)
        depth += 1
        if depth > max_depth:
            raise _Limit(f"aliases expand to more than {max_depth} levels of nesting")
        sizes[key] = (count, depth)
        return count, depth

    walk(root)


def parse_yaml(data: bytes | str, name: str, *, aliases: bool = False) -> Any:
    """The YAML document in ``data`` within the limits, or :class:`FileInputError`."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _fail(name, f"not UTF-8 text (byte {e.start})") from None
    else:
        text = data
    loader: _Loader | None = None
    try:
        loader = (_AliasLoader if aliases else _Loader)(text)
        node = loader.get_single_node()
        if node is None:
            return None
        if aliases:
            _expanded(node, loader.max_nodes, loader.max_depth)
        return loader.construct_document(node)
    except _Limit as e:
        raise _fail(name, f"refused: {e}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = e.problem or e.context or "syntax error"
        raise _fail(name, f"invalid YAML: {where}{problem}") from None
    except (yaml.YAMLError, ValueError) as e:
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise _fail(name, f"invalid YAML: {first}") from None
    except RecursionError:
        raise _fail(name, "refused: nested too deeply") from None
    except MemoryError:
        raise _fail(name, "refused: out of memory while reading") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml(
    path: str | Path, name: str | None = None, *, aliases: bool = False, max_bytes: int = MAX_FILE_BYTES
) -> tuple[Any, bytes]:
    """Read and parse a YAML file within the limits: (data, the file's bytes)."""
    name = str(path) if name is None else name
    raw = read_file(path, name, max_bytes)
    return parse_yaml(raw, name, aliases=aliases), raw


# -- into a model ------------------------------------------------------------------------------------

_UNION_BRANCHES = frozenset(("str", "datetime", "date", "float", "none", "int", "bool"))
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def format_loc(
    loc: tuple[int | str, ...], tags: frozenset[str] = frozenset(), tagged_maps: tuple[str, ...] = ()
) -> str:
    """A pydantic error location as a key path: ``targets[2].auth``, ``labels['a b']``.

    ``tags`` are the discriminator values of tagged unions (collector kinds, auth types): pydantic
    puts them in the location after a list index (``targets.3.probe.url``) or, for the maps named
    in ``tagged_maps``, after the map's key (``auths.core.snmp_v2c.community``); they are dropped.
    """
    out = ""
    prev: int | str | None = None
    for i, part in enumerate(loc):
        if (
            isinstance(part, str)
            and part in tags
            and prev is not None
            and (isinstance(prev, int) or (i == 2 and loc[0] in tagged_maps))
        ):
            prev = part
            continue
        prev = part
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "tagged-union")) or part in _UNION_BRANCHES:
            continue
        elif _PLAIN_KEY.fullmatch(part):
            out += ("." if out else "") + part
        else:
            out += f"[{part!r}]"
    return out


M = TypeVar("M", bound=BaseModel)


def validate(
    model: type[M],
    data: Any,
    name: str,
    *,
    context: dict[str, Any] | None = None,
    tags: frozenset[str] = frozenset(),
    tagged_maps: tuple[str, ...] = (),
    what: str = "",
) -> M:
    """``data`` as ``model``, or :class:`FileInputError` listing every problem with its key path.
    Model-level checks may prefix their lines with their own key (``recovery_steps[2].after[0]:
    unknown step``); that key is kept."""
    if not isinstance(data, dict):
        shape = "empty" if data is None else f"a {type(data).__name__}"
        raise _fail(name, f"{what or 'must be a YAML mapping'}, not {shape}")
    for k in data:
        if not isinstance(k, str):
            raise _fail(name, "keys must be strings", key=str(k))
    try:
        return model.model_validate(data, context=context)
    except RecursionError:
        raise _fail(name, "refused: nested too deeply") from None
    except MemoryError:
        raise _fail(name, "refused: out of memory while validating") from None
    except ValidationError as e:
        raise FileInputError(validation_issues(e, model, name, tags, tagged_maps)) from None


def validation_issues(
    e: ValidationError,
    model: type[BaseModel],
    name: str,
    tags: frozenset[str] = frozenset(),
    tagged_maps: tuple[str, ...] = (),
) -> list[FileIssue]:
    """A pydantic error as issues with key paths (see :func:`validate`)."""
    issues: list[FileIssue] = []
    seen: set[tuple[str, str]] = set()
    for err in e.errors(include_url=False, include_input=False):
        key = format_loc(tuple(err["loc"]), tags, tagged_maps)
        msg = str(err["msg"]).removeprefix("Value error, ")
        for line in msg.splitlines():
            k, sep, rest = line.partition(": ")
            if sep and k and " " not in k and k.split("[")[0].split(".")[0] in model.model_fields:
                item = (f"{key}.{k}" if key else k, rest)
            else:
                item = (key, line)
            if item not in seen:
                seen.add(item)
                issues.append(FileIssue(name, *item))
    return issues
