"""Generated references: docs/metrics.md from the metric catalogue (``python -m agent.docs``) and
docs/configuration.md from the config models' field descriptions (``python -m agent.docs config``)."""

from __future__ import annotations

import sys
import types
import typing
from typing import Any

from agent.catalogue import catalogue, exposed_labels, owners


def render_metrics_md() -> str:
    own = owners()
    lines = [
        "# Metrics reference",
        "",
        "Generated from the metric catalogue by `make docs` (`python -m agent.docs`); do not edit by hand.",
        "A test fails when this file and the catalogue disagree.",
        "",
        "Every collector sample also carries `target` and `site` labels unless the table says otherwise.",
        "",
        "Names are in base units and pass `promtool check metrics`: the catalogue refuses a name promtool",
        "would flag (bits, hours, minutes, kilobytes, abbreviations such as `_ms`, a metric type in the name)",
        "and percent. Rates are bytes per second (the config writes `100Mbit/s`; dashboards show bit/s).",
        "",
    ]
    by_owner: dict[str, list[str]] = {}
    for name in sorted(catalogue()):
        by_owner.setdefault(own.get(name, "agent"), []).append(name)
    for owner in sorted(by_owner, key=lambda o: (o != "agent", o)):
        lines += [f"## {owner}", "", "| Metric | Type | Unit | Labels | Help |", "|---|---|---|---|---|"]
        for name in by_owner[owner]:
            s = catalogue()[name]
            labels = ", ".join(f"`{lb}`" for lb in exposed_labels(s)) or "—"
            lines.append(f"| `{s.name}` | {s.type} | {s.unit or '—'} | {labels} | {s.help.replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


# -- config reference ----------------------------------------------------------------------------

# Config value types, by the validator that parses them (pydantic keeps Annotated metadata apart).
_VALUE_TYPES = {
    "_duration": "duration",
    "_go_duration": "Go duration",
    "_bitrate": "bit rate",
    "_ratio": "ratio",
    "_clock_time": "time of day",
    "_timezone": "time zone",
    "_byte_size": "byte size",
}


def _strip_optional(ann: Any) -> tuple[Any, bool]:
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return ann, False


def _model_of(ann: Any) -> tuple[type[Any] | None, str]:
    """(nested model, key suffix) when a field holds a model, a list of them or a mapping to them."""
    from pydantic import BaseModel

    ann, _ = _strip_optional(ann)
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann, ""
    if origin is list and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return args[0], "[]"
    if origin is dict and len(args) == 2 and isinstance(args[1], type) and issubclass(args[1], BaseModel):
        return args[1], ".<name>"
    return None, ""


def _type_name(ann: Any, metadata: list[Any]) -> str:
    from agent.configtypes import Secret

    for m in metadata:
        fn = getattr(m, "func", None)
        name = getattr(fn, "__name__", "")
        if name in _VALUE_TYPES:
            return _VALUE_TYPES[name]
    ann, _ = _strip_optional(ann)
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if ann is Secret:
        text = "secret"
    elif origin is typing.Literal:
        text = " \\| ".join(f"`{a}`" for a in args)
    elif origin is typing.Annotated:
        text = _type_name(args[0], list(args[1:]))
    elif origin in (list, tuple, set, frozenset):
        text = f"list of {_type_name(args[0], []) if args else 'values'}"
    elif origin is dict:
        text = f"mapping to {_type_name(args[1], []) if len(args) == 2 else 'values'}"
    elif origin in (typing.Union, types.UnionType):
        text = " or ".join(_type_name(a, []) for a in args if a is not type(None))
    elif isinstance(ann, type):
        names = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "Path": "path"}
        text = {**names, "SecretStr": "string"}.get(
            ann.__name__, ann.__name__
        )
    else:
        text = str(ann).replace("typing.", "")
    return text


