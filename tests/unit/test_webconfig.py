"""--web.config.file: parsing (every rule and hostile input), SSL contexts, basic auth, the
failed-auth limiter and the start-up exposure warnings."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from unittest.mock import ANY

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.access import FailureLimiter, RequestLimiter, exposure_warnings
from agent.durations import DurationError, parse_go_duration
from agent.webconfig import (
    BasicAuth,
    WebConfigError,
    WebConfigSource,
    load_web_config,
    parse_web_config,
    peer_san_allowed,
    request_limiter,
)
from collectors.base import HttpRequest
from tests.helpers.tls import bcrypt_hash, make_pki

P = Path("/etc/web.yml")


def _basic(user: str, pw: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()


def _req(auth: str | None) -> HttpRequest:
    return HttpRequest("GET", "/metrics", {}, {"authorization": auth} if auth else {}, b"", "192.0.2.7")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_empty_file_is_plain_http() -> None:
    m = parse_web_config("", P)
    assert m.tls_server_config is None and m.basic_auth_users is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a\n", "must be a YAML mapping"),
        ("tls_server_config: {cert_file: a.crt}\n", "tls_server_config: missing one of key or key_file"),
        ("tls_server_config: {key_file: a.key}\n", "tls_server_config: missing one of cert or cert_file"),
        ("tls_server_config: {cert: '', key_file: a.key}\n", "missing one of cert or cert_file"),
        ("tls_server_config: {cert_file: a, key: ~}\n", "missing one of key or key_file"),
        ("tls_server_config: {cert_file: a, key_file: b, min_version: TLS9}\n", "unknown TLS version: TLS9"),
        (
            "tls_server_config: {cert_file: a, key_file: b, min_version: TLS13, max_version: TLS12}\n",
            "max_version: lower than min_version",
        ),
        ("tls_server_config: {cert_file: a, key_file: b, client_auth_type: Bogus}\n", "invalid ClientAuth 'Bogus'"),
        ("tls_server_config: {client_auth_type: Bogus}\n", "missing one of cert or cert_file"),
        ("tls_server_config: {cert_file: a, key_file: b, cipher_suites: [RC5]}\n", "unknown cipher: RC5"),
        (
            "tls_server_config: {cert_file: a, key_file: b, cipher_suites: [TLS_RSA_WITH_3DES_EDE_CBC_SHA]}\n",
            "unknown cipher: TLS_RSA_WITH_3DES_EDE_CBC_SHA",  # insecure in Go: unknown to the toolkit
        ),
        ("tls_server_config: {cert_file: a, key_file: b, curve_preferences: [P1]}\n", "unknown curve: P1"),
        ("tls_server_config: {cert_file: a, key_file: b, bogus: 1}\n", "tls_server_config.bogus"),
        ("tls_server_config: {client_ca_file: ca.crt}\n", "missing one of cert or cert_file"),
        ("rate_limit: {interval: 1d}\n", "rate_limit.interval: invalid duration '1d'"),
        ("rate_limit: {interval: 1s, bogus: 1}\n", "rate_limit.bogus"),
        ("basic_auth_users: {alice: hunter2}\n", "must be a bcrypt hash"),
        ("basic_auth_users: {'a:b': '$2y$10$" + "a" * 53 + "'}\n", "contains ':'"),
        ("http_server_config: {headers: {Server: x}}\n", "HTTP header 'Server' can not be configured"),
        ("http_server_config: {headers: {x-frame-options: deny}}\n", "can not be configured"),  # names exact
        ("http_server_config: {headers: {X-Frame-Options: DENY}}\n", "invalid value for X-Frame-Options"),
        ("http_server_config: {headers: {X-Content-Type-Options: sniff}}\n", "invalid value for X-Content-Type"),
        ("http_server_config: {headers: {X-Frame-Options: \"deny\\r\\nSet-Cookie: a\"}}\n", "invalid value"),
        ("http_server_config: {headers: {Content-Security-Policy: \"a\\r\\nSet-Cookie: a\"}}\n", "line break"),
        ("http_server_config: {headers: {X-XSS-Protection: [1]}}\n", "X-XSS-Protection"),
        ("unknown: 1\n", "unknown: Extra inputs are not permitted"),
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
        ("http_server_config: {headers: {X-XSS-Protection: " + "[" * 3000 + "]" * 3000 + "}}", "nested too deeply"),
        ("basic_auth_users: {a: x}\nbasic_auth_users: {b: y}\n", "duplicate key 'basic_auth_users'"),  # as Go
        ("tls_server_config: [\n", "invalid YAML: line"),
    ],
)
def test_bad_web_config_is_one_clear_error(text: str, expected: str) -> None:
    with pytest.raises(WebConfigError) as ei:
        parse_web_config(text, P)
    msg = str(ei.value)
    assert expected in msg
    assert msg.startswith(f"{P}: ")
    assert "\n" not in msg
    assert "hunter2" not in msg


def test_plain_text_password_is_not_echoed() -> None:
    with pytest.raises(WebConfigError) as ei:
        parse_web_config("basic_auth_users: {alice: s3cr3t-plain-pw}\n", P)
    assert "s3cr3t-plain-pw" not in str(ei.value)


def test_tls_context_and_mutual_tls(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "web.yml"
    f.write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {
                    "cert_file": str(pki.server_cert),
                    "key_file": str(pki.server_key),
                    "client_auth_type": "RequireAndVerifyClientCert",
                    "client_ca_file": str(pki.ca),
                    "min_version": "TLS13",
                    "client_allowed_sans": ["prometheus.example"],
                },
                "http_server_config": {"headers": {"Strict-Transport-Security": "max-age=60"}},
                "basic_auth_users": {"prom": bcrypt_hash("pw")},
            }
        )
    )
    wc = load_web_config(f)
    assert wc.ssl_context is not None
    assert wc.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert wc.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert wc.headers == {"Strict-Transport-Security": "max-age=60"}
    assert wc.allowed_sans == ("prometheus.example",)
    assert wc.auth is not None


def test_relative_paths_resolve_beside_the_file(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "s.crt").write_bytes(pki.server_cert.read_bytes())
    (tmp_path / "s.key").write_bytes(pki.server_key.read_bytes())
    (tmp_path / "s.key").chmod(0o600)
    f = tmp_path / "web.yml"
    f.write_text("tls_server_config: {cert_file: s.crt, key_file: s.key, cipher_suites: [TLS_AES_128_GCM_SHA256]}\n")
    with pytest.raises(WebConfigError, match="missing an HTTP/2-required"):  # Go's net/http rule
        load_web_config(f)
    f.write_text(
        "tls_server_config: {cert_file: s.crt, key_file: s.key, cipher_suites: [TLS_AES_128_GCM_SHA256]}\n"
        "http_server_config: {http2: false}\n"
    )
    wc = load_web_config(f)
    assert wc.tls and wc.warnings == ()
    assert wc.ssl_context is not None and wc.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_3


def test_missing_or_mismatched_key_is_one_error(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "web.yml"
    f.write_text(f"tls_server_config: {{cert_file: {pki.server_cert}, key_file: {tmp_path}/nope.key}}\n")
    with pytest.raises(WebConfigError, match=r"tls_server_config.key_file: cannot read .*nope.key"):
        load_web_config(f)
    f.write_text(f"tls_server_config: {{cert_file: {pki.server_cert}, key_file: {pki.client_key}}}\n")
    with pytest.raises(WebConfigError, match="cannot load certificate/key"):
        load_web_config(f)
    with pytest.raises(WebConfigError, match="cannot read web config"):
        load_web_config(tmp_path / "absent.yml")


def test_world_readable_key_is_warned(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    key = tmp_path / "k.key"
    key.write_bytes(pki.server_key.read_bytes())
    key.chmod(0o644)
    f = tmp_path / "web.yml"
    f.write_text(f"tls_server_config: {{cert_file: {pki.server_cert}, key_file: {key}}}\n")
    assert any("readable by others" in w for w in load_web_config(f).warnings)


def test_basic_auth_checks_bcrypt_and_caches() -> None:
    auth = BasicAuth({"prom": bcrypt_hash("right"), "other": bcrypt_hash("x")})
    assert auth(_req(_basic("prom", "right"))) is None
    assert auth(_req(_basic("prom", "right"))) is None  # from the cache
    assert len(auth._cache) == 1
    for bad in (
        _basic("prom", "wrong"),
        _basic("nobody", "right"),
        _basic("prom", "right" + "x" * 100),
        "Basic !!!notbase64",
        "Bearer right",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
        "",
    ):
        resp = auth(_req(bad))
        assert resp is not None and resp.status == 401, bad
        assert resp.headers["WWW-Authenticate"].startswith("Basic ")
    assert auth(_req(None)) is not None
    assert len(auth._cache) == 1


def test_go_style_2y_hashes_are_accepted() -> None:
    h = bcrypt_hash("pw").replace("$2b$", "$2y$")
    parse_web_config(f"basic_auth_users: {{u: '{h}'}}\n", P)
    assert BasicAuth({"u": h}).check(_basic("u", "pw")) == "u"


def test_limiter_blocks_after_burst_and_recovers() -> None:
    now = [1000.0]
    lim = FailureLimiter(burst=3, rate=0.5, clock=lambda: now[0])
    for _ in range(3):
        assert lim.retry_after("10.0.0.1", "prom") == 0
        lim.failed("10.0.0.1", "prom")
    assert lim.retry_after("10.0.0.1", "prom") > 0
    assert lim.retry_after("10.0.0.2", "prom") == 0  # per address
    assert lim.retry_after("10.0.0.1", "other") == 0  # and per user
    now[0] += 2.0  # one token back
    assert lim.retry_after("10.0.0.1", "prom") == 0
    lim.failed("10.0.0.1", "prom")
    assert lim.retry_after("10.0.0.1", "prom") > 0
    # IPv6: one /64 is one client; IPv4-mapped addresses are the IPv4 address.
    for i in range(3):
        lim.failed(f"2001:db8::{i + 1}", "prom")
    assert lim.retry_after("2001:db8::ffff", "prom") > 0
    assert lim.retry_after("2001:db8:0:1::1", "prom") == 0
    assert lim.retry_after("::ffff:10.0.0.1", "prom") > 0


def test_limiter_per_user_over_all_addresses() -> None:
    now = [0.0]
    lim = FailureLimiter(burst=10, rate=0.1, user_burst=5, user_rate=0.1, clock=lambda: now[0])
    for i in range(5):  # one failure each from five addresses
        lim.failed(f"10.0.0.{i}", "prom")
    # The user's budget is spent: an address that has failed is refused for that user ...
    assert lim.retry_after("10.0.0.1", "prom") > 0
    assert lim.retry_after("10.0.0.1", "alice") == 0  # (other users are not)
    # ... an address that has not failed is still checked (it may be the real scraper).
    assert lim.retry_after("10.0.9.9", "prom") == 0
    now[0] += 10.0
    assert lim.retry_after("10.0.0.1", "prom") == 0


def test_limiter_total_over_rotating_addresses_and_users() -> None:
    now = [0.0]
    lim = FailureLimiter(total_burst=20, total_rate=1.0, clock=lambda: now[0])
    refused = 0
    for i in range(64):  # 64 addresses, 5 random user names each
        for j in range(5):
            if lim.retry_after(f"127.0.0.{i}", f"u{i}-{j}") > 0:
                refused += 1
            else:
                lim.failed(f"127.0.0.{i}", f"u{i}-{j}")
    # 20 failures, then one per address (its first: it had not failed yet), the rest refused.
    assert refused == 64 * 5 - 20 - (64 - 4)
    assert lim.retry_after("127.0.1.1", "prom") == 0  # a fresh address is still checked


def test_limiter_memory_is_bounded() -> None:
    lim = FailureLimiter(burst=1, rate=0.001, max_clients=100)
    for i in range(1000):
        lim.failed(f"10.1.{i // 256}.{i % 256}", f"user{i}")
    assert len(lim.pairs.b) == 100 and len(lim.users.b) == 100 and len(lim.addresses.b) == 100


def test_valid_credentials_pass_a_blocked_client_and_bcrypt_is_skipped_for_blocked_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import bcrypt

    auth = BasicAuth({"prom": bcrypt_hash("right")})
    lim = FailureLimiter(burst=2, rate=0.001)
    assert auth.authenticate(_req(_basic("prom", "right")), lim) is None  # verified once
    for _ in range(2):
        resp = auth.authenticate(_req(_basic("prom", "wrong")), lim)
        assert resp is not None and resp.status == 401
    calls: list[bytes] = []
    real = bcrypt.checkpw
    monkeypatch.setattr(bcrypt, "checkpw", lambda pw, h: calls.append(h) or real(pw, h))
    resp = auth.authenticate(_req(_basic("prom", "wrong")), lim)
    assert resp is not None and resp.status == 429 and int(resp.headers["Retry-After"]) > 0
    assert calls == []  # refused before any bcrypt
    assert auth.authenticate(_req(_basic("prom", "right")), lim) is None  # never refused
    resp = auth.authenticate(_req(None), lim)  # no credentials: 401, not counted, not refused
    assert resp is not None and resp.status == 401


def test_cached_credentials_bypass_the_limiter_only_from_an_address_they_were_verified_from() -> None:
    auth = BasicAuth({"prom": bcrypt_hash("right")})
    lim = FailureLimiter(burst=1, rate=0.001)

    def at(client: str, pw: str) -> int:
        r = auth.authenticate(
            HttpRequest("GET", "/metrics", {}, {"authorization": _basic("prom", pw)}, b"", client), lim
        )
        return 200 if r is None else r.status

    assert at("10.0.0.1", "right") == 200
    assert [at("10.0.0.2", "wrong"), at("10.0.0.2", "wrong")] == [401, 429]
    assert at("10.0.0.2", "right") == 429  # blocked, and never verified from there: no oracle
    assert at("10.0.0.3", "right") == 200  # not blocked: verified elsewhere, no bcrypt needed
    assert [at("10.0.0.3", "wrong"), at("10.0.0.3", "wrong")] == [401, 429]
    assert at("10.0.0.3", "right") == 200  # now verified from there: never refused
    assert auth.cached("prom", "right", "10.0.0.3") and not auth.cached("prom", "right", "10.0.0.2")


def test_dummy_hash_costs_as_much_as_the_most_expensive_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding: with a cost-12 user the dummy hash for unknown users had cost 10 (107 ms vs 285 ms),
    so user names could be told apart by timing."""
    import bcrypt

    h12 = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=12)).decode()
    auth = BasicAuth({"cheap": bcrypt_hash("x"), "dear": h12})
    calls: list[bytes] = []
    real = bcrypt.checkpw
    monkeypatch.setattr(bcrypt, "checkpw", lambda pw, h: calls.append(h) or real(pw, h))
    assert auth.check(_basic("nobody", "pw")) is None
    assert auth.check(_basic("dear", "wrong")) is None
    assert [c[:7] for c in calls] == [h12[:7].encode()] * 2
    # Above cost 12 the dummy stays at 12: a made-up name must not cost seconds of CPU.
    h14 = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=13)).decode()
    assert BasicAuth({"cheap": bcrypt_hash("x"), "dearer": h14}).dummy_hash[:7] == b"$2b$12$"


