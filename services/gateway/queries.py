"""Reads for people: ``upm.qry.<tenant>.status|events.<principal>``, answered with only what the
caller may see (:meth:`services.security.access.Access.can_see`). The gateway serves them.

    status  {"change_id": ID}                     → {"ok": true, "status": {...}}
    events  {"change_id": ID | null, "after_seq": N, "wait_s": S, "max_events": M}
            → {"ok": true, "tenant": T, "events": [{"seq": N, "event": {...}}, ...], "last_seq": N}

``tenant`` may be ``_any`` when a change id is given (the change is looked up). ``events`` with a
change id returns that change's events after ``after_seq``; without one, the tenant's events after
stream sequence ``after_seq`` (events of changes the caller may not see are skipped, and
``last_seq`` still moves past them). With ``wait_s`` the answer waits up to that long for a first
new event (long poll), so ``upm watch`` needs no JetStream rights. A change the caller may not
see is answered exactly like a change that does not exist.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NamedTuple, TypeVar

import anyio
import msgspec
import nats.errors
from anyio.abc import TaskGroup
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from events import jsonbounds
from events.commands import error_reply
from events.errors import InvalidEvent, StoreError
from events.model import decode_event
from events.store import ChangeLog, EventStore, StoredEvent
from events.subjects import (
    ANY_TENANT,
    CHANGE_ID_RE,
    QUERY_ROOT,
    STREAM,
    change_filter,
    is_producer_tenant,
    parse_caller_subject,
    query_subject,
    tenant_filter,
)
from services.common.client import ChangeStatus, ask, raise_for_reply, request, status_of, until_final
from services.common.responder import reply_to
from services.security.access import Access, Forbidden, initiator_of, refusal

log = logging.getLogger("upm.queries")
QUEUE = "upm-queries"
VERBS = ("status", "events")
MAX_WAIT_S = 30.0
MAX_EVENTS = 5000
CONCURRENT = 256
ORIGINS_KEPT = 100_000
MAX_QUERY_BYTES = 4096
_SETTLE_S = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1)  # a woken reader retries while the store catches up


class StatusQuery(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    change_id: str


class EventsQuery(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``after_seq`` -1 means "from now" (the stream's last sequence)."""

    change_id: str | None = None
    after_seq: int = 0
    wait_s: float = 0.0
    max_events: int = 500


class Item(msgspec.Struct, frozen=True):
    seq: int
    event: msgspec.Raw


class Origin(NamedTuple):
    """Where a change lives and who may see it: its tenant, visibility and initiator."""

    tenant: str
    visibility: str
    initiator: str


class EventsReply(msgspec.Struct, frozen=True):
    tenant: str
    events: list[Item]
    last_seq: int
    ok: bool = True


Records = list[tuple[int, bytes]]
Q = TypeVar("Q", bound=msgspec.Struct)
_status_decoder = msgspec.json.Decoder(StatusQuery)
_events_decoder = msgspec.json.Decoder(EventsQuery)
_encoder = msgspec.json.Encoder()


def decode_query(decoder: msgspec.json.Decoder[Q], verb: str, data: bytes) -> Q:
    """The query in ``data``; :class:`InvalidEvent` naming what is wrong otherwise."""
    if len(data) > MAX_QUERY_BYTES:
        raise InvalidEvent(f"the {verb} query is {len(data)} bytes; the limit is {MAX_QUERY_BYTES}", field="body",
                           rule="size")
    jsonbounds.check(data, what=f"the {verb} query")
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise InvalidEvent(f"invalid {verb} query: {exc}", field="body", rule="schema") from exc
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"the query is not valid JSON: {exc}. Send one JSON object.", field="body",
                           rule="json") from exc


def check_target(tenant: str, change_id: str | None) -> None:
    """The tenant token and change id of a query are well formed."""
    if change_id is not None and not CHANGE_ID_RE.match(change_id):
        raise InvalidEvent(f"change_id {change_id!r} is not a change id (a UUID)", field="change_id", rule="uuid")
    if tenant == ANY_TENANT and change_id is None:
        raise InvalidEvent(f"name the tenant to follow all of its changes ({ANY_TENANT} needs a change id)",
                           field="tenant", rule="tenant-name")
    if tenant != ANY_TENANT and not is_producer_tenant(tenant):
        raise InvalidEvent(f"tenant {tenant!r} is not valid", field="tenant", rule="tenant-name")


