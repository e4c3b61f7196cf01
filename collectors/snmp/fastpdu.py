"""Encode and decode the PDUs of SNMPv3 authPriv requests with the agent's codec, not pyasn1.

pysnmp stays the SNMPv3 engine: discovery, timeliness, authentication, decryption, message
processing, retries and request matching are all its own. What it does slowly is pyasn1: the
decoding of a decrypted ScopedPDU is about 75 % of the CPU of a 250-OID walk, building and
encoding the request most of the rest. For the requests this agent registers (by request-id):

* outgoing: pysnmp is handed the PDU with an empty varbind list; when its USM module encodes
  the ScopedPDU to encrypt it, the encoder returns the agent's own encoding with the real varbinds
  (authPriv only: that is the one place the ScopedPDU is encoded on its own);
* incoming: the varbind list is decoded by :mod:`collectors.snmp.ber` and parked under its
  request-id, and pysnmp carries on with a ScopedPDU holding the same context, request-id, error
  status and index and an empty varbind list.

Everything else (other PDUs, other request-ids, anything the codec refuses) goes to pyasn1 as
before.

Tests compare walks with and without this path against the same agent (differential test).
"""

from __future__ import annotations

import types
from typing import Any

from collectors.snmp import ber

# request-id -> decoded varbinds (None until the reply is seen)
_pending: dict[int, tuple[int, int, list[ber.VarBind]] | None] = {}
# request-id -> our encoding of the PDU with its varbinds
_outgoing: dict[int, bytes] = {}
_installed = False
available = True  # False if this pysnmp does not look as expected: the plain path is used
stats = {"fast": 0, "fallback": 0, "encoded": 0}


def register(request_id: int, pdu: bytes | None = None) -> None:
    _pending[request_id] = None
    if pdu is not None:
        _outgoing[request_id] = pdu


def take(request_id: int) -> tuple[int, int, list[ber.VarBind]] | None:
    """(error_status, error_index, varbinds) decoded for this request, and forget it."""
    _outgoing.pop(request_id, None)
    return _pending.pop(request_id, None)


def _split_scoped(data: bytes) -> tuple[bytes, bytes, int, int, int, int, bytes] | None:
    """(context engine id, context name, PDU tag, request id, error status, error index,
    PDU bytes) of a ScopedPDU, or None."""
    try:
        _t, s, end = ber._header(data, 0, len(data), ber.SEQUENCE)
        _t, es, ee = ber._header(data, s, end, ber.OCTET_STRING)
        _t, ns, ne = ber._header(data, ee, end, ber.OCTET_STRING)
        ptag, ps, pe = ber._header(data, ne, end, None)
        rid, pos = ber._int(data, ps, pe)
        status, pos = ber._int(data, pos, pe)
        index, pos = ber._int(data, pos, pe)
    except ber.MalformedReply:
        return None
    return data[es:ee], data[ns:ne], ptag, rid, status, index, data[ne:pe]


class _Decoder(types.SimpleNamespace):
    """Stands in for ``pyasn1.codec.ber.decoder`` inside pysnmp's USM module."""

    def __init__(self, original: Any, scoped_cls: type, build: Any) -> None:
        super().__init__()
        self._original = original
        self._scoped_cls = scoped_cls
        self._build = build

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)

    def decode(self, substrate: Any, asn1Spec: Any = None, **kw: Any) -> Any:
        if _pending and isinstance(asn1Spec, self._scoped_cls) and isinstance(substrate, bytes | bytearray):
            data = bytes(substrate)
            parts = _split_scoped(data)
            if (
                parts is not None
                and parts[2] == ber.RESPONSE
                and parts[3] in _pending
                and 0 <= parts[4] < len(ber.ERROR_STATUS_NAMES)
                and 0 <= parts[5] <= ber.MAX_VARBINDS
            ):
                engine_id, ctx_name, _tag, rid, status, index, pdu_bytes = parts
                try:
                    # Reuse the v2c message decoder on a synthetic message wrapping the PDU bytes.
                    msg = ber._tlv(ber.SEQUENCE, b"\x02\x01\x01\x04\x00" + pdu_bytes)
                    resp = ber.decode_response(msg)
                except ber.MalformedReply:
                    stats["fallback"] += 1
                else:
                    _pending[rid] = (status, index, resp.varbinds)
                    stats["fast"] += 1
                    # Whatever follows the ScopedPDU (DES padding) is the "rest", as pyasn1 gives it.
                    _t, _s, end = ber._header(data, 0, len(data), ber.SEQUENCE)
                    return self._build(engine_id, ctx_name, rid, status, index), data[end:]
        return self._original.decode(substrate, asn1Spec=asn1Spec, **kw)


class _Encoder(types.SimpleNamespace):
    """Stands in for ``pyasn1.codec.ber.encoder`` inside pysnmp's USM module."""

    def __init__(self, original: Any, scoped_cls: type, request_id: Any) -> None:
        super().__init__()
        self._original = original
        self._scoped_cls = scoped_cls
        self._request_id = request_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)

    def encode(self, value: Any, *args: Any, **kw: Any) -> Any:
        if _outgoing and isinstance(value, self._scoped_cls):
            sp: Any = value
            try:
                pdu = sp.getComponentByPosition(2).getComponent()
                mine = _outgoing.get(int(self._request_id(pdu)))
            except Exception:  # noqa: BLE001 - anything odd: let pyasn1 do it
                mine = None
            if mine is not None:
                stats["encoded"] += 1
                return ber.encode_scoped_pdu(bytes(sp[0]), bytes(sp[1]), mine)
        return self._original.encode(value, *args, **kw)


def install() -> bool:
    """Hook pysnmp's USM module (idempotent). False when this pysnmp cannot be hooked."""
    global _installed, available
    if _installed or not available:
        return available
    try:
        from pyasn1.codec.ber import decoder as pyasn1_decoder
        from pyasn1.codec.ber import encoder as pyasn1_encoder
        from pysnmp.proto.api import v2c
        from pysnmp.proto.mpmod.rfc3412 import ScopedPDU
        from pysnmp.proto.secmod.rfc3414 import service

        if service.decoder is not pyasn1_decoder or service.encoder is not pyasn1_encoder:
            raise ImportError("pysnmp's USM module does not use pyasn1's BER codec directly")
    except (ImportError, AttributeError):
        available = False
        return False

    def build(engine_id: bytes, ctx_name: bytes, rid: int, status: int, index: int) -> Any:
        pdu = v2c.ResponsePDU()
        v2c.apiPDU.set_request_id(pdu, rid)
        v2c.apiPDU.set_error_status(pdu, status)
        v2c.apiPDU.set_error_index(pdu, index)
        v2c.apiPDU.set_varbinds(pdu, ())
        sp = ScopedPDU()
        sp.setComponentByPosition(0, engine_id)
        sp.setComponentByPosition(1, ctx_name)
        sp.setComponentByPosition(2)
        sp.getComponentByPosition(2).setComponentByType(
            pdu.tagSet, pdu, verifyConstraints=False, matchTags=False, matchConstraints=False
        )
        return sp

    service.decoder = _Decoder(pyasn1_decoder, ScopedPDU, build)
    service.encoder = _Encoder(pyasn1_encoder, ScopedPDU, v2c.apiPDU.get_request_id)
    _installed = True
    return True
