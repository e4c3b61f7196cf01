"""The ``/exercise/`` board: every exercise, and one page per exercise with a lane per system in
dependency order (the DR report's SVG Gantt: measured steps and the projection against hours since
T0 and the objective), ready and late steps, warnings and open actions. Plain HTML: it refreshes
itself every 30 s and needs no JavaScript.

Recording from the page: small POST forms, each with a CSRF token bound to the user and the
exercise, good for ``CSRF_LIFETIME`` (12 h): a form sent later is not recorded but comes back (403)
saying so, filled in, with a fresh token. Only users authenticated by the web config's
``basic_auth_users`` may write; the user name is the actor and the default operator. Without
users the page is read-only and says how to enable recording. ``?at=TIME`` shows the exercise as
at that time and records at that time (back-filling a log kept on paper).

Two pages without the 30 s refresh, so nothing half-typed is reloaded away:
``/exercise/<name>/action`` records an action (``exercise action``: system, description, owner,
due date) and ``/exercise/<name>/journal`` lists every entry, newest first, each with a form to
void it with a reason (``exercise void``) and a link to a form amending it (``?amend=SEQ``,
``exercise amend``). Every form posts to ``/exercise/<name>`` and goes
through :class:`agent.exercises.record.Recorder`, as the CLI does: the same entry, the same checks,
the same messages. A refused form comes back (400) with one error and what was typed in it.

Each lane's attach form uploads one file (``exercise artefact``): a multipart body read as it
arrives (the POST route streams), through :meth:`Recorder.add_artefact`, at most
``MAX_UPLOAD_BYTES`` (413 beyond).
"""

from __future__ import annotations

import hashlib
import hmac
import html as _html
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from agent import escape
from agent.evidence.verifier import fmt_hours
from agent.exercises.config import PREFIX
from agent.exercises.journal import NAME_RE, ExerciseInputError, Journal, iso
from agent.exercises.model import AMENDABLE, effective
from agent.exercises.record import ArtefactTooLarge, Recorder, amend_changes, fmt_bytes
from agent.exercises.status import SYSTEM_LABELS, ExerciseStatus, SystemProgress
from agent.multipart import MultipartError, MultipartReader, boundary
from agent.plugin import HttpRequest, HttpResponse

REFRESH_SECONDS = 30
MAX_FORM_BYTES = 16 * 1024
MAX_UPLOAD_BYTES = 64 * 2**20  # an artefact attached from the board; larger ones from the command line
CSRF_REFUSED = b"missing or wrong CSRF token: reload the page and try again\n"
# A form's token is good for this long after its page was drawn: a whole night of a DR exercise (a form
# opened at its start and sent at the morning hand-over goes through), but not the next day's. The board
# draws fresh ones every 30 s; a page left open longer gets its form back, filled in, with a fresh token.
CSRF_LIFETIME = 12 * 3600
CSRF_SKEW = 300  # seconds a token may seem to come from the future (the clock was set back)
CSRF_EXPIRED = (
    f"this page was open for more than {CSRF_LIFETIME // 3600} hours, so its form expired and nothing was "
    "recorded: what you typed is below, check it and send it again"
)
CSRF_EXPIRED_UPLOAD = (
    f"this page was open for more than {CSRF_LIFETIME // 3600} hours, so its form expired and nothing was "
    "recorded: choose the file again and attach it"
)
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
ENABLE_HELP = (
    "Recording from this page is off: the agent has no web config with <code>basic_auth_users</code>. "
    "Start it with <code>--web.config.file</code> naming a file that lists users (docs/security.md); "
    "each user name is recorded as the actor. Until then, record with "
    "<code>continuity-agent exercise step|restored|validate|action|artefact|sign-off|amend|void</code>."
)
TIMED = ("step", "restored", "validate", "sign_off")  # kinds whose entry takes the page's as-at time
# What the amend form offers to change, in this order, and its labels (model.AMENDABLE says which
# fields each kind of entry has).
AMEND_LABELS = {
    "at": "When it happened (ISO 8601 with UTC offset)",
    "operator": "Operator",
    "note": "Note",
    "by": "By",
    "role": "Role",
    "result": "Result",
    "description": "Issue and action",
    "owner": "Owner",
    "due": "Due (date)",
    "name": "Name",
}
FORM_FIELD = "form"  # the id of the form a POST came from: a refused form comes back filled in
PAGES = ("", "action", "journal")  # /exercise/<name>, /exercise/<name>/action, /exercise/<name>/journal

e = escape.html  # operator notes and device strings: inert in the page


def _h(seconds: float | None) -> str:
    return fmt_hours(seconds) if seconds is not None else "-"


@dataclass(frozen=True)
class Input:
    """One text field of a form; its id is the test's and the label's handle."""

    name: str
    label: str
    id: str
    attrs: str = "required"
    type: str = "text"
    value: str = ""  # shown unless the form comes back refused (then what was typed)


