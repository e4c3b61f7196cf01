"""The v2c codec against pysnmp (differential), fuzzed reply handling, OID mapping config."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyasn1.codec.ber import decoder as pyasn1_decoder
from pyasn1.codec.ber import encoder as pyasn1_encoder
from pysnmp.proto import api, rfc1902, rfc1905
from pysnmp.proto.mpmod.rfc3412 import ScopedPDU

from agent.config import ConfigError, load_config
from collectors.base import CollectorContext
from collectors.snmp import ber, fastpdu
from collectors.snmp.collector import SnmpCollector
from collectors.snmp.session import Session, SnmpFailure, from_pyasn1

P = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]

subids = st.integers(min_value=0, max_value=2**32 - 1)
oids = st.builds(lambda a, b, rest: (a, b, *rest), st.sampled_from([0, 1, 2]), st.integers(0, 39),
                 st.lists(subids, max_size=20))
values = st.one_of(
    st.tuples(st.just(ber.INTEGER), st.integers(-(2**31), 2**31 - 1)),
    st.tuples(st.just(ber.OCTET_STRING), st.binary(max_size=300)),
    st.tuples(st.just(ber.OBJECT_IDENTIFIER), oids),
    st.tuples(st.just(ber.IP_ADDRESS), st.binary(min_size=4, max_size=4)),
    st.tuples(st.just(ber.COUNTER32), st.integers(0, 2**32 - 1)),
    st.tuples(st.just(ber.GAUGE32), st.integers(0, 2**32 - 1)),
    st.tuples(st.just(ber.TIMETICKS), st.integers(0, 2**32 - 1)),
    st.tuples(st.just(ber.COUNTER64), st.integers(0, 2**64 - 1)),
    st.tuples(st.just(ber.OPAQUE), st.binary(max_size=20)),
    st.tuples(st.sampled_from([ber.NULL, ber.NO_SUCH_OBJECT, ber.NO_SUCH_INSTANCE, ber.END_OF_MIB_VIEW]), st.none()),
)
varbinds = st.lists(st.tuples(oids, values), max_size=40)


def to_pyasn1(tag: int, v: Any) -> Any:
    return {
        ber.INTEGER: lambda: rfc1902.Integer32(v), ber.OCTET_STRING: lambda: rfc1902.OctetString(v),
        ber.OBJECT_IDENTIFIER: lambda: rfc1902.ObjectName(v), ber.IP_ADDRESS: lambda: rfc1902.IpAddress(v),
        ber.COUNTER32: lambda: rfc1902.Counter32(v), ber.GAUGE32: lambda: rfc1902.Gauge32(v),
        ber.TIMETICKS: lambda: rfc1902.TimeTicks(v), ber.COUNTER64: lambda: rfc1902.Counter64(v),
        ber.OPAQUE: lambda: rfc1902.Opaque(v), ber.NULL: lambda: rfc1902.Null(""),
        ber.NO_SUCH_OBJECT: lambda: rfc1905.noSuchObject, ber.NO_SUCH_INSTANCE: lambda: rfc1905.noSuchInstance,
        ber.END_OF_MIB_VIEW: lambda: rfc1905.endOfMibView,
    }[tag]()


def pysnmp_response(rid: int, vbs: list[tuple[Any, tuple[int, Any]]], community: bytes = b"public",
                    status: int = 0, index: int = 0) -> bytes:
    pdu = P.GetResponsePDU()
    P.apiPDU.set_defaults(pdu)
    P.apiPDU.set_request_id(pdu, rid)
    P.apiPDU.set_error_status(pdu, status)
    P.apiPDU.set_error_index(pdu, index)
    P.apiPDU.set_varbinds(pdu, [(rfc1902.ObjectName(o), to_pyasn1(t, v)) for o, (t, v) in vbs])
    msg = P.Message()
    P.apiMessage.set_defaults(msg)
    P.apiMessage.set_community(msg, community)
    P.apiMessage.set_pdu(msg, pdu)
    return bytes(pyasn1_encoder.encode(msg))


def pysnmp_decode(data: bytes) -> tuple[int, int, int, list[tuple[tuple[int, ...], int, Any]]]:
    msg, _rest = pyasn1_decoder.decode(data, asn1Spec=P.Message())
    pdu = P.apiMessage.get_pdu(msg)
    out = [(tuple(n), *from_pyasn1(v)) for n, v in P.apiPDU.get_varbinds(pdu)]
    return (int(P.apiPDU.get_request_id(pdu)), int(P.apiPDU.get_error_status(pdu)),
            int(pdu.getComponentByPosition(2)), out)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rid=st.integers(-(2**31), 2**31 - 1), vbs=varbinds, status=st.integers(0, 18), index=st.integers(0, 40))
def test_decode_matches_pysnmp(rid: int, vbs: list[Any], status: int, index: int) -> None:
    data = pysnmp_response(rid, vbs, status=status, index=index)
    mine = ber.decode_response(data)
    theirs = pysnmp_decode(data)
    assert (mine.request_id, mine.error_status, mine.error_index, mine.varbinds) == theirs
    assert mine.community == b"public" and mine.pdu_type == ber.RESPONSE and mine.version == 1
    # And our own encoder writes what pysnmp reads back the same way.
    again = ber.encode_response(b"public", rid, mine.varbinds, error_status=status, error_index=index)
    assert pysnmp_decode(again) == theirs


@settings(max_examples=200, deadline=None)
@given(rid=st.integers(0, 2**31 - 1), olist=st.lists(oids, min_size=1, max_size=30),
       nr=st.integers(0, 5), mr=st.integers(0, 1000))
def test_getbulk_request_reads_back_in_pysnmp(rid: int, olist: list[Any], nr: int, mr: int) -> None:
    data = ber.encode_request(ber.GET_BULK_REQUEST, b"c0mm", rid, olist, non_repeaters=nr, max_repetitions=mr)
    msg, rest = pyasn1_decoder.decode(data, asn1Spec=P.Message())
    assert not rest
    pdu = P.apiMessage.get_pdu(msg)
    assert pdu.tagSet == P.GetBulkRequestPDU.tagSet
    assert int(P.apiBulkPDU.get_non_repeaters(pdu)) == nr and int(P.apiBulkPDU.get_max_repetitions(pdu)) == mr
    assert [tuple(o) for o, _v in P.apiBulkPDU.get_varbinds(pdu)] == olist
    assert int(P.apiPDU.get_request_id(pdu)) == rid and bytes(P.apiMessage.get_community(msg)) == b"c0mm"


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=400))
def test_random_bytes_only_ever_raise_malformed(data: bytes) -> None:
    try:
        ber.decode_response(data)
    except ber.MalformedReply:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vbs=varbinds, cut=st.integers(0, 10_000), flips=st.lists(st.tuples(st.integers(0, 10_000),
                                                                         st.integers(0, 255)), max_size=4))
def test_truncated_and_mutated_replies_only_ever_raise_malformed(vbs: list[Any], cut: int,
                                                                 flips: list[tuple[int, int]]) -> None:
    data = bytearray(pysnmp_response(7, vbs))
    for pos, byte in flips:
        if data:
            data[pos % len(data)] = byte
    data = data[: cut % (len(data) + 1)]
    try:
        mine = ber.decode_response(bytes(data))
    except ber.MalformedReply:
        return
    # When both accept a mutated message, they agree.
    try:
        theirs = pysnmp_decode(bytes(data))
    except Exception:
        return
    assert (mine.request_id, mine.error_status, mine.error_index, mine.varbinds) == theirs


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vbs=varbinds, rid=st.integers(0, 2**31 - 1))
def test_v3_scoped_pdu_fast_path_matches_pyasn1(vbs: list[Any], rid: int) -> None:
    """The hook pysnmp's USM calls decodes a ScopedPDU to the same varbinds pyasn1 gives."""
    assert fastpdu.install()
    pdu = P.GetResponsePDU()
    P.apiPDU.set_defaults(pdu)
    P.apiPDU.set_request_id(pdu, rid)
    P.apiPDU.set_varbinds(pdu, [(rfc1902.ObjectName(o), to_pyasn1(t, v)) for o, (t, v) in vbs])
    sp = ScopedPDU()
    sp.setComponentByPosition(0, b"\x80\x00\x1f\x88\x04engine")
    sp.setComponentByPosition(1, b"ctx")
    sp.setComponentByPosition(2)
    sp.getComponentByPosition(2).setComponentByType(pdu.tagSet, pdu)
    data = bytes(pyasn1_encoder.encode(sp))
    from pysnmp.proto.secmod.rfc3414 import service

    fastpdu.register(rid)
    try:
        got, _rest = service.decoder.decode(data, asn1Spec=ScopedPDU())
        fast = fastpdu.take(rid)
    finally:
        fastpdu.take(rid)
    assert fast is not None
    plain, _r = pyasn1_decoder.decode(data, asn1Spec=ScopedPDU())
    want = [(tuple(n), *from_pyasn1(v)) for n, v in P.apiPDU.get_varbinds(plain[2].getComponent())]
    assert fast[2] == want
    assert bytes(got[0]) == bytes(plain[0]) and bytes(got[1]) == bytes(plain[1])
    assert int(P.apiPDU.get_request_id(got[2].getComponent())) == rid
    # Unregistered request-ids are left to pyasn1 untouched.
    other, _r = service.decoder.decode(data, asn1Spec=ScopedPDU())
    assert len(P.apiPDU.get_varbinds(other[2].getComponent())) == len(vbs)