def test_verified_credentials_survive_a_reload_unless_the_hash_changed() -> None:
    h = bcrypt_hash("right")
    old = BasicAuth({"prom": h, "alice": bcrypt_hash("a")})
    assert old.check(_basic("prom", "right")) == "prom" and old.check(_basic("alice", "a")) == "alice"
    new = BasicAuth({"prom": h, "alice": bcrypt_hash("a")})  # alice's hash changed (new salt)
    new.keep_verified(old)
    assert new.cached("prom", "right") and not new.cached("alice", "a")


def test_peer_san_check() -> None:
    cert = {"subjectAltName": (("DNS", "prometheus.example"), ("IP Address", "10.0.0.5"))}
    assert not peer_san_allowed(cert, ())  # an empty list allows no certificate, as in Go
    assert peer_san_allowed(cert, ("10.0.0.5",))
    assert not peer_san_allowed(cert, ("other",))
    assert not peer_san_allowed(None, ("other",))
    # IP addresses as Go prints them (OpenSSL writes IPv6 in full, upper case).
    assert peer_san_allowed({"subjectAltName": (("IP Address", "2001:DB8:0:0:0:0:0:1\n"),)}, ("2001:db8::1",))


def test_exposure_warnings(tmp_path: Path) -> None:
    assert exposure_warnings("127.0.0.1", None) == []
    assert exposure_warnings("::1", None) == []
    assert "without TLS or authentication" in exposure_warnings("0.0.0.0", None)[0]
    f = tmp_path / "w.yml"
    f.write_text(f"basic_auth_users: {{u: '{bcrypt_hash('p')}'}}\n")
    assert "in clear" in exposure_warnings("10.0.0.1", load_web_config(f))[0]


