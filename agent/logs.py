"""Logging set-up: text or JSON lines on stderr, secrets scrubbed from every record and every
message escaped to one line."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from agent import escape
from agent.configtypes import scrub


class ScrubFilter(logging.Filter):
    """Secrets scrubbed, then every message made one inert line (:func:`agent.escape.log`):
    request lines, device strings and tool output cannot forge log lines or drive a terminal.
    A traceback keeps its line breaks; each of its lines is escaped the same way."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = escape.log(scrub(msg))
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            clean = clean + "\n" + "\n".join(escape.terminal(line) for line in scrub(text).splitlines())
            record.exc_info = None
            record.exc_text = None
        record.msg = clean
        record.args = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        return json.dumps(out)


def setup(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ScrubFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("apscheduler", "paramiko", "pysnmp", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
