"""Request sessions: the builtin v2c codec, and pysnmp (v1, v3, optionally v2c) on one SnmpEngine.

Both give the walker the same three operations returning ``[(oid, tag, value)]`` and raise
:class:`SnmpFailure` with a reason the operator can act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from collectors.snmp import ber, fastpdu
from collectors.snmp.ber import OID, VarBind
from collectors.snmp.config import SnmpTarget, SnmpV1Auth, SnmpV2cAuth, SnmpV3Auth
from collectors.snmp.transport import RequestTimeout, V2cTransport

# Failure reasons (continuity_target_errors_total{reason}).
TIMEOUT = "timeout"
UNKNOWN_USER_NAME = "unknown_user_name"
WRONG_DIGEST = "wrong_digest"
DECRYPTION_ERROR = "decryption_error"
NOT_IN_TIME_WINDOW = "not_in_time_window"
UNKNOWN_ENGINE_ID = "unknown_engine_id"
UNSUPPORTED_SECURITY_LEVEL = "unsupported_security_level"
NO_SUCH_OBJECT = "no_such_object"
NO_SUCH_INSTANCE = "no_such_instance"
END_OF_MIB_VIEW = "end_of_mib_view"
MALFORMED_REPLY = "malformed_reply"
OID_NOT_INCREASING = "oid_not_increasing"
LIMIT_EXCEEDED = "limit_exceeded"
SNMP_ERROR = "snmp_error"
UNREACHABLE = "unreachable"

REASONS = (
    TIMEOUT,
    UNKNOWN_USER_NAME,
    WRONG_DIGEST,
    DECRYPTION_ERROR,
    NOT_IN_TIME_WINDOW,
    UNKNOWN_ENGINE_ID,
    UNSUPPORTED_SECURITY_LEVEL,
    NO_SUCH_OBJECT,
    NO_SUCH_INSTANCE,
    END_OF_MIB_VIEW,
    MALFORMED_REPLY,
    OID_NOT_INCREASING,
    LIMIT_EXCEEDED,
    SNMP_ERROR,
    UNREACHABLE,
)

MAX_CONCURRENT_REQUESTS = 256  # global bound on SNMP requests in flight, all targets together


class SnmpFailure(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class SnmpShared:
    """Per-agent SNMP resources, kept in ``ctx.shared["snmp"]``."""

    semaphore: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_CONCURRENT_REQUESTS))
    v2c: V2cTransport = field(default_factory=V2cTransport)
    engine: Any = None  # pysnmp SnmpEngine, created on first use
    users: int = 0
    # v3 user names configured with more than one credential set: their requests are serialised,
    # because pysnmp's USM holds one key set per (engine id, user name).
    usm_credentials: dict[str, set[Any]] = field(default_factory=dict)
    usm_locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def get_engine(self) -> Any:
        if self.engine is None:
            from pysnmp.hlapi.v3arch.asyncio import SnmpEngine

            self.engine = SnmpEngine()
        return self.engine

    def close(self) -> None:
        self.v2c.close()
        if self.engine is not None:
            with contextlib.suppress(Exception):  # best effort at shutdown
                self.engine.close_dispatcher()
            self.engine = None


def shared(ctx_shared: dict[str, Any]) -> SnmpShared:
    sh = ctx_shared.get("snmp")
    if sh is None:
        sh = ctx_shared["snmp"] = SnmpShared()
    assert isinstance(sh, SnmpShared)
    return sh


class Session(ABC):
    bulk: bool = True  # GETBULK available (v2c, v3)

    def __init__(self) -> None:
        self.requests = 0
        self.bulk_requests = 0

    @abstractmethod
    async def get(self, oids: list[OID]) -> list[VarBind]: ...

    @abstractmethod
    async def getnext(self, oids: list[OID]) -> list[VarBind]: ...

    @abstractmethod
    async def getbulk(self, non_repeaters: int, max_repetitions: int, oids: list[OID]) -> list[VarBind]: ...

    async def close(self) -> None:  # noqa: B027 - optional
        pass

    def new_run(self) -> None:  # noqa: B027 - optional
        """Called at the start of each collection."""


def _status_failure(status: int, index: int, oids: list[OID]) -> SnmpFailure:
    name = ber.ERROR_STATUS_NAMES[status] if 0 <= status < len(ber.ERROR_STATUS_NAMES) else f"error {status}"
    where = f" at {ber.format_oid(oids[index - 1])}" if 0 < index <= len(oids) else ""
    return SnmpFailure(SNMP_ERROR, f"agent replied {name}{where}")


async def resolve(host: str, port: int) -> tuple[int, tuple[str, int]]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP)
    except socket.gaierror as e:
        raise SnmpFailure(UNREACHABLE, f"cannot resolve {host}: {e.strerror}") from None
    fam, _t, _p, _c, addr = infos[0]
    return int(fam), (str(addr[0]), int(addr[1]))


class BuiltinV2cSession(Session):
    """v2c through the agent's own codec and shared UDP socket."""

    def __init__(self, sh: SnmpShared, host: str, port: int, community: bytes, *, timeout: float, retries: int) -> None:
        super().__init__()
        self.sh = sh
        self.host, self.port = host, port
        self.community = community
        self.timeout, self.retries = timeout, retries
        self._addr: tuple[int, tuple[str, int]] | None = None

    async def _request(self, pdu_type: int, oids: list[OID], nr: int = 0, mr: int = 0) -> list[VarBind]:
        if self._addr is None:
            self._addr = await resolve(self.host, self.port)
        family, addr = self._addr
        community = self.community

        def build(rid: int) -> bytes:
            return ber.encode_request(pdu_type, community, rid, oids, non_repeaters=nr, max_repetitions=mr)

        self.requests += 1
        if pdu_type == ber.GET_BULK_REQUEST:
            self.bulk_requests += 1
        try:
            async with self.sh.semaphore:
                resp = await self.sh.v2c.request(addr, family, build, timeout=self.timeout, retries=self.retries)
        except RequestTimeout as e:
            raise SnmpFailure(TIMEOUT, str(e)) from None
        except ber.MalformedReply as e:
            raise SnmpFailure(MALFORMED_REPLY, f"malformed reply: {e}") from None
        except OSError as e:
            raise SnmpFailure(UNREACHABLE, f"cannot send to {self.host}:{self.port}: {e.strerror or e}") from None
        if resp.version != ber.VERSION_V2C or resp.pdu_type != ber.RESPONSE:
            raise SnmpFailure(
                MALFORMED_REPLY,
                f"reply is not a v2c Response PDU (version {resp.version}, PDU tag 0x{resp.pdu_type:02x})",
            )
        if resp.error_status:
            raise _status_failure(resp.error_status, resp.error_index, oids)
        return resp.varbinds

    async def get(self, oids: list[OID]) -> list[VarBind]:
        vbs = await self._request(ber.GET_REQUEST, oids)
        if len(vbs) != len(oids):
            raise SnmpFailure(MALFORMED_REPLY, f"asked for {len(oids)} values, got {len(vbs)}")
        return vbs

    async def getnext(self, oids: list[OID]) -> list[VarBind]:
        vbs = await self._request(ber.GET_NEXT_REQUEST, oids)
        if len(vbs) != len(oids):
            raise SnmpFailure(MALFORMED_REPLY, f"asked for {len(oids)} values, got {len(vbs)}")
        return vbs

    async def getbulk(self, non_repeaters: int, max_repetitions: int, oids: list[OID]) -> list[VarBind]:
        return await self._request(ber.GET_BULK_REQUEST, oids, non_repeaters, max_repetitions)


