"""The shared service runtime: a durable pull consumer per service, decide, append, then ack.

A service is a name, the event types it consumes and a handler. For each delivered event the
runtime reads the change, cuts its history at the delivered event, calls the handler, and acks
only after the handler's events are appended. Output ids are derived from the input event id
(:meth:`Context.event`), so a service that dies after appending and before acking re-derives the
same ids on redelivery and nothing is stored twice. Replicas of a service share its durable
consumer, so each event is handled by one of them.

Two rules keep a delivery from being acknowledged without its output when several processes write
one change (replicas, the watchdog, operator commands) on a JetStream cluster:

* the handler always sees the change *through* the delivered event (:func:`read_through`): a read
  answered by a stream replica that has not applied it yet is read again, so no handler decides
  "nothing to do" from a state that lacks the very event it was given;
* an append that conflicts with an event another writer stored in between makes the handler
  decide again from the fresh state (:class:`Superseded`); only a conflict with its own events (a
  retried publish, a replica handling the same delivery) re-appends them, which their ids make
  harmless.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from opentelemetry.trace import SpanKind

from events.errors import ConcurrencyConflict, StoreTimeout
from events.ids import derive_id
from events.lifecycle import ChangeState, fold
from events.model import Event, Payload, decode_event, type_of
from events.store import ChangeLog, EventStore, StoredEvent, map_error, new_event
from events.subjects import STREAM, type_filter
from services.common import logs, metrics, retry
from services.common.tracing import TRACER, extract

log = logging.getLogger("upm.runtime")

MAX_CONFLICT_RETRIES = 20
READ_THROUGH_S = 10.0  # how long a handler waits for the stream replica it reads from to catch up


class Superseded(ConcurrencyConflict):
    """Another writer appended to the change after the handler read it: decide again."""


async def read_through(store: EventStore, tenant: str, change_id: str, seq: int) -> ChangeLog:
    """The change as stored, at least up to stream sequence ``seq`` (an event of it that was delivered
    or announced). On a cluster a direct get may be answered by a replica that has not yet applied
    what the leader delivered; it is read again (:func:`services.common.retry.within`), and after
    ``READ_THROUGH_S`` the :class:`StoreTimeout` propagates (the delivery is then retried)."""

    async def read() -> ChangeLog:
        change = await store.read(tenant, change_id)
        if change.last_seq < seq:
            raise StoreTimeout(f"the copy of the event stream that answered holds {tenant}/{change_id} only up to "
                               f"sequence {change.last_seq}, not yet {seq}; reading again")
        return change

    return await retry.within(READ_THROUGH_S, read)


def utc_now() -> str:
    """Now, as the RFC 3339 UTC timestamp events carry (millisecond precision)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Context:
    """What a handler gets besides the history: where to append, and how to name its events."""

    service: str
    store: EventStore
    log: ChangeLog
    input: Event
    clock: Callable[[], str] = utc_now
    appended: list[Event] = field(default_factory=list)
    _state: ChangeState | None = None
    _seen: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._seen = self.log.ids()

    @property
    def state(self) -> ChangeState:
        """The change's lifecycle state as stored, evolved with every event this handler appends."""
        if self._state is None:
            self._state = fold(s.event for s in self.log.events)
        return self._state

    def event(self, payload: Payload, key: str | None = None) -> Event:
        """An event for ``payload`` whose id is derived from the input event and ``key``."""
        return self.derived(payload, self.input.id, key or type_of(payload))

    def derived(self, payload: Payload, origin_id: str, key: str) -> Event:
        """An event for ``payload`` whose id is derived from the event ``origin_id`` and ``key``:
        a decision's later events derive from its first, so whichever path finishes the decision
        (the original handler, a redelivery, the watchdog's nudge) writes the same ids."""
        origin = self.log.events[0].event if self.log.events else self.input
        return new_event(
            payload,
            event_id=derive_id(origin_id, key),
            change_id=self.input.change_id,
            tenant=self.input.tenant,
            ts=self.clock(),
            actor=self.service,
            source=origin.source,
            visibility=origin.visibility,
        )

    async def emit(self, *items: Payload | tuple[Payload, str] | Event) -> None:
        """Append payloads (optionally with id keys) or built events in order. On a conflict it re-reads:
        when another writer's events came in since the handler read the change, it raises
        :class:`Superseded` (the runtime calls the handler again on the fresh state); when only these
        events' own copies did (stored under their ids before), it appends what is left."""
        events = [i if isinstance(i, Event) else self.event(*i) if isinstance(i, tuple) else self.event(i)
                  for i in items]
        mine = {e.id for e in events}
        conflicts: list[ConcurrencyConflict] = []

        async def attempt(_: int) -> tuple[int, list[StoredEvent]]:
            if conflicts:  # re-read: whose events came in?
                self.log = await self.store.read(self.log.tenant, self.log.change_id)
                self._state = None
                foreign = [s.event for s in self.log.events if s.event.id not in self._seen | mine]
                if foreign:
                    last = conflicts[-1]
                    raise Superseded(last.subject, last.expected_seq,
                                     f"{', '.join(e.type for e in foreign)} stored meanwhile") from last
            before = len(self.log.events)
            try:
                return before, await self.store.append(self.log, events)
            except ConcurrencyConflict as conflict:
                conflicts.append(conflict)
                raise

        before, stored = await retry.on_conflict(attempt, attempts=MAX_CONFLICT_RETRIES)
        self.appended.extend(events)
        self._seen |= mine
        if self._state is not None and len(self.log.events) == before + len(stored):
            self._state = fold((s.event for s in stored), self._state)
        else:
            self._state = None  # someone else's events came in between: fold again when asked


