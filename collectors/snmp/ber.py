"""A small BER codec for the SNMPv2c hot path (RFC 3416 GetRequest/GetBulkRequest out, Response in).

Only what a manager needs: it encodes Get and GetBulk requests and decodes Response PDUs into
plain Python values. Anything it does not understand raises :class:`MalformedReply` (never
another exception), which the tests check with hypothesis. pysnmp remains the engine for v1
and v3; tests decode the same replies with pysnmp and compare (differential test).

Values are ``(tag, value)`` pairs with the BER tag of the SNMP type:

======================  ====  ===========================
type                    tag   Python value
======================  ====  ===========================
INTEGER                 0x02  int (signed)
OCTET STRING            0x04  bytes
NULL                    0x05  None
OBJECT IDENTIFIER       0x06  tuple[int, ...]
IpAddress               0x40  bytes (4)
Counter32               0x41  int
Gauge32 / Unsigned32    0x42  int
TimeTicks               0x43  int (hundredths of a second)
Opaque                  0x44  bytes
Counter64               0x46  int
noSuchObject            0x80  None
noSuchInstance          0x81  None
endOfMibView            0x82  None
======================  ====  ===========================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OID = tuple[int, ...]
VarBind = tuple[OID, int, Any]  # (oid, tag, value)

INTEGER = 0x02
OCTET_STRING = 0x04
NULL = 0x05
OBJECT_IDENTIFIER = 0x06
SEQUENCE = 0x30
IP_ADDRESS = 0x40
COUNTER32 = 0x41
GAUGE32 = 0x42
TIMETICKS = 0x43
OPAQUE = 0x44
COUNTER64 = 0x46
NO_SUCH_OBJECT = 0x80
NO_SUCH_INSTANCE = 0x81
END_OF_MIB_VIEW = 0x82

GET_REQUEST = 0xA0
GET_NEXT_REQUEST = 0xA1
RESPONSE = 0xA2
GET_BULK_REQUEST = 0xA5
REPORT = 0xA8

EXCEPTIONS = frozenset((NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW))
UNSIGNED_MAX = {COUNTER32: 0xFFFFFFFF, GAUGE32: 0xFFFFFFFF, TIMETICKS: 0xFFFFFFFF, COUNTER64: 0xFFFFFFFFFFFFFFFF}
MAX_OID_LEN = 128  # RFC 3416: at most 128 sub-identifiers
MAX_SUBID = 0xFFFFFFFF
MAX_VARBINDS = 65535

VERSION_V1 = 0
VERSION_V2C = 1

ERROR_STATUS_NAMES = (
    "noError",
    "tooBig",
    "noSuchName",
    "badValue",
    "readOnly",
    "genErr",
    "noAccess",
    "wrongType",
    "wrongLength",
    "wrongEncoding",
    "wrongValue",
    "noCreation",
    "inconsistentValue",
    "resourceUnavailable",
    "commitFailed",
    "undoFailed",
    "authorizationError",
    "notWritable",
    "inconsistentName",
)


class MalformedReply(ValueError):
    """The bytes are not a well-formed SNMP message of the kind expected."""


@dataclass(frozen=True)
class Response:
    version: int
    community: bytes
    pdu_type: int
    request_id: int
    error_status: int
    error_index: int
    varbinds: list[VarBind]


# -- OIDs -----------------------------------------------------------------------------------------


def parse_oid(text: str) -> OID:
    """``"1.3.6.1.2.1.1.3.0"`` (leading dot allowed) -> tuple. Raises ValueError."""
    s = text.strip()
    if s.startswith("."):
        s = s[1:]
    parts = s.split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"{text!r} is not a numeric OID like 1.3.6.1.2.1.1.3.0")
    oid = tuple(int(p) for p in parts)
    if oid[0] > 2 or (oid[0] < 2 and oid[1] >= 40) or len(oid) > MAX_OID_LEN or max(oid) > MAX_SUBID:
        raise ValueError(f"{text!r} is not a valid OID")
    return oid


def format_oid(oid: OID) -> str:
    return ".".join(map(str, oid))


_OID_ENC_CACHE: dict[OID, bytes] = {}
_OID_DEC_CACHE: dict[bytes, OID] = {}
_CACHE_MAX = 200_000


def _encode_subid(v: int, out: bytearray) -> None:
    if v < 0x80:
        out.append(v)
        return
    chunks = []
    while v:
        chunks.append(v & 0x7F)
        v >>= 7
    for i in range(len(chunks) - 1, 0, -1):
        out.append(chunks[i] | 0x80)
    out.append(chunks[0])


def encode_oid_body(oid: OID) -> bytes:
    enc = _OID_ENC_CACHE.get(oid)
    if enc is not None:
        return enc
    if len(oid) < 2:
        raise ValueError("an OID has at least two sub-identifiers")
    out = bytearray()
    _encode_subid(oid[0] * 40 + oid[1], out)
    for v in oid[2:]:
        _encode_subid(v, out)
    enc = bytes(out)
    if len(_OID_ENC_CACHE) >= _CACHE_MAX:
        _OID_ENC_CACHE.clear()
    _OID_ENC_CACHE[oid] = enc
    return enc


def _decode_oid_body(body: bytes) -> OID:
    n = len(body)
    if n == 0:
        raise MalformedReply("empty OBJECT IDENTIFIER")
    if body[-1] & 0x80:
        raise MalformedReply("truncated OBJECT IDENTIFIER")
    subs: list[int] = []
    v = 0
    start = True
    for b in body:
        if start and b == 0x80:
            raise MalformedReply("non-minimal OBJECT IDENTIFIER encoding")
        v = (v << 7) | (b & 0x7F)
        if b & 0x80:
            start = False
            continue
        subs.append(v)
        v = 0
        start = True
    first = subs[0]
    if first < 40:
        oid = (0, first, *subs[1:])
    elif first < 80:
        oid = (1, first - 40, *subs[1:])
    else:
        oid = (2, first - 80, *subs[1:])
    if len(oid) > MAX_OID_LEN or max(oid) > MAX_SUBID:
        raise MalformedReply("OBJECT IDENTIFIER out of range")
    return oid


def decode_oid(body: bytes) -> OID:
    oid = _OID_DEC_CACHE.get(body)
    if oid is None:
        oid = _decode_oid_body(body)
        if len(_OID_DEC_CACHE) >= _CACHE_MAX:
            _OID_DEC_CACHE.clear()
        _OID_DEC_CACHE[body] = oid
    return oid


# -- encoding -------------------------------------------------------------------------------------


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes((tag, n)) + body
    if n < 0x100:
        return bytes((tag, 0x81, n)) + body
    if n < 0x10000:
        return bytes((tag, 0x82, n >> 8, n & 0xFF)) + body
    return bytes((tag, 0x83, n >> 16, (n >> 8) & 0xFF, n & 0xFF)) + body


def encode_int(v: int, tag: int = INTEGER) -> bytes:
    n = max(1, (v + (v < 0)).bit_length() // 8 + 1)
    return _tlv(tag, v.to_bytes(n, "big", signed=True))


def encode_unsigned(v: int, tag: int) -> bytes:
    n = max(1, v.bit_length() // 8 + 1)
    return _tlv(tag, v.to_bytes(n, "big", signed=False))


_NULL = b"\x05\x00"


def _varbind_list(oids: list[OID] | tuple[OID, ...]) -> bytes:
    return _tlv(SEQUENCE, b"".join(_tlv(SEQUENCE, _tlv(OBJECT_IDENTIFIER, encode_oid_body(o)) + _NULL) for o in oids))


def encode_pdu(
    pdu_type: int,
    request_id: int,
    oids: list[OID] | tuple[OID, ...],
    *,
    non_repeaters: int = 0,
    max_repetitions: int = 0,
) -> bytes:
    """A Get/GetNext/GetBulk request PDU. For GetBulk the two integers replace error status and
    index (RFC 3416 section 3)."""
    if pdu_type == GET_BULK_REQUEST:
        a, b = non_repeaters, max_repetitions
    else:
        a = b = 0
    return _tlv(pdu_type, encode_int(request_id) + encode_int(a) + encode_int(b) + _varbind_list(oids))


def encode_request(
    pdu_type: int,
    community: bytes,
    request_id: int,
    oids: list[OID] | tuple[OID, ...],
    *,
    non_repeaters: int = 0,
    max_repetitions: int = 0,
    version: int = VERSION_V2C,
) -> bytes:
    """A v1/v2c request message."""
    pdu = encode_pdu(pdu_type, request_id, oids, non_repeaters=non_repeaters, max_repetitions=max_repetitions)
    return _tlv(SEQUENCE, encode_int(version) + _tlv(OCTET_STRING, community) + pdu)


def encode_scoped_pdu(context_engine_id: bytes, context_name: bytes, pdu: bytes) -> bytes:
    """An SNMPv3 ScopedPDU (RFC 3412) around an encoded PDU."""
    return _tlv(SEQUENCE, _tlv(OCTET_STRING, context_engine_id) + _tlv(OCTET_STRING, context_name) + pdu)


def encode_value(tag: int, value: Any) -> bytes:
    """Encode one value (used by tests and the fake agents in them)."""
    if tag == INTEGER:
        return encode_int(int(value))
    if tag in UNSIGNED_MAX:
        return encode_unsigned(int(value), tag)
    if tag in (OCTET_STRING, IP_ADDRESS, OPAQUE):
        return _tlv(tag, bytes(value))
    if tag == OBJECT_IDENTIFIER:
        return _tlv(tag, encode_oid_body(tuple(value)))
    if tag in (NULL, *EXCEPTIONS):
        return bytes((tag, 0))
    raise ValueError(f"cannot encode tag 0x{tag:02x}")


def encode_response(
    community: bytes,
    request_id: int,
    varbinds: list[VarBind],
    *,
    error_status: int = 0,
    error_index: int = 0,
    version: int = VERSION_V2C,
) -> bytes:
    vbl = b"".join(
        _tlv(SEQUENCE, _tlv(OBJECT_IDENTIFIER, encode_oid_body(o)) + encode_value(t, v)) for o, t, v in varbinds
    )
    pdu = _tlv(
        RESPONSE, encode_int(request_id) + encode_int(error_status) + encode_int(error_index) + _tlv(SEQUENCE, vbl)
    )
    return _tlv(SEQUENCE, encode_int(version) + _tlv(OCTET_STRING, community) + pdu)


# -- decoding -------------------------------------------------------------------------------------


def _header(data: bytes, pos: int, end: int, want: int | None) -> tuple[int, int, int]:
    """(tag, body_start, body_end) of the TLV at ``pos``; the body must fit before ``end``."""
    if pos + 2 > end:
        raise MalformedReply("truncated message")
    tag = data[pos]
    if want is not None and tag != want:
        raise MalformedReply(f"expected tag 0x{want:02x}, got 0x{tag:02x} at byte {pos}")
    n = data[pos + 1]
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        if k == 0 or k > 3:
            raise MalformedReply("unsupported length encoding")
        if pos + k > end:
            raise MalformedReply("truncated length")
        n = int.from_bytes(data[pos : pos + k], "big")
        pos += k
    if pos + n > end:
        raise MalformedReply("length runs past the end of the message")
    return tag, pos, pos + n


def _int(data: bytes, pos: int, end: int) -> tuple[int, int]:
    _tag, s, e = _header(data, pos, end, INTEGER)
    if s == e or e - s > 8:
        raise MalformedReply("bad INTEGER length")
    return int.from_bytes(data[s:e], "big", signed=True), e


def decode_header(data: bytes) -> tuple[int, int, int, int]:
    """(version, pdu_type, request_id, offset_of_error_status): enough to route a reply."""
    _t, s, end = _header(data, 0, len(data), SEQUENCE)
    version, pos = _int(data, s, end)
    _t, _cs, ce = _header(data, pos, end, OCTET_STRING)
    ptag, ps, pe = _header(data, ce, end, None)
    request_id, pos = _int(data, ps, pe)
    return version, ptag, request_id, pos


def decode_response(data: bytes) -> Response:
    """Decode a v1/v2c message carrying a Response (or any other) PDU."""
    try:
        return _decode(data)
    except MalformedReply:
        raise
    except (IndexError, ValueError, OverflowError) as e:  # defensive: never leak other errors
        raise MalformedReply(f"undecodable reply: {e}") from None


def _long_length(data: bytes, pos: int, first: int, end: int, error: str) -> tuple[int, int]:
    """(length, body_start) of a long-form length whose first byte ``first`` was at ``pos - 1``.
    Kept out of :func:`_decode`'s loop, which reads the common short form inline for speed."""
    k = first & 0x7F
    if k == 0 or k > 3 or pos + k > end:
        raise MalformedReply(error)
    return int.from_bytes(data[pos : pos + k], "big"), pos + k


