"""Ingress for people: intents in, and the reads of :mod:`services.gateway.queries`.

``upm.cmd.<tenant>.intent.<principal>`` → ``intent.submitted`` (reply ``{"ok": true,
"change_id": ...}``), if the principal may submit in that tenant (:mod:`services.security.access`); the
initiator is the principal, never a body field. Anything invalid or not allowed gets a reply
naming the field and the rule, and nothing is appended. Gateways share a queue group, so any
number of them can run.
"""

from __future__ import annotations

import functools
import logging

import anyio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from opentelemetry.trace import SpanKind

from events.commands import error_reply, idempotent_change_id, ok_reply, parse_intent
from events.errors import ConcurrencyConflict, InvalidEvent, StoreError
from events.ids import new_id
from events.model import Event, IntentSubmitted
from events.store import ChangeLog, EventStore, new_event
from events.subjects import command_filter, parse_caller_subject
from services.common import retry
from services.common.responder import reply_to
from services.common.runtime import utc_now
from services.common.tracing import TRACER
from services.gateway.queries import Queries
from services.security.access import Access, Forbidden, refusal
from services.security.access import load as load_access

log = logging.getLogger("upm.gateway")
QUEUE = "upm-gateway"
STORE_WITHIN_S = 4.0  # how long an intent waits for the event stream (a leader election) before "unavailable"


class Gateway:
    def __init__(self, nc: NATS, access: Access | None = None) -> None:
        self.nc = nc
        self.store = EventStore(nc)
        self.access = access if access is not None else load_access()
        self.queries = Queries(nc, self.access)

    async def run(self, *, ready: anyio.Event | None = None) -> None:
        sub = await self.nc.subscribe(command_filter("intent"), queue=QUEUE)
        try:
            async with anyio.create_task_group() as tg:
                queries_ready = anyio.Event()
                tg.start_soon(functools.partial(self.queries.run, ready=queries_ready))
                await queries_ready.wait()
                if ready is not None:
                    ready.set()
                async for msg in sub.messages:
                    await reply_to(msg, self.on_intent, what="an intent")
        finally:
            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()

    async def on_intent(self, msg: Msg) -> bytes | None:
        """The reply to one intent (``None``: dropped, the reply subject is not the caller's)."""
        if self.access.caller(msg.subject, msg.reply) is None:
            return None
        tenant, _, principal = parse_caller_subject(msg.subject)
        try:
            cmd = parse_intent(tenant, principal, msg.data)
            self.access.require(principal, tenant, "intent")
        except InvalidEvent as err:
            return error_reply(err)
        except Forbidden as err:
            return refusal(err)
        change_id = idempotent_change_id(tenant, cmd.idempotency_key) if cmd.idempotency_key else new_id()
        payload = IntentSubmitted(
            request=cmd.request,
            spec=cmd.spec,
            initiator=cmd.initiator,
            reason=cmd.reason,
            window=cmd.window,
            variant=cmd.variant,
            environment=cmd.environment,
            idempotency_key=cmd.idempotency_key,
        )
        # built once: an append tried again after NATS did not answer carries the same id (stored once)
        event = new_event(payload, event_id=new_id(), change_id=change_id, tenant=tenant, ts=utc_now(),
                          actor=cmd.initiator, source=cmd.source, visibility=cmd.visibility)
        try:
            with TRACER.start_as_current_span(  # the change's trace starts here (services/common/tracing.py)
                    "gateway intent.submitted", kind=SpanKind.PRODUCER,
                    attributes={"upm.service": "gateway", "upm.change_id": change_id, "upm.tenant": tenant,
                                "upm.event_type": event.type, "upm.event_id": event.id, "upm.principal": principal}):
                return await retry.within(STORE_WITHIN_S, functools.partial(self._store, event, cmd.idempotency_key))
        except StoreError as err:
            log.error("intent for %s not stored: %s", tenant, err)
            return error_reply(InvalidEvent(f"not stored: {err}; retry", field="store", rule="unavailable"))

    async def _store(self, event: Event, idempotency_key: str | None) -> bytes:
        """Append the intent, unless a submission with the same idempotency key was stored first."""
        tenant, change_id = event.tenant, event.change_id
        change = await self.store.read(tenant, change_id) if idempotency_key else ChangeLog(tenant, change_id)
        if change.events:
            return ok_reply(change_id, duplicate=all(s.event.id != event.id for s in change.events))
        try:
            await self.store.append(change, [event])
        except ConcurrencyConflict:
            if not idempotency_key:
                raise
            return ok_reply(change_id, duplicate=True)  # the same key got in first (a read that had not seen it)
        return ok_reply(change_id)