# -- hostile input ---------------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30), st.binary(max_size=10)
)
_keys = st.sampled_from(
    [
        "tls_server_config", "http_server_config", "basic_auth_users", "cert_file", "key_file", "client_auth_type",
        "client_ca_file", "min_version", "max_version", "cipher_suites", "headers", "http2", "x", "rate_limit",
        "interval", "burst", "cert", "key", "client_ca", "curve_preferences", "prefer_server_cipher_suites",
        "X-XSS-Protection", "X-Frame-Options",
    ]
)  # fmt: skip
_docs = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=5)),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_docs)
def test_any_structure_gives_a_model_or_one_clear_error(doc: object) -> None:
    try:
        text = yaml.safe_dump(doc)
    except yaml.YAMLError:
        return
    try:
        parse_web_config(text, P)
    except WebConfigError as e:
        assert str(e).startswith(f"{P}: ") and "\n" not in str(e)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300))
def test_any_bytes_give_a_model_or_one_clear_error(raw: bytes) -> None:
    try:
        parse_web_config(raw, P)
    except WebConfigError as e:
        assert str(e).startswith(f"{P}: ")


@settings(max_examples=200, deadline=None)
@given(header=st.text(max_size=200))
def test_any_authorization_header_is_refused_without_error(header: str) -> None:
    auth = BasicAuth({"u": "$2b$04$CwyoZMbnt73/KOczocMsGumpc7ZbnQwrUfMOIbcKWbksHoF7SmJPe"})
    assert auth.check(header) is None or header.strip().lower().startswith("basic")


