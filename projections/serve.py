"""`upm serve`: a read-only HTTP endpoint for permalinks, scoped by a per-tenant token.

    GET /changes/{id}            the change's row and its events           (application/json)
    GET /changes/{id}/evidence   its latest evidence pack                   (application/x-tar)
    GET /kpi[?since=&until=]     the KPI table with the spec's bands        (application/json)
    GET /score                   the comparison-template row and its reasons (application/json)

Every request carries ``Authorization: Bearer <token>``; the tokens file maps each token to
one tenant (``_all`` for an operator). Data comes from the projector over the bus, scoped to
that tenant, so a token never reaches another tenant's rows; packs come from the object store
after the change is found in the token's tenant. Anything but GET is refused (405).
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import anyio
import msgspec
from anyio.abc import SocketStream
from nats.aio.client import Client as NATS

from events.store import EventStore
from events.subjects import CHANGE_ID_RE
from projections import client, kpi, reports
from projections.db import ALL_TENANTS
from projections.errors import AccessDenied, EvidenceNotFound, ProjectionError

MAX_REQUEST = 16 * 1024
_json = msgspec.json.Encoder(order="deterministic")
_STATUS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 503: "Service Unavailable"}


def load_tokens(path: Path) -> dict[str, str]:
    """token → tenant, from a JSON object file (mode 0600 advised)."""
    try:
        tokens = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AccessDenied(f"cannot read the tokens file {path}: {exc}; write a JSON object token → tenant") from exc
    if not isinstance(tokens, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tokens.items()):
        raise AccessDenied(f"{path} must be a JSON object mapping each token to a tenant name")
    return tokens


def tenant_for(header: str | None, tokens: Mapping[str, str]) -> str:
    """The tenant a bearer token is for; :class:`AccessDenied` if there is none or it is unknown."""
    if not header or not header.startswith("Bearer "):
        raise AccessDenied("send `Authorization: Bearer <token>` (a token from the tokens file of `upm serve`)")
    given = header.removeprefix("Bearer ").strip()
    for token, tenant in tokens.items():
        if hmac.compare_digest(token.encode(), given.encode()):
            return tenant
    raise AccessDenied("unknown token: ask the operator for your tenant's token")


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


def _period(query: str) -> kpi.Range:
    args = parse_qs(query)
    since, until = args.get("since", [None])[0], args.get("until", [None])[0]
    return kpi.Range(since=datetime.fromisoformat(since) if since else None,
                     until=datetime.fromisoformat(until) if until else None)


class Server:
    """Answers the endpoints above for the tenants in ``tokens``."""

    def __init__(self, nc: NATS, tokens: Mapping[str, str]) -> None:
        self.store = EventStore(nc)
        self.nc = nc
        self.tokens = dict(tokens)

    async def respond(self, method: str, target: str, headers: Mapping[str, str]) -> Response:
        if method != "GET":
            return _error(405, "read-only: only GET is served")
        try:
            tenant = tenant_for(headers.get("authorization"), self.tokens)
        except AccessDenied as err:
            return _error(401 if "send" in str(err) else 403, str(err))
        url = urlsplit(target)
        ask = reports.bus(self.nc, tenant)
        try:
            if url.path == "/kpi":
                return _ok(kpi.rows(await reports.kpis(ask, _period(url.query))))
            if url.path == "/score":
                return _ok(await reports.scored(ask, _period(url.query)))
            found = re.fullmatch(r"/changes/([^/]+)(/evidence)?", url.path)
            if found is None or not CHANGE_ID_RE.match(found.group(1)):
                return _error(404, "no such resource: use /changes/{id}, /changes/{id}/evidence, /kpi or /score")
            change_id = found.group(1)
            if found.group(2):
                scope = "*" if tenant == ALL_TENANTS else tenant
                _, pack = await client.latest_pack(self.store, change_id, scope)
                return Response(200, pack, "application/x-tar")
            view = await reports.change(ask, change_id)
            return _ok(view) if view is not None else _error(404, f"no change {change_id} for this tenant")
        except EvidenceNotFound as err:
            return _error(404, str(err))
        except ValueError as err:
            return _error(400, f"bad query: {err}")
        except ProjectionError as err:
            return _error(503, str(err))

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