def _default(field: Any) -> str:
    from pydantic_core import PydanticUndefined

    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is None or value == [] or value == {}:
        return "—"
    if value == "" or (hasattr(value, "get_secret_value") and value.get_secret_value() == ""):
        return '`""`'
    if value is PydanticUndefined:
        return "required"
    for m in field.metadata:
        ser = getattr(m, "func", None)
        if type(m).__name__ == "PlainSerializer" and ser is not None:
            try:
                value = ser(value)
            except (TypeError, ValueError):
                pass
    if hasattr(value, "model_dump"):
        return "see below"
    if isinstance(value, list) and len(value) > 8 and all(isinstance(v, int) for v in value):
        if value == list(range(value[0], value[-1] + 1)):
            return f"`{value[0]}` to `{value[-1]}`"
    return f"`{value}`"


def _rows(model: type[Any], prefix: str, skip: set[str] | frozenset[str] = frozenset()) -> list[str]:
    out: list[str] = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        key = f"{prefix}{field.alias or name}"
        desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
        nested, suffix = _model_of(field.annotation)
        out.append(f"| `{key}` | {_type_name(field.annotation, list(field.metadata))} | {_default(field)} | {desc} |")
        if nested is not None:
            out.extend(_rows(nested, f"{key}{suffix}."))
    return out


def _table(model: type[Any], prefix: str = "", skip: set[str] | frozenset[str] = frozenset()) -> list[str]:
    return ["| Key | Type | Default | Description |", "|---|---|---|---|", *_rows(model, prefix, skip), ""]


def render_configuration_md() -> str:
    from agent.config import AgentConfig
    from agent.plugin import TargetBase
    from agent.registry import auth_models, collectors
    from agent.webconfig import WebConfigModel

    lines = [
        "# Configuration reference",
        "",
        "Generated from the config models' field descriptions by `make docs` (`python -m agent.docs config`);",
        "do not edit by hand. A test fails when this file and the models disagree. Unknown keys are errors.",
        "Secrets are never written in the file: a secret key `foo` is given as `foo: ${ENV_VAR}` or",
        "`foo_file: path`. Durations are written `30s`, `5m`, `72h` or `P3D`; bit rates `100Mbit/s`.",
        "Relative paths are relative to the config file.",
        "",
    ]
    sections = [(n, f) for n, f in AgentConfig.model_fields.items() if n not in ("targets", "auths")]
    for name, field in sections:
        nested, suffix = _model_of(field.annotation)
        if nested is None:
            continue
        lines += [f"## `{name}`", ""] + ([field.description.strip(), ""] if field.description else [])
        lines += _table(nested, f"{name}{suffix}.")
    lines += ["## `auths.<name>`", "", str(AgentConfig.model_fields["auths"].description), ""]
    for tag, model in sorted(auth_models().items()):
        lines += [f"### `type: {tag}`", "", *_table(model, "", frozenset({"type"}))]
    common = set(TargetBase.model_fields)
    lines += ["## `targets[]`", "", str(AgentConfig.model_fields["targets"].description), ""]
    lines += ["Keys every target has:", "", *_table(TargetBase)]
    for kind, cls in sorted(collectors().items()):
        doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        lines += [f"### `kind: {kind}`", ""]
        if doc and not doc.startswith("Helper class"):
            lines += [doc, ""]
        lines += _table(cls.config_model, "", frozenset(common))
    lines += [
        "## Web config (`--web.config.file`)",
        "",
        "A file of its own, given with `continuity-agent run --config FILE --web.config.file FILE`, in the Prometheus",
        "exporter-toolkit's web-config format: the same file serves `prometheus-node-exporter --web.config.file`,",
        "and the agent accepts and refuses the files the toolkit does (docs/security.md). Relative paths are",
        "relative to this file; unknown and repeated keys are refused; there is no `${ENV}` substitution and no",
        "`_file` secret. Changes are picked up without a signal (switching TLS on or off needs a restart).",
        "",
        *_table(WebConfigModel),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_configuration_md() if sys.argv[1:] == ["config"] else render_metrics_md())