# -- pysnmp ---------------------------------------------------------------------------------------

_ERRIND_REASONS = {
    "RequestTimedOut": TIMEOUT,
    "UnknownUserName": UNKNOWN_USER_NAME,
    "UnknownSecurityName": UNKNOWN_USER_NAME,
    "WrongDigest": WRONG_DIGEST,
    "AuthenticationFailure": WRONG_DIGEST,
    "AuthenticationError": WRONG_DIGEST,
    "DecryptionError": DECRYPTION_ERROR,
    "NotInTimeWindow": NOT_IN_TIME_WINDOW,
    "UnknownEngineID": UNKNOWN_ENGINE_ID,
    "EngineIDMismatch": UNKNOWN_ENGINE_ID,
    "UnsupportedSecurityLevel": UNSUPPORTED_SECURITY_LEVEL,
    "ParseError": MALFORMED_REPLY,
    "DeserializationError": MALFORMED_REPLY,
    "DataMismatch": MALFORMED_REPLY,
    "EmptyResponse": MALFORMED_REPLY,
    "InvalidMsg": MALFORMED_REPLY,
}

_MESSAGES = {
    TIMEOUT: "no reply (wrong community, wrong address or port, ACL, or device down)",
    UNKNOWN_USER_NAME: "device does not know this SNMPv3 user name (usmStatsUnknownUserNames)",
    WRONG_DIGEST: "authentication failed: wrong auth_password or auth_protocol (usmStatsWrongDigests)",
    DECRYPTION_ERROR: "decryption failed: wrong priv_password or priv_protocol (usmStatsDecryptionErrors)",
    NOT_IN_TIME_WINDOW: "message outside the device's time window (usmStatsNotInTimeWindows)",
    UNKNOWN_ENGINE_ID: "device reported an unknown engine ID (usmStatsUnknownEngineIDs)",
    UNSUPPORTED_SECURITY_LEVEL: "device does not support this security level for the user "
    "(usmStatsUnsupportedSecLevels)",
}


