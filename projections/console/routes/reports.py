"""The KPI dashboard (ten charts against their bands, and the `upm score` row), the score and
drift views. ``/kpi`` and ``/score`` answer JSON as they always did unless a page is asked for."""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from events.codec import to_builtins
from projections import kpi, reports
from projections.console.app import Console, json_response, wants_html
from projections.db import ALL_TENANTS
from projections.serve import one_tenant, pinned


def period(request: Request) -> kpi.Range:
    since, until = request.query_params.get("since"), request.query_params.get("until")
    return kpi.Range(since=datetime.fromisoformat(since) if since else None,
                     until=datetime.fromisoformat(until) if until else None)


def _page_tenant(console: Console, request: Request, principal: str, tenant: str | None) -> tuple[str, list[str]]:
    """The tenant a dashboard shows, and the others the person may switch to."""
    choices = ([] if not console.rules.enforced
               else [ALL_TENANTS] * (principal in console.rules.admins) + list(console.rules.tenants_of(principal)))
    return tenant or (choices[0] if choices else ALL_TENANTS), choices


async def kpi_page(console: Console, request: Request) -> Response:
    who = console.who(request)
    asked = request.query_params.get("tenant")
    if not wants_html(request):
        ask = console.reader.ask(who.grant, one_tenant(who.grant, asked, console.rules))
        return json_response(kpi.rows(await reports.kpis(ask, period(request))))
    tenant, choices = _page_tenant(console, request, who.grant.principal, pinned(who.grant, asked))
    board = await console.reader.kpis(who.grant, tenant)
    return console.page(request, who, "kpi.html", charts=board.charts, score=board.score, at=board.at, tenant=tenant,
                        tenants=choices)


async def score_page(console: Console, request: Request) -> Response:
    who = console.who(request)
    asked = request.query_params.get("tenant")
    if wants_html(request):
        return RedirectResponse("/kpi" + (f"?tenant={asked}" if asked else "") + "#score", status_code=303)
    tenant, window = one_tenant(who.grant, asked, console.rules), period(request)
    if window == kpi.EVER:  # the whole log: the dashboard's score (kept, refreshed behind it; seconds at 10k changes)
        return json_response((await console.reader.kpis(who.grant, tenant)).score)
    return json_response(await reports.scored(console.reader.ask(who.grant, tenant), window))


async def drift_page(console: Console, request: Request) -> Response:
    who = console.who(request)
    rows = await console.reader.drift(who.grant)
    if not wants_html(request):
        return console.remember(json_response(to_builtins(rows)), who)
    counts = {s: sum(1 for r in rows if r.status == s) for s in ("ok", "drifted", "unknown")}
    return console.page(request, who, "drift.html", rows=rows, counts=counts)


ROUTES = [("/kpi", kpi_page, ["GET"]), ("/score", score_page, ["GET"]), ("/drift", drift_page, ["GET"])]
