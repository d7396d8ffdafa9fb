"""The web console's HTTP shell: a Starlette app, served by uvicorn (`upm serve`, `upm up --console`).

:func:`create_app` builds it from a NATS connection (as ``upm-serve``), the access rules and the
tokens. Pages are server-rendered Jinja2 templates (``templates/``) with their assets in
``static/`` (package data: nothing is loaded from elsewhere, it works offline); the only script
follows the change list's server-sent events. Every path that answered JSON before still does,
content-negotiated: a request whose ``Accept`` names ``text/html`` gets the page, any other the
JSON. Who is asking is :meth:`Console.who` (a session, a bearer token, or an open console);
every read and command goes over the bus as that person (:mod:`projections.console.data`).
"""

from __future__ import annotations

import getpass
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from projections.console import auth
from projections.console.data import Reader
from projections.errors import AccessDenied, EvidenceNotFound, ProjectionError
from projections.serve import Grant, grant_for
from services.common.errors import NotRunning
from services.security.access import Access

HERE = Path(__file__).parent
CLIENT_CN = "upm.client_cn"  # set by the server for a connection with a verified client certificate
DENIED = {"no-token": 401, "token": 403, "rbac": 403, "visibility": 404}
Handler = Callable[["Console", Request], Awaitable[Response]]


class SignInNeeded(Exception):
    """No session, no token, and the console is not open."""


LIVE_POLL_S = 0.25  # how often a live list checks its first page (a new change shows within ~2 s under load)


@dataclass(frozen=True)
class Who:
    grant: Grant
    session: auth.Session | None
    new: bool = False  # a session started by this request (its cookie must be set)


@dataclass
class Console:
    """Everything the handlers share."""

    reader: Reader
    rules: Access
    tokens: dict[str, Grant]
    default_name: str
    poll_s: float = LIVE_POLL_S
    sessions: auth.Sessions = field(default_factory=auth.Sessions)
    templates: Jinja2Templates = field(default_factory=lambda: Jinja2Templates(directory=str(HERE / "templates")))

    @property
    def open_console(self) -> bool:
        """Open mode without a tokens file: no sign-in (loopback only, see `upm serve`)."""
        return not self.rules.enforced and not self.tokens

    @property
    def mode(self) -> str:
        if self.rules.enforced:
            return "secure"
        return "open" if self.open_console else "open-tokens"

    def who(self, request: Request) -> Who:
        header = request.headers.get("authorization")
        if header:
            return Who(grant_for(header, self.tokens), None)
        session = self.sessions.get(request.cookies.get(auth.COOKIE))
        certified = auth.certified(self.rules, request.scope.get(CLIENT_CN))
        if certified is not None and (session is None or session.grant != certified):
            return Who(certified, self.sessions.start(certified), new=True)  # the certificate decides
        if session is not None:
            return Who(session.grant, session)
        if self.open_console:
            return Who(Grant(self.default_name), self.sessions.start(Grant(self.default_name)), new=True)
        raise SignInNeeded

    def page(self, request: Request, who: Who, template: str, status: int = 200, **values: Any) -> Response:
        flash = list(who.session.flash) if who.session else []
        if who.session:
            who.session.flash.clear()
        response = self.templates.TemplateResponse(request, template, {
            "who": who.grant.principal if who.grant.tenant is None else f"tenant {who.grant.tenant}",
            "csrf": who.session.csrf if who.session else "", "mode": self.mode, "flash": flash,
            "path": request.url.path, **values,
        }, status_code=status)
        return self.remember(response, who)

    def remember(self, response: Response, who: Who) -> Response:
        if who.new and who.session is not None:
            set_cookie(response, who.session.id)
        return response


def set_cookie(response: Response, session_id: str) -> None:
    response.set_cookie(auth.COOKIE, session_id, httponly=True, samesite="strict", path="/", max_age=auth.IDLE_S)


def wants_html(request: Request) -> bool:
    """Content negotiation: the page for a browser (``Accept`` names ``text/html``), JSON otherwise."""
    return "text/html" in request.headers.get("accept", "")


_json = msgspec.json.Encoder(order="deterministic")


def json_response(value: object, status: int = 200) -> Response:
    return Response(_json.encode(value) + b"\n", status_code=status, media_type="application/json",
                    headers={"Cache-Control": "no-store"})


def error(console: Console, request: Request, status: int, message: str) -> Response:
    if not wants_html(request):
        return json_response({"error": message}, status)
    try:
        who = console.who(request)
    except (SignInNeeded, AccessDenied):
        who = Who(Grant("nobody"), None)
    return console.page(request, who, "error.html", status=status, status_code=status, message=message)


def endpoint(console: Console, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A route's endpoint: the handler, with UPM's errors as pages (or JSON) with their status."""

    async def run(request: Request) -> Response:
        try:
            return await handler(console, request)
        except SignInNeeded:
            if wants_html(request):
                return RedirectResponse(f"/signin?next={request.url.path}", status_code=303)
            return json_response({"error": "sign in: send `Authorization: Bearer <token>` (`upm serve token add "
                                           "NAME` makes one)"}, 401)
        except AccessDenied as err:
            return error(console, request, DENIED.get(err.rule, 403), str(err))
        except EvidenceNotFound as err:
            return error(console, request, 404, str(err))
        except ValueError as err:
            return error(console, request, 400, f"bad query: {err}")
        except (ProjectionError, NotRunning) as err:
            return error(console, request, 503, str(err))

    return run


def create_app(nc: NATS, rules: Access, tokens: dict[str, Grant], *, trusted: dict[str, str] | None = None,
               default_name: str | None = None, poll_s: float = LIVE_POLL_S) -> Starlette:
    """The console for ``rules`` (open or secure) and ``tokens`` (see :mod:`projections.serve`)."""
    from projections.console.routes import approvals, changes, reports, session

    console = Console(reader=Reader(nc, rules, trusted or {}), rules=rules, tokens=dict(tokens),
                      default_name=default_name or getpass.getuser(), poll_s=poll_s)
    table: list[tuple[str, Handler, list[str]]] = [
        *session.ROUTES, *changes.ROUTES, *approvals.ROUTES, *reports.ROUTES,
    ]
    routes: list[Route | Mount] = [Route(path, endpoint(console, handler), methods=methods)
                                   for path, handler, methods in table]
    routes.append(Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"))

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        text = {404: "no such page: see /changes, /approvals, /kpi, /drift", 405: "method not allowed"}
        return error(console, request, status, text.get(status, "refused"))

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    app.state.console = console
    return app
