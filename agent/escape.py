"""One escaping helper per output kind. Strings from devices, tools, runbooks, evidence and HTTP
clients are hostile: they reach a terminal, a log, an HTML page, a Markdown report or a metric
label only through the helper for that output, which makes them inert there.

* :func:`terminal` — one line, every non-printable character (ESC, BEL, CR, newline, C1 controls,
  bidi overrides) written as a Python-style escape (``\\x1b``, ``\\n``, ``\\u202e``).
* :func:`label_value` — a label value as /metrics writes it: :func:`terminal` (the exposition
  layer exposes label values that way), then quoted as the exposition format does
  (``\\\\``, ``\\"``); used by collect-once.
* :func:`log` — for log messages: :func:`terminal`, bounded in length.
* :func:`html` — HTML text and attribute values (``&<>"'``), controls as in :func:`terminal`.
* :func:`markdown` — a field of a Markdown document: one line, controls escaped, every Markdown
  metacharacter backslash-escaped and HTML-special characters as entities, so data can start no
  heading, list, link, image, emphasis, code span, table cell or raw HTML.
"""

from __future__ import annotations

import html as _html
import re


def terminal(text: object) -> str:
    """One line with no character a terminal would act on."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


def label_value(text: object) -> str:
    """A label value exactly as /metrics writes it between double quotes: the value the agent
    exposes (:func:`terminal`, see agent.exposition), then ``\\`` and ``"`` escaped."""
    return terminal(text).replace("\\", "\\\\").replace('"', '\\"')


LOG_MAX = 8000


def log(text: object, limit: int = LOG_MAX) -> str:
    """A string for a log line: terminal-safe and at most ``limit`` characters (then ``…``)."""
    s = terminal(text)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def html(text: object) -> str:
    """HTML text or a quoted attribute value; control characters shown as escapes."""
    return _html.escape(terminal(text), quote=True)


# CommonMark constructs data could start: emphasis, code spans, links/images (brackets), headings,
# table cells, strikethrough, and backslash itself. Raw HTML and <autolinks> are stopped by turning
# &, < and > into entities. Parentheses alone make no link once brackets are escaped.
_MD_META = re.compile(r"([\\`*_\[\]#|~])")
_MD_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def markdown(text: object) -> str:
    """A field of a Markdown document: inert text on one line."""
    s = terminal(str(text).replace("\r\n", " ").replace("\n", " ").replace("\r", " ")).strip(" \t")
    s = _MD_META.sub(r"\\\1", s)
    s = "".join(_MD_ENTITIES.get(c, c) for c in s)
    # Bare URLs (GFM autolinks): break the scheme separator and "www.".
    s = s.replace("://", "&#58;//").replace("www.", "www&#46;")
    # Block starts at the beginning of a field: bullet lists, setext underlines and thematic
    # breaks, ordered lists.
    s = re.sub(r"^([-+=])(?=[\s\-=]|$)", r"\\\1", s)
    return re.sub(r"^(\d{1,9})([.)])(?=\s|$)", r"\1\\\2", s)
