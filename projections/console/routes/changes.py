"""The change list (live over server-sent events), a change's page, its evidence, approve and deny."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlencode

import anyio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from events.codec import to_builtins
from projections import reports
from projections.console import auth, views
from projections.console.app import Console, json_response, wants_html
from projections.console.data import STATUSES, Filters
from projections.console.routes.session import form
from projections.errors import AccessDenied, EvidenceNotFound, ProjectionError
from projections.serve import tenants_to_try
from services.common.errors import CommandRejected, NotRunning

KEEPALIVE_S = 15.0
VERBS = ("approve", "deny")


async def index(console: Console, request: Request) -> Response:
    return RedirectResponse("/changes", status_code=303)


async def change_list(console: Console, request: Request) -> Response:
    who = console.who(request)
    filters = Filters.of(dict(request.query_params))
    page = await console.reader.changes(who.grant, filters)
    following = (f"/changes?{urlencode({**filters.query(), 'before': page.next_before})}"
                 if page.next_before else "")
    if not wants_html(request):
        response = json_response(to_builtins(page.rows))
        if following:
            response.headers["Link"] = f'<{following}>; rel="next"'
        return console.remember(response, who)
    return console.page(request, who, "changes.html", rows=page.rows, filters=filters, query=filters.query(),
                        statuses=sorted(STATUSES), next_page=following, live=not filters.before)


def _sse(event: str, html: str) -> str:
    return f"event: {event}\n" + "".join(f"data: {line}\n" for line in html.splitlines() or [""]) + "\n"


async def stream(console: Console, request: Request) -> Response:
    """The first page's rows again whenever a listed change moves (checked every ``poll_s``), as
    server-sent events; the page swaps them in without a reload (later pages are not live)."""
    who = console.who(request)
    filters = Filters.of(dict(request.query_params)).first_page()
    rows_template = console.templates.get_template("_rows.html")

    async def events() -> AsyncIterator[str]:
        last: list[object] | None = None
        quiet = 0.0
        while not await request.is_disconnected():
            try:
                mark = await console.reader.fingerprint(who.grant, filters)
                if mark != last:
                    page = await console.reader.changes(who.grant, filters)
                    last, quiet = mark, 0.0
                    yield _sse("changes", rows_template.render(rows=page.rows))
            except (ProjectionError, NotRunning) as err:
                yield _sse("problem", str(err))
            quiet += console.poll_s
            if quiet >= KEEPALIVE_S:
                quiet = 0.0
                yield ": keep-alive\n\n"
            await anyio.sleep(console.poll_s)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def change(console: Console, request: Request) -> Response:
    who = console.who(request)
    change_id = request.path_params["change_id"]
    asked = request.query_params.get("tenant")
    if not wants_html(request):  # the JSON permalink, as it always was: the change's row and its events
        for tenant in tenants_to_try(who.grant, asked, console.rules):
            try:
                found = await reports.change(console.reader.ask(who.grant, tenant), change_id)
            except AccessDenied:
                continue  # may not read that tenant at all: look in the next
            if found is not None:
                return json_response(found)
        raise AccessDenied(f"no change {change_id} that {who.grant.principal} may see", rule="visibility")
    events = await console.reader.events(who.grant, change_id, asked)
    view = views.change_view(events, who.grant.principal, console.rules)
    view.with_drift(await console.reader.resource_drift(who.grant, view.state.tenant, view.resources))
    if view.evidence is not None and view.can_evidence:
        try:
            view.pack = await console.reader.pack_report(who.grant, change_id, view.evidence.object_name, asked)
        except (AccessDenied, EvidenceNotFound, ProjectionError) as err:
            view.pack = {"ok": False, "message": str(err)}
    return console.page(request, who, "change.html", view=view, s=view.state, change_id=change_id)


async def evidence_pack(console: Console, request: Request) -> Response:
    who = console.who(request)
    change_id = request.path_params["change_id"]
    pack = await console.reader.pack(who.grant, change_id, request.query_params.get("tenant"))
    return Response(pack.data, media_type="application/x-tar", headers={
        "Content-Disposition": f'attachment; filename="{change_id}.evidence.tar"', "Cache-Control": "no-store",
        "Upm-Permalink": pack.permalink})


async def decide(console: Console, request: Request) -> Response:
    """Approve or deny from the page: the same request as `upm approve|deny`, as the signed-in person,
    only with the session's CSRF token; pre-flight's refusal is shown as it is."""
    verb = request.path_params["verb"]
    change_id = request.path_params["change_id"]
    if verb not in VERBS:
        raise AccessDenied(f"no such action {verb[:32]!r}: POST /changes/ID/approve or /changes/ID/deny",
                           rule="visibility")
    fields = await form(request)
    session = console.sessions.get(request.cookies.get(auth.COOKIE))
    if session is None or not auth.csrf_ok(session, fields.get("csrf")):
        raise AccessDenied("refused: this form is not from your session (missing or wrong CSRF token); reload the "
                           "page and try again", rule="rbac")
    events = await console.reader.events(session.grant, change_id)
    body = {"change_id": change_id, "reason": fields.get("reason", "")}
    if fields.get("plan_hash"):
        body["plan_hash"] = fields["plan_hash"]
    try:
        reply = await console.reader.command(session.grant, events[0].event.tenant, verb, body)
        session.flash.append(f"{verb} recorded for change {change_id}: {reply.get('state', '')}")
    except CommandRejected as err:
        session.flash.append(f"{verb} refused ({err.rule}): {err}")
    return RedirectResponse(f"/changes/{change_id}", status_code=303)


ROUTES = [
    ("/", index, ["GET"]),
    ("/changes", change_list, ["GET"]),
    ("/changes/stream", stream, ["GET"]),
    ("/changes/{change_id}", change, ["GET"]),
    ("/changes/{change_id}/evidence", evidence_pack, ["GET"]),
    ("/changes/{change_id}/{verb:str}", decide, ["POST"]),
]
