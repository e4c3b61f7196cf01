"""The bounded multipart/form-data reader (agent/multipart.py): parts come out exactly as sent
whatever the chunking of the stream, a file is read in bounded chunks (memory does not grow with
it), and every limit and malformation is one MultipartError."""

from __future__ import annotations

import io
import os

import pytest

from agent.multipart import MAX_PART_HEADER_BYTES, READ_CHUNK, MultipartError, MultipartReader, Part, boundary

B = b"XyZzy-0123"


class Trickle:
    """A stream giving at most ``step`` bytes a read (a slow network), counting what was read."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step, self.pos = data, step, 0

    def read(self, n: int) -> bytes:
        k = min(n, self.step)
        out = self.data[self.pos : self.pos + k]
        self.pos += len(out)
        return out


def body(*parts: tuple[str, str | None, bytes], preamble: bytes = b"", padding: bytes = b"") -> bytes:
    out = bytearray(preamble)
    for name, filename, content in parts:
        fn = f'; filename="{filename}"' if filename is not None else ""
        out += b"--" + B + padding + b"\r\n"
        out += f'Content-Disposition: form-data; name="{name}"{fn}\r\n\r\n'.encode() + content + b"\r\n"
    return bytes(out + b"--" + B + b"--\r\n")


def read_all(r: MultipartReader) -> list[tuple[Part, bytes]]:
    out = []
    while (p := r.next_part()) is not None:
        data = bytearray()
        while chunk := r.read(1000):
            data += chunk
        out.append((p, bytes(data)))
    return out


TRICKY = b"--" + B + b"-not-the-end\r\n--" + B[:-1] + b"\r\n\r\n--" + B[:5]  # looks like boundaries, is not


@pytest.mark.parametrize("step", [1, 7, 4096, 10**7])
def test_parts_come_out_as_sent_whatever_the_chunking(step: int) -> None:
    content = os.urandom(20_000) + TRICKY
    data = body(("csrf", None, b"abc"), ("runbook", None, b""), ("file", "a.bin", content))
    got = read_all(MultipartReader(Trickle(data, step), B))
    assert [(p.name, p.filename, d) for p, d in got] == [
        ("csrf", None, b"abc"),
        ("runbook", None, b""),
        ("file", "a.bin", content),
    ]


def test_preamble_transport_padding_and_unread_parts_are_skipped() -> None:
    data = body(("a", None, b"1" * 5000), ("b", None, b"2"), preamble=b"ignore me\r\n", padding=b" \t")
    r = MultipartReader(io.BytesIO(data), B)
    assert r.next_part() == Part("a", None, "")
    first = r.next_part()  # "a" was not read: skipped
    assert first is not None and first.name == "b" and r.read_field(10, "b") == "2"
    assert r.next_part() is None and r.next_part() is None


def test_a_large_file_is_read_in_bounded_chunks() -> None:
    size = 8 * READ_CHUNK + 123
    data = body(("file", "big.bin", b"\xab" * size))
    r = MultipartReader(io.BytesIO(data), B)
    assert r.next_part() is not None
    n, biggest_buffer = 0, 0
    while chunk := r.read(10**9):
        assert len(chunk) <= READ_CHUNK + len(B) + 4
        biggest_buffer = max(biggest_buffer, len(r._buf))
        n += len(chunk)
    assert n == size and biggest_buffer <= READ_CHUNK + len(B) + 4


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (body(("a", None, b"x"))[:-10], "ended early"),
        (b"", "ended early"),
        (b"--" + B + b"\r\n" + b"X-Pad: " + b"a" * MAX_PART_HEADER_BYTES + b"\r\n\r\nx", "headers are longer"),
        (b"--" + B + b"\r\nContent-Type: text/plain\r\n\r\nx\r\n--" + B + b"--", "no Content-Disposition"),
        (b"--" + B + b"\r\nContent-Disposition: attachment; name=a\r\n\r\nx\r\n--" + B + b"--", "form-data"),
        (b"--" + B + b'\r\nContent-Disposition: form-data; name="a\r\n\r\nx\r\n--' + B + b"--", "unterminated"),
        (b"--" + B + b"\r\nContent-Disposition: form-data; name=a; name=b\r\n\r\nx\r\n--" + B + b"--", "twice"),
        (b"--" + B + b"\r\nno colon\r\n\r\nx\r\n--" + B + b"--", "malformed header"),
        (b"--" + B + b"junk\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--" + B + b"--", "does not start"),
        (body(("a", None, b"x"))[:-4], "ended early"),  # "--B" and no "--" after it
        (body(("a", None, b"x"))[:-2] + b"junk\r\n", "closing boundary is followed by more than its line end"),
        (body(("a", None, b"x"))[:-2] + b" \tx", "closing boundary is followed by more than its line end"),
    ],
)
def test_malformed_bodies_are_one_error(data: bytes, message: str) -> None:
    with pytest.raises(MultipartError, match=message):
        read_all(MultipartReader(io.BytesIO(data), B))


EPILOGUES = [b"", b" \t", b"\r\n", b" " * (READ_CHUNK + 5) + b"\r\nx", b" \r\nepilogue\r\n" + b"e" * (3 * READ_CHUNK)]


@pytest.mark.parametrize("after", EPILOGUES)
def test_the_body_is_read_to_its_end_past_the_closing_boundary(after: bytes) -> None:
    data = body(("a", None, b"x"))[:-2] + after
    stream = Trickle(data, 4096)
    r = MultipartReader(stream, B)
    assert [(p.name, d) for p, d in read_all(r)] == [("a", b"x")]
    assert stream.pos == len(data)  # the epilogue read (and thrown away), to the end of the body


def test_limits_on_parts_and_fields() -> None:
    many = body(*((f"f{i}", None, b"x") for i in range(5)))
    with pytest.raises(MultipartError, match="more than 4 parts"):
        read_all(MultipartReader(io.BytesIO(many), B, max_parts=4))
    r = MultipartReader(io.BytesIO(body(("note", None, b"y" * 101))), B)
    assert r.next_part() is not None
    with pytest.raises(MultipartError, match="'note' is longer than 100 bytes"):
        r.read_field(100, "note")
    r = MultipartReader(io.BytesIO(body(("note", None, b"\xff"))), B)
    assert r.next_part() is not None
    with pytest.raises(MultipartError, match="not UTF-8"):
        r.read_field(100, "note")


def test_file_names_are_returned_as_sent_for_the_caller_to_judge() -> None:
    def name_of(raw: bytes) -> str | None:
        data = b"--" + B + b'\r\nContent-Disposition: form-data; name="file"; filename="' + raw + b'"\r\n\r\nx\r\n--'
        p = MultipartReader(io.BytesIO(data + B + b"--"), B).next_part()
        assert p is not None
        return p.filename

    assert name_of(b"../../etc/passwd") == "../../etc/passwd"
    assert name_of(b"a%22b%0Ac%0d.txt") == 'a"b\nc\r.txt'  # the HTML standard's escapes
    assert name_of("é.txt".encode()) == "é.txt"
    assert name_of(b"\xff.txt") == os.fsdecode(b"\xff.txt")  # not UTF-8: kept as surrogate escapes
    assert name_of(b"a\x1bb") == "a\x1bb"
    data = b"--" + B + b"\r\nContent-Disposition: form-data; name=file; filename*=UTF-8''x\r\n\r\nx\r\n--" + B + b"--"
    p = MultipartReader(io.BytesIO(data), B).next_part()
    assert p is not None and p.filename is None  # RFC 7578 4.2: filename* is not used


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("multipart/form-data; boundary=abc", b"abc"),
        ('Multipart/Form-Data; charset=utf-8; boundary="a b:c"', b"a b:c"),
        (
            "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW",
            b"----WebKitFormBoundary7MA4YWxkTrZu0gW",
        ),
    ],
)
def test_boundary(header: str, expected: bytes) -> None:
    assert boundary(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=" + "a" * 71,
        "multipart/form-data; boundary=a\r\nb",
        "multipart/mixed; boundary=abc",
        'multipart/form-data; boundary="ends-with-space "',
    ],
)
def test_bad_boundaries(header: str) -> None:
    with pytest.raises(MultipartError):
        boundary(header)


@pytest.mark.parametrize("limit", [0, -1, -100])
@pytest.mark.parametrize("value", [b"", b"y", b"y" * 200])
def test_no_budget_left_is_one_refusal_of_the_form(limit: int, value: bytes) -> None:
    """The board's fields used up the form's budget (a name counts too, so what is left can be
    below zero): the form is too large, whatever this field holds; never "longer than -100 bytes"."""
    r = MultipartReader(io.BytesIO(body(("note", None, value))), B)
    assert r.next_part() is not None
    with pytest.raises(MultipartError) as err:
        r.read_field(limit, "note")
    assert str(err.value) == "the form is too large (no room left for field 'note')"
