"""Sign-in and sign-out."""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from projections.console import auth
from projections.console.app import Console, Who, set_cookie
from projections.errors import AccessDenied
from projections.serve import Grant


async def form(request: Request) -> dict[str, str]:
    """A urlencoded form body (bounded), first value per field."""
    body = await request.body()
    if len(body) > 64 * 1024:
        raise ValueError("the form is larger than 64 KiB")
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of this site only (never another host)."""
    return target if target and target.startswith("/") and not target.startswith("//") else "/changes"


async def signin_page(console: Console, request: Request) -> Response:
    return console.page(request, Who(Grant("nobody"), None), "signin.html", open_console=console.open_console,
                        next=safe_next(request.query_params.get("next")), message="")


async def signin(console: Console, request: Request) -> Response:
    fields = await form(request)
    target = safe_next(fields.get("next"))
    try:
        grant = auth.sign_in(console.tokens, token=fields.get("token", ""), name=fields.get("name", ""),
                             open_console=console.open_console)
    except AccessDenied as err:
        return console.page(request, Who(Grant("nobody"), None), "signin.html", status=403,
                            open_console=console.open_console, next=target, message=str(err))
    console.sessions.end(request.cookies.get(auth.COOKIE))
    session = console.sessions.start(grant)
    response = RedirectResponse(target, status_code=303)
    set_cookie(response, session.id)
    return response


async def signout(console: Console, request: Request) -> Response:
    fields = await form(request)
    session = console.sessions.get(request.cookies.get(auth.COOKIE))
    if not auth.csrf_ok(session, fields.get("csrf")):
        raise AccessDenied("refused: this form is not from your session (missing or wrong CSRF token)", rule="rbac")
    console.sessions.end(request.cookies.get(auth.COOKIE))
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(auth.COOKIE, path="/")
    return response


ROUTES = [("/signin", signin_page, ["GET"]), ("/signin", signin, ["POST"]), ("/signout", signout, ["POST"])]