class Queries:
    """Answers status and events queries (see the module docstring)."""

    def __init__(self, nc: NATS, access: Access) -> None:
        self.nc = nc
        self.store = EventStore(nc)
        self.access = access
        self.origins: OrderedDict[str, Origin] = OrderedDict()  # change id → Origin (they never change)

    async def run(self, *, ready: anyio.Event | None = None) -> None:
        subs = [await self.nc.subscribe(f"{QUERY_ROOT}.*.{verb}.*", queue=QUEUE) for verb in VERBS]
        if ready is not None:
            ready.set()
        slots = anyio.Semaphore(CONCURRENT)
        try:
            async with anyio.create_task_group() as tg:
                for sub in subs:
                    tg.start_soon(self._serve, sub, tg, slots)
        finally:
            with anyio.CancelScope(shield=True):
                for sub in subs:
                    await sub.unsubscribe()

    async def _serve(self, sub: Subscription, tg: TaskGroup, slots: anyio.Semaphore) -> None:
        async for msg in sub.messages:  # each answer in its own task: long polls must not queue the rest
            if self.access.caller(msg.subject, msg.reply) is None:
                continue
            await slots.acquire()
            tg.start_soon(self._respond, msg, slots)

    async def _respond(self, msg: Msg, slots: anyio.Semaphore) -> None:
        try:
            await reply_to(msg, lambda m: self.answer(m.subject, m.data), what="a query")
        finally:
            slots.release()

    async def answer(self, subject: str, data: bytes) -> bytes:
        """The reply to one query."""
        tenant, verb, principal = parse_caller_subject(subject)
        try:
            if verb == "status":
                query = decode_query(_status_decoder, verb, data)
                check_target(tenant, query.change_id)
                change = await self._visible_change(tenant, query.change_id, principal)
                return _encoder.encode({"ok": True, "status": status_of(change)})
            events = decode_query(_events_decoder, verb, data)
            check_target(tenant, events.change_id)
            return _encoder.encode(await self.events(tenant, principal, events))
        except InvalidEvent as err:
            return error_reply(err)
        except Forbidden as err:
            return refusal(err)
        except StoreError as err:
            log.error("%s query on %s failed: %s", verb, tenant, err)
            return error_reply(InvalidEvent(f"the log could not be read: {err}; retry", field="store",
                                            rule="unavailable"))

    async def _visible_change(self, tenant: str, change_id: str, principal: str) -> ChangeLog:
        change = await self.store.read("*" if tenant == ANY_TENANT else tenant, change_id)
        self._require_visible(self._remember(change) if change.events else None, tenant, change_id, principal)
        return change

    def _require_visible(self, origin: Origin | None, tenant: str, change_id: str, principal: str) -> Origin:
        if origin is None:
            raise Forbidden(f"no change {change_id} in tenant {tenant} that {principal} may see", rule="visibility")
        self.access.require_visible(principal, origin.tenant, change_id, origin.visibility, origin.initiator)
        return origin

    def _remember(self, change: ChangeLog) -> Origin:
        """Where a change lives and who may see it (fixed by its first events), for later polls."""
        origin = Origin(change.tenant, change.events[0].event.visibility,
                        initiator_of([s.event for s in change.events]))
        self.origins[change.change_id] = origin
        if len(self.origins) > ORIGINS_KEPT:
            self.origins.popitem(last=False)
        return origin

    async def _origin(self, tenant: str, change_id: str) -> Origin | None:
        """The change's origin (cached; one read the first time), ``None`` if ``tenant`` has no such change."""
        origin = self.origins.get(change_id)
        if origin is None:
            change = await self.store.read("*" if tenant == ANY_TENANT else tenant, change_id)
            if not change.events:
                return None
            origin = self._remember(change)
        return origin if tenant in (ANY_TENANT, origin.tenant) else None

    async def events(self, tenant: str, principal: str, query: EventsQuery) -> EventsReply:
        """Events after ``query.after_seq`` the caller may see, waiting up to ``wait_s`` for some."""
        limit = max(1, min(query.max_events, MAX_EVENTS))
        wait_s = max(0.0, min(query.wait_s, MAX_WAIT_S))
        if query.after_seq < 0:
            info = await self.store.js.stream_info(STREAM)
            query = msgspec.structs.replace(query, after_seq=int(info.state.last_seq))
        if query.change_id is not None:
            origin = self._require_visible(await self._origin(tenant, query.change_id), tenant, query.change_id,
                                           principal)
            subject = change_filter(origin.tenant, query.change_id)

            async def read_change() -> Records:
                records = await self.store.read_raw(subject, query.after_seq + 1, limit=limit)
                return records[:limit]

            records = await self._long_poll(subject, read_change, wait_s)
            return EventsReply(tenant=origin.tenant, events=[Item(s, msgspec.Raw(d)) for s, d in records],
                               last_seq=records[-1][0] if records else query.after_seq)
        if self.access.enforced and tenant not in self.access.members and principal not in self.access.admins:
            raise Forbidden(f"there is no tenant {tenant} that {principal} may see (the tenants are those of "
                            f"{self.access.source})", rule="visibility")
        if not self.access.roles(principal, tenant) and not self.access.tenants_of(principal):
            raise Forbidden(f"{principal} is not a member of tenant {tenant} nor of its org; roles are set in "
                            f"{self.access.source}")
        feed = tenant_filter(tenant)

        async def read_feed() -> Records:
            records = await self.store.read_raw(feed, query.after_seq + 1, limit=limit)
            return records[:limit]

        records = await self._long_poll(feed, read_feed, wait_s)
        visible = [Item(s, msgspec.Raw(d)) for s, d in records if await self._sees(tenant, principal, d)]
        return EventsReply(tenant=tenant, events=visible, last_seq=records[-1][0] if records else query.after_seq)

    async def _long_poll(self, subject: str, read: Callable[[], Awaitable[Records]], wait_s: float) -> Records:
        """``read()``; if it finds nothing, wait up to ``wait_s`` for a message on ``subject`` and read again."""
        if wait_s <= 0:
            return await read()
        sub = await self.nc.subscribe(subject)  # before the first read, so nothing slips between
        try:
            records = await read()
            with anyio.move_on_after(wait_s):
                while not records:
                    try:
                        await sub.next_msg(timeout=wait_s)
                    except nats.errors.TimeoutError:
                        break
                    for pause in _SETTLE_S:  # published; the stream may not have it yet
                        records = await read()
                        if records:
                            break
                        await anyio.sleep(pause)
            return records
        finally:
            await sub.unsubscribe()

    async def _sees(self, tenant: str, principal: str, data: bytes) -> bool:
        event = decode_event(data)
        if event.visibility != "private" or self.access.sees_everything(principal, tenant):
            return self.access.can_see(principal, tenant, event.visibility, "")
        origin = await self._origin(tenant, event.change_id)
        return origin is not None and self.access.can_see(principal, tenant, "private", origin.initiator)


