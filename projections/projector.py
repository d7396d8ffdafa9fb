"""The projector: follows ``UPM_EVENTS`` into DuckDB and answers SQL and evidence queries.

Thin async shell over :class:`projections.db.ProjectionDB`: an ordered consumer from the resume
position + 1 appends to a bounded buffer (its callback waits while the buffer is full, which holds
back flow control, so the server slows down); the writer gathers records for up to ``linger_s``
after the first one arrives (less when ``LINGER_RECORDS`` are in, or when a read waits for them),
then ingests what is there (up to ``batch_max``) in a worker thread, so batches grow with the load.
When nothing arrives for ``IDLE_FLUSH_S`` the tenant files are brought up to date.
:meth:`Projector.wait` gives read-your-writes: a read that waits ends the gathering at once.
It answers ``upm.sql.<tenant>.<principal>`` (:mod:`projections.visibility`: each caller sees the
rows of the changes they may see) and ``upm.qry.<tenant>.evidence.<principal>``
(:mod:`projections.evidence_query`), with the roles of ``access`` (default:
:func:`services.security.access.load`). It never writes to NATS except replies.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import msgspec
import nats.errors
from anyio.abc import TaskGroup
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api

from events.store import EventStore, map_error
from events.subjects import EVENT_ROOT, QUERY_ROOT, SQL_ROOT
from projections import evidence_query
from projections.db import ProjectionDB
from projections.errors import ProjectionError, QueryFailed, QueryTimeout
from projections.evidence_query import Message
from projections.limits import MAX_TIMEOUT_S
from projections.sqlservice import LATEST, SqlError, decode_request, encode_reply, error_reply
from projections.visibility import VisibleSql
from services.common.responder import INTERNAL_ERROR, INTERNAL_ERROR_TEXT
from services.security import access as access_rules

Record = tuple[int, bytes]
Answer = Callable[[Msg], Awaitable[list[Message]]]
SQL_INTERNAL_ERROR = encode_reply(SqlError(error=INTERNAL_ERROR_TEXT, kind="failed", rule="internal"))
log = logging.getLogger("upm.projector")
PENDING_MSGS = 1_000_000
PENDING_BYTES = 512 * 1024 * 1024
IDLE_FLUSH_S = 0.05
LINGER_S = 0.5
"""How long the writer gathers records before a batch: a batch costs about the same whatever its size
(DuckDB plans each of its statements, ~40 ms in all on the reference machine), so 4-record batches
cost ~15 ms of CPU per record and 256-record ones ~0.4 ms (bench/RESULTS.md). Nothing waits on it
but the projections' freshness: a read that asks for a position (``after_seq``) ends it at once."""
LINGER_RECORDS = 1_000
"""Records that end the gathering early (more gain little: the per-record cost dominates by then)."""