Handler = Callable[[Context, list[Event], Event], Awaitable[None]]


def pure(decide: Callable[[list[Event], Event], Sequence[Payload]]) -> Handler:
    """A handler for a pure ``decide(history, event) -> payloads`` core."""

    async def handle(ctx: Context, history: list[Event], event: Event) -> None:
        payloads = decide(history, event)
        if payloads:
            await ctx.emit(*payloads)

    return handle


@dataclass(frozen=True)
class ServiceSpec:
    """One service: its durable consumer name, the event types it consumes, its handler; ``on_stop``
    is awaited (shielded) once its runner stops, to end what its handler keeps running."""

    name: str
    consumes: tuple[str, ...]
    handle: Handler
    concurrency: int = 16
    ack_wait: float = 30.0
    max_deliver: int = 20
    on_stop: Callable[[], Awaitable[None]] | None = None


async def ensure_consumer(store: EventStore, spec: ServiceSpec) -> None:
    """Create (or update) the service's durable consumer on the event stream."""
    config = api.ConsumerConfig(
        durable_name=spec.name,
        name=spec.name,
        deliver_policy=api.DeliverPolicy.ALL,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=spec.ack_wait,
        max_deliver=spec.max_deliver,
        max_ack_pending=spec.concurrency * 8,
        filter_subjects=[type_filter(t) for t in spec.consumes],
    )
    try:
        await store.js.add_consumer(STREAM, config)
    except nats.errors.Error as exc:
        raise map_error(exc, subject=f"consumer {spec.name}") from exc