def test_shipped_example_parses() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "web-config.yml"
    m = parse_web_config(example.read_text(), example)
    assert m.tls_server_config is not None and m.tls_server_config.cert_file
    assert m.basic_auth_users and all(h.startswith("$2") for h in m.basic_auth_users.values())


# -- exporter-toolkit parity -----------------------------------------------------------------------


def test_header_values_are_the_text_written_as_go_reads_them() -> None:
    text = (
        "http_server_config:\n  headers:\n    X-XSS-Protection: 1\n    Strict-Transport-Security: 0x10\n"
        "    Content-Security-Policy:\n"
    )
    m = parse_web_config(text, P)
    assert m.http_server_config is not None
    assert m.http_server_config.headers == {
        "X-XSS-Protection": "1",
        "Strict-Transport-Security": "0x10",  # not 16
        "Content-Security-Policy": "",
    }


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1s", 1.0), ("1m30s", 90.0), ("500ms", 0.5), ("1.5h", 5400.0), ("-2s", -2.0), ("0", 0.0), (0, 0.0),
     (5, 5e-9), ("1us", 1e-6), ("3µs", 3e-6)],
)  # fmt: skip
def test_go_durations(value: object, seconds: float) -> None:
    assert parse_go_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "1", "1d", "s", "1.s5", "1 s", True, 1.5, None, "--1s"])