def _decode(data: bytes) -> Response:
    total = len(data)
    _t, s, end = _header(data, 0, total, SEQUENCE)
    if end != total:
        raise MalformedReply("trailing bytes after the message")
    version, pos = _int(data, s, end)
    _t, cs, ce = _header(data, pos, end, OCTET_STRING)
    community = data[cs:ce]
    ptag, ps, pe = _header(data, ce, end, None)
    if ptag & 0xE0 != 0xA0:
        raise MalformedReply(f"not an SNMP PDU (tag 0x{ptag:02x})")
    if pe != end:
        raise MalformedReply("trailing bytes after the PDU")
    request_id, pos = _int(data, ps, pe)
    error_status, pos = _int(data, pos, pe)
    error_index, pos = _int(data, pos, pe)
    _t, pos, vend = _header(data, pos, pe, SEQUENCE)
    if vend != pe:
        raise MalformedReply("trailing bytes after the variable bindings")
    out: list[VarBind] = []
    append = out.append
    oid_cache = _OID_DEC_CACHE
    while pos < vend:
        # varbind SEQUENCE
        if pos + 2 > vend or data[pos] != SEQUENCE:
            raise MalformedReply("bad variable binding")
        n = data[pos + 1]
        pos += 2
        if n & 0x80:
            n, pos = _long_length(data, pos, n, vend, "bad variable binding length")
        vbend = pos + n
        if vbend > vend:
            raise MalformedReply("variable binding runs past the end of the message")
        # name
        if pos + 2 > vbend or data[pos] != OBJECT_IDENTIFIER:
            raise MalformedReply("variable binding without an OBJECT IDENTIFIER name")
        n = data[pos + 1]
        pos += 2
        if n & 0x80:
            n, pos = _long_length(data, pos, n, vbend, "bad OID length")
        oend = pos + n
        if oend > vbend:
            raise MalformedReply("OID runs past its variable binding")
        ob = data[pos:oend]
        oid = oid_cache.get(ob)
        if oid is None:
            oid = decode_oid(ob)
        pos = oend
        # value
        if pos + 2 > vbend:
            raise MalformedReply("variable binding without a value")
        tag = data[pos]
        n = data[pos + 1]
        pos += 2
        if n & 0x80:
            n, pos = _long_length(data, pos, n, vbend, "bad value length")
        e = pos + n
        if e != vbend:
            raise MalformedReply("value length does not match its variable binding")
        value: Any
        if tag == OCTET_STRING:
            value = data[pos:e]
        elif tag in UNSIGNED_MAX:
            if n == 0 or n > 9:
                raise MalformedReply(f"bad length {n} for tag 0x{tag:02x}")
            value = int.from_bytes(data[pos:e], "big")
            if value > UNSIGNED_MAX[tag]:
                raise MalformedReply(f"value out of range for tag 0x{tag:02x}")
        elif tag == INTEGER:
            if n == 0 or n > 8:
                raise MalformedReply("bad INTEGER length")
            value = int.from_bytes(data[pos:e], "big", signed=True)
            if not -0x80000000 <= value <= 0x7FFFFFFF:
                raise MalformedReply("INTEGER out of range for Integer32")
        elif tag == OBJECT_IDENTIFIER:
            value = decode_oid(data[pos:e])
        elif tag == IP_ADDRESS:
            if n != 4:
                raise MalformedReply("IpAddress must be 4 bytes")
            value = data[pos:e]
        elif tag in EXCEPTIONS or tag == NULL:
            if n != 0:
                raise MalformedReply(f"tag 0x{tag:02x} must be empty")
            value = None
        elif tag == OPAQUE:
            value = data[pos:e]
        else:
            raise MalformedReply(f"unknown value type (tag 0x{tag:02x})")
        append((oid, tag, value))
        pos = e
        if len(out) > MAX_VARBINDS:
            raise MalformedReply("too many variable bindings")
    return Response(version, community, ptag, request_id, error_status, error_index, out)
