"""Evidence packs over the bus: ``upm.qry.<tenant>.evidence.<principal>`` (the projector answers).

    request  {"change_id": ID}            tenant ``_any`` looks the change up
    reply    the pack's bytes in one or more messages, each with ``Upm-Chunk: <i>/<n>`` (a pack
             larger than the server's max_payload comes in pieces, in order); the first also
             carries ``Upm-Permalink`` and ``Upm-Object``
          or one JSON message without ``Upm-Chunk``:
             {"ok": false, "error": {"field", "rule", "message"}} — rule ``visibility`` (no such
             change that the caller may see: a hidden change is answered exactly like a missing
             one), ``rbac`` (may see it, may not download its evidence), ``no-pack``, ``uuid`` /
             ``schema`` / ``json`` (a malformed request) or ``unavailable``

Who may download (:func:`projections.visibility.authorize_evidence`): whoever can see the change
and is an auditor, operator or admin of its tenant, or its initiator. The caller needs no
JetStream rights: `upm evidence ID` works for a requester fetching their own change's pack.
"""

from __future__ import annotations

from typing import NoReturn

import anyio
import msgspec
import nats.errors
from nats.aio.client import Client as NATS

from events.commands import error_reply
from events.errors import InvalidEvent, StoreError
from events.store import EventStore
from events.subjects import ANY_TENANT, parse_caller_subject, query_subject
from projections.client import pack_of
from projections.errors import AccessDenied, EvidenceNotFound, ProjectionUnavailable, QueryRejected
from projections.visibility import authorize_evidence
from services.gateway.queries import check_target, decode_query
from services.security.access import Access

VERB = "evidence"
HDR_CHUNK = "Upm-Chunk"
HDR_PERMALINK = "Upm-Permalink"
HDR_OBJECT = "Upm-Object"
HEADROOM = 4096  # bytes of max_payload left for headers
Message = tuple[bytes, dict[str, str]]


class EvidenceRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    change_id: str


class Pack(msgspec.Struct, frozen=True, kw_only=True):
    """A downloaded pack (not yet verified) and where it resolves."""

    data: bytes
    permalink: str
    object_name: str


_request = msgspec.json.Decoder(EvidenceRequest)


def chunks(pack: bytes, size: int, permalink: str, object_name: str) -> list[Message]:
    """The reply messages carrying ``pack`` in pieces of at most ``size`` bytes."""
    pieces = [pack[i:i + size] for i in range(0, len(pack), size)] or [b""]
    out = [(piece, {HDR_CHUNK: f"{i}/{len(pieces)}"}) for i, piece in enumerate(pieces, 1)]
    out[0][1].update({HDR_PERMALINK: permalink, HDR_OBJECT: object_name})
    return out


async def answer(store: EventStore, access: Access, subject: str, data: bytes, *, max_payload: int) -> list[Message]:
    """The reply messages to one evidence query (see the module docstring)."""
    tenant, _, principal = parse_caller_subject(subject)
    try:
        request = decode_query(_request, "evidence", data)
        check_target(tenant, request.change_id)
        log = await store.read("*" if tenant == ANY_TENANT else tenant, request.change_id)
        authorize_evidence(access, principal, tenant, request.change_id, [s.event for s in log.events])
        published, pack = await pack_of(store, log)
    except InvalidEvent as err:
        return [(error_reply(err), {})]
    except AccessDenied as err:
        return [(error_reply(InvalidEvent(str(err), field="caller", rule=err.rule)), {})]
    except EvidenceNotFound as err:
        return [(error_reply(InvalidEvent(str(err), field="change_id", rule="no-pack")), {})]
    except (StoreError, nats.errors.Error, TimeoutError) as err:
        return [(error_reply(InvalidEvent(f"the log or the evidence store could not be read: {err}; retry",
                                          field="store", rule="unavailable")), {})]
    return chunks(pack, max(1, max_payload - HEADROOM), published.permalink, published.object_name)


def _raise(data: bytes) -> NoReturn:
    error = msgspec.json.decode(data).get("error", {})
    message, rule = str(error.get("message", "refused")), str(error.get("rule", ""))
    if rule in ("visibility", "rbac"):
        raise AccessDenied(message, rule=rule)
    if rule == "no-pack":
        raise EvidenceNotFound(message)
    if rule == "unavailable":
        raise ProjectionUnavailable(message)
    raise QueryRejected(message, rule=rule)


async def fetch(nc: NATS, change_id: str, *, principal: str, tenant: str = ANY_TENANT, within: float = 30.0) -> Pack:
    """Download a change's latest pack as ``principal`` (typed errors for a refusal or no answer)."""
    subject = query_subject(tenant, VERB, principal)
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    parts: list[bytes] = []
    first: dict[str, str] = {}
    try:
        await nc.publish(subject, msgspec.json.encode(EvidenceRequest(change_id=change_id)), reply=inbox)
        with anyio.fail_after(within):
            while True:
                msg = await sub.next_msg(timeout=within)
                headers = msg.headers or {}
                if headers.get("Status") == "503":
                    raise ProjectionUnavailable(f"no projector answers evidence queries on {subject}; start UPM "
                                                "with `upm up`")
                if HDR_CHUNK not in headers:
                    _raise(msg.data)
                first = first or headers
                parts.append(msg.data)
                index, total = (int(n) for n in headers[HDR_CHUNK].split("/"))
                if index == total:
                    break
    except (TimeoutError, nats.errors.TimeoutError) as exc:
        raise ProjectionUnavailable(
            f"no complete answer on {subject} within {within:g}s; retry (with an access file, the server drops "
            f"what {principal} may not publish: check --as)"
        ) from exc
    finally:
        await sub.unsubscribe()
    return Pack(data=b"".join(parts), permalink=first[HDR_PERMALINK], object_name=first[HDR_OBJECT])