# -- the collector fed random replies -----------------------------------------------------------------

class RandomSession(Session):
    """Answers every request with a drawn list of varbinds (often nonsense)."""

    def __init__(self, draw: Any) -> None:
        super().__init__()
        self.draw = draw

    async def _answer(self, oids: list[Any]) -> list[Any]:
        choice = self.draw(st.integers(0, 9))
        if choice == 0:
            raise SnmpFailure("timeout", "drawn timeout")
        if choice == 1:  # echo well-formed values for the requested OIDs
            return [((*o, self.draw(st.integers(0, 3))), t, v)
                    for o, (t, v) in zip(oids, self.draw(st.lists(values, min_size=len(oids), max_size=len(oids))),
                                         strict=True)]
        return [(o, t, v) for o, (t, v) in self.draw(st.lists(st.tuples(oids_near(oids), values), max_size=60))]

    async def get(self, oids: list[Any]) -> list[Any]:
        return await self._answer(oids)

    async def getnext(self, oids: list[Any]) -> list[Any]:
        return await self._answer(oids)

    async def getbulk(self, non_repeaters: int, max_repetitions: int, oids: list[Any]) -> list[Any]:
        return await self._answer(oids)


def oids_near(requested: list[Any]) -> Any:
    near = [st.builds(lambda suffix, base=o: (*base, *suffix), st.lists(st.integers(0, 5), max_size=3))
            for o in requested]
    return st.one_of(oids, *near) if near else oids


