"""The ``/exercise/`` board: every exercise, and one page per exercise with a lane per system in
dependency order (the DR report's SVG Gantt: measured steps and the projection against hours since
T0 and the objective), ready and late steps, warnings and open actions. Plain HTML: it refreshes
itself every 30 s and needs no JavaScript.

Recording from the page: small POST forms, each with a CSRF token bound to the user and the
exercise. Only users authenticated by the web config's ``basic_auth_users`` may write; the user
name is the actor and the default operator. Without users the page is read-only and says how to
enable recording. ``?at=TIME`` shows the exercise as at that time and records at that time
(back-filling a log kept on paper).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from agent import escape
from agent.evidence.verifier import fmt_hours
from agent.exercises.journal import NAME_RE, ExerciseInputError, iso
from agent.exercises.record import Recorder
from agent.exercises.status import SYSTEM_LABELS, ExerciseStatus, SystemProgress
from agent.plugin import HttpRequest, HttpResponse, Route
from agent.reports.svg import GanttBar, GanttRow, gantt

PREFIX = "/exercise"
REFRESH_SECONDS = 30
MAX_FORM_BYTES = 16 * 1024
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
    "<code>continuity-agent exercise step|restored|validate|sign-off</code>."
)

e = escape.html  # operator notes and device strings: inert in the page


def _h(seconds: float | None) -> str:
    return fmt_hours(seconds) if seconds is not None else "-"


class Board:
    def __init__(self, agent: Any, snapshots: Any) -> None:
        self.agent = agent
        self.snapshots = snapshots  # agent.exercises.service.ExerciseBoard
        self.secret = secrets.token_bytes(32)

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
        return hmac.new(self.secret, f"{user}\n{exercise}".encode(), hashlib.sha256).hexdigest()

    # -- routes ------------------------------------------------------------------------------------
    def get(self, req: HttpRequest) -> HttpResponse:
        if req.path == PREFIX:
            return HttpResponse(301, b"", headers={"Location": PREFIX + "/"})
        if not req.path.startswith(PREFIX + "/"):
            return HttpResponse(404, b"not found\n")
        name = req.path[len(PREFIX) + 1 :]
        rb, ev = self.snapshots.dirs()
        if rb is None or ev is None:
            return self._page(
                404,
                "DR exercises",
                "<p>No runbooks or evidence directory is configured (<code>exercises:</code>, "
                "<code>reports:</code> or an <code>evidence</code> target).</p>",
            )
        if name == "":
            return self._listing()
        if not NAME_RE.fullmatch(name) or ".." in name:
            return HttpResponse(404, b"not found\n")
        at = None
        if "at" in req.query and req.query["at"].strip():
            try:
                at = _parse_at(req.query["at"])
            except ValueError as err:
                return self._page(400, "Bad time", f"<p>{e(str(err))}</p>")
        try:
            st = self.snapshots.compute(name, at)
        except ExerciseInputError as err:
            return self._page(404, f"Exercise {name}", f"<p>{e(str(err))}</p>")
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
        if len(req.body) > MAX_FORM_BYTES:
            return HttpResponse(413, b"form too large\n")
        try:
            form = {k: v[0] for k, v in parse_qs(req.body.decode("utf-8"), max_num_fields=32).items()}
        except (UnicodeDecodeError, ValueError):
            return HttpResponse(400, b"bad form\n")
        token = form.get("csrf", "")
        if not token or not hmac.compare_digest(token, self.csrf(user, name)):
            return HttpResponse(403, b"missing or wrong CSRF token: reload the page and try again\n")
        rb, ev = self.snapshots.dirs()
        if rb is None or ev is None:
            return HttpResponse(404, b"not configured\n")
        try:
            at = _parse_at(form["at"]) if form.get("at", "").strip() else None
            rec = Recorder(rb, ev, name, user)
            self._record(rec, form, at)
        except ValueError as err:
            return self._page(400, "Not recorded", f"<p>{e(str(err))}</p>{_back(name, form.get('at'))}")
        except ExerciseInputError as err:
            return self._page(400, "Not recorded", f"<p>{e(str(err))}</p>{_back(name, form.get('at'))}")
        self.snapshots.refresh(only=name)
        loc = f"{PREFIX}/{quote(name)}" + (f"?{urlencode({'at': form['at']})}" if form.get("at") else "")
        return HttpResponse(303, b"", headers={"Location": loc})

    @staticmethod
    def _record(rec: Recorder, f: dict[str, str], at: datetime | None) -> None:
        kind = f.get("kind", "")
        rid = f.get("runbook", "")
        if kind == "step":
            rec.step(rid, f.get("step", ""), f.get("state", ""), at=at, operator=f.get("operator") or None)
        elif kind == "restored":
            rec.restored(rid, at)
        elif kind == "validate":
            rec.validate(rid, f.get("validation", ""), f.get("result", ""), f.get("by", ""), at)
        elif kind == "sign_off":
            rec.sign_off(rid, f.get("by", ""), f.get("role", ""), at)
        elif kind == "participant":
            rec.participant(f.get("name", ""), f.get("role", ""))
        else:
            raise ExerciseInputError(f"unknown kind of entry {kind!r}")

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
input{{font:inherit;width:9rem}}.over{{color:#a11d12;font-weight:bold}}.ok{{color:#1e6b32;font-weight:bold}}
.note{{background:#fbe7b8;padding:.5rem;border:1px solid #7a5300}}</style></head><body>
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

    def _board(self, st: ExerciseStatus, user: str | None, at: datetime | None) -> HttpResponse:
        name = st.name
        can_write = user is not None and not st.finished
        token = self.csrf(user, name) if user is not None else ""
        at_value = iso(at) if at is not None else ""

        def form(fields: dict[str, str], label: str, fid: str, inputs: str = "", buttons: str = "") -> str:
            hidden = "".join(
                f'<input type="hidden" name="{e(k)}" value="{e(v)}">'
                for k, v in {**fields, "csrf": token, "at": at_value}.items()
            )
            submit = buttons or f'<button type="submit">{e(label)}</button>'
            return f'<form method="post" action="{PREFIX}/{quote(name)}" id="{e(fid)}">{hidden}{inputs}{submit}</form>'

        verdict = '<span class="ok">on track</span>' if st.on_track else '<span class="over">over the objective</span>'
        parts = [
            f"<h1>DR exercise {e(name)}</h1>"
            f'<p><a href="{PREFIX}/">All exercises</a> · <a href="/">Agent status</a></p>',
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
            parts.append(self._lane(sp, form if can_write else None))
        actions = (
            "".join(
                f"<tr><td>{e(a['id'])}</td><td>{e(a['runbook'])}</td><td>{e(a['description'])}</td>"
                f"<td>{e(a['owner'])}</td><td>{e(a['due'])}</td></tr>"
                for a in st.open_actions
            )
            or '<tr><td colspan="5">None</td></tr>'
        )
        parts.append(
            '<h2>Open actions</h2><table><thead><tr><th scope="col">Id</th><th scope="col">System</th>'
            '<th scope="col">Action</th><th scope="col">Owner</th><th scope="col">Due</th></tr></thead>'
            f"<tbody>{actions}</tbody></table>"
        )
        people = ", ".join(f"{e(n)} ({e(r)})" for n, r in st.participants) or "none recorded"
        parts.append(f"<h2>Participants</h2><p>{people}</p>")
        if can_write:
            parts.append(
                form(
                    {"kind": "participant"},
                    "Add participant",
                    "f-participant",
                    '<label>Name <input name="name" id="f-participant-name" required></label> '
                    '<label>Role <input name="role" id="f-participant-role" required></label> ',
                )
            )
            parts.append(f"<p>Recording as <strong>{e(user or '')}</strong>.</p>")
        return self._page(200, f"DR exercise {name}", "\n".join(parts), refresh=True)

    @staticmethod
    def _gantt(st: ExerciseStatus) -> str:
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
    def _lane(sp: SystemProgress, form: Any) -> str:
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
                        f'<label>Operator <input name="operator" id="{e(fid)}-operator" placeholder="you"></label> ',
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
                    f'{e(vid)}: <label>By <input name="by" id="{e(fid)}-by" required></label> ',
                    f'<button type="submit" name="result" value="pass" id="{e(fid)}-pass">pass</button>'
                    f'<button type="submit" name="result" value="fail" id="{e(fid)}-fail">fail</button>',
                )
            if sp.signed_off_by is None:
                extra += form(
                    {"kind": "sign_off", "runbook": sp.runbook},
                    "sign off",
                    f"f-{sp.runbook}-sign-off",
                    f'<label>By <input name="by" id="f-{e(sp.runbook)}-sign-off-by" required></label> '
                    f'<label>Role <input name="role" id="f-{e(sp.runbook)}-sign-off-role" required></label> ',
                )
        vals = ", ".join(f"{e(k)}: {e(v)}" for k, v in sp.validations.items()) or "none yet"
        signed = e(sp.signed_off_by) if sp.signed_off_by else "not yet"
        return (
            f'<h2 id="sys-{e(sp.runbook)}">{e(sp.runbook)} — {e(sp.name)}: {e(SYSTEM_LABELS[sp.state])}</h2>'
            f"<p>Restored {_h(sp.restored_offset)} after T0 (projected {_h(sp.projected_restore_offset)}; "
            f"RTO {_h(sp.rto_seconds)}). Validations: {vals}. Signed off: {signed}.</p>"
            '<table><thead><tr><th scope="col">Step</th><th scope="col">Title</th><th scope="col">State</th>'
            '<th scope="col">Expected</th><th scope="col">Operator</th><th scope="col">Record</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>{extra}"
        )


def _parse_at(text: str) -> datetime:
    t = datetime.fromisoformat(text.strip())
    if t.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return t.astimezone(UTC)


def _back(name: str, at: str | None) -> str:
    q = f"?{urlencode({'at': at})}" if at else ""
    return f'<p><a href="{PREFIX}/{quote(name)}{q}">Back to the board</a></p>'


def routes(agent: Any, snapshots: Any) -> list[Route]:
    board = Board(agent, snapshots)
    return [Route("GET", PREFIX, board.get), Route("POST", PREFIX, board.post)]
