"""The event store: append (deduplicated, optimistic per change, hash-chained), read, follow.

This is the only module that turns NATS replies into typed errors (:func:`map_error`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from opentelemetry import propagate

from events.chain import GENESIS, seal
from events.errors import (
    ConcurrencyConflict,
    InvalidEvent,
    ServerRefused,
    StoreError,
    StoreTimeout,
    StreamNotFound,
)
from events.model import Event, decode_event, encode_event
from events.stream import check_immutable, event_stream_config
from events.subjects import (
    HDR_EXPECTED_LAST_SUBJECT_SEQ,
    HDR_EXPECTED_LAST_SUBJECT_SEQ_SUBJECT,
    HDR_EXPECTED_STREAM,
    HDR_MSG_ID,
    STREAM,
    change_filter,
    event_subject,
    is_tenant,
)

ERR_WRONG_LAST_SEQUENCE = 10071
ERR_WRONG_LAST_SEQUENCE_UNKNOWN = 10164  # the same refusal, worded without the sequence (a cluster's answer)
ERR_DUPLICATE_IN_PROCESS = 10158  # a cluster's leader is storing a message with this id right now
ERR_STREAM_NOT_FOUND = 10059
READ_BATCH = 512
FOLLOW_IDLE_S = 1.0  # how often a quiet follower checks whether its connection came back


class StoredEvent(msgspec.Struct, frozen=True):
    """An event as stored: its stream sequence, its bytes and the decoded envelope."""

    seq: int
    event: Event
    data: bytes


class ChangeLog(msgspec.Struct):
    """Everything stored for one change, in order; ``last_seq``/``head`` are where to append."""

    tenant: str
    change_id: str
    events: list[StoredEvent] = msgspec.field(default_factory=list)

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq if self.events else 0

    @property
    def head(self) -> str:
        return self.events[-1].event.hash if self.events else GENESIS

    def trim(self) -> None:
        """Forget all but the last event: enough to append (``last_seq``, ``head``) for a writer
        that keeps a long-lived log open (a drift log, the log heads), so memory stays flat."""
        del self.events[:-1]

    def ids(self) -> set[str]:
        return {s.event.id for s in self.events}

    def upto(self, seq: int) -> list[Event]:
        """The events stored at or before stream sequence ``seq``."""
        return [s.event for s in self.events if s.seq <= seq]


def map_error(exc: BaseException, *, subject: str = "", expected_seq: int = 0) -> StoreError:
    """The one place NATS errors become UPM's typed errors."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, nats.js.errors.APIError):
        if exc.err_code in (ERR_WRONG_LAST_SEQUENCE, ERR_WRONG_LAST_SEQUENCE_UNKNOWN, ERR_DUPLICATE_IN_PROCESS):
            return ConcurrencyConflict(subject, expected_seq, exc.description or "")
        if exc.err_code == ERR_STREAM_NOT_FOUND or isinstance(exc, nats.js.errors.NotFoundError):
            return StreamNotFound(
                f"stream {STREAM} not found ({exc.description}); start UPM with `upm up`, "
                "or create it with EventStore.ensure_stream()"
            )
        return ServerRefused(
            f"NATS refused the request on {subject or 'the event stream'}: {exc.description} "
            f"(code {exc.code}, err_code {exc.err_code})",
            code=exc.code,
            err_code=exc.err_code,
        )
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return StreamNotFound(
            f"no stream answered for {subject}; is {STREAM} created? Run `upm up` or ensure_stream()"
        )
    if isinstance(exc, (nats.errors.TimeoutError, TimeoutError)):
        return StoreTimeout(f"NATS did not answer in time on {subject or STREAM}; check the server and retry")
    if isinstance(exc, nats.errors.Error):
        return ServerRefused(f"NATS error on {subject or STREAM}: {exc}")
    raise exc