class Forms:
    """The POST forms of one page. Each carries the CSRF token, its own id (``form``) and, for
    entries that take a time, the page's as-at time. ``kept`` is a refused POST: the form it came
    from is drawn again with what was typed in it."""

    def __init__(self, name: str, token: str, at_value: str = "", kept: dict[str, str] | None = None) -> None:
        self.name, self.token, self.at_value, self.kept = name, token, at_value, kept or {}

    def values(self, fid: str) -> dict[str, str]:
        return self.kept if self.kept.get(FORM_FIELD) == fid else {}

    def __call__(
        self,
        fields: dict[str, str],
        label: str,
        fid: str,
        inputs: Sequence[Input | str] = (),
        buttons: str = "",
        *,
        timed: bool = True,
        css: str = "",
        enctype: str = "",
    ) -> str:
        kept = self.values(fid)
        hidden_fields = {**fields, "csrf": self.token, FORM_FIELD: fid, **({"at": self.at_value} if timed else {})}
        hidden = "".join(f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in hidden_fields.items())
        shown = "".join(
            i
            if isinstance(i, str)
            else f'<label>{e(i.label)} <input type="{e(i.type)}" name="{e(i.name)}" id="{e(i.id)}"'
            f"{_value(kept.get(i.name) if kept else i.value)} {i.attrs}></label> "
            for i in inputs
        )
        submit = buttons or f'<button type="submit">{e(label)}</button>'
        cls = f' class="{e(css)}"' if css else ""
        enc = f' enctype="{e(enctype)}"' if enctype else ""
        action = f"{PREFIX}/{quote(self.name)}"
        return f'<form method="post" action="{action}" id="{e(fid)}"{cls}{enc}>{hidden}{shown}{submit}</form>'


def _value(v: str | None) -> str:
    """A refused form's typed value, given back exactly (quoted; not shown as escapes, so sending
    the form again sends what was typed)."""
    return f' value="{_html.escape(v, quote=True)}"' if v else ""


def _error(msg: str | None) -> str:
    return f'<p class="error" role="alert" id="error"><strong>Not recorded:</strong> {e(msg)}</p>' if msg else ""


def describe(entry: dict[str, Any]) -> str:
    """One journal entry in words (plain text: escape it for the output)."""
    g = entry.get
    rb = g("runbook", "")
    match g("action"):
        case "start":
            return f"exercise declared: {g('type', '')}, systems {', '.join(map(str, g('systems') or []))}"
        case "step":
            note = f"; note: {g('note')}" if g("note") else ""
            return f"{rb}/{g('step', '')} {g('state', '')} (operator {g('operator', '')}){note}"
        case "restored":
            return f"{rb}: service restored"
        case "validate":
            return f"{rb}: validation {g('validation', '')} {g('result', '')} (by {g('by', '')})"
        case "action":
            return f"{rb}: action: {g('description', '')} (owner {g('owner', '')}, due {g('due', '')})"
        case "participant":
            return f"participant {g('name', '')} ({g('role', '')})"
        case "sign_off":
            return f"{rb}: signed off by {g('by', '')} ({g('role', '')})"
        case "artefact":
            return f"{rb}: artefact {g('path', '')}"
        case "amend":
            changes = g("changes")
            items = changes.items() if isinstance(changes, dict) else ()
            return f"amends entry {g('target')}: " + ", ".join(f"{k} = {v}" for k, v in items)
        case "void":
            return f"voids entry {g('target')}: {g('reason', '')}"
        case "finish":
            return "exercise finished"
        case other:
            return str(other)


def current(entries: list[dict[str, Any]], seq: int) -> dict[str, Any] | None:
    """Entry ``seq`` as corrected so far (amends applied); None if voided or not there."""
    try:
        return next((x for x in effective(entries) if x["seq"] == seq), None)
    except (ExerciseInputError, ValueError, TypeError):  # a chained journal that does not replay
        return None


def _seq(f: dict[str, str]) -> int:
    seq = f.get("seq", "").strip()
    if not seq.isdigit():
        raise ExerciseInputError(f"entry number {seq!r} is not a number")
    return int(seq)