class Runner:
    """Runs one service until cancelled."""

    def __init__(self, nc: NATS, spec: ServiceSpec, *, clock: Callable[[], str] = utc_now) -> None:
        self.spec = spec
        self.store = EventStore(nc)
        self.clock = clock
        self._locks: dict[str, anyio.Lock] = {}
        self.handled = 0

    async def run(self, *, ready: anyio.Event | None = None) -> None:
        """Bind the durable consumer and handle what it delivers, until cancelled. While NATS is
        away (a reconnect, JetStream restarting, its consumer not yet recovered) the loop waits
        with the shared retry policy and binds again; it never ends on such an error."""
        bound = anyio.Event()

        async def consume() -> None:
            await ensure_consumer(self.store, self.spec)
            psub = await self.store.js.pull_subscribe_bind(durable=self.spec.name, stream=STREAM)
            bound.set()
            try:
                await self._consume(psub)
            finally:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await psub.unsubscribe()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(retry.keep_running, f"{self.spec.name}: consuming", consume)
                await bound.wait()
                if ready is not None:
                    ready.set()
        finally:
            if self.spec.on_stop is not None:
                with anyio.CancelScope(shield=True):
                    await self.spec.on_stop()

    async def _consume(self, psub: JetStreamContext.PullSubscription) -> None:
        slots = anyio.Semaphore(self.spec.concurrency)
        async with anyio.create_task_group() as tg:
            while True:
                await slots.acquire()
                free = 1
                while slots.value > 0:
                    await slots.acquire()
                    free += 1
                try:
                    msgs = await psub.fetch(batch=free, timeout=1.0)
                except (nats.errors.TimeoutError, TimeoutError):
                    msgs = []
                except BaseException:
                    for _ in range(free):
                        slots.release()
                    raise
                for _ in range(free - len(msgs)):
                    slots.release()
                for msg in msgs:
                    tg.start_soon(self._guarded, msg, slots)

    async def _guarded(self, msg: Msg, slots: anyio.Semaphore) -> None:
        try:
            await self.process(msg)
        finally:
            slots.release()

    async def process(self, msg: Msg) -> None:
        """Handle one delivery: decode, read the change, handle, ack (nak on failure). An ack, nak
        or progress note that cannot reach NATS is dropped: the message is delivered again after
        ``ack_wait``, and the handler's derived ids make that harmless."""
        try:
            event = decode_event(msg.data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            log.error("%s: undecodable event at %s, terminated: %s", self.spec.name, msg.subject, exc)
            await _settle(msg.term())
            return
        lock = self._locks.setdefault(event.change_id, anyio.Lock())
        name = self.spec.name
        metrics.CONSUMER_PENDING.labels(name).set(msg.metadata.num_pending)
        span = TRACER.start_as_current_span(
            f"{name} {event.type}", context=extract(msg.headers), kind=SpanKind.CONSUMER,
            attributes={"upm.service": name, "upm.change_id": event.change_id, "upm.tenant": event.tenant,
                        "upm.event_type": event.type, "upm.event_id": event.id,
                        "messaging.system": "nats", "messaging.destination.name": msg.subject})
        with logs.context(change_id=event.change_id, event_id=event.id), span:
            async with lock, anyio.create_task_group() as tg:
                tg.start_soon(self._keep_alive, msg)
                started = time.perf_counter()
                try:
                    appended = await self._handle(msg, event)
                except Exception as exc:
                    metrics.EVENTS_FAILED.labels(name, event.type).inc()
                    deliveries = msg.metadata.num_delivered
                    delay = min(30.0, 0.1 * math.pow(2, deliveries))
                    if retry.is_transient(exc):
                        log.warning("%s: handling %s failed (delivery %d), NATS is away, retrying in %.1fs: %s",
                                    self.spec.name, event.type, deliveries, delay, exc or type(exc).__name__)
                    else:
                        log.exception("%s: handling %s failed (delivery %d), retrying in %.1fs: %s",
                                      self.spec.name, event.type, deliveries, delay, exc)
                    await _settle(msg.nak(delay=delay))
                else:
                    await _settle(msg.ack())
                    self.handled += 1
                    metrics.EVENTS_HANDLED.labels(name, event.type).inc()
                    metrics.HANDLE_SECONDS.labels(name, event.type).observe(time.perf_counter() - started)
                    log.info("%s: handled %s", self.spec.name, event.type,
                             extra={"fields": {"appended": [e.type for e in appended],
                                               "delivery": msg.metadata.num_delivered}})
                finally:
                    tg.cancel_scope.cancel()
        if not lock.locked() and lock.statistics().tasks_waiting == 0:
            self._locks.pop(event.change_id, None)

    async def _handle(self, msg: Msg, event: Event) -> list[Event]:
        """Call the handler on the change read through the delivered event; again on a fresh read when
        another writer superseded what it read (what it appended before stays: its ids are derived)."""
        seq = msg.metadata.sequence.stream
        appended: list[Event] = []
        attempt = 0
        while True:
            attempt += 1
            change = await read_through(self.store, event.tenant, event.change_id, seq)
            history = change.upto(seq)
            if not history or history[-1].id != event.id:
                history = [*history, event]
            ctx = Context(self.spec.name, self.store, change, event, clock=self.clock)
            try:
                await self.spec.handle(ctx, history[:-1], event)
            except Superseded as superseded:
                appended += ctx.appended
                if attempt >= MAX_CONFLICT_RETRIES:
                    raise
                log.info("%s: deciding %s again: %s", self.spec.name, event.type, superseded)
            else:
                return appended + ctx.appended

    async def _keep_alive(self, msg: Msg) -> None:
        while True:
            await anyio.sleep(self.spec.ack_wait / 3)
            await _settle(msg.in_progress())


async def _settle(reply: Awaitable[None]) -> None:
    """Send an ack, nak, term or progress note; when NATS is away, drop it (see :meth:`Runner.process`)."""
    try:
        await reply
    except Exception as exc:
        if not retry.is_transient(exc):
            raise
        log.warning("could not reach NATS to settle a delivery (%s); it will be delivered again",
                    exc or type(exc).__name__)


async def run_services(nc: NATS, specs: Sequence[ServiceSpec], **kwargs: Any) -> None:
    """Run several services on one connection until cancelled."""
    async with anyio.create_task_group() as tg:
        for spec in specs:
            tg.start_soon(Runner(nc, spec, **kwargs).run)
