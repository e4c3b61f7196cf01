"""The dead-man's switch for ``type: push`` backups.

``POST /api/v1/backup/<name>/success`` or ``/fail`` with ``Authorization: Bearer <token>``, the
token being that backup's secret. Optional JSON body: ``{"size_bytes": 123, "message": "..."}``.
The time recorded is the agent's own clock, never the caller's.

* not ``<name>/success|fail``: 404, no token: 401, wrong token *or* unknown backup (or not a push
  backup): 403 with the same body, bad body: 400 -- and nothing is written;
* tokens are compared in constant time (:func:`hmac.compare_digest`);
* accepted pushes go to the state store, so they survive a restart.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from typing import Any

from collectors.backup.kv import BackupKV, key
from collectors.base import HttpRequest, HttpResponse, Route

log = logging.getLogger(__name__)

PREFIX = "/api/v1/backup/"
ACTIONS = ("success", "fail")
_NO_TOKEN = secrets.token_bytes(32)  # compared against for names that are not push backups


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> HttpResponse:
    return HttpResponse(status, (json.dumps(body) + "\n").encode(), "application/json", headers or {})


def bearer(headers: Any) -> str | None:
    value = headers.get("authorization") or ""
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _body(req: HttpRequest) -> tuple[int | None, str] | str:
    """(size_bytes, message) from an optional JSON body, or an error text."""
    if not req.body.strip():
        return None, ""
    try:
        doc = json.loads(req.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "body must be a JSON object"
    if not isinstance(doc, dict):
        return "body must be a JSON object"
    extra = set(doc) - {"size_bytes", "message"}
    if extra:
        return f"unknown keys in body: {', '.join(sorted(map(str, extra)))}"
    size = doc.get("size_bytes")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 2**63):
        return "size_bytes must be a non-negative integer"
    msg = doc.get("message", "")
    if not isinstance(msg, str):
        return "message must be a string"
    return size, msg[:500]


def record_push(kv: BackupKV, target: str, ok: bool, now: float, size: int | None, message: str) -> dict[str, Any]:
    def apply(rec: dict[str, Any]) -> dict[str, Any]:
        rec = dict(rec)
        rec["last_attempt"] = now
        rec["last_attempt_ok"] = ok
        rec["message"] = message
        if ok:
            rec["last_success"] = now
            if size is not None:
                if rec.get("size_bytes") is not None:
                    rec["prev_size_bytes"] = rec["size_bytes"]
                rec["size_bytes"] = size
            rec["successes"] = int(rec.get("successes") or 0) + 1
        return rec

    return kv.update(key(target, "push"), apply)


def make_routes(agent: Any) -> list[Route]:
    def handle(req: HttpRequest) -> HttpResponse:
        rest = req.path[len(PREFIX) :]
        name, sep, action = rest.rpartition("/")
        if not sep or not name or "/" in name or action not in ACTIONS:
            return _json(404, {"error": "use POST /api/v1/backup/<name>/success or /fail"})
        token = bearer(req.headers)
        if token is None:
            return _json(401, {"error": "missing bearer token"}, {"WWW-Authenticate": 'Bearer realm="backup"'})
        cfg = agent.loaded.config
        target = cfg.target(name)
        known = target is not None and target.kind == "backup" and target.type == "push" and target.token is not None
        # Unknown names get the same answer as a wrong token, after the same comparison, so names
        # cannot be found by probing without a token.
        expected = target.token.reveal().encode("utf-8") if known and target is not None else _NO_TOKEN
        if not hmac.compare_digest(token.encode("utf-8"), expected) or not known:
            log.warning("backup push for %s from %s refused: wrong token or no such push backup", name, req.client)
            return _json(403, {"error": "wrong token or no such push backup"})
        parsed = _body(req)
        if isinstance(parsed, str):
            return _json(400, {"error": parsed})
        size, message = parsed
        now = float(agent.clock())
        kv = BackupKV.of(agent.shared, agent.store)
        record_push(kv, name, action == "success", now, size, message)
        log.info("backup push %s/%s from %s", name, action, req.client)
        return _json(200, {"backup": name, "recorded": action, "at": now})

    # The token is this route's own credential: the web config's basic auth does not apply (a push
    # carries one Authorization header); failed attempts (403, 404) are rate limited per client on
    # this route only (WebApp.own_auth_limiter).
    return [Route("POST", PREFIX, handle, own_auth=True)]
