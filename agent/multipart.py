"""A bounded, streaming reader of ``multipart/form-data`` request bodies (RFC 7578), for forms that
upload a file: the parts are read in order, a small field whole (with a size limit), a file in
chunks as the caller asks for them, so a large upload costs one buffer of memory, never its size.

Everything about a part is limited: its header block (``MAX_PART_HEADER_BYTES``), the number of
parts (``max_parts``), a field's value (``read_field``'s limit). A body that is not well-formed
multipart -- no boundary, a part without ``Content-Disposition: form-data; name=...``, a header
block that never ends, a body that stops before the closing delimiter, anything but a line end
after it -- raises :class:`MultipartError` with one line saying what is wrong. The body is read to
its end: past the closing delimiter, the epilogue is read and thrown away. File names are returned as sent (only
the HTML standard's escapes ``%22``, ``%0D``, ``%0A`` decoded; bytes that are not UTF-8 kept as
surrogate escapes): the caller decides which names it accepts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

MAX_PART_HEADER_BYTES = 8 * 1024
MAX_BOUNDARY = 70  # RFC 2046 5.1.1
READ_CHUNK = 256 * 1024
_BOUNDARY_RE = re.compile(r"^[0-9A-Za-z'()+_,./:=? -]{0,69}[0-9A-Za-z'()+_,./:=?-]$")  # RFC 2046 bchars
_HTML_ESCAPES = {"%22": '"', "%0D": "\r", "%0A": "\n", "%0d": "\r", "%0a": "\n"}


class Readable(Protocol):
    def read(self, n: int, /) -> bytes: ...


class MultipartError(ValueError):
    """The body is not the multipart form it claims to be, or breaks a limit: one line."""


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None  # None: a plain field; "" for a file input with no file chosen
    content_type: str


def boundary(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type header; MultipartError if it is
    not one or its boundary is not a valid one."""
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise MultipartError(f"not a multipart/form-data body ({kind.strip()[:60]!r})")
    for param in params.split(";"):
        k, _, v = param.strip().partition("=")
        if k.strip().lower() == "boundary":
            v = v.strip()
            if len(v) >= 2 and v[0] == v[-1] == '"':
                v = v[1:-1]
            if not _BOUNDARY_RE.fullmatch(v):
                raise MultipartError("the multipart boundary is not valid (1 to 70 characters, RFC 2046)")
            return v.encode("ascii")
    raise MultipartError("the multipart/form-data Content-Type has no boundary")