def classify_error_indication(err: Any) -> tuple[str, str]:
    """(reason, message) for a pysnmp errorIndication."""
    for cls in type(err).__mro__:
        reason = _ERRIND_REASONS.get(cls.__name__)
        if reason is not None:
            return reason, _MESSAGES.get(reason, f"{reason.replace('_', ' ')}: {err}")
    return SNMP_ERROR, f"SNMP engine error: {err}"


def from_pyasn1(value: Any) -> tuple[int, Any]:
    """A pysnmp/pyasn1 value -> the codec's ``(tag, value)``."""
    t = value.tagSet[0]
    tag = int(t.tagClass) | int(t.tagId)
    if tag in (ber.INTEGER, *ber.UNSIGNED_MAX):
        return tag, int(value)
    if tag in (ber.OCTET_STRING, ber.IP_ADDRESS, ber.OPAQUE):
        return tag, bytes(value.asOctets())
    if tag == ber.OBJECT_IDENTIFIER:
        return tag, tuple(value)
    if tag == ber.NULL or tag in ber.EXCEPTIONS:
        return tag, None
    raise SnmpFailure(MALFORMED_REPLY, f"unexpected value type {type(value).__name__}")


_AUTH_PROTOCOLS = {
    "MD5": "usmHMACMD5AuthProtocol",
    "SHA": "usmHMACSHAAuthProtocol",
    "SHA224": "usmHMAC128SHA224AuthProtocol",
    "SHA256": "usmHMAC192SHA256AuthProtocol",
    "SHA384": "usmHMAC256SHA384AuthProtocol",
    "SHA512": "usmHMAC384SHA512AuthProtocol",
}
_PRIV_PROTOCOLS = {
    "DES": "usmDESPrivProtocol",
    "AES": "usmAesCfb128Protocol",
    "AES128": "usmAesCfb128Protocol",
    "AES192": "usmAesBlumenthalCfb192Protocol",
    "AES256": "usmAesBlumenthalCfb256Protocol",
    "AES192C": "usmAesCfb192Protocol",
    "AES256C": "usmAesCfb256Protocol",
}


def auth_data(auth: SnmpV1Auth | SnmpV2cAuth | SnmpV3Auth) -> Any:
    from pysnmp.hlapi.v3arch.asyncio import auth as hauth

    if isinstance(auth, SnmpV1Auth | SnmpV2cAuth):
        # mpModel set explicitly: 1 is v2c (GETBULK); 0 is v1, where pysnmp turns GETBULK into GETNEXT.
        mp = 0 if isinstance(auth, SnmpV1Auth) else 1
        return hauth.CommunityData(auth.community.reveal(), mpModel=mp)
    kw: dict[str, Any] = {}
    if auth.security_level in ("authNoPriv", "authPriv"):
        assert auth.auth_password is not None
        kw["authKey"] = auth.auth_password.reveal()
        kw["authProtocol"] = getattr(hauth, _AUTH_PROTOCOLS[auth.auth_protocol])
    if auth.security_level == "authPriv":
        assert auth.priv_password is not None
        kw["privKey"] = auth.priv_password.reveal()
        kw["privProtocol"] = getattr(hauth, _PRIV_PROTOCOLS[auth.priv_protocol])
    return hauth.UsmUserData(auth.username, **kw)  # noqa: S509 - the security level is the operator's choice