def voided_by(entries: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """seq -> the void entry that voided it."""
    return {v["target"]: v for v in entries if v.get("action") == "void" and isinstance(v.get("target"), int)}


class Board:
    """The /exercise/ pages (routed by :mod:`agent.exercises.service`, which loads this module on
    the first request); ``secret`` is the form (CSRF) key."""

    def __init__(self, agent: Any, snapshots: Any, secret: bytes) -> None:
        self.agent = agent
        self.snapshots = snapshots  # agent.exercises.service.ExerciseBoard
        self.secret = secret

    # -- who may write -----------------------------------------------------------------------------
    def auth(self) -> Any:
        wc = getattr(self.agent, "web_config", None)
        return getattr(wc, "auth", None) if wc is not None else None

    def user(self, req: HttpRequest) -> str | None:
        auth = self.auth()
        if auth is None:
            return None
        got: str | None = auth.check(req.headers.get("authorization"))
        return got

    def csrf(self, user: str, exercise: str) -> str:
        """A form token for ``user`` writing to ``exercise``, issued now (:func:`csrf_token`)."""
        return csrf_token(self.secret, user, exercise, self._now())

    def _now(self) -> float:
        clock = getattr(self.agent, "clock", None)
        return float(clock()) if callable(clock) else time.time()

    # -- routes ------------------------------------------------------------------------------------
    def get(self, req: HttpRequest) -> HttpResponse:
        if req.path == PREFIX:
            return HttpResponse(301, b"", headers={"Location": PREFIX + "/"})
        if not req.path.startswith(PREFIX + "/"):
            return HttpResponse(404, b"not found\n")
        name, _, page = req.path[len(PREFIX) + 1 :].partition("/")
        rb, ev = self.snapshots.dirs()
        if rb is None or ev is None:
            return self._page(
                404,
                "DR exercises",
                "<p>No runbooks or evidence directory is configured (<code>exercises:</code>, "
                "<code>reports:</code> or an <code>evidence</code> target).</p>",
            )
        if name == "" and page == "":
            return self._listing()
        if not NAME_RE.fullmatch(name) or ".." in name or page not in PAGES:
            return HttpResponse(404, b"not found\n")
        at = None
        if page == "" and "at" in req.query and req.query["at"].strip():
            try:
                at = _parse_at(req.query["at"])
            except ValueError as err:
                return self._page(400, "Bad time", f"<p>{e(str(err))}</p>")
        try:
            if page == "journal":
                amend = req.query.get("amend", "").strip()
                target = int(amend) if amend.isdigit() else None
                return self._journal(name, self._entries(name), self.user(req), amend=target)
            st = self.snapshots.compute(name, at)
        except ExerciseInputError as err:
            return self._page(404, f"Exercise {name}", f"<p>{e(str(err))}</p>")
        if page == "action":
            return self._action(st, self.user(req))
        return self._board(st, self.user(req), at)

    def post(self, req: HttpRequest) -> HttpResponse:
        name = req.path[len(PREFIX) + 1 :] if req.path.startswith(PREFIX + "/") else ""
        if not name or not NAME_RE.fullmatch(name) or ".." in name:
            return HttpResponse(404, b"not found\n")
        if self.auth() is None:
            return HttpResponse(403, b"recording is off: the agent has no web config with basic_auth_users\n")
        user = self.user(req)
        if user is None:
            return HttpResponse(401, b"Unauthorized\n", headers={"WWW-Authenticate": 'Basic realm="continuity-agent"'})
        rb, ev = self.snapshots.dirs()
        if rb is None or ev is None:
            return HttpResponse(404, b"not configured\n")
        if req.headers.get("content-type", "").lower().startswith("multipart/"):
            return self._upload(req, name, user, rb, ev)
        length = req.stream.length if req.stream is not None else len(req.body)
        if length > MAX_FORM_BYTES:
            return HttpResponse(413, b"form too large\n")
        try:
            body = _read_all(req.stream, length) if req.stream is not None else req.body
            form = {k: v[0] for k, v in parse_qs(body.decode("utf-8"), max_num_fields=32).items()}
        except (UnicodeDecodeError, ValueError, OSError):
            return HttpResponse(400, b"bad form\n")
        verdict = self._token(form, user, name)
        if verdict == "expired":
            return self._refused(name, user, form, CSRF_EXPIRED, status=403)
        if verdict != "ok":
            return HttpResponse(403, CSRF_REFUSED)
        try:
            timed = form.get("kind") in TIMED
            at = _parse_at(form["at"]) if timed and form.get("at", "").strip() else None
            rec = Recorder(rb, ev, name, user)
            got = self._record(rec, form, at)
        except (ValueError, ExerciseInputError) as err:
            return self._refused(name, user, form, str(err))
        return self._recorded(name, got, form)

    def _recorded(self, name: str, got: dict[str, Any], form: dict[str, str]) -> HttpResponse:
        """303 to where the new entry shows."""
        self.snapshots.refresh(only=name)
        base = f"{PREFIX}/{quote(name)}"
        if got["action"] == "artefact":
            loc = f"{base}/journal#e-{got['seq']}"
        elif got["action"] == "action":
            loc = f"{base}#actions"
        elif got["action"] in ("void", "amend"):
            loc = f"{base}/journal#e-{got['target']}"
        else:
            loc = base + (f"?{urlencode({'at': form['at']})}" if form.get("at") else "")
        return HttpResponse(303, b"", headers={"Location": loc})

    def _token(self, form: dict[str, str], user: str, name: str) -> str:
        """``ok``, ``expired`` (ours, for this user and exercise, but older than CSRF_LIFETIME, or
        made before tokens expired) or ``bad``."""
        token = form.get("csrf", "")
        if len(token) != 64 or token.strip("0123456789abcdef"):
            return "bad"
        issued = int(token[:8], 16)
        if not hmac.compare_digest(token, csrf_token(self.secret, user, name, issued)):
            # A token of the agent before tokens expired (a form open across the upgrade).
            old = hmac.new(self.secret, f"{user}\n{name}".encode(), hashlib.sha256).hexdigest()
            return "expired" if hmac.compare_digest(token, old) else "bad"
        age = self._now() - issued
        return "ok" if -CSRF_SKEW <= age <= CSRF_LIFETIME else "expired"

    def _upload_token(self, form: dict[str, str], user: str, name: str) -> HttpResponse | None:
        """The answer to an upload whose token is not good (None: it is)."""
        verdict = self._token(form, user, name)
        if verdict == "expired":
            return self._refused(name, user, form, CSRF_EXPIRED_UPLOAD, status=403)
        return None if verdict == "ok" else HttpResponse(403, CSRF_REFUSED)

    def _upload(self, req: HttpRequest, name: str, user: str, rb: Path, ev: Path) -> HttpResponse:
        """``exercise artefact`` from the board: a multipart form whose fields (the CSRF token, the
        system) come before its one file, which is streamed through :meth:`Recorder.add_artefact`
        (at most MAX_UPLOAD_BYTES; a larger Content-Length is refused from the head, 413). The
        form is read to its end before the entry is written: a second file, a field after the
        file or no closing boundary is refused (400), nothing kept."""
        length = req.stream.length if req.stream is not None else len(req.body)
        form: dict[str, str] = {"kind": "artefact"}
        if length > MAX_UPLOAD_BYTES + MAX_FORM_BYTES:
            msg = (
                f"the upload is {fmt_bytes(length)}, larger than {fmt_bytes(MAX_UPLOAD_BYTES)}, the most the board "
                "takes: add it with `continuity-agent exercise artefact`"
            )
            return self._refused(name, user, form, msg, status=413)
        stream = req.stream if req.stream is not None else io.BytesIO(req.body)
        used = 0
        try:
            parts = MultipartReader(stream, boundary(req.headers.get("content-type", "")))
            while (part := parts.next_part()) is not None:
                if part.filename is None:
                    value = parts.read_field(MAX_FORM_BYTES - used, part.name)
                    used += len(part.name) + len(value.encode())
                    form.setdefault(part.name, value)
                    continue
                # The file: what it needs came before it (the page's form puts it last).
                form["kind"] = "artefact"
                if (denied := self._upload_token(form, user, name)) is not None:
                    return denied
                if not part.filename:
                    raise ExerciseInputError("choose a file to attach")
                filename = part.filename.rpartition("/")[2]  # a base name only, whatever was sent
                rec = Recorder(rb, ev, name, user)
                got = rec.add_artefact(
                    form.get("runbook", ""), filename, _OneFile(parts), source="the upload", max_bytes=MAX_UPLOAD_BYTES
                )
                return self._recorded(name, got, form)
            form["kind"] = "artefact"
            if (denied := self._upload_token(form, user, name)) is not None:
                return denied
            raise ExerciseInputError("choose a file to attach")
        except ArtefactTooLarge as err:
            return self._refused(name, user, form, str(err), status=413)
        except (MultipartError, ExerciseInputError) as err:
            return self._refused(name, user, form, str(err))
        except OSError as err:  # the client stopped sending: nobody may be reading this
            return self._refused(name, user, form, f"the upload did not arrive whole: {err}")

    @staticmethod
    def _record(rec: Recorder, f: dict[str, str], at: datetime | None) -> dict[str, Any]:
        """One entry through the Recorder, exactly as the CLI subcommand of the same name writes it
        (``action`` and ``void`` take no time there, so none here)."""
        kind = f.get("kind", "")
        rid = f.get("runbook", "")
        if kind == "step":
            return rec.step(rid, f.get("step", ""), f.get("state", ""), at=at, operator=f.get("operator") or None)
        if kind == "restored":
            return rec.restored(rid, at)
        if kind == "validate":
            return rec.validate(rid, f.get("validation", ""), f.get("result", ""), f.get("by", ""), at)
        if kind == "sign_off":
            return rec.sign_off(rid, f.get("by", ""), f.get("role", ""), at)
        if kind == "participant":
            return rec.participant(f.get("name", ""), f.get("role", ""))
        if kind == "action":
            return rec.action(rid, f.get("description", ""), f.get("owner", ""), f.get("due", ""))
        if kind == "void":
            return rec.void(_seq(f), f.get("reason", ""))
        if kind == "amend":
            # The form shows the entry's fields as they stand; what was changed is amended, each
            # value checked as `exercise amend`'s flag of that name.
            seq = _seq(f)
            cur = current(rec.journal.read(), seq)
            keys = AMENDABLE.get(cur["action"], ()) if cur is not None else tuple(k for k in AMEND_LABELS if k in f)
            changed = {k: f.get(k, "") for k in keys if cur is None or f.get(k, "") != str(cur.get(k, ""))}
            return rec.amend(seq, amend_changes(**changed))
        raise ExerciseInputError(f"unknown kind of entry {kind!r}")

    def _refused(self, name: str, user: str, form: dict[str, str], msg: str, status: int = 400) -> HttpResponse:
        """400 (or ``status``): the page the form came from, with one error and the form as it
        was typed; the journal is untouched."""
        resp = self._refused_page(name, user, form, msg)
        return replace(resp, status=status) if resp.status == 400 else resp

    def _refused_page(self, name: str, user: str, form: dict[str, str], msg: str) -> HttpResponse:
        kind = form.get("kind", "")
        try:
            if kind in ("void", "amend"):
                return self._journal(name, self._entries(name), user, msg, form)
            if kind == "action":
                return self._action(self.snapshots.compute(name), user, msg, form)
            try:
                at = _parse_at(form["at"]) if kind in TIMED and form.get("at", "").strip() else None
            except ValueError:
                at = None
            return self._board(self.snapshots.compute(name, at), user, at, msg, form)
        except ExerciseInputError:  # no such exercise, or its journal does not verify
            return self._page(400, f"DR exercise {name}: not recorded", _error(msg) + _back(name, form.get("at")))

    def _entries(self, name: str) -> list[dict[str, Any]]:
        _, ev = self.snapshots.dirs()
        if ev is None:
            raise ExerciseInputError("no evidence directory configured (exercises:)")
        return Journal.open(ev, name).read()

    # -- pages -------------------------------------------------------------------------------------
    def _page(self, status: int, title: str, body: str, refresh: bool = False) -> HttpResponse:
        meta = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if refresh else ""
        page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>{meta}
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:sans-serif;margin:1.5rem;color:#1a1a1a;max-width:72rem}}
table{{border-collapse:collapse;margin:.5rem 0 1rem}}th,td{{border:1px solid #8c8c8c;padding:.25rem .5rem;
text-align:left;vertical-align:top}}thead th{{background:#e8e8e8}}a{{color:#1d4f91}}
form{{display:inline-block;margin:.1rem .2rem .1rem 0}}button{{font:inherit;padding:.1rem .5rem}}
input,select{{font:inherit;width:9rem}}.over{{color:#a11d12;font-weight:bold}}.ok{{color:#1e6b32;font-weight:bold}}
.note{{background:#fbe7b8;padding:.5rem;border:1px solid #7a5300}}
.error{{background:#fde8e6;padding:.5rem;border:2px solid #a11d12;color:#1a1a1a}}
form.stack{{display:block;max-width:44rem}}form.stack label{{display:block;margin:.5rem 0}}
form.stack input,form.stack select{{width:100%;box-sizing:border-box}}form.stack button{{padding:.3rem 1rem}}
.voided{{text-decoration:line-through;color:#545454}}</style></head><body>
{body}
</body></html>
"""
        return HttpResponse(status, page.encode(), "text/html; charset=utf-8", HEADERS)

    def _listing(self) -> HttpResponse:
        self.snapshots.refresh()
        with self.snapshots.lock:
            snaps = dict(self.snapshots.snapshots)
            errors = dict(self.snapshots.errors)
        rows = []
        for name in sorted({*snaps, *errors}):
            link = f'<a href="{PREFIX}/{quote(name)}">{e(name)}</a>'
            st = snaps.get(name)
            if st is None:
                rows.append(f'<tr><th scope="row">{link}</th><td colspan="4">{e(errors.get(name, ""))}</td></tr>')
                continue
            verdict = "finished" if st.finished else ("on track" if st.on_track else "over the objective")
            rows.append(
                f'<tr><th scope="row">{link}</th><td>{e(st.type)}</td><td>{e(iso(st.declared_at))}</td>'
                f"<td>{_h(st.projected_seconds)} of {_h(st.objective_seconds)}</td><td>{e(verdict)}</td></tr>"
            )
        none = "No exercises yet (start one with <code>continuity-agent exercise start</code>)."
        body = "\n".join(rows) or f'<tr><td colspan="5">{none}</td></tr>'
        return self._page(
            200,
            "DR exercises",
            f"""<h1>DR exercises</h1><p><a href="/">Agent status</a></p>
<table><caption>Exercises</caption><thead><tr><th scope="col">Exercise</th><th scope="col">Type</th>
<th scope="col">Declared (T0)</th><th scope="col">Projected estate recovery</th><th scope="col">Status</th></tr></thead>
<tbody>{body}</tbody></table>""",
            refresh=True,
        )

    @staticmethod
    def _amend_form(name: str, entries: list[dict[str, Any]], seq: int, forms: Forms) -> str:
        cur = current(entries, seq)
        back = f'<a href="{PREFIX}/{quote(name)}/journal">cancel</a>'
        if cur is None or not AMENDABLE.get(cur["action"]):
            return f'<p class="note" id="amend">Entry {e(seq)} cannot be amended. {back}</p>'
        kept = forms.values("f-amend")
        inputs: list[Input | str] = []
        for k in AMENDABLE[cur["action"]]:
            if k == "result":
                chosen = kept.get("result", "") if kept else str(cur.get("result", ""))
                options = "".join(
                    f'<option value="{r}"{" selected" if r == chosen else ""}>{r}</option>' for r in ("pass", "fail")
                )
                inputs.append(
                    f'<label>{AMEND_LABELS[k]} <select name="result" id="f-amend-result">{options}</select></label>'
                )
            else:
                typ = "date" if k == "due" else "text"
                inputs.append(Input(k, AMEND_LABELS[k], f"f-amend-{k}", "", typ, str(cur.get(k, ""))))
        form = forms(
            {"kind": "amend", "seq": str(seq)}, "Record the correction", "f-amend", inputs, timed=False, css="stack"
        )
        return (
            f'<section id="amend" class="note"><h2>Amend entry {e(seq)}</h2><p>{e(describe(cur))}</p>'
            "<p>Change what was recorded wrongly; the entry stays as it was and a new entry records the "
            f"correction (as <code>continuity-agent exercise amend</code>).</p>{form} {back}</section>"
        )

    def _nav(self, name: str, here: str = "") -> str:
        base = f"{PREFIX}/{quote(name)}"
        links = [(f"{PREFIX}/", "All exercises"), (base, "Board"), (f"{base}/action", "Record an action")]
        links += [(f"{base}/journal", "Journal: correct a mistaken entry"), ("/", "Agent status")]
        return "<p>" + " · ".join(f'<a href="{h}">{t}</a>' for h, t in links if t != here) + "</p>"

    def _board(
        self,
        st: ExerciseStatus,
        user: str | None,
        at: datetime | None,
        error: str | None = None,
        kept: dict[str, str] | None = None,
    ) -> HttpResponse:
        name = st.name
        can_write = user is not None and not st.finished
        forms = Forms(name, self.csrf(user, name) if user is not None else "", iso(at) if at else "", kept)
        verdict = '<span class="ok">on track</span>' if st.on_track else '<span class="over">over the objective</span>'
        parts = [
            f"<h1>DR exercise {e(name)}</h1>{self._nav(name, 'Board')}",
            _error(error),
            f"<p>{e(st.type.replace('_', ' '))}; declared (T0) {e(iso(st.declared_at))}; "
            f"{'as at ' + e(iso(st.at)) + '; ' if at is not None else ''}"
            f"<strong>{_h(st.elapsed_seconds)}</strong> since T0{' · finished' if st.finished else ''}.</p>",
            f"<p>Projected estate recovery <strong>{_h(st.projected_seconds)}</strong> against the objective "
            f"{_h(st.objective_seconds)}: {verdict}. Critical path: {e(' → '.join(st.critical_path) or '-')}.</p>",
        ]
        if user is None and not st.finished:
            parts.append(f'<p class="note">{ENABLE_HELP}</p>')
        parts.append(self._gantt(st))
        if st.warnings:
            parts.append(
                "<h2>Warnings</h2><ul>"
                + "".join(f"<li>{e(w.rule)}: {e(w.message)}</li>" for w in st.warnings)
                + "</ul>"
            )
        ready = ", ".join(f"{e(s.runbook)}/{e(s.id)}" for s in st.ready_steps) or "none"
        late = (
            ", ".join(f"{e(s.runbook)}/{e(s.id)} (expected {_h(s.expected_seconds)})" for s in st.late_steps) or "none"
        )
        parts.append(f"<p><strong>Ready now:</strong> {ready}</p><p><strong>Late:</strong> {late}</p>")
        for sp in st.systems:
            parts.append(self._lane(sp, forms if can_write else None))
        record = "" if st.finished else f' <a href="{PREFIX}/{quote(name)}/action">Record an action</a>'
        parts.append(f'<h2 id="actions">Open actions</h2><p>{len(st.open_actions)} open.{record}</p>')
        parts.append(_actions_table(st))
        people = ", ".join(f"{e(n)} ({e(r)})" for n, r in st.participants) or "none recorded"
        parts.append(f"<h2>Participants</h2><p>{people}</p>")
        if can_write:
            parts.append(
                forms(
                    {"kind": "participant"},
                    "Add participant",
                    "f-participant",
                    [Input("name", "Name", "f-participant-name"), Input("role", "Role", "f-participant-role")],
                )
            )
            parts.append(f"<p>Recording as <strong>{e(user or '')}</strong>.</p>")
        # A refused form is not reloaded away by the refresh.
        return self._page(400 if error else 200, _title(name, error), "\n".join(parts), refresh=not error)

    def _action(
        self, st: ExerciseStatus, user: str | None, error: str | None = None, kept: dict[str, str] | None = None
    ) -> HttpResponse:
        """``exercise action`` as a form: no refresh, so a long description is not lost."""
        name = st.name
        parts = [f"<h1>Record an action: exercise {e(name)}</h1>{self._nav(name, 'Record an action')}", _error(error)]
        if st.finished:
            parts.append('<p class="note">The exercise is finished: its journal accepts no more entries.</p>')
            if kept:  # finished while the form was being filled in: what was typed, to copy elsewhere
                typed = "; ".join(f"{k}: {kept[k]}" for k in ("runbook", "description", "owner", "due") if kept.get(k))
                parts.append(f"<p>What was typed: {e(typed)}</p>")
        elif user is None:
            parts.append(f'<p class="note">{ENABLE_HELP}</p>')
        else:
            forms = Forms(name, self.csrf(user, name), kept=kept)
            chosen = forms.values("f-action").get("runbook")
            options = "".join(
                f'<option value="{e(sp.runbook)}"{" selected" if sp.runbook == chosen else ""}>'
                f"{e(sp.runbook)} — {e(sp.name)}</option>"
                for sp in st.systems
            )
            parts.append(
                "<p>An issue found during the exercise and the action to fix it, recorded now by "
                f"<strong>{e(user)}</strong> (as <code>continuity-agent exercise action</code>). It becomes an "
                "issue in the system's evidence record when the exercise is finished.</p>"
            )
            parts.append(
                forms(
                    {"kind": "action"},
                    "Record action",
                    "f-action",
                    [
                        '<label>System <select name="runbook" id="f-action-runbook" required>'
                        f'<option value="">choose the system…</option>{options}</select></label>',
                        Input("description", "Issue and action", "f-action-description"),
                        Input("owner", "Owner (who will do it)", "f-action-owner"),
                        Input("due", "Due (date)", "f-action-due", type="date"),
                    ],
                    timed=False,
                    css="stack",
                )
            )
        parts.append(f'<h2 id="actions">Open actions</h2>{_actions_table(st)}')
        return self._page(400 if error else 200, _title(f"{name}: record an action", error), "\n".join(parts))

    def _journal(
        self,
        name: str,
        entries: list[dict[str, Any]],
        user: str | None,
        error: str | None = None,
        kept: dict[str, str] | None = None,
        amend: int | None = None,
    ) -> HttpResponse:
        """Every entry, newest first; each that can be voided has a form for ``exercise void`` and
        each that can be amended a link to the amend form (``?amend=SEQ``) for ``exercise amend``."""
        finished = any(x.get("action") == "finish" for x in entries)
        can_write = user is not None and not finished
        forms = Forms(name, self.csrf(user, name) if user is not None else "", kept=kept)
        voided = voided_by(entries)
        amended: dict[Any, list[str]] = {}
        for x in entries:
            if x.get("action") == "amend":
                amended.setdefault(x.get("target"), []).append(str(x.get("seq")))
        rows = []
        for x in reversed(entries):
            seq = x.get("seq")
            v = voided.get(seq) if isinstance(seq, int) else None
            cell = ""
            if seq in amended:
                cell = f"<p>amended by entry {e(', '.join(amended[seq]))}</p>"
            if v is not None:
                cell += f"voided by entry {e(v.get('seq'))}: {e(v.get('reason', ''))}"
            elif can_write and x.get("action") not in ("start", "amend", "void", "finish"):
                fid = f"f-void-{seq}"
                cell += forms(
                    {"kind": "void", "seq": str(seq)},
                    "",
                    fid,
                    [Input("reason", "Reason", f"{fid}-reason")],
                    f'<button type="submit" id="{e(fid)}-submit">void entry {e(seq)}</button>',
                    timed=False,
                )
            if v is None and can_write and AMENDABLE.get(str(x.get("action"))):
                href = f"{PREFIX}/{quote(name)}/journal?{urlencode({'amend': seq})}#amend"
                cell += f' <a href="{href}" id="amend-{e(seq)}">amend entry {e(seq)}…</a>'
            what = f'<span class="voided">{e(describe(x))}</span>' if v is not None else e(describe(x))
            rows.append(
                f'<tr id="e-{e(seq)}"><th scope="row">{e(seq)}</th><td>{e(x.get("at", ""))}</td>'
                f"<td>{e(x.get('actor', ''))}</td><td>{what}</td><td>{cell}</td></tr>"
            )
        parts = [f"<h1>Journal of exercise {e(name)}</h1>{self._nav(name, 'Journal: correct a mistaken entry')}"]
        parts.append(_error(error))
        if finished:
            parts.append('<p class="note">The exercise is finished: its journal accepts no more entries.</p>')
        elif user is None:
            parts.append(f'<p class="note">{ENABLE_HELP}</p>')
        else:
            parts.append(
                "<p>Nothing is rewritten: a correction is a new entry naming the mistaken one. <em>Amend</em> "
                "changes its time, names or text (as <code>continuity-agent exercise amend</code>); <em>void</em> "
                "takes it out, with the reason (as <code>continuity-agent exercise void</code>), and the right one "
                "can be recorded again on the board.</p>"
            )
        if kept is not None and kept.get("kind") == "amend":
            amend = int(kept["seq"]) if kept.get("seq", "").isdigit() else None
        if can_write and amend is not None:
            parts.append(self._amend_form(name, entries, amend, forms))
        parts.append(
            '<table><thead><tr><th scope="col">Entry</th><th scope="col">When</th><th scope="col">Recorded by</th>'
            f'<th scope="col">What</th><th scope="col">Correct</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
        )
        return self._page(400 if error else 200, _title(f"{name}: journal", error), "\n".join(parts))

    @staticmethod
    def _gantt(st: ExerciseStatus) -> str:
        from agent.reports.svg import GanttBar, GanttRow, gantt  # with the first page that shows a chart

        rows: list[GanttRow] = []
        crit = set(st.critical_path)
        for sp in st.systems:
            actual = [
                GanttBar(
                    s.title,
                    s.started_offset,
                    s.ended_offset if s.ended_offset is not None else st.elapsed_seconds,
                    s.state != "failed",
                )
                for s in sp.steps
                if s.started_offset is not None
            ]
            planned = [
                GanttBar(f"{s.title} (projected)", s.projected_start_offset, s.projected_end_offset)
                for s in sp.steps
                if s.state not in ("done",)
            ]
            label = SYSTEM_LABELS[sp.state]
            rows.append(
                GanttRow(f"{sp.runbook} actual", actual, sp.rto_seconds, sp.restored_offset, sp.runbook in crit, label)
            )
            rows.append(
                GanttRow(f"{sp.runbook} projected", planned, None, None, False, _h(sp.projected_restore_offset))
            )
        return gantt(
            rows,
            objective=st.objective_seconds,
            title=f"Exercise {st.name}: steps against hours since T0",
            desc="For each system, the steps as recorded and the projection of the rest, against the estate objective.",
            key="exercise",
        )

    @staticmethod
    def _lane(sp: SystemProgress, form: Forms | None) -> str:
        rows = []
        for s in sp.steps:
            buttons = ""
            if form is not None:
                base = {"kind": "step", "runbook": sp.runbook, "step": s.id}
                fid = f"f-{sp.runbook}-{s.id}"
                if s.state in ("ready", "failed", "waiting"):
                    buttons = form(
                        {**base, "state": "start"},
                        "start",
                        f"{fid}-start",
                        [Input("operator", "Operator", f"{fid}-operator", 'placeholder="you"')],
                    )
                elif s.state == "in_progress":
                    buttons = form({**base, "state": "done"}, "done", f"{fid}-done") + form(
                        {**base, "state": "failed"}, "failed", f"{fid}-failed"
                    )
            late = " (late)" if s.late else ""
            rows.append(
                f'<tr><th scope="row">{e(s.id)}</th><td>{e(s.title)}</td><td>{e(s.state.replace("_", " "))}{late}</td>'
                f"<td>{_h(s.expected_seconds)}</td><td>{e(s.operator or '')}</td><td>{buttons}</td></tr>"
            )
        extra = ""
        if form is not None:
            if sp.state != "restored":
                extra += form(
                    {"kind": "restored", "runbook": sp.runbook}, "service restored", f"f-{sp.runbook}-restored"
                )
            for vid in sp.validation_ids:
                if vid in sp.validations:
                    continue
                fid = f"f-{sp.runbook}-{vid}"
                extra += form(
                    {"kind": "validate", "runbook": sp.runbook, "validation": vid},
                    "",
                    fid,
                    [f"{e(vid)}: ", Input("by", "By", f"{fid}-by")],
                    f'<button type="submit" name="result" value="pass" id="{e(fid)}-pass">pass</button>'
                    f'<button type="submit" name="result" value="fail" id="{e(fid)}-fail">fail</button>',
                )
            fid = f"f-{sp.runbook}-artefact"
            extra += form(
                {"kind": "artefact", "runbook": sp.runbook},
                "",
                fid,
                [Input("file", "Attach a file (screenshot, log, export)", f"{fid}-file", "required", "file")],
                f'<button type="submit" id="{e(fid)}-submit">attach</button>',
                timed=False,
                enctype="multipart/form-data",
            )
            if sp.signed_off_by is None:
                extra += form(
                    {"kind": "sign_off", "runbook": sp.runbook},
                    "sign off",
                    f"f-{sp.runbook}-sign-off",
                    [
                        Input("by", "By", f"f-{sp.runbook}-sign-off-by"),
                        Input("role", "Role", f"f-{sp.runbook}-sign-off-role"),
                    ],
                )
        vals = ", ".join(f"{e(k)}: {e(v)}" for k, v in sp.validations.items()) or "none yet"
        signed = e(sp.signed_off_by) if sp.signed_off_by else "not yet"
        files = ", ".join(f"<code>{e(a.rpartition('/')[2])}</code>" for a in sp.artefacts) or "none yet"
        return (
            f'<h2 id="sys-{e(sp.runbook)}">{e(sp.runbook)} — {e(sp.name)}: {e(SYSTEM_LABELS[sp.state])}</h2>'
            f"<p>Restored {_h(sp.restored_offset)} after T0 (projected {_h(sp.projected_restore_offset)}; "
            f"RTO {_h(sp.rto_seconds)}). Validations: {vals}. Signed off: {signed}. "
            f'Artefacts: <span id="artefacts-{e(sp.runbook)}">{files}</span>.</p>'
            '<table><thead><tr><th scope="col">Step</th><th scope="col">Title</th><th scope="col">State</th>'
            '<th scope="col">Expected</th><th scope="col">Operator</th><th scope="col">Record</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>{extra}"
        )


def csrf_token(secret: bytes, user: str, exercise: str, issued: float) -> str:
    """The form token for ``user`` writing to ``exercise``, issued at Unix time ``issued``: 64 hex
    digits, the issue time (8) and an HMAC-SHA256 of user, exercise and that time (the first 224
    bits)."""
    t = int(issued) & 0xFFFFFFFF
    mac = hmac.new(secret, f"{user}\n{exercise}\n{t}".encode(), hashlib.sha256).hexdigest()
    return f"{t:08x}{mac[:56]}"


def _parse_at(text: str) -> datetime:
    t = datetime.fromisoformat(text.strip())
    if t.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return t.astimezone(UTC)


def _title(page: str, error: str | None) -> str:
    return f"DR exercise {page}" + (": not recorded" if error else "")


def _actions_table(st: ExerciseStatus) -> str:
    def correct(action_id: str) -> str:
        # status.action_id is "<exercise>-A<seq>": the journal entry that recorded the action.
        seq = action_id.rpartition("-A")[2]
        if st.finished or not seq.isdigit():
            return ""
        return f'<a href="{PREFIX}/{quote(st.name)}/journal#e-{seq}">entry {seq}</a>'

    rows = (
        "".join(
            f"<tr><td>{e(a['id'])}</td><td>{e(a['runbook'])}</td><td>{e(a['description'])}</td>"
            f"<td>{e(a['owner'])}</td><td>{e(a['due'])}</td><td>{correct(str(a['id']))}</td></tr>"
            for a in st.open_actions
        )
        or '<tr><td colspan="6">None</td></tr>'
    )
    return (
        '<table id="open-actions"><thead><tr><th scope="col">Id</th><th scope="col">System</th>'
        '<th scope="col">Action</th><th scope="col">Owner</th><th scope="col">Due</th>'
        f'<th scope="col">Correct</th></tr></thead><tbody>{rows}</tbody></table>'
    )


def _back(name: str, at: str | None) -> str:
    q = f"?{urlencode({'at': at})}" if at else ""
    return f'<p><a href="{PREFIX}/{quote(name)}{q}">Back to the board</a></p>'


class _OneFile:
    """The form's file as :meth:`Recorder.add_artefact` reads it. The board attaches one file per
    form, as its last part: where the file ends, the form must end too -- the closing boundary,
    then only the epilogue, read to the end of the body (whose Content-Length the board capped) --
    or the upload is refused (MultipartError) before its entry is written."""

    def __init__(self, parts: MultipartReader) -> None:
        self._parts = parts

    def read(self, n: int, /) -> bytes:
        chunk = self._parts.read(n)
        if not chunk and (after := self._parts.next_part()) is not None:
            what = "a second file" if after.filename is not None else f"field {after.name!r}"
            raise MultipartError(
                f"the form goes on after its file with {what}: the board attaches one file per form, as its last part"
            )
        return chunk


def _read_all(stream: Any, length: int) -> bytes:
    out = bytearray()
    while len(out) < length and (chunk := stream.read(length - len(out))):
        out += chunk
    return bytes(out)