class EventStore:
    """Append, read and follow UPM events over one NATS connection."""

    def __init__(self, nc: NATS, *, timeout: float = 5.0) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=timeout)
        self.timeout = timeout

    async def ensure_stream(self, replicas: int = 1) -> None:
        """Create ``UPM_EVENTS`` if missing; refuse an existing one that is not immutable."""
        try:
            info = await self.js.stream_info(STREAM)
        except nats.js.errors.NotFoundError:
            try:
                await self.js.add_stream(event_stream_config(replicas))
            except nats.js.errors.APIError as exc:
                if exc.err_code != 10058:  # created concurrently by another process
                    raise map_error(exc) from exc
            return
        except nats.errors.Error as exc:
            raise map_error(exc) from exc
        check_immutable(info.config)

    async def append(self, log: ChangeLog, events: Sequence[Event]) -> list[StoredEvent]:
        """Append ``events`` to the change ``log``, chained after its head.

        Events whose id is already in the log are skipped (they were appended before a crash).
        Each publish carries the event id as ``Nats-Msg-Id`` and the change's last sequence as
        the expected last subject sequence, so a concurrent writer gets
        :class:`ConcurrencyConflict` and nothing half-written; and the current trace context (W3C
        ``traceparent``, see :mod:`services.common.tracing`), so one change is one trace. ``log`` is updated in place.
        """
        stored: list[StoredEvent] = []
        known = log.ids()
        for event in events:
            if event.id in known:
                continue
            if event.tenant != log.tenant or event.change_id != log.change_id:
                raise InvalidEvent(
                    f"event {event.id} is for {event.tenant}/{event.change_id}, "
                    f"not {log.tenant}/{log.change_id}",
                    field="change_id",
                )
            try:
                record = await self._publish(log, seal(event, log.head))
            except ConcurrencyConflict:
                # Our own earlier attempt (lost ack, crash before ack) counts as the write.
                fresh = await self.read(log.tenant, log.change_id)
                mine = [r for r in fresh.events if r.event.id == event.id]
                if not mine:
                    raise
                log.events[:] = fresh.events
                record = mine[0]
            else:
                log.events.append(record)
            known.add(event.id)
            stored.append(record)
        return stored

    async def _publish(self, log: ChangeLog, event: Event) -> StoredEvent:
        subject = event_subject(event.tenant, event.change_id, event.type)
        data = encode_event(event)
        headers = {
            HDR_MSG_ID: event.id,
            HDR_EXPECTED_STREAM: STREAM,
            HDR_EXPECTED_LAST_SUBJECT_SEQ: str(log.last_seq),
            HDR_EXPECTED_LAST_SUBJECT_SEQ_SUBJECT: change_filter(log.tenant, log.change_id),
        }
        propagate.inject(headers)  # the trace this write belongs to (W3C traceparent; none when tracing is off)
        try:
            ack = await self.js.publish(subject, data, headers=headers, timeout=self.timeout)
        except (nats.errors.Error, TimeoutError) as exc:
            raise map_error(exc, subject=subject, expected_seq=log.last_seq) from exc
        if ack.duplicate:
            # Stored before under this id (a retried publish): the stored copy stands.
            raise ConcurrencyConflict(subject, log.last_seq, f"{event.id} was already stored")
        return StoredEvent(seq=ack.seq, event=event, data=data)

    async def position(self) -> int:
        """The stream's last sequence now: every event stored before this call is at or below it."""
        try:
            return int((await self.js.stream_info(STREAM)).state.last_seq)
        except (nats.errors.Error, TimeoutError) as exc:
            raise map_error(exc) from exc

    async def read(self, tenant: str, change_id: str) -> ChangeLog:
        """Every event of one change, in order (``tenant`` may be ``*`` to look it up)."""
        if tenant != "*" and not is_tenant(tenant):
            raise InvalidEvent(f"{tenant!r} is not a tenant name", field="tenant")
        records = await self.read_raw(change_filter(tenant, change_id))
        events = [StoredEvent(seq=seq, event=decode_event(data), data=data) for seq, data in records]
        found_tenant = events[0].event.tenant if events else tenant
        return ChangeLog(tenant=found_tenant, change_id=change_id, events=events)

    async def read_tail(self, tenant: str, change_id: str) -> ChangeLog:
        """A change with only its last event (or none): where to append, in one direct get,
        however long the change is (see :meth:`ChangeLog.trim`)."""
        subject = change_filter(tenant, change_id)
        request = json.dumps({"last_by_subj": subject}).encode()
        try:
            msg = await self.nc.request(f"$JS.API.DIRECT.GET.{STREAM}", request, timeout=self.timeout)
        except nats.errors.TimeoutError as exc:
            raise StoreTimeout(f"reading the last event of {subject} timed out after {self.timeout}s") from exc
        headers = msg.headers or {}
        if headers.get("Status") == "404":
            return ChangeLog(tenant=tenant, change_id=change_id)
        if headers.get("Status"):
            raise ServerRefused(f"direct get on {STREAM} refused: {headers['Status']} {headers.get('Description', '')}")
        last = StoredEvent(seq=int(headers["Nats-Sequence"]), event=decode_event(msg.data), data=msg.data)
        return ChangeLog(tenant=tenant, change_id=change_id, events=[last])

    async def read_raw(
        self, subject_filter: str, start_seq: int = 1, *, limit: int | None = None
    ) -> list[tuple[int, bytes]]:
        """``(sequence, bytes)`` of every stored message matching ``subject_filter`` from
        ``start_seq`` (at least ``limit`` of them if given, then it stops early).

        Uses batched direct gets: one request returns up to ``READ_BATCH`` messages.
        """
        out: list[tuple[int, bytes]] = []
        seq = start_seq
        while True:
            batch, more = await self._direct_batch(subject_filter, seq)
            out.extend(batch)
            if not more or not batch or (limit is not None and len(out) >= limit):
                return out
            seq = batch[-1][0] + 1

    async def _direct_batch(self, subject_filter: str, seq: int) -> tuple[list[tuple[int, bytes]], bool]:
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        request = {"seq": seq, "next_by_subj": subject_filter, "batch": READ_BATCH}
        out: list[tuple[int, bytes]] = []
        try:
            await self.nc.publish(
                f"$JS.API.DIRECT.GET.{STREAM}", json.dumps(request).encode(), reply=inbox
            )
            messages = sub.messages  # not next_msg: that makes a uuid4 (an os.urandom call) and a task per message
            with anyio.fail_after(self.timeout):
                while True:
                    msg = await anext(messages)
                    headers = msg.headers or {}
                    status = headers.get("Status")
                    if status == "404":
                        return out, False
                    if status == "204":
                        return out, int(headers.get("Nats-Num-Pending", "0")) > 0
                    if status == "408" or status == "503":
                        raise StoreTimeout(f"direct get on {STREAM} answered {status}; retry")
                    if status:
                        raise ServerRefused(
                            f"direct get on {STREAM} refused: {status} {headers.get('Description', '')}"
                        )
                    out.append((int(headers["Nats-Sequence"]), msg.data))
        except TimeoutError as exc:
            raise StoreTimeout(
                f"reading {subject_filter} timed out after {self.timeout}s; is the server up?"
            ) from exc
        except nats.errors.TimeoutError as exc:
            raise StoreTimeout(
                f"reading {subject_filter} timed out after {self.timeout}s; is the server up?"
            ) from exc
        finally:
            await sub.unsubscribe()

    async def follow(
        self, subject_filter: str, *, from_start: bool = True, start_seq: int | None = None
    ) -> AsyncIterator[StoredEvent]:
        """Yield events matching ``subject_filter`` as they are stored (an ordered consumer)."""
        if start_seq is not None:
            policy = api.DeliverPolicy.BY_START_SEQUENCE
        else:
            policy = api.DeliverPolicy.ALL if from_start else api.DeliverPolicy.NEW
        config = api.ConsumerConfig(opt_start_seq=start_seq) if start_seq is not None else None
        try:
            sub = await self.js.subscribe(
                subject_filter, ordered_consumer=True, deliver_policy=policy, config=config
            )
        except nats.errors.Error as exc:
            raise map_error(exc, subject=subject_filter) from exc
        try:
            async for msg in sub.messages:
                yield _stored(msg)
        finally:
            await sub.unsubscribe()


    async def follow_raw(self, subject_filter: str, start_seq: int = 1) -> AsyncIterator[tuple[int, bytes]]:
        """Yield ``(sequence, stored bytes)`` of the events matching ``subject_filter`` from
        ``start_seq`` on, as they are stored, each once and in order (an ordered consumer). When the
        connection comes back after a reconnect (the server may have restarted and lost the
        consumer) it subscribes again from the next sequence. An error subscribing propagates:
        call again with the next sequence you need."""
        next_seq = start_seq
        while True:
            epoch = self.nc.stats["reconnects"]
            try:
                sub = await self.js.subscribe(subject_filter, ordered_consumer=True,
                                              deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                                              config=api.ConsumerConfig(opt_start_seq=next_seq))
            except nats.errors.Error as exc:
                raise map_error(exc, subject=subject_filter) from exc
            try:
                while True:
                    try:
                        msg = await sub.next_msg(timeout=FOLLOW_IDLE_S)
                    except nats.errors.TimeoutError:
                        if self.nc.stats["reconnects"] != epoch:
                            break  # subscribe again: the consumer may be gone with the old server
                        continue
                    seq = msg.metadata.sequence.stream
                    if seq >= next_seq:  # a consumer reset may deliver again what was already yielded
                        next_seq = seq + 1
                        yield seq, msg.data
            finally:
                with anyio.CancelScope(shield=True), contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()


def _stored(msg: Msg) -> StoredEvent:
    return StoredEvent(seq=msg.metadata.sequence.stream, event=decode_event(msg.data), data=msg.data)


def new_event(
    payload: Any,
    *,
    event_id: str,
    change_id: str,
    tenant: str,
    ts: str,
    actor: str,
    source: Any,
    visibility: Any = "team",
) -> Event:
    """An unsealed event for ``payload`` (its phase from the payload's class)."""
    return Event(
        id=event_id,
        change_id=change_id,
        tenant=tenant,
        phase=payload.PHASE,
        ts=ts,
        actor=actor,
        source=source,
        visibility=visibility,
        payload=payload,
    )