class Projector:
    """Keeps the projection folder ``db_path`` current; with ``serve_sql``, answers SQL and evidence queries."""

    _arrived: anyio.Event  # a record was buffered (created in run(): events need the event loop)
    _drained: anyio.Event  # the writer took a batch out of the buffer

    def __init__(
        self, nc: NATS, db_path: Path | str, *, batch_max: int = 20_000, serve_sql: bool = True, sql_workers: int = 4,
        access: access_rules.Access | None = None, linger_s: float = LINGER_S,
    ) -> None:
        self.nc = nc
        self.access = access_rules.load() if access is None else access
        self.store = EventStore(nc)
        self.path = Path(db_path)
        self.batch_max = batch_max
        self.linger_s = linger_s
        self.serve_sql = serve_sql
        self.position = 0
        self.batches = 0
        self._db: ProjectionDB | None = None
        self.sql: VisibleSql | None = None
        self._advanced: anyio.Event | None = None
        self._buffer: list[Record] = []
        self._readers = 0  # reads waiting for a position (they end the writer's gathering)
        self._queries = anyio.CapacityLimiter(sql_workers)

    async def run(self, *, ready: anyio.Event | None = None) -> None:
        """Follow the log and serve queries until cancelled."""
        db = self._db = await anyio.to_thread.run_sync(ProjectionDB, self.path)
        self.sql = VisibleSql(db, self.access)
        self.position = db.resume_position()
        self._advanced = anyio.Event()
        self._arrived = anyio.Event()
        self._drained = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                sub = await self._subscribe()
                tg.start_soon(self._write, db)
                queries = []
                if self.serve_sql:
                    queries = [await self.nc.subscribe(f"{SQL_ROOT}.*.*"),
                               await self.nc.subscribe(f"{QUERY_ROOT}.*.{evidence_query.VERB}.*")]
                    tg.start_soon(self._serve, queries[0], self._answer, SQL_INTERNAL_ERROR, tg)
                    tg.start_soon(self._serve, queries[1], self._answer_evidence, INTERNAL_ERROR, tg)
                if ready is not None:
                    ready.set()
                try:
                    await anyio.sleep_forever()
                finally:
                    with anyio.CancelScope(shield=True):
                        for s in (sub, *queries):
                            await s.unsubscribe()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(db.close)
            self._db = self.sql = None

    async def wait(self, seq: int, within: float = 10.0) -> None:
        """Return once every event up to stream sequence ``seq`` is in DuckDB (read-your-writes)."""
        if self.position >= seq:
            return
        self._readers += 1
        if self._advanced is not None:  # running: end the writer's gathering, somebody is waiting
            self._arrived.set()
        try:
            with anyio.fail_after(within):
                while self.position < seq:
                    if self._advanced is None:
                        await anyio.sleep(0.01)
                    else:
                        await self._advanced.wait()
        except TimeoutError as exc:
            raise QueryTimeout(
                f"the projector is at sequence {self.position}, not yet {seq}, after {within:g}s; "
                "it may be far behind (see `upm status`) — retry later"
            ) from exc
        finally:
            self._readers -= 1

    async def _subscribe(self) -> Subscription:
        js = self.nc.jetstream()
        config = api.ConsumerConfig(opt_start_seq=self.position + 1)
        try:
            sub: Subscription = await js.subscribe(
                f"{EVENT_ROOT}.>", ordered_consumer=True, deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                config=config, cb=self._on_event, pending_msgs_limit=PENDING_MSGS, pending_bytes_limit=PENDING_BYTES,
            )
        except nats.errors.Error as exc:
            raise map_error(exc, subject=f"{EVENT_ROOT}.>") from exc
        return sub

    async def _on_event(self, msg: Msg) -> None:
        """The subscription's callback (ordered, one at a time): buffer, or wait while the buffer is full."""
        while len(self._buffer) >= self.batch_max * 4:
            await self._drained.wait()
        self._buffer.append((msg.metadata.sequence.stream, msg.data))
        self._arrived.set()

    async def _write(self, db: ProjectionDB) -> None:
        while True:
            await self._arrived.wait()
            await self._gather()
            self._arrived = anyio.Event()
            if not self._buffer:  # woken by a read that waits for what has not arrived yet
                continue
            batch, self._buffer = self._buffer[: self.batch_max], self._buffer[self.batch_max :]
            drained, self._drained = self._drained, anyio.Event()
            drained.set()
            self.position = await anyio.to_thread.run_sync(db.ingest, batch)
            self.batches += 1
            advanced, self._advanced = self._advanced, anyio.Event()
            if advanced is not None:
                advanced.set()
            if self._buffer:  # what came in meanwhile starts the next gathering
                self._arrived.set()
                continue
            with anyio.move_on_after(IDLE_FLUSH_S):
                await self._arrived.wait()
            if not self._arrived.is_set():
                await anyio.to_thread.run_sync(db.flush_idle)

    async def _gather(self) -> None:
        """Let records accumulate for up to ``linger_s``, unless enough are in or a read waits."""
        with anyio.move_on_after(self.linger_s):
            while len(self._buffer) < LINGER_RECORDS and not self._readers:
                self._arrived = anyio.Event()
                await self._arrived.wait()

    async def _serve(self, sub: Subscription, answer: Answer, failed: bytes, tg: TaskGroup) -> None:
        async for msg in sub.messages:
            if self.access.caller(msg.subject, msg.reply) is not None:  # the caller's own inbox only
                tg.start_soon(self._respond, msg, answer, failed)

    async def _respond(self, msg: Msg, answer: Answer, failed: bytes) -> None:
        """Answer one request; an unexpected failure is logged and answered with ``failed``, and
        never ends the projector (see :mod:`services.common.responder`)."""
        try:
            replies = await answer(msg)
        except Exception:
            log.exception("the answer to %s failed unexpectedly; answered with a generic error", msg.subject)
            replies = [(failed, {})]
        await self._reply(msg, replies)

    async def _answer(self, msg: Msg) -> list[Message]:
        """One SQL request: ``upm.sql.<tenant>.<principal>``."""
        _, _, tenant, principal = msg.subject.split(".")
        try:
            request = decode_request(msg.data)
            if request.after_seq:
                seq = await self.store.position() if request.after_seq == LATEST else request.after_seq
                await self.wait(seq, within=min(max(request.timeout_s, 0.01), MAX_TIMEOUT_S))
            sql = self.sql
            assert sql is not None
            async with self._queries:
                result = await anyio.to_thread.run_sync(sql.answer, tenant, principal, request)
            reply: bytes = encode_reply(msgspec.structs.replace(result, position=self.position))
            if len(reply) > self.nc.max_payload:  # it could not be sent: the asker would wait for nothing
                raise QueryFailed(f"the result is {len(reply):,} bytes, over the bus's {self.nc.max_payload:,}-byte "
                                  f"message limit ({len(result.rows)} rows): select fewer rows (LIMIT, --max-rows) "
                                  "or fewer or shorter columns")
        except ProjectionError as exc:
            reply = encode_reply(error_reply(exc))
        return [(reply, {})]

    async def _answer_evidence(self, msg: Msg) -> list[Message]:
        """One evidence request: ``upm.qry.<tenant>.evidence.<principal>``."""
        return await evidence_query.answer(self.store, self.access, msg.subject, msg.data,
                                           max_payload=self.nc.max_payload)

    async def _reply(self, msg: Msg, replies: list[tuple[bytes, dict[str, str]]]) -> None:
        try:
            for data, headers in replies:
                await self.nc.publish(msg.reply, data, headers=headers or None)
        except nats.errors.Error:
            return  # the asker is gone (timed out or disconnected): nobody to tell