# -- the asking side (the CLI, or any client) ------------------------------------------------


_events_reply = msgspec.json.Decoder(EventsReply)


async def ask_status(nc: NATS, tenant: str, change_id: str, *, principal: str, within: float = 10.0) -> ChangeStatus:
    """Where a change stands, as ``principal`` may see it (``tenant`` may be ``_any``)."""
    body = await request(nc, query_subject(tenant, "status", principal), {"change_id": change_id},
                         within=within, what="status queries")
    return msgspec.convert(body["status"], ChangeStatus)


async def follow(
    nc: NATS, tenant: str, *, principal: str, change_id: str | None = None, from_start: bool = False,
    wait_s: float = 10.0,
) -> AsyncIterator[StoredEvent]:
    """Events ``principal`` may see, as they are stored: one change's (all of them), or a tenant's
    (from now, or ``from_start``). Long polls; needs no JetStream rights."""
    query = EventsQuery(change_id=change_id, after_seq=0 if from_start or change_id else -1, wait_s=wait_s)
    while True:
        reply = await _ask_events(nc, tenant, principal, query)
        for item in reply.events:
            yield _stored(item)
        query = msgspec.structs.replace(query, after_seq=reply.last_seq)
        tenant = reply.tenant if change_id else tenant


async def read_change(nc: NATS, tenant: str, change_id: str, *, principal: str) -> list[StoredEvent]:
    """Every event so far of a change ``principal`` may see."""
    query = EventsQuery(change_id=change_id, max_events=MAX_EVENTS)
    events: list[StoredEvent] = []
    while True:
        reply = await _ask_events(nc, tenant, principal, query)
        if not reply.events:
            return events
        events += [_stored(item) for item in reply.events]
        query = msgspec.structs.replace(query, after_seq=reply.last_seq)


async def _ask_events(nc: NATS, tenant: str, principal: str, query: EventsQuery) -> EventsReply:
    subject = query_subject(tenant, "events", principal)
    data = await ask(nc, subject, _encoder.encode(query), within=query.wait_s + 10.0, what="event queries")
    try:
        return _events_reply.decode(data)
    except msgspec.ValidationError:
        raise_for_reply(data)
        raise


def _stored(item: Item) -> StoredEvent:
    raw = bytes(item.event)
    return StoredEvent(seq=item.seq, event=decode_event(raw), data=raw)


async def wait_closed(
    nc: NATS, tenant: str, change_id: str, *, principal: str, within: float = 120.0,
    on_event: Callable[[StoredEvent], None] | None = None,
) -> ChangeStatus:
    """Follow a change until it is closed (or its chain is reported broken), as ``principal``."""
    await until_final(follow(nc, tenant, principal=principal, change_id=change_id), within=within, on_event=on_event)
    return await ask_status(nc, tenant, change_id, principal=principal)


async def tenant_of(nc: NATS, change_id: str, *, principal: str) -> str:
    """The tenant of a change ``principal`` may see (looked up)."""
    return (await ask_status(nc, ANY_TENANT, change_id, principal=principal)).tenant

