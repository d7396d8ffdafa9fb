"""The approvals queue: what waits for the signed-in person."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from events.codec import to_builtins
from projections.console.app import Console, json_response, wants_html


async def queue(console: Console, request: Request) -> Response:
    who = console.who(request)
    rows = await console.reader.awaiting(who.grant)
    if not wants_html(request):
        return console.remember(json_response(to_builtins(rows)), who)
    return console.page(request, who, "approvals.html", rows=rows)


ROUTES = [("/approvals", queue, ["GET"])]