def _collector(tmp_path: Path, extra: str = "") -> tuple[Any, Any]:
    p = tmp_path / "agent.yml"
    p.write_text("agent: {site: hq}\nauths:\n  v2: {type: snmp_v2c, community: '${SNMP_UNIT_COMMUNITY}'}\n"
                 "targets:\n  - name: r\n    kind: snmp\n    host: 127.0.0.1\n    auth: v2\n" + extra)
    return load_config(p), p


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_varbind_lists_never_raise_out_of_the_collector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               data: st.DataObject) -> None:
    monkeypatch.setenv("SNMP_UNIT_COMMUNITY", "public")
    loaded, _p = _collector(tmp_path, "    max_interfaces: 50\n    metrics:\n"
                                      "      - {oid: 1.3.6.1.2.1.33.1.2.1.0, name: ups_status, enum: {2: ok}}\n"
                                      "      - {oid: 1.3.6.1.4.1.9.9.109.1.1.1.1.8, name: cpu, index_label: cpu}\n")

    async def run() -> Any:
        ctx = CollectorContext(auths=loaded.config.auths, executor=None, state_dir=tmp_path)  # type: ignore[arg-type]
        col = SnmpCollector(loaded.config.targets[0], ctx, interval=60, timeout=10)
        col.session = RandomSession(data.draw)
        try:
            return await col.collect()
        finally:
            await col.close()

    out = asyncio.run(run())
    ups = [s.value for s in out.samples if s.name == "continuity_device_up"]
    assert ups in ([0.0], [1.0])
    if ups == [0.0]:
        assert out.partial_errors


# -- config --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("snippet", "message"), [
    ("    metrics: [{oid: 1.3.6.1.2.1.33.1.2.3.0, name: Battery-Minutes}]\n", "lower_snake_case"),
    ("    metrics: [{oid: 1.3.6.1.2.1.33.1.2.3.0, name: x, type: counter}]\n", "must end in _total"),
    ("    metrics: [{oid: 1.3.6.1.2.1.33.1.2.3.0, name: battery_minutes_remaining}]\n",
     "use base unit 'seconds' instead of 'minutes'"),
    ("    metrics: [{oid: 1.3.6.1.4.1.9.9.109.1.1.1.1.8, name: cpu_percent, index_label: cpu}]\n",
     "use base unit 'ratio' instead of 'percent'"),
    ("    metrics: [{oid: not.an.oid, name: x}]\n", "numeric OID"),
    ("    metrics: [{oid: 1.3.6.1.2.1.1.3.0, name: x, index_label: target}]\n", "label name"),
    ("    metrics: [{oid: 1.3.6.1.2.1.1.3.0, name: a}, {oid: 1.3.6.1.2.1.1.4.0, name: a}]\n", "more than once"),
    ("    interfaces: {include: ['(']}\n", "bad regular expression"),
    ("    max_repetitions: 0\n", "max_repetitions"),
])
def test_bad_snmp_config_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, snippet: str,
                                            message: str) -> None:
    monkeypatch.setenv("SNMP_UNIT_COMMUNITY", "public")
    with pytest.raises(ConfigError) as e:
        _collector(tmp_path, snippet)
    text = str(e.value)
    assert message in text and "targets[0]" in text, text