class PysnmpSession(Session):
    """pysnmp's command generators on the shared SnmpEngine (message-level API, no MIB lookups)."""

    def __init__(
        self,
        sh: SnmpShared,
        target: SnmpTarget,
        auth: SnmpV1Auth | SnmpV2cAuth | SnmpV3Auth,
        *,
        timeout: float,
        retries: int,
        fast_v3: bool = True,
    ) -> None:
        super().__init__()
        self.sh = sh
        self.target = target
        self.auth = auth
        self.bulk = not isinstance(auth, SnmpV1Auth)
        self.timeout, self.retries = timeout, retries
        self.context_name = (
            target.context_name if target.context_name is not None else getattr(auth, "context_name", "")
        ) or ""
        self._auth_data = auth_data(auth)
        self._transport: Any = None
        self._names: tuple[str, str] | None = None
        self._diagnosed = False
        # v3 replies to our requests get their varbinds decoded by the agent's codec (fastpdu).
        self.fast_v3 = isinstance(auth, SnmpV3Auth) and fast_v3 and fastpdu.install()
        # Our own request encoding is spliced in where USM encodes the ScopedPDU to encrypt it.
        self.fast_encode = self.fast_v3 and isinstance(auth, SnmpV3Auth) and auth.security_level == "authPriv"
        if isinstance(auth, SnmpV3Auth):
            sh.usm_credentials.setdefault(auth.username, set()).add(auth)

    @property
    def _lock(self) -> asyncio.Lock | None:
        """Held around each request while another target uses the same v3 user name with other
        credentials (looked up per request: the other target may have been added later)."""
        a = self.auth
        if not isinstance(a, SnmpV3Auth) or len(self.sh.usm_credentials.get(a.username, ())) < 2:
            return None
        return self.sh.usm_locks.setdefault(a.username, asyncio.Lock())

    async def _setup(self) -> tuple[Any, str]:
        from pysnmp.hlapi.v3arch.asyncio import Udp6TransportTarget, UdpTransportTarget
        from pysnmp.hlapi.v3arch.asyncio.cmdgen import LCD

        engine = self.sh.get_engine()
        if self._transport is None:
            family, addr = await resolve(self.target.host, self.target.port)
            cls = Udp6TransportTarget if family == socket.AF_INET6 else UdpTransportTarget
            try:
                self._transport = await cls.create(addr, timeout=self.timeout, retries=self.retries)
            except Exception as e:  # noqa: BLE001 - pysnmp raises PySnmpError for bad addresses
                raise SnmpFailure(UNREACHABLE, f"cannot use {self.target.host}:{self.target.port}: {e}") from None
        # configure() is cheap when nothing changed, and re-installs the credentials when another
        # target configured the same v3 user name differently (requests are then serialised).
        addr_name, _params = LCD.configure(engine, self._auth_data, self._transport, self.context_name)
        return engine, addr_name

    async def _run(self, kind: str, oids: list[OID], nr: int = 0, mr: int = 0) -> list[VarBind]:
        lock = self._lock
        if lock is not None:
            async with lock:
                return await self._run_unlocked(kind, oids, nr, mr)
        return await self._run_unlocked(kind, oids, nr, mr)

    async def _run_unlocked(self, kind: str, oids: list[OID], nr: int, mr: int) -> list[VarBind]:
        from pysnmp.entity.rfc3413 import cmdgen
        from pysnmp.proto.rfc1902 import Null, ObjectName

        engine, addr_name = await self._setup()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[Any, int, int, Any]] = loop.create_future()

        def cb(_engine: Any, _handle: Any, err: Any, status: Any, index: Any, vbs: Any, _ctx: Any) -> bool:
            if not fut.done():
                fut.set_result((err, int(status or 0), int(index or 0), vbs))
            return False

        vb_in = [] if self.fast_encode and kind != "next" else [(ObjectName(o), Null("")) for o in oids]
        ctx_name = self.context_name.encode()
        self.requests += 1
        fast_rid: int | None = None
        async with self.sh.semaphore:
            if self.fast_v3 and kind in ("bulk", "get"):
                # Same command generators, but we build the PDU so its request-id is known and the
                # reply's varbinds can be decoded by the agent's codec (see fastpdu).
                from pysnmp.proto.api import v2c

                vb_pysnmp = [] if self.fast_encode else vb_in
                if kind == "bulk":
                    self.bulk_requests += 1
                    gen: Any = cmdgen.BulkCommandGeneratorSingleRun()
                    pdu = v2c.GetBulkRequestPDU()
                    v2c.apiBulkPDU.set_defaults(pdu)
                    v2c.apiBulkPDU.set_non_repeaters(pdu, nr)
                    v2c.apiBulkPDU.set_max_repetitions(pdu, mr)
                    v2c.apiBulkPDU.set_varbinds(pdu, vb_pysnmp)
                    cb_ctx: tuple[Any, ...] = (addr_name, nr, mr, None, ctx_name, pdu, cb, None)
                else:
                    gen = cmdgen.GetCommandGenerator()
                    pdu = v2c.GetRequestPDU()
                    v2c.apiPDU.set_defaults(pdu)
                    v2c.apiPDU.set_varbinds(pdu, vb_pysnmp)
                    cb_ctx = (cb, None)
                fast_rid = int(v2c.apiPDU.get_request_id(pdu))
                mine = (
                    ber.encode_pdu(
                        ber.GET_BULK_REQUEST if kind == "bulk" else ber.GET_REQUEST,
                        fast_rid,
                        oids,
                        non_repeaters=nr,
                        max_repetitions=mr,
                    )
                    if self.fast_encode
                    else None
                )
                fastpdu.register(fast_rid, mine)
                try:
                    gen.send_pdu(engine, addr_name, None, ctx_name, pdu, gen.process_response_varbinds, cb_ctx)
                    err, status, index, vbs = await fut
                    fast = fastpdu.take(fast_rid)
                finally:
                    fastpdu.take(fast_rid)
                if fast is not None and not err:
                    status, index, fast_vbs = fast
                    if status:
                        if status == 2 and kind != "bulk" and 0 < index <= len(oids):
                            raise _NoSuchName(index - 1)
                        raise _status_failure(status, index, oids)
                    return fast_vbs
            elif kind == "bulk":
                self.bulk_requests += 1
                cmdgen.BulkCommandGeneratorSingleRun().send_varbinds(
                    engine, addr_name, None, ctx_name, nr, mr, vb_in, cb
                )
                err, status, index, vbs = await fut
            elif kind == "next":
                cmdgen.NextCommandGeneratorSingleRun().send_varbinds(engine, addr_name, None, ctx_name, vb_in, cb)
                err, status, index, vbs = await fut
            else:
                cmdgen.GetCommandGenerator().send_varbinds(engine, addr_name, None, ctx_name, vb_in, cb)
                err, status, index, vbs = await fut
        if err:
            reason, message = classify_error_indication(err)
            if reason == TIMEOUT and not self._diagnosed:
                self._diagnosed = True
                found = await self._diagnose_silence()
                if found is not None:
                    reason, message = found
            raise SnmpFailure(reason, message)
        if status:
            if status == 2 and kind != "bulk" and 0 < index <= len(oids):  # v1 noSuchName
                raise _NoSuchName(index - 1)
            raise _status_failure(status, index, oids)
        out: list[VarBind] = []
        for name, val in vbs:
            tag, v = from_pyasn1(val)
            out.append((tuple(name), tag, v))
        return out

    def new_run(self) -> None:
        self._diagnosed = False

    async def _diagnose_silence(self) -> tuple[str, str] | None:
        """An authPriv request met silence. net-snmp (and others) drop a message they cannot
        decrypt instead of sending the usmStatsDecryptionErrors report, so a wrong priv password
        looks like a dead device. Ask once with the same user at authNoPriv: any authenticated
        answer (data, or an access error) proves the device is up and the auth key right, so
        the privacy settings are wrong. A short-lived engine of its own is used, so the shared
        engine's USM table never holds the downgraded user."""
        a = self.auth
        if not isinstance(a, SnmpV3Auth) or a.security_level != "authPriv" or a.auth_password is None:
            return None
        from pysnmp.hlapi.v3arch.asyncio import SnmpEngine, get_cmd
        from pysnmp.hlapi.v3arch.asyncio import auth as hauth
        from pysnmp.hlapi.v3arch.asyncio.context import ContextData
        from pysnmp.proto.rfc1902 import ObjectName
        from pysnmp.smi.rfc1902 import ObjectIdentity, ObjectType

        if self._transport is None:
            return None
        engine = SnmpEngine()
        try:
            probe = hauth.UsmUserData(
                a.username,
                authKey=a.auth_password.reveal(),
                authProtocol=getattr(hauth, _AUTH_PROTOCOLS[a.auth_protocol]),
            )
            tgt = type(self._transport)
            target = await tgt.create(self._transport.transport_address, timeout=self.timeout, retries=0)
            err, status, _idx, _vbs = await get_cmd(
                engine,
                probe,
                target,
                ContextData(contextName=self.context_name.encode()),
                ObjectType(ObjectIdentity(ObjectName((1, 3, 6, 1, 2, 1, 1, 3, 0)))),
                lookupMib=False,
            )
        except Exception:  # noqa: BLE001 - a failed diagnosis leaves the timeout as it was
            return None
        finally:
            with contextlib.suppress(Exception):
                engine.close_dispatcher()
        if err:
            reason, _m = classify_error_indication(err)
            if reason in (TIMEOUT, DECRYPTION_ERROR):
                return None
            if reason == UNSUPPORTED_SECURITY_LEVEL:
                return DECRYPTION_ERROR, _MESSAGES[DECRYPTION_ERROR].replace(
                    "(usmStatsDecryptionErrors)", "(no answer to authPriv; the device authenticates this user)"
                )
            return reason, _MESSAGES.get(reason, str(err))
        return DECRYPTION_ERROR, (
            "decryption failed: wrong priv_password or priv_protocol (no answer to "
            "authPriv, while an authNoPriv request with the same user was "
            f"{'answered' if not status else 'authenticated and refused'})"
        )

    async def get(self, oids: list[OID]) -> list[VarBind]:
        # v1 reports a missing object as noSuchName for the whole request: drop it and ask again.
        return await self._run_dropping_no_such_name("get", oids, ber.NO_SUCH_OBJECT)

    async def getnext(self, oids: list[OID]) -> list[VarBind]:
        # v1: noSuchName on GETNEXT means that variable has run off the end of the MIB view.
        return await self._run_dropping_no_such_name("next", oids, ber.END_OF_MIB_VIEW)

    async def _run_dropping_no_such_name(self, kind: str, oids: list[OID], exception_tag: int) -> list[VarBind]:
        """Run ``kind`` for ``oids``; each variable a v1 agent answers noSuchName for is dropped
        from the request, which is asked again, and answered with ``exception_tag``."""
        remaining = list(oids)
        dropped: dict[OID, VarBind] = {}
        for _ in range(len(oids) + 1):
            if not remaining:
                break
            try:
                vbs = await self._run(kind, remaining)
            except _NoSuchName as e:
                o = remaining.pop(e.index)
                dropped[o] = (o, exception_tag, None)
                continue
            if len(vbs) != len(remaining):
                raise SnmpFailure(MALFORMED_REPLY, f"asked for {len(remaining)} values, got {len(vbs)}")
            got = dict(zip(remaining, vbs, strict=True))
            return [got.get(o) or dropped[o] for o in oids]
        return [dropped[o] for o in oids]

    async def getbulk(self, non_repeaters: int, max_repetitions: int, oids: list[OID]) -> list[VarBind]:
        return await self._run("bulk", oids, non_repeaters, max_repetitions)


class _NoSuchName(Exception):
    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index