class MultipartReader:
    """The parts of one body from ``stream`` (which ends where the body ends: the server's
    bounded reader of Content-Length bytes). :meth:`next_part` moves to the next part (skipping
    what is left of the current one), :meth:`read` and :meth:`read_field` read the current part."""

    def __init__(self, stream: Readable, boundary: bytes, *, max_parts: int = 32) -> None:
        self._stream = stream
        self._delim = b"\r\n--" + boundary
        # The first delimiter has no CRLF before it: pretend it has (a preamble is skipped).
        self._buf = bytearray(b"\r\n")
        self._eof = False
        self._in_part = True  # the preamble, read as a part nobody wants
        self._closed = False
        self._parts = 0
        self._max_parts = max_parts

    def _fill(self) -> None:
        if self._eof:
            raise MultipartError("the form ended early (no closing boundary): was the upload cut off?")
        chunk = self._stream.read(READ_CHUNK)
        if not chunk:
            self._eof = True
            raise MultipartError("the form ended early (no closing boundary): was the upload cut off?")
        self._buf += chunk

    def read(self, n: int = READ_CHUNK) -> bytes:
        """Up to ``n`` bytes of the current part; b"" at its end."""
        while self._in_part:
            i = self._buf.find(self._delim)
            if i == 0:
                self._in_part = False
                break
            avail = i if i > 0 else len(self._buf) - (len(self._delim) - 1)
            if avail > 0:
                k = min(avail, n)
                out = bytes(self._buf[:k])
                del self._buf[:k]
                return out
            self._fill()
        return b""

    def read_field(self, limit: int, what: str) -> str:
        """The whole current part as text (UTF-8), refused if longer than ``limit`` bytes. A
        ``limit`` of zero or less is what is left of a form's budget when none is: refused."""
        if limit <= 0:
            raise MultipartError(f"the form is too large (no room left for field {what!r})")
        out = bytearray()
        while chunk := self.read(limit + 1 - len(out)):
            out += chunk
            if len(out) > limit:
                raise MultipartError(f"form field {what!r} is longer than {limit} bytes")
        try:
            return out.decode("utf-8")
        except UnicodeDecodeError:
            raise MultipartError(f"form field {what!r} is not UTF-8") from None

    def next_part(self) -> Part | None:
        """The next part's name and file name, or None after the last one."""
        if self._closed:
            return None
        while self.read():  # what the caller left of the current part
            pass
        while len(self._buf) < len(self._delim) + 2:
            self._fill()
        del self._buf[: len(self._delim)]
        if self._buf[:2] == b"--":
            self._closed = True
            self._epilogue()
            return None
        self._parts += 1
        if self._parts > self._max_parts:
            raise MultipartError(f"the form has more than {self._max_parts} parts")
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self._buf) > MAX_PART_HEADER_BYTES:
                raise MultipartError(f"a form part's headers are longer than {MAX_PART_HEADER_BYTES} bytes")
            self._fill()
        if end > MAX_PART_HEADER_BYTES:
            raise MultipartError(f"a form part's headers are longer than {MAX_PART_HEADER_BYTES} bytes")
        head = bytes(self._buf[:end])
        del self._buf[: end + 4]
        self._in_part = True
        # The delimiter line may end with whitespace (RFC 2046 transport padding), then CRLF.
        first, _, rest = head.partition(b"\r\n")
        if first.strip(b" \t"):
            raise MultipartError("a form part does not start on the line after its boundary")
        return _part(rest.decode("utf-8", "surrogateescape"))

    def _epilogue(self) -> None:
        """After the closing delimiter: transport padding, then the end of the body or a line end
        and the epilogue, read to the end of the body (which the stream bounds) and thrown away."""
        del self._buf[:2]
        while True:
            del self._buf[: len(self._buf) - len(self._buf.lstrip(b" \t"))]
            if len(self._buf) >= 2 or bytes(self._buf[:1]) not in (b"", b"\r"):
                break
            if not (chunk := self._stream.read(READ_CHUNK)):
                break
            self._buf += chunk
        if self._buf and self._buf[:2] != b"\r\n":
            raise MultipartError("the form's closing boundary is followed by more than its line end")
        self._buf.clear()
        while self._stream.read(READ_CHUNK):
            pass
        self._eof = True


def _part(head: str) -> Part:
    disposition = content_type = ""
    for line in head.split("\r\n") if head else []:
        k, sep, v = line.partition(":")
        if not sep:
            raise MultipartError("a form part has a malformed header line")
        key = k.strip().lower()
        if key == "content-disposition":
            disposition = v.strip()
        elif key == "content-type":
            content_type = v.strip()
    kind, params = _disposition(disposition)
    if kind != "form-data" or "name" not in params:
        raise MultipartError("a form part has no Content-Disposition: form-data with a name")
    return Part(params["name"], params.get("filename"), content_type)


def _disposition(value: str) -> tuple[str, dict[str, str]]:
    """``form-data; name="x"; filename="y"``: the kind and the parameters (quoted strings as the
    HTML standard writes them: no backslash escapes; ``%22``, ``%0D``, ``%0A`` for '"', CR, LF)."""
    kind, _, rest = value.partition(";")
    params: dict[str, str] = {}
    i = 0
    while i < len(rest):
        while i < len(rest) and rest[i] in " \t;":
            i += 1
        if i >= len(rest):
            break
        eq = rest.find("=", i)
        if eq < 0:
            raise MultipartError("a form part's Content-Disposition is malformed")
        key = rest[i:eq].strip().lower()
        i = eq + 1
        if rest[i : i + 1] == '"':
            close = rest.find('"', i + 1)
            if close < 0:
                raise MultipartError("a form part's Content-Disposition has an unterminated quoted string")
            val = re.sub("%(22|0[DdAa])", lambda m: _HTML_ESCAPES[m.group(0)], rest[i + 1 : close])
            i = close + 1
        else:
            semi = rest.find(";", i)
            semi = len(rest) if semi < 0 else semi
            val = rest[i:semi].strip()
            i = semi
        if key in params:
            raise MultipartError(f"a form part's Content-Disposition gives {key!r} twice")
        params[key] = val
    return kind.strip().lower(), params
