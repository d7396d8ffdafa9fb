"""`upm serve`: a read-only HTTP endpoint for permalinks, each token reading as one identity.

    GET /changes/{id}                 the change's row and its events           (application/json)
    GET /changes/{id}/evidence        its latest evidence pack                   (application/x-tar)
    GET /kpi[?since=&until=&tenant=]  the KPI table with the spec's bands        (application/json)
    GET /score[?tenant=]              the comparison-template row and its reasons (application/json)

Every request carries ``Authorization: Bearer <token>``. The tokens file is one JSON object:

* with an access file (``UPM_ACCESS``), token → **identity** (a person named in the access file).
  Every request is asked over the bus *as that identity* (``upm.sql.<tenant>.<identity>``,
  ``upm.qry.<tenant>.evidence.<identity>``), so the projector applies that person's roles and
  visibility, exactly as for `upm sql` and `upm evidence`. ``?tenant=T`` picks the tenant of
  ``/kpi`` and ``/score`` (needed when the identity reads several); a change is looked up in the
  identity's own tenants, then in the org's other tenants (``org`` changes).
* in open mode (no access file), token → **tenant** (``_all`` for every tenant): nothing is
  enforced on the bus there, so the token's tenant is the only scope; it stays the per-tenant
  token it always was.

This process connects as ``upm-serve``, which the server lets publish those subjects for any
identity; the token is the authentication. A change the identity may not see answers 404 like a
missing one; 401 without a token, 403 for an unknown token or a role that does not allow the
read, 405 for anything but GET.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import msgspec
from anyio.abc import SocketStream
from nats.aio.client import Client as NATS

from events.subjects import ANY_TENANT, CHANGE_ID_RE, is_principal, is_tenant
from projections import evidence_query, kpi, reports
from projections.db import ALL_TENANTS
from projections.errors import AccessDenied, EvidenceNotFound, ProjectionError
from services.common.configfile import read_mapping
from services.common.errors import ConfigError
from services.security.access import Access, service_identity

SERVICE = "serve"  # connects as upm-serve
MAX_REQUEST = 16 * 1024
_json = msgspec.json.Encoder(order="deterministic")
_STATUS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 503: "Service Unavailable"}
_DENIED = {"no-token": 401, "token": 403, "rbac": 403, "visibility": 404}


@dataclass(frozen=True)
class Grant:
    """What a token reads as: ``principal``, and in open mode the one ``tenant`` it is scoped to."""

    principal: str
    tenant: str | None = None


def parse_tokens(doc: object, source: str, rules: Access) -> dict[str, Grant]:
    """token → :class:`Grant` (see the module docstring); :class:`AccessDenied` says what is malformed."""
    want = ("an identity named in the access file" if rules.enforced
            else "a tenant name (or _all); with an access file (UPM_ACCESS) it would be an identity")
    if not isinstance(doc, dict) or not doc:
        raise AccessDenied(f"{source} must be a non-empty JSON object mapping each token to {want}", rule="token")
    people = set(rules.principals())
    grants: dict[str, Grant] = {}
    for n, (token, value) in enumerate(doc.items(), 1):
        where = f"{source}: entry {n} (token not shown)"
        if not isinstance(token, str) or len(token) < 16:
            raise AccessDenied(f"{where}: a token must be a string of at least 16 characters", rule="token")
        if rules.enforced and not (isinstance(value, str) and is_principal(value) and value in people):
            raise AccessDenied(f"{where}: {value!r} is not {want} ({rules.source})", rule="token")
        if not rules.enforced and not (isinstance(value, str) and (is_tenant(value) or value == ALL_TENANTS)):
            raise AccessDenied(f"{where}: {value!r} is not {want}", rule="token")
        assert isinstance(value, str)
        grants[token] = Grant(value) if rules.enforced else Grant(service_identity(SERVICE), value)
    return grants


def load_tokens(path: Path, rules: Access) -> dict[str, Grant]:
    """The tokens file at ``path`` (JSON; mode 0600 advised)."""
    try:
        doc = read_mapping(path, what="the tokens file", error=ConfigError)
    except ConfigError as exc:
        raise AccessDenied(f"{exc}; write a JSON object token → {'identity' if rules.enforced else 'tenant'}",
                           rule="token") from exc
    return parse_tokens(doc, str(path), rules)


def grant_for(header: str | None, tokens: Mapping[str, Grant]) -> Grant:
    """The grant of a bearer token; :class:`AccessDenied` if there is none or it is unknown."""
    if not header or not header.startswith("Bearer "):
        raise AccessDenied("send `Authorization: Bearer <token>` (a token from the tokens file of `upm serve`)",
                           rule="no-token")
    given = header.removeprefix("Bearer ").strip().encode()
    found = [grant for token, grant in tokens.items() if hmac.compare_digest(token.encode(), given)]
    if not found:
        raise AccessDenied("unknown token: ask the operator of `upm serve` for yours", rule="token")
    return found[0]


def pinned(grant: Grant, asked: str | None) -> str | None:
    """The tenant a request is pinned to: the token's (open mode), else ``?tenant=``, else none."""
    if asked is not None and not (is_tenant(asked) or asked == ALL_TENANTS):
        raise ValueError(f"tenant {asked!r} is not a tenant name (a-z, 0-9, '-'; or {ALL_TENANTS})")
    if grant.tenant is not None and asked not in (None, grant.tenant):
        raise AccessDenied(f"this token reads tenant {grant.tenant} only, not {asked}")
    return grant.tenant or asked