def test_bad_go_durations(value: object) -> None:
    with pytest.raises(DurationError):
        parse_go_duration(value)


def test_request_limiter_is_gos_token_bucket() -> None:
    now = [0.0]
    lim = RequestLimiter(interval=1.0, burst=2, clock=lambda: now[0])
    assert [lim.allow() for _ in range(3)] == [True, True, False]  # starts full
    now[0] += 0.5
    assert not lim.allow()
    now[0] += 0.5
    assert lim.allow() and not lim.allow()
    now[0] += 100
    assert [lim.allow() for _ in range(3)] == [True, True, False]  # never more than the burst
    assert not RequestLimiter(interval=1.0, burst=0).allow()  # burst 0: nothing, as rate.Limiter


def test_rate_limit_interval_zero_is_off() -> None:
    assert request_limiter(parse_web_config("rate_limit: {interval: 0, burst: 0}\n", P)) is None
    assert request_limiter(parse_web_config("rate_limit: {interval: 1s}\n", P)) is not None


def test_inline_key_is_never_echoed(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "web.yml"
    bogus = "-----BEGIN PRIVATE KEY-----\nU0VDUkVUS0VZTUFURVJJQUw=\n-----END PRIVATE KEY-----\n"
    f.write_text(yaml.safe_dump({"tls_server_config": {"cert": pki.server_cert.read_text(), "key": bogus}}))
    with pytest.raises(WebConfigError) as ei:
        load_web_config(f)
    assert "U0VDUkVU" not in str(ei.value) and "cannot load certificate/key" in str(ei.value)
    assert "U0VDUkVU" not in repr(parse_web_config(f.read_text(), f))
    f.write_text(
        yaml.safe_dump(
            {"tls_server_config": {"cert": pki.server_cert.read_text(), "key": pki.server_key.read_text()}}
        )
    )
    assert load_web_config(f).tls


def test_client_cas_default_to_system_roots_and_inline_cas(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "web.yml"
    tls = {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}
    f.write_text(yaml.safe_dump({"tls_server_config": {**tls, "client_auth_type": "RequireAndVerifyClientCert"}}))
    ctx = load_web_config(f).ssl_context
    assert ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.cert_store_stats()["x509_ca"] > 0
    inline = {**tls, "client_auth_type": "VerifyClientCertIfGiven", "client_ca": pki.ca.read_text()}
    f.write_text(yaml.safe_dump({"tls_server_config": inline}))
    ctx = load_web_config(f).ssl_context
    assert ctx is not None and ctx.verify_mode == ssl.CERT_OPTIONAL and ctx.cert_store_stats()["x509_ca"] == 1
    f.write_text(yaml.safe_dump({"tls_server_config": {**inline, "client_ca": "no certificate here"}}))
    with pytest.raises(WebConfigError, match="client_ca: no PEM certificate"):
        load_web_config(f)
    f.write_text(yaml.safe_dump({"tls_server_config": {**tls, "client_auth_type": "VerifyClientCertIfGiven",
                                                       "client_allowed_sans": ["x"]}}))  # fmt: skip
    with pytest.raises(WebConfigError, match="client_allowed_sans: requires client_auth_type"):
        load_web_config(f)


def test_source_rereads_changed_files_and_keeps_the_last_valid_one(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "web.yml"
    f.write_text(f"basic_auth_users: {{u: '{bcrypt_hash('p')}'}}\n")
    changes: list[object] = []
    errors: list[str] = []
    src = WebConfigSource(load_web_config(f), on_change=changes.append, on_error=errors.append)
    first = src.get()
    assert first is not None and src.get() is first and changes == []  # unchanged: not re-read
    f.write_text(f"basic_auth_users: {{v: '{bcrypt_hash('p')}'}}\n")
    new = src.get()
    assert new is not None and new is not first and new.model.basic_auth_users == {"v": ANY}
    assert changes == [new]
    f.write_text("basic_auth_users: {v: plain}\n")
    # broken: the last valid config stays in force, loaded once, reported once, no password echoed
    assert src.get() is new and src.get() is new and not src.valid
    assert len(errors) == 1 and "still serving under the last valid one" in errors[0] and "'plain'" not in errors[0]
    f.write_text(f"tls_server_config: {{cert_file: {pki.server_cert}, key_file: {pki.server_key}}}\n")
    assert src.get() is new and not src.valid  # switching TLS on needs a restart
    assert len(errors) == 2 and "needs a restart" in errors[1]
    f.write_text(f"rate_limit: {{interval: 1s, burst: 5}}\nbasic_auth_users: {{v: '{bcrypt_hash('p')}'}}\n")
    latest = src.get()
    assert latest is not new and src.valid and src.limiter is not None and src.limiter.burst == 5


@pytest.mark.parametrize("value", [[], {}, 12, None])
def test_a_tls_version_that_is_not_a_string_is_one_clear_error(tmp_path: Path, value: object) -> None:
    # Found by the structure fuzz: a list made the version check raise TypeError, a traceback.
    f = tmp_path / "web.yml"
    f.write_text(yaml.safe_dump({"tls_server_config": {"cert_file": "c", "key_file": "k", "min_version": value}}))
    with pytest.raises(WebConfigError, match="min_version"):
        load_web_config(f)