@pytest.mark.parametrize(("auth", "message"), [
    ("{type: snmp_v2c, community: public}", "secrets are not written in the config"),
    ("{type: snmp_v3, username: u, auth_password: '${SNMP_UNIT_COMMUNITY}', priv_password: '${SNMP_UNIT_LONG}'}",
     "at least 8 characters"),
    ("{type: snmp_v3, username: u, security_level: authPriv}", "needs auth_password"),
    ("{type: snmp_v3, username: u, auth_protocol: SHA1, auth_password: '${SNMP_UNIT_LONG}', "
     "priv_password: '${SNMP_UNIT_LONG}'}", "auth_protocol"),
])
def test_bad_snmp_auths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, auth: str, message: str) -> None:
    monkeypatch.setenv("SNMP_UNIT_COMMUNITY", "public")
    monkeypatch.setenv("SNMP_UNIT_LONG", "long-enough-pass")
    p = tmp_path / "agent.yml"
    p.write_text(f"agent: {{site: hq}}\nauths:\n  a: {auth}\ntargets:\n"
                 "  - {name: r, kind: snmp, host: 127.0.0.1, auth: a}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert message in str(e.value) and "auths.a" in str(e.value), str(e.value)
    assert "long-enough-pass" not in str(e.value)


def test_secrets_from_files_and_masked_in_dump(tmp_path: Path) -> None:
    from agent.config import dump_config

    (tmp_path / "community").write_text("very-secret-community\n")
    (tmp_path / "community").chmod(0o600)
    p = tmp_path / "agent.yml"
    p.write_text("agent: {site: hq}\nauths:\n  a: {type: snmp_v2c, community_file: community}\n"
                 "targets:\n  - {name: r, kind: snmp, host: 127.0.0.1, auth: a}\n")
    loaded = load_config(p)
    assert loaded.config.auths["a"].community.reveal() == "very-secret-community"
    dumped = dump_config(loaded.config)
    assert "very-secret-community" not in dumped and "<secret>" in dumped


def test_mapped_metric_names_must_agree_across_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNMP_UNIT_COMMUNITY", "public")
    p = tmp_path / "agent.yml"
    p.write_text("agent: {site: hq}\nauths:\n  v2: {type: snmp_v2c, community: '${SNMP_UNIT_COMMUNITY}'}\ntargets:\n"
                 "  - {name: a, kind: snmp, host: 127.0.0.1, auth: v2, metrics: [{oid: 1.3.6.1.2.1.1.7.0, name: x}]}\n"
                 "  - {name: b, kind: snmp, host: 127.0.0.1, auth: v2, "
                 "metrics: [{oid: 1.3.6.1.2.1.1.7.0, name: x, index_label: i}]}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "continuity_snmp_x is mapped differently" in str(e.value)


def test_catalogue_declares_every_snmp_metric() -> None:
    from agent.catalogue import catalogue

    cat = catalogue()
    for spec in SnmpCollector.METRICS:
        assert cat[spec.name] == spec
    for name in ("continuity_device_up", "continuity_interface_speed_bytes_per_second",
                 "continuity_interface_receive_bytes_total", "continuity_interface_errors_total"):
        assert name in cat
    assert cat["continuity_interface_errors_total"].labels == ("interface", "alias", "direction")
    assert cat["continuity_interface_up"].labels == ("interface", "alias")


def test_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("SNMP_COMMUNITY", "SNMP_AUTH_PASSWORD", "SNMP_PRIV_PASSWORD"):
        monkeypatch.setenv(k, "example-secret-value")
    loaded = load_config(Path(__file__).resolve().parents[2] / "deploy" / "examples" / "snmp.yml")
    kinds = {t.kind for t in loaded.config.targets}
    assert kinds == {"snmp"} and len(loaded.config.targets) == 3
