"""Two OpenSSL settings that Python's :mod:`ssl` does not expose, set on an ``SSLContext``'s own
``SSL_CTX`` through the OpenSSL library that ``_ssl`` is linked against:

* a list of key-exchange groups (Go's ``curve_preferences``; ``set_ecdh_curve`` takes only one);
* asking for a client certificate and accepting it unverified (Go's ``RequestClientCert`` and
  ``RequireAnyClientCert``; Python offers verification only).

The ``SSL_CTX`` pointer is found where CPython keeps it (right after the object header) and checked
before use: ``SSL_CTX_get_options`` through that pointer must return the context's ``options``.
If the check fails (another Python or OpenSSL build), :class:`OpenSSLUnavailable` is raised and
the caller refuses the setting; nothing is written through an unchecked pointer.
"""

from __future__ import annotations

import ctypes
import ssl
import sys
import threading
from typing import Any

SSL_VERIFY_PEER = 0x01
SSL_VERIFY_FAIL_IF_NO_PEER_CERT = 0x02
_SSL_CTRL_SET_GROUPS_LIST = 92

# Go curve names -> OpenSSL group names.
GROUPS = {"CurveP256": "P-256", "CurveP384": "P-384", "CurveP521": "P-521", "X25519": "X25519"}


class OpenSSLUnavailable(Exception):
    """The running Python/OpenSSL cannot apply the setting."""


_VERIFY_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
_lock = threading.Lock()
_lib: Any = None


def _accept_any(_preverify_ok: int, _store: int | None) -> int:
    return 1


_accept_any_cb = _VERIFY_CB(_accept_any)  # kept alive for the life of the process


def _libssl() -> Any:
    global _lib
    with _lock:
        if _lib is None:
            import _ssl

            try:
                lib = ctypes.CDLL(_ssl.__file__)  # its symbol scope includes the libssl it links
                lib.SSL_CTX_get_options.restype = ctypes.c_uint64
                lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
                lib.SSL_CTX_ctrl.restype = ctypes.c_long
                lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
                lib.SSL_CTX_set_verify.restype = None
                lib.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VERIFY_CB]
            except (OSError, AttributeError) as e:
                raise OpenSSLUnavailable(f"cannot reach OpenSSL from Python: {e}") from None
            _lib = lib
        return _lib


def _ctx_ptr(ctx: ssl.SSLContext) -> int:
    """The ``SSL_CTX *`` of ``ctx``, checked against the options Python reports."""
    if sys.implementation.name != "cpython":
        raise OpenSSLUnavailable("needs CPython")
    lib = _libssl()
    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not ptr:
        raise OpenSSLUnavailable("no SSL_CTX found in the SSLContext")
    probe = ssl.Options(int(ctx.options) ^ ssl.OP_NO_TICKET)  # flip one bit, see it through the pointer
    try:
        ctx.options = probe
        if lib.SSL_CTX_get_options(ptr) != int(probe):
            raise OpenSSLUnavailable("the SSLContext layout is not the expected one")
    finally:
        ctx.options = ssl.Options(int(probe) ^ ssl.OP_NO_TICKET)
    if lib.SSL_CTX_get_options(ptr) != int(ctx.options):
        raise OpenSSLUnavailable("the SSLContext layout is not the expected one")
    return int(ptr)


def set_groups(ctx: ssl.SSLContext, curves: list[str]) -> None:
    """Allow exactly these key-exchange groups (Go curve names), in this order of preference."""
    names = ":".join(GROUPS[c] for c in curves)
    ptr = _ctx_ptr(ctx)
    if _libssl().SSL_CTX_ctrl(ptr, _SSL_CTRL_SET_GROUPS_LIST, 0, names.encode()) != 1:
        raise OpenSSLUnavailable(f"OpenSSL refused the groups {names}")


def accept_any_client_cert(ctx: ssl.SSLContext, *, required: bool) -> None:
    """Ask for a client certificate (and fail the handshake without one when ``required``), and
    accept whatever certificate is sent without verifying it."""
    mode = SSL_VERIFY_PEER | (SSL_VERIFY_FAIL_IF_NO_PEER_CERT if required else 0)
    _libssl().SSL_CTX_set_verify(_ctx_ptr(ctx), mode, _accept_any_cb)
