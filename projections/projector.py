"""The projector: follows ``UPM_EVENTS`` into DuckDB and answers ``upm.sql.<tenant>``.

Thin async shell over :class:`projections.db.ProjectionDB`: an ordered consumer from the resume
position + 1 appends to a bounded buffer (its callback waits while the buffer is full, which holds
back flow control, so the server slows down); the writer takes whatever has arrived (up to
``batch_max``) and ingests it in a worker thread, so batches grow with the load. When nothing
arrives for ``IDLE_FLUSH_S`` the tenant files are brought up to date.
:meth:`Projector.wait` gives read-your-writes. It never writes to NATS except SQL replies.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api

from events.store import map_error
from events.subjects import EVENT_ROOT, SQL_ROOT
from projections.db import ALL_TENANTS, ProjectionDB
from projections.errors import ProjectionError, QueryTimeout
from projections.sqlservice import SqlRequest, encode_reply, error_reply, run_query

Record = tuple[int, bytes]
PENDING_MSGS = 1_000_000
PENDING_BYTES = 512 * 1024 * 1024
IDLE_FLUSH_S = 0.05
_request = msgspec.json.Decoder(SqlRequest)


class Projector:
    """Keeps the projection folder ``db_path`` current and serves SQL on ``upm.sql.*``."""

    _arrived: anyio.Event  # a record was buffered (created in run(): events need the event loop)
    _drained: anyio.Event  # the writer took a batch out of the buffer

    def __init__(
        self, nc: NATS, db_path: Path | str, *, batch_max: int = 20_000, serve_sql: bool = True, sql_workers: int = 4
    ) -> None:
        self.nc = nc
        self.path = Path(db_path)
        self.batch_max = batch_max
        self.serve_sql = serve_sql
        self.position = 0
        self.batches = 0
        self._db: ProjectionDB | None = None
        self._advanced: anyio.Event | None = None
        self._buffer: list[Record] = []
        self._queries = anyio.CapacityLimiter(sql_workers)

    async def run(self, *, ready: anyio.Event | None = None) -> None:
        """Follow the log and serve SQL until cancelled."""
        db = self._db = await anyio.to_thread.run_sync(ProjectionDB, self.path)
        self.position = db.resume_position()
        self._advanced = anyio.Event()
        self._arrived = anyio.Event()
        self._drained = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                sub = await self._subscribe()
                tg.start_soon(self._write, db)
                if self.serve_sql:
                    sql = await self.nc.subscribe(f"{SQL_ROOT}.*")
                    tg.start_soon(self._serve, sql, tg)
                if ready is not None:
                    ready.set()
                try:
                    await anyio.sleep_forever()
                finally:
                    with anyio.CancelScope(shield=True):
                        await sub.unsubscribe()
                        if self.serve_sql:
                            await sql.unsubscribe()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(db.close)
            self._db = None

    async def wait(self, seq: int, within: float = 10.0) -> None:
        """Return once every event up to stream sequence ``seq`` is in DuckDB (read-your-writes)."""
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
            self._arrived = anyio.Event()
            while self._buffer:
                batch, self._buffer = self._buffer[: self.batch_max], self._buffer[self.batch_max :]
                drained, self._drained = self._drained, anyio.Event()
                drained.set()
                self.position = await anyio.to_thread.run_sync(db.ingest, batch)
                self.batches += 1
                advanced, self._advanced = self._advanced, anyio.Event()
                if advanced is not None:
                    advanced.set()
            with anyio.move_on_after(IDLE_FLUSH_S):
                await self._arrived.wait()
            if not self._arrived.is_set():
                await anyio.to_thread.run_sync(db.flush_idle)

    async def _serve(self, sub: Subscription, tg: anyio.abc.TaskGroup) -> None:
        async for msg in sub.messages:
            tg.start_soon(self._answer, msg)

    async def _answer(self, msg: Msg) -> None:
        tenant = msg.subject.split(".", 2)[2]
        try:
            request = _request.decode(msg.data)
            if request.after_seq:
                await self.wait(request.after_seq, within=request.timeout_s)
            db = self._db
            assert db is not None
            if tenant != ALL_TENANTS:
                await anyio.to_thread.run_sync(db.flush, tenant)
            con = await anyio.to_thread.run_sync(db.tenant, tenant)
            async with self._queries:
                result = await anyio.to_thread.run_sync(
                    lambda: run_query(con, request.sql, max_rows=request.max_rows, timeout_s=request.timeout_s)
                )
            reply: bytes = encode_reply(msgspec.structs.replace(result, position=self.position))
        except (ProjectionError, msgspec.ValidationError, msgspec.DecodeError) as exc:
            reply = encode_reply(error_reply(exc))
        if msg.reply:
            try:
                await msg.respond(reply)
            except nats.errors.Error:
                return  # the asker is gone (timed out or disconnected): nobody to tell