def tenants_to_try(grant: Grant, asked: str | None, rules: Access) -> list[str]:
    """Where to look for a change: the pinned tenant, else the identity's own tenants, then the org's others."""
    tenant = pinned(grant, asked)
    if tenant is not None:
        return [tenant]
    own = list(rules.tenants_of(grant.principal))
    return own + [t for t in sorted(rules.members) if t not in own]


def one_tenant(grant: Grant, asked: str | None, rules: Access) -> str:
    """The single tenant a report (``/kpi``, ``/score``) is about."""
    tenant = pinned(grant, asked)
    if tenant is not None:
        return tenant
    own = rules.tenants_of(grant.principal)
    if len(own) != 1:
        raise ValueError(f"add ?tenant=T: {grant.principal} reads {len(own)} tenants ({', '.join(own) or 'none'})")
    return own[0]


class Response(msgspec.Struct, frozen=True):
    status: int
    body: bytes
    content_type: str = "application/json"

    def encode(self) -> bytes:
        head = (f"HTTP/1.1 {self.status} {_STATUS[self.status]}\r\nContent-Type: {self.content_type}\r\n"
                f"Content-Length: {len(self.body)}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n")
        return head.encode() + self.body


def _error(status: int, message: str) -> Response:
    return Response(status, _json.encode({"error": message}) + b"\n")


def _ok(value: object) -> Response:
    return Response(200, _json.encode(value) + b"\n")


def _period(args: Mapping[str, list[str]]) -> kpi.Range:
    since, until = args.get("since", [None])[0], args.get("until", [None])[0]
    return kpi.Range(since=datetime.fromisoformat(since) if since else None,
                     until=datetime.fromisoformat(until) if until else None)


class Server:
    """Answers the endpoints above for the holders of ``tokens``, under the rules of ``rules``."""

    def __init__(self, nc: NATS, tokens: Mapping[str, Grant], rules: Access) -> None:
        self.nc = nc
        self.tokens = dict(tokens)
        self.rules = rules

    async def respond(self, method: str, target: str, headers: Mapping[str, str]) -> Response:
        if method != "GET":
            return _error(405, "read-only: only GET is served")
        url = urlsplit(target)
        args = parse_qs(url.query)
        asked = args.get("tenant", [None])[0]
        try:
            grant = grant_for(headers.get("authorization"), self.tokens)
            if url.path in ("/kpi", "/score"):
                ask = self._ask(grant, one_tenant(grant, asked, self.rules))
                if url.path == "/kpi":
                    return _ok(kpi.rows(await reports.kpis(ask, _period(args))))
                return _ok(await reports.scored(ask, _period(args)))
            found = re.fullmatch(r"/changes/([^/]+)(/evidence)?", url.path)
            if found is None or not CHANGE_ID_RE.match(found.group(1)):
                return _error(404, "no such resource: use /changes/{id}, /changes/{id}/evidence, /kpi or /score")
            change_id = found.group(1)
            if found.group(2):
                return Response(200, await self._pack(grant, change_id, asked), "application/x-tar")
            return _ok(await self._change(grant, change_id, asked))
        except AccessDenied as err:
            return _error(_DENIED.get(err.rule, 403), str(err))
        except EvidenceNotFound as err:
            return _error(404, str(err))
        except ValueError as err:
            return _error(400, f"bad query: {err}")
        except ProjectionError as err:
            return _error(503, str(err))

    def _ask(self, grant: Grant, tenant: str) -> reports.Ask:
        return reports.bus(self.nc, tenant, principal=grant.principal)

    async def _pack(self, grant: Grant, change_id: str, asked: str | None) -> bytes:
        tenant = pinned(grant, asked)
        pack = await evidence_query.fetch(self.nc, change_id, principal=grant.principal,
                                          tenant=ANY_TENANT if tenant in (None, ALL_TENANTS) else tenant)
        return pack.data

    async def _change(self, grant: Grant, change_id: str, asked: str | None) -> dict[str, Any]:
        for tenant in tenants_to_try(grant, asked, self.rules):
            try:
                view = await reports.change(self._ask(grant, tenant), change_id)
            except AccessDenied:
                continue  # may not read that tenant at all: look in the next
            if view is not None:
                return view
        raise AccessDenied(f"no change {change_id} that {grant.principal} may see", rule="visibility")

    async def handle(self, stream: SocketStream) -> None:
        async with stream:
            raw = b""
            with anyio.move_on_after(10):
                while b"\r\n\r\n" not in raw and len(raw) < MAX_REQUEST:
                    raw += await stream.receive()
            head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            parts = head[0].split(" ")
            if len(parts) != 3:
                await stream.send(_error(400, "malformed request line").encode())
                return
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
            response = await self.respond(parts[0], parts[1], headers)
            await stream.send(response.encode())

    async def serve(self, host: str = "127.0.0.1", port: int = 8080, *, ready: anyio.Event | None = None) -> None:
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        self.port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
        async with listener:
            if ready is not None:
                ready.set()
            await listener.serve(self._safe)

    async def _safe(self, stream: SocketStream) -> None:
        try:
            await self.handle(stream)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, UnicodeDecodeError):
            return
