"""Shared config building blocks: strict frozen models, durations and secrets.

Secrets never appear literally in a config file: a secret field ``foo`` is given either as
``foo: ${ENV_VAR}`` or as ``foo_file: /path/to/file``. Resolved values are wrapped in
:class:`Secret`, which prints and serialises as ``<secret>`` and is registered so that log
records and error messages can be scrubbed (see :func:`scrub`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import threading
import types
import typing
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    GetCoreSchemaHandler,
    PlainSerializer,
    PlainValidator,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema

from agent.durations import format_duration, parse_duration

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

MASK = "<secret>"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

_known_lock = threading.Lock()
_known_secrets: set[str] = set()


def _b64_cores(raw: bytes) -> set[str]:
    """The base64 characters that encode ``raw`` wherever it sits in a longer string (three byte
    alignments, standard and URL-safe alphabets): base64("user:" + password) contains one of the
    password's cores whatever the user name."""
    out: set[str] = set()
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + raw).decode()
        core = enc[-(-8 * k // 6) : 8 * (k + len(raw)) // 6]
        if len(core) >= 6:
            out.update((core, core.translate(str.maketrans("+/", "-_"))))
    return out


def _forms(value: str) -> set[str]:
    """A secret as it may appear in text: raw, percent-encoded, JSON- and repr-escaped, and
    inside base64 (Basic auth headers, tokens)."""
    forms = {value, quote(value, safe=""), json.dumps(value)[1:-1], repr(value)[1:-1]}
    if len(value) >= 6:  # shorter cores would match ordinary text
        forms |= _b64_cores(value.encode())
    return {f for f in forms if len(f) >= 4}


def register_secret(value: str) -> None:
    # Very short values would make scrubbing mangle ordinary text; they are still masked
    # wherever the Secret object itself is printed.
    if len(value) >= 4:
        forms = _forms(value)
        with _known_lock:
            _known_secrets.update(forms)


# Credentials whoever they belong to (a server echoing our probe's header, a token in a URL or an
# error text): the value after "Basic"/"Bearer" (not a plain lower-case word, so "basic auth"
# stays readable) and the rest of any "Authorization:" header line.
_CREDENTIALS = re.compile(
    r"(?i:\b(?P<scheme>basic|bearer))(?P<sp>\s+|%20|\+)(?![a-z]+(?:[\s.,;:!?)]|$))[A-Za-z0-9+/._~%-]{6,}=*"
    r"|(?i:(?P<name>\bauthorization[\"']?\s*[:=]\s*[\"']?))(?P<value>(?!<secret>)[^\s\\\"'][^\r\n\\\"']*)"
)


def _mask_credentials(m: re.Match[str]) -> str:
    if m.group("scheme"):
        return f"{m.group('scheme')}{m.group('sp')}{MASK}"
    value = m.group("value")
    scheme, sp, rest = value.partition(" ")
    keep = f"{scheme} " if sp and rest and scheme.isalpha() and len(scheme) < 16 else ""
    return f"{m.group('name')}{keep}{MASK}"


def scrub(text: str) -> str:
    """Replace every known secret value in ``text``, in every form it may take (raw, base64,
    percent-, JSON- and repr-escaped), and every Basic/Bearer credential and Authorization
    header value, with ``<secret>``."""
    with _known_lock:
        secrets = sorted(_known_secrets, key=len, reverse=True)
    for s in secrets:
        if s in text:
            text = text.replace(s, MASK)
    if _CREDENTIAL_HINT.search(text):
        text = _CREDENTIALS.sub(_mask_credentials, text)
    return text


_CREDENTIAL_HINT = re.compile(r"(?i)basic|bearer|authorization")


class Secret:
    """A secret value. ``str()``/``repr()``/serialisation give ``<secret>``; use :meth:`reveal`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register_secret(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return MASK

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _validate_secret,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda _v: MASK),
            json_schema_input_schema=core_schema.str_schema(),
        )


def _validate_secret(value: Any) -> Secret:
    if isinstance(value, Secret):
        return value
    if isinstance(value, str):
        m = _ENV_REF.fullmatch(value.strip())
        if m:
            name = m.group(1)
            env = os.environ.get(name)
            if env is None:
                raise PydanticCustomError("secret_env", "environment variable {name} is not set", {"name": name})
            return Secret(env)
    raise PydanticCustomError(
        "secret_literal",
        "secrets are not written in the config: use ${ENV_VAR} or the matching *_file key",
    )


def _env_value(value: Any) -> str | Secret:
    if isinstance(value, Secret):
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PydanticCustomError("env_value", "an environment value must be a string")
    text = str(value)
    if _ENV_REF.fullmatch(text.strip()):
        return _validate_secret(text)
    if "\0" in text:
        raise PydanticCustomError("env_value", "an environment value must not contain a NUL byte")
    return text


EnvValue = Annotated[
    str | Secret,
    PlainValidator(_env_value, json_schema_input_type=str),
    PlainSerializer(lambda _v: MASK, return_type=str),
]
"""A value of a child's environment (a target's ``env:``): literal text or ``${ENV_VAR}`` (a
:class:`Secret`); ``env_file:`` gives values from files. Every value prints as ``<secret>``:
this is where backend credentials go."""


def resolve_env_files(data: Any, info: ValidationInfo) -> Any:
    """Move ``env_file: {NAME: /path}`` into ``env`` as secrets read from the files (for a model
    validator in ``before`` mode of a model with an ``env: dict[str, EnvValue]`` field)."""
    if not isinstance(data, dict) or "env_file" not in data:
        return data
    out = dict(data)
    files = out.pop("env_file")
    if not isinstance(files, dict):
        raise PydanticCustomError("env_file", "env_file must map variable names to file paths")
    env = out.get("env", {})
    if not isinstance(env, dict):
        return out  # the env field reports its own type error
    env = dict(env)
    mode = (info.context or {}).get("secret_file_mode")
    strict = None if mode is None else mode == "refuse"
    for name, path in files.items():
        key = f"env_file.{name}"
        if name in env:
            raise PydanticCustomError(
                "secret_both", "give {name} either in env or in env_file, not both", {"name": str(name)}
            )
        if not isinstance(path, str) or not path:
            raise PydanticCustomError("secret_file", "{key} must be a file path", {"key": key})
        value = read_secret_file(resolve_path(path, info), key, strict)
        if "\0" in value.reveal():
            raise PydanticCustomError(
                "env_value", "{key}: an environment value must not contain a NUL byte", {"key": key}
            )
        env[name] = value
    out["env"] = env
    return out


def _is_secret_annotation(annotation: Any) -> bool:
    if annotation is Secret:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_secret_annotation(a) for a in typing.get_args(annotation))
    return False


# Whether group/world-readable secret files are refused (True) or accepted with a warning, when
# the config does not say (``agent.secret_file_mode: warn | refuse``, passed in the validation
# context as ``secret_file_mode``).
SECRET_FILE_MODE_STRICT = False
secret_file_warnings: list[str] = []


def check_secret_file_mode(path: Path, key: str, st_mode: int, strict: bool | None = None) -> None:
    """A secret file (a ``*_file`` secret, an SSH key) readable by group or others: a warning, or
    an error under ``agent.secret_file_mode: refuse``."""
    if st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        mode = stat.S_IMODE(st_mode)
        msg = f"secret file {path} ({key}) is readable by group or others (mode {mode:04o}); chmod 600 it"
        if SECRET_FILE_MODE_STRICT if strict is None else strict:
            raise PydanticCustomError("secret_file_mode", msg + " (agent.secret_file_mode is refuse)")
        secret_file_warnings.append(msg)


def secret_file_strictness(info: ValidationInfo) -> bool | None:
    """``agent.secret_file_mode`` from the validation context: True for refuse, None if unset."""
    mode = (info.context or {}).get("secret_file_mode")
    return None if mode is None else mode == "refuse"


def read_secret_file(path: Path, key: str, strict: bool | None = None) -> Secret:
    try:
        st = path.stat()
        data = path.read_text(encoding="utf-8")
    except OSError as e:
        raise PydanticCustomError(
            "secret_file",
            "{key}: cannot read secret file {path}: {err}",
            {"key": key, "path": str(path), "err": e.strerror or str(e)},
        ) from None
    except UnicodeDecodeError:
        raise PydanticCustomError("secret_file", "secret file {path} is not UTF-8 text", {"path": str(path)}) from None
    check_secret_file_mode(path, key, st.st_mode, strict)
    value = data.rstrip("\r\n")
    if not value:
        raise PydanticCustomError("secret_file", "secret file {path} is empty", {"path": str(path)})
    return Secret(value)


def base_dir(info: ValidationInfo) -> Path:
    ctx = info.context or {}
    return Path(ctx.get("base_dir", "."))


def resolve_path(p: str | Path, info: ValidationInfo) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else base_dir(info) / path


class StrictModel(BaseModel):
    """Frozen, unknown keys rejected; ``<name>_file`` keys resolve secret fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, defer_build=True)

    @model_validator(mode="before")
    @classmethod
    def _resolve_secret_files(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, field in cls.model_fields.items():
            if not _is_secret_annotation(field.annotation):
                continue
            key = f"{name}_file"
            if key not in out:
                continue
            raw = out.pop(key)
            if name in out:
                raise PydanticCustomError(
                    "secret_both", "give either {name} or {key}, not both", {"name": name, "key": key}
                )
            if not isinstance(raw, str) or not raw:
                raise PydanticCustomError("secret_file", "{key} must be a file path", {"key": key})
            out[name] = read_secret_file(resolve_path(raw, info), key, secret_file_strictness(info))
        return out


def _duration(v: Any) -> float:
    try:
        return parse_duration(v)
    except ValueError as e:
        raise PydanticCustomError("duration", str(e)) from None


def cron_trigger(expr: str, timezone: str = "UTC") -> CronTrigger:
    """An APScheduler CronTrigger from a 5-field crontab line (minute hour day month weekday).
    APScheduler's cron module is loaded on the first call: only configs with a cron schedule use it."""
    from apscheduler.triggers.cron import CronTrigger

    return CronTrigger.from_crontab(expr, timezone=timezone)


def check_cron(v: str | None, what: str = "cron") -> str | None:
    """A 5-field crontab line (minute hour day month weekday) that APScheduler accepts and that
    fires: a line no date matches (``0 9 31 2 *``, 31 February) would never run its task, and each
    search for its fire times takes APScheduler a quarter of a second."""
    if v is None:
        return v
    if len(v.split()) != 5:
        raise ValueError(f"{what} {v!r} must be a 5-field crontab line: minute hour day month weekday")
    try:
        trigger = cron_trigger(v)
    except ValueError as e:
        raise ValueError(f"{what} {v!r} is not a valid crontab line: {e}") from None
    # Without a year field the line repeats (every 400 years at most), so from any start it fires
    # again if it fires at all.
    if trigger.get_next_fire_time(None, datetime.now(UTC)) is None:
        raise ValueError(f"{what} {v!r} never fires: no date matches its day, month and weekday fields")
    return v


def _timezone(v: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {v!r} (use an IANA name such as Europe/London)") from None
    return v


TimeZoneName = Annotated[str, AfterValidator(_timezone)]
"""An IANA time zone name (``Europe/London``), checked at config load."""

Duration = Annotated[float, BeforeValidator(_duration), PlainSerializer(format_duration, return_type=str)]
"""Seconds, written in config as ``30s``, ``5m``, ``72h`` or ``P3D``."""

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"
