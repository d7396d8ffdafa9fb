"""Ingress for people: intents in, and the reads of :mod:`services.gateway.queries`.

``upm.cmd.<tenant>.intent.<principal>`` → ``intent.submitted`` (reply ``{"ok": true,
"change_id": ...}``), if the principal may submit in that tenant (:mod:`services.security.access`); the
initiator is the principal, never a body field. Anything invalid or not allowed gets a reply
naming the field and the rule, and nothing is appended. Gateways share a queue group, so any
number of them can run.

Back-pressure: intents wait in a bounded queue (:class:`Intake`) and ``workers`` of them are stored
at once. One that waits longer than ``progress_s`` and whose request carries the header
``UPM-Accept-Progress`` is told so, again every ``progress_s``: a progress note on its reply subject
(header ``UPM-Progress``, body ``{"state": "queued", "ahead": N, "bound": B}``, or ``"state":
"storing"`` once it is being appended), so its caller keeps waiting while the gateway works through
the queue instead of giving up at a fixed timeout (:func:`services.common.client.ask`); a plain request (any
NATS client) gets only the reply. An intent that finds ``bound`` others waiting is refused at once
(rule ``busy``) with how many wait and what to do; nothing is stored, so sending it again is safe
(:func:`services.common.client.submit` does, with backoff).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import msgspec
import nats.errors
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
from services.common.errors import ConfigError
from services.common.responder import reply_to
from services.common.runtime import utc_now
from services.common.tracing import TRACER
from services.gateway.queries import Queries
from services.security.access import Access, Forbidden, refusal
from services.security.access import load as load_access

log = logging.getLogger("upm.gateway")
QUEUE = "upm-gateway"
STORE_WITHIN_S = 4.0  # how long an intent waits for the event stream (a leader election) before "unavailable"
QUEUE_BOUND_ENV = "UPM_GATEWAY_QUEUE"
QUEUE_BOUND = 2_000  # intents waiting to be stored, per gateway, before it refuses more (rule "busy")
WORKERS = 32  # intents stored at once, per gateway
PROGRESS_S = 2.0  # an intent waiting this long is told where it stands, and again every PROGRESS_S
PROGRESS_HEADER = "UPM-Progress"
ACCEPT_HEADER = "UPM-Accept-Progress"  # on a request: its caller understands progress notes


def queue_bound() -> int:
    """``UPM_GATEWAY_QUEUE`` (a positive integer), else :data:`QUEUE_BOUND`."""
    raw = os.environ.get(QUEUE_BOUND_ENV, "")
    if not raw:
        return QUEUE_BOUND
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{QUEUE_BOUND_ENV}={raw!r} is not a positive integer: set it to how many intents may "
                          f"wait to be stored (default {QUEUE_BOUND}), or unset it")
    return int(raw)


class Progress(msgspec.Struct, frozen=True):
    """The body of a progress note (see the module docstring): ``queued`` with ``ahead`` intents before
    it, or ``storing`` (taken from the queue, being appended: the event stream is slow to answer)."""

    state: str
    ahead: int
    bound: int


def busy_reply(waiting: int, bound: int) -> bytes:
    """The refusal of an intent that found the queue full."""
    return error_reply(InvalidEvent(
        f"the gateway is busy: {waiting} intents are waiting to be stored (its bound is {bound}); nothing was "
        "stored: send it again in a few seconds (upm submit does, with backoff), or raise the bound with "
        f"{QUEUE_BOUND_ENV} / run more gateways (upm up --replicas)", field="gateway", rule="busy"))


@dataclass(eq=False)
class _Waiting:
    msg: Msg
    told: float


class Intake:
    """The gateway's bounded queue of intents (pure bookkeeping: no I/O)."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.waiting: deque[_Waiting] = deque()
        self.storing: set[_Waiting] = set()
        self.arrived = anyio.Event()

    def offer(self, msg: Msg, now: float) -> bool:
        """Queue ``msg``; False (refuse it) when ``bound`` intents wait already."""
        if len(self.waiting) >= self.bound:
            return False
        self.waiting.append(_Waiting(msg, now))
        self.arrived.set()
        return True

    @contextlib.asynccontextmanager
    async def take(self) -> AsyncIterator[Msg]:
        """The oldest waiting intent, counted as being stored until the block ends."""
        while not self.waiting:
            if self.arrived.is_set():  # taken by another worker: wait for the next arrival
                self.arrived = anyio.Event()
            await self.arrived.wait()
        item = self.waiting.popleft()
        self.storing.add(item)
        try:
            yield item.msg
        finally:
            self.storing.discard(item)

    def due(self, now: float, every: float) -> list[tuple[Msg, Progress]]:
        """The progress notes owed at ``now``: to each intent not told for ``every`` seconds."""
        notes = []
        for state, items in (("storing", list(self.storing)), ("queued", list(self.waiting))):
            for ahead, item in enumerate(items):
                if now - item.told >= every:
                    item.told = now
                    notes.append((item.msg, Progress(state=state, ahead=0 if state == "storing" else ahead,
                                                     bound=self.bound)))
        return notes


class Gateway:
    def __init__(self, nc: NATS, access: Access | None = None, *, bound: int | None = None, workers: int = WORKERS,
                 progress_s: float = PROGRESS_S) -> None:
        self.nc = nc
        self.store = EventStore(nc)
        self.access = access if access is not None else load_access()
        self.queries = Queries(nc, self.access)
        self.intake = Intake(queue_bound() if bound is None else bound)
        self.workers = workers
        self.progress_s = progress_s

    async def run(self, *, ready: anyio.Event | None = None) -> None:
        sub = await self.nc.subscribe(command_filter("intent"), queue=QUEUE)
        try:
            async with anyio.create_task_group() as tg:
                queries_ready = anyio.Event()
                tg.start_soon(functools.partial(self.queries.run, ready=queries_ready))
                await queries_ready.wait()
                for _ in range(self.workers):
                    tg.start_soon(self._work)
                tg.start_soon(self._tell_progress)
                if ready is not None:
                    ready.set()
                async for msg in sub.messages:
                    if not self.intake.offer(msg, time.monotonic()):
                        await reply_to(msg, self._refuse, what="an intent")
        finally:
            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()

    async def _refuse(self, msg: Msg) -> bytes | None:
        if self.access.caller(msg.subject, msg.reply) is None:
            return None
        return busy_reply(len(self.intake.waiting), self.intake.bound)

    async def _work(self) -> None:
        while True:
            async with self.intake.take() as msg:
                await reply_to(msg, self.on_intent, what="an intent")

    async def _tell_progress(self) -> None:
        while True:
            await anyio.sleep(self.progress_s / 4)
            for msg, note in self.intake.due(time.monotonic(), self.progress_s):
                accepts = ACCEPT_HEADER in (msg.headers or {})
                if accepts and msg.reply and self.access.caller(msg.subject, msg.reply) is not None:
                    try:
                        await self.nc.publish(msg.reply, msgspec.json.encode(note), headers={PROGRESS_HEADER: note.state})
                    except nats.errors.Error as exc:
                        log.warning("a progress note to %s could not be sent: %s", msg.reply, exc)

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
