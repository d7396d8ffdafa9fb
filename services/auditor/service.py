"""The auditor service: re-verifies a finished change's hash chain and closes it; its witness
keeps the Merkle tree over every event, signs log heads and publishes evidence packs.

A terminal event (the lifecycle's ``ended`` status: rejected, denied, cancelled, succeeded,
rolled back, failed, stalled) → the whole change is re-read from the stream, its chain verified from the stored
bytes, and ``change.closed`` (outcome, reason, event count, chain head) or ``chain.broken``
(naming the first bad event) is appended.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import msgspec
from anyio.abc import Process
from nats.aio.client import Client as NATS

from events import chain, merkle, signing
from events.desired import EMPTY, Inventory, evolve
from events.errors import ChainBroken, ConcurrencyConflict, StoreTimeout
from events.ids import derive_id
from events.lifecycle import ChangeState, fold
from events.model import (
    ApprovalDenied,
    ChainVerificationFailed,
    ChangeClosed,
    ChangeStalled,
    Event,
    EvidencePublished,
    ExecutionCancelled,
    IntentSubmitted,
    LogHeadSigned,
    Payload,
    PlanCompiled,
    PlanRecompiled,
    PlanRejected,
    PreflightFailed,
    RollbackFailed,
    RollbackPlanned,
    VerificationFailed,
    VerificationPassed,
    decode_event,
    type_of,
)
from events.store import ChangeLog, EventStore, StoredEvent, new_event
from events.subjects import EVENT_ROOT, LOG_HEADS_CHANGE_ID, STREAM, SYSTEM_TENANT
from services.auditor import evidence, heads, merkle_store
from services.auditor.evidence import EVIDENCE_BUCKET, LogHead
from services.auditor.watchdog import Deadlines, Watchdog
from services.common import cluster, retry
from services.common.runtime import MAX_CONFLICT_RETRIES, Context, Handler, ServiceSpec, read_through

NAME = "auditor"
log = logging.getLogger("upm.auditor")
RECOMPILE_TIMEOUT_S = 30.0

CLOSING_TYPES: tuple[type[Payload], ...] = (
    ChangeStalled,
    PlanRejected,
    PreflightFailed,
    ApprovalDenied,
    ExecutionCancelled,
    VerificationPassed,
    VerificationFailed,
    RollbackPlanned,
    RollbackFailed,
)


def decide(stored: Sequence[StoredEvent], event: Event) -> list[Payload]:
    """Close the change once its lifecycle has ended (:mod:`events.lifecycle`), after re-verifying
    its chain from the stored bytes."""
    state = fold(s.event for s in stored)
    if state.status != "ended" or state.outcome is None:
        return []
    try:
        head = chain.verify(event.change_id, [(s.seq, s.data) for s in stored])
    except ChainBroken as broken:
        return [ChainVerificationFailed(event_id=broken.event_id, seq=broken.seq, reason=broken.reason)]
    return [ChangeClosed(outcome=state.outcome, reason=state.reason, events=len(stored), chain_head=head)]


class Recompiler:
    """The determinism witness: one long-lived compiler process with its own ``PYTHONHASHSEED``
    (started on first use, restarted after a failure) that compiles intents again."""

    def __init__(self) -> None:
        self.seed = int.from_bytes(os.urandom(4), "big") % 4_000_000_000
        self._process: Process | None = None
        self._buffer = b""
        self._lock = anyio.Lock()

    async def check(self, events: Sequence[Event]) -> PlanRecompiled | None:
        """Compile the change's intent again; ``None`` when nothing was compiled."""
        intent = next((e for e in events if isinstance(e.payload, IntentSubmitted)), None)
        compiled = [e.payload for e in events if isinstance(e.payload, PlanCompiled)]
        if intent is None or not compiled or not isinstance(intent.payload, IntentSubmitted):
            return None
        request = msgspec.json.encode(intent.payload.compile_fields(intent.tenant)) + b"\n"
        async with self._lock:
            try:
                with anyio.fail_after(RECOMPILE_TIMEOUT_S):
                    answer = msgspec.json.decode(await self._ask(request))
            except (OSError, TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, msgspec.DecodeError) as exc:
                await self.close()
                answer = {"error": f"the witness compiler failed: {exc!r}; it is restarted on the next change"}
        original = compiled[0].plan.hash
        again = str(answer.get("hash", ""))
        return PlanRecompiled(plan_hash=original, recompiled_hash=again, matches=again == original,
                              hashseed=self.seed, error=str(answer.get("error", "")))

    async def _ask(self, request: bytes) -> bytes:
        if self._process is None:
            self._process = await anyio.open_process(
                [sys.executable, "-m", "services.planner.recompile"],
                env={**os.environ, "PYTHONHASHSEED": str(self.seed)},
            )
            self._buffer = b""
        process = self._process
        assert process.stdin is not None and process.stdout is not None
        await process.stdin.send(request)
        while b"\n" not in self._buffer:
            self._buffer += await process.stdout.receive()
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    async def close(self) -> None:
        if self._process is not None:
            with anyio.CancelScope(shield=True):
                self._process.kill()
                await self._process.wait()
            self._process = None


def make_handler(recompiler: Recompiler) -> Handler:
    """Close the change, then witness its compile: also when deciding again finds the change closed by
    this delivery already (another writer came in between the two appends) and its witness missing."""

    async def handle(ctx: Context, history: list[Event], event: Event) -> None:
        payloads = decide(ctx.log.events, event)
        if payloads:
            await ctx.emit(*payloads)
        stored = ctx.log.ids()
        closed, witnessed_id = (derive_id(event.id, type_of(cls)) for cls in (ChangeClosed, PlanRecompiled))
        if closed in stored and witnessed_id not in stored:
            witnessed = await recompiler.check([s.event for s in ctx.log.events])
            if witnessed is not None:
                await ctx.emit(witnessed)

    return handle


def spec() -> ServiceSpec:
    consumes = tuple(sorted(type_of(cls) for cls in CLOSING_TYPES))
    return ServiceSpec(name=NAME, consumes=consumes, handle=make_handler(Recompiler()))


# -- the witness: Merkle tree over every event, signed log heads, evidence packs ----------

HEAD_INTERVAL_S = 60.0
PACKS_IN_FLIGHT = 8  # packs built and stored at once (each waits on the object store and two appends)


def permalink(tenant: str, change_id: str) -> str:
    """Where a change's latest evidence pack resolves (``upm evidence``, ``upm serve``)."""
    return f"upm://evidence/{tenant}/{change_id}"


def object_name(tenant: str, change_id: str, last_seq: int) -> str:
    """The object-store name of the pack covering the change up to stream sequence ``last_seq``."""
    return f"{tenant}/{change_id}/{last_seq}.tar"


def pack_trigger(payload: Payload, closed: bool) -> bool:
    """Whether this event (re)opens a change's pack: its close, or a rollback ending after it."""
    match payload:
        case ChangeClosed():
            return True
        case VerificationPassed(scope="rollback") | VerificationFailed(scope="rollback") | RollbackFailed():
            return closed
        case _:
            return False


def data_folder(explicit: Path | str | None = None) -> Path:
    """The data folder holding the signing key: the parameter, else ``UPM_DATA``, else ``./.upm``."""
    return Path(explicit or os.environ.get("UPM_DATA") or ".upm")


class Waiting(NamedTuple):
    """The event that (re)opened a change's pack, and the desired state as of it."""

    tenant: str
    seq: int
    event_id: str
    desired: Inventory


@dataclass(frozen=True)
class Witnessed:
    """What the responder reads from the auditor's witness: the open changes and the newest head."""

    states: Callable[[], Sequence[ChangeState]]
    head: Callable[[], LogHead | None]
    deadlines: Deadlines
    data_dir: Path


class Witness:
    """The auditor's second task: an ordered follower of the whole stream from sequence 1.

    It runs the stall watchdog (:mod:`services.auditor.watchdog`) over every open change, keeps the
    RFC 6962 tree over every stored event and the desired-state inventory (:mod:`events.desired`,
    whose state as of a pack's last event goes in the pack's ``drift.json``), appends a signed ``log.head`` (tenant
    ``_system``, change ``LOG_HEADS_CHANGE_ID``) every ``interval`` seconds when events arrived
    (each also written to ``<data>/heads/log-heads.jsonl``, outside the stream; on the same interval
    the tree's leaf hashes up to the newest head go to :mod:`services.auditor.merkle_store`, from which a
    restarted witness restores the tree instead of hashing it again), and, once caught up, for
    every closed change without a current pack (in a task of its own, woken by the follower, so
    the follow never waits for packs nor a pack for another): signs a head, builds the pack
    (:func:`services.auditor.evidence.pack_from_log`, pure), stores it in the object store ``UPM_EVIDENCE``
    and appends ``evidence.published`` to the change. Heads and packs carry
    times from the log (the latest covered event), and their ids are derived, so a restarted
    witness re-derives the same records.
    """

    def __init__(self, nc: NATS, data_dir: Path | str | None = None, *, interval: float = HEAD_INTERVAL_S,
                 deadlines: Deadlines | None = None) -> None:
        self.store = EventStore(nc)
        self.watchdog = Watchdog(self.store, deadlines)
        self.data_dir = data_folder(data_dir)
        self.signer = signing.load_or_create(self.data_dir)
        self.interval = interval
        self.tree = merkle.MerkleTree()
        self.seen = 0  # the last stream sequence observed (the tree may be ahead: restored from the data folder)
        self.saved = 0  # leaves of the tree written to the data folder (services/auditor/merkle_store.py)
        self.content_size = 0
        self.head_size = 0
        self.last_ts = ""
        self.closed: set[str] = set()
        self.pending: dict[str, Waiting] = {}  # change → the trigger of the pack it waits for
        self.inventory: Inventory = EMPTY  # the desired state, folded event by event (events/desired.py)
        self.published = 0
        self._heads = ChangeLog(SYSTEM_TENANT, LOG_HEADS_CHANGE_ID)
        self._head: LogHead | None = None
        self._caught_up = False
        self._caught_up_at = 0
        self._objects: Any = None
        self._wake = anyio.Event()  # set when packs are waiting: the publisher's cue
        self._failures: dict[str, int] = {}  # change → transient failures of its pack in a row
        self._signing = anyio.Lock()

    def witnessed(self) -> Witnessed:
        """What the health responder reads from this witness: the open changes and the newest head."""
        return Witnessed(states=lambda: list(self.watchdog.states.values()), head=lambda: self._head,
                                deadlines=self.watchdog.deadlines, data_dir=self.data_dir)

    async def run(self, *, ready: anyio.Event | None = None) -> None:
        """Follow the log, sign heads and run the watchdog until cancelled; each of the three waits
        out NATS being away (:func:`services.common.retry.keep_running`) and resumes where it was."""
        self.tree, found = await anyio.to_thread.run_sync(merkle_store.load, self.data_dir, self.signer)
        self.saved = self.tree.size
        log.log(logging.INFO if self.tree.size else logging.WARNING, "witness: %s", found)
        await retry.keep_running("witness: opening the evidence store", self._open)
        if ready is not None:
            ready.set()
        async with anyio.create_task_group() as tg:
            tg.start_soon(retry.keep_running, "witness: signing log heads", self._tick)
            tg.start_soon(retry.keep_running, "witness: stall watchdog", self._watch)
            tg.start_soon(retry.keep_running, "witness: publishing evidence packs", self._publish_packs)
            await retry.keep_running("witness: following the log", self._follow)

    async def _open(self) -> None:
        js = self.store.js
        self._objects = await cluster.object_store(js, EVIDENCE_BUCKET, "UPM evidence")
        self._caught_up_at = (await js.stream_info(STREAM)).state.last_seq
        self._heads = await self.store.read_tail(SYSTEM_TENANT, LOG_HEADS_CHANGE_ID)

    async def _follow(self) -> None:
        """Every stored event after the last one observed, in order; once caught up, each one that
        leaves packs waiting wakes the publisher (packs are built beside the follow, never in its way)."""
        if self._caught_up_at == 0:
            self._caught_up = True
        async for seq, data in self.store.follow_raw(f"{EVENT_ROOT}.>", self.seen + 1):
            self.observe(seq, data)
            if seq >= self._caught_up_at:
                self._caught_up = True
                if self.pending:
                    self._wake.set()

    async def _publish_packs(self) -> None:
        """Whenever the follower (or the interval) says packs are waiting, start each one not in flight
        yet, oldest trigger first, ``PACKS_IN_FLIGHT`` at a time: a pack waits for no other pack, and
        one that fails transiently is tried again after the retry policy's delay, alone."""
        limiter = anyio.CapacityLimiter(PACKS_IN_FLIGHT)
        in_flight: set[str] = set()

        async def one(change_id: str, waiting: Waiting) -> None:
            try:
                async with limiter:
                    await self._publish_one(change_id, waiting)
            finally:
                in_flight.discard(change_id)
                if change_id in self.pending:  # failed, or a later trigger (a rollback after the close) waits
                    self._wake.set()

        async with anyio.create_task_group() as tg:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                for change_id, waiting in sorted(self.pending.items(), key=lambda kv: kv[1].seq):
                    if change_id not in in_flight:
                        in_flight.add(change_id)
                        tg.start_soon(one, change_id, waiting)

    async def _publish_one(self, change_id: str, waiting: Waiting) -> None:
        """Publish one pack; a transient failure is logged and waited out (the policy's delay) with the
        pack still pending."""
        try:
            await self.publish(change_id, waiting)
        except Exception as exc:
            if not retry.is_transient(exc):
                raise
            attempt = self._failures[change_id] = self._failures.get(change_id, 0) + 1
            wait = retry.DEFAULT.delay(attempt, random.random())
            log.warning("witness: the pack of %s/%s: %s (%s); trying again in %.1fs (attempt %d)", waiting.tenant,
                        change_id, exc, type(exc).__name__, wait, attempt)
            await anyio.sleep(wait)
            return
        self._failures.pop(change_id, None)
        if self.pending.get(change_id) == waiting:
            del self.pending[change_id]

    def _grow(self, seq: int, data: bytes) -> None:
        """Append the event's leaf; for an event the restored tree holds already, check it is that leaf."""
        if seq > self.tree.size:
            self.tree.append(data)
            return
        if self.tree.leaves[seq - 1] == merkle.leaf_hash(data):
            return
        log.error("witness: stream sequence %d is not the event the stored Merkle tree holds there: the stream was "
                  "rewritten (run `upm audit verify`); the tree is rebuilt from the log from there on", seq)
        self.tree.truncate(seq - 1)
        self.saved = min(self.saved, seq - 1)
        self.tree.append(data)

    def observe(self, seq: int, data: bytes) -> None:
        """Add one stored event to the tree (or check it against the restored one) and to what is
        pending (pure bookkeeping)."""
        self.seen = seq
        self._grow(seq, data)
        try:
            event = decode_event(data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            self.content_size = seq
            return
        self.watchdog.observe(event)
        self.inventory = evolve(self.inventory, event)
        if isinstance(event.payload, LogHeadSigned):
            self.head_size = max(self.head_size, event.payload.size)
            self._head = LogHead(seq=seq, size=event.payload.size, root=event.payload.root,
                                 signed_at=event.payload.signed_at, key_id=event.payload.key_id,
                                 signature=event.payload.signature)
            return
        self.content_size = seq
        self.last_ts = event.ts
        if isinstance(event.payload, EvidencePublished):
            pending = self.pending.get(event.change_id)
            if pending is not None and pending.seq < seq:
                del self.pending[event.change_id]
            return
        if pack_trigger(event.payload, event.change_id in self.closed):
            self.closed.add(event.change_id)
            self.pending[event.change_id] = Waiting(event.tenant, seq, event.id, self.inventory)

    async def _tick(self) -> None:
        while True:
            await anyio.sleep(self.interval)
            if self._caught_up and self.content_size > self.head_size:
                await self.sign_head()
            await self.keep_tree()
            if self._caught_up and self.pending:
                self._wake.set()  # packs a publisher that lost NATS midway left pending

    async def _watch(self) -> None:
        """The stall watchdog's rounds, once the follower has caught up with the stream."""
        while True:
            await anyio.sleep(self.watchdog.deadlines.check_every_s)
            if self._caught_up:
                await self.watchdog.check()

    async def sign_head(self) -> LogHead:
        """Append a signed head of the tree as it is now (unless one of this size is stored), and keep
        it in the data folder too (:mod:`services.auditor.heads`): a truncated stream cannot take it along.

        Other auditors (replicas) sign heads of the same log: one of the same size has the same id,
        so whichever is stored first stands (a conflict, or "duplicate message id is in process" on
        a cluster, is followed by a re-read, and a head of this size stored by another is this one);
        one of another size is appended after theirs. Conflicts never end the witness: when they go
        on, :class:`StoreTimeout` (transient) makes its loop wait and try again. The interval and the
        publisher sign one at a time."""
        async with self._signing:
            return await self._sign_head()

    async def _sign_head(self) -> LogHead:
        payload = evidence.sign_head(self.signer, self.tree, self.last_ts)
        event = new_event(payload, event_id=derive_id(LOG_HEADS_CHANGE_ID, f"head-{payload.size}"),
                          change_id=LOG_HEADS_CHANGE_ID, tenant=SYSTEM_TENANT, ts=payload.signed_at,
                          actor=NAME, source="api")

        async def attempt(n: int) -> LogHead:
            if n > 1:  # a conflict: another auditor may have stored this very head
                self._heads = await self.store.read_tail(SYSTEM_TENANT, LOG_HEADS_CHANGE_ID)
                same = _same_size_head(self._heads, payload.size)
                if same is not None:
                    return same
            stored = await self.store.append(self._heads, [event])
            seq = stored[0].seq if stored else self._heads.last_seq  # stored before: it is the log's last
            return LogHead(seq=seq, size=payload.size, root=payload.root, signed_at=payload.signed_at,
                           key_id=payload.key_id, signature=payload.signature)

        try:
            head = await retry.on_conflict(attempt, attempts=MAX_CONFLICT_RETRIES)
        except ConcurrencyConflict as exc:
            raise StoreTimeout(f"other auditors kept appending log heads: {MAX_CONFLICT_RETRIES} attempts to append "
                               f"the head of size {payload.size} conflicted; trying again") from exc
        self._heads.trim()  # heads are only appended: keep where to append, not their history
        self.head_size = max(self.head_size, payload.size)
        self._head = head
        await anyio.to_thread.run_sync(heads.append, self.data_dir, head)
        return head

    async def keep_tree(self) -> None:
        """Write the tree's leaves up to the newest head to the data folder (:mod:`services.auditor.merkle_store`),
        on the interval: not in a pack's way (a restart restores it as of the newest head it covers)."""
        head = self._head
        if head is not None and self.saved < head.size <= self.tree.size:
            leaves = self.tree.leaf_bytes(self.saved, head.size)
            await anyio.to_thread.run_sync(merkle_store.save, self.data_dir, self.saved, leaves)
            self.saved = head.size

    async def publish(self, change_id: str, waiting: Waiting) -> None:
        tenant, trigger_seq, trigger_id = waiting.tenant, waiting.seq, waiting.event_id
        async with self._signing:  # packs in flight share one head that covers them all
            head = self._head
            if head is None or head.size < trigger_seq:
                head = await self._sign_head()
        log = await read_through(self.store, tenant, change_id, trigger_seq)
        records = [(s.seq, s.data) for s in log.events if s.seq <= trigger_seq]
        pack = evidence.pack_from_log(records, self.tree, head, self.signer, waiting.desired)
        name = object_name(tenant, change_id, trigger_seq)
        await self._objects.put(name, pack)
        files = evidence.read_pack(pack)
        origin = log.events[0].event
        trigger = next(s.event for s in log.events if s.seq == trigger_seq)
        payload = EvidencePublished(
            permalink=permalink(tenant, change_id), object_name=name,
            manifest_sha256=hashlib.sha256(files[evidence.MANIFEST]).hexdigest(),
            signature=files[evidence.SIGNATURE].decode().strip(), key_id=self.signer.key_id,
        )
        event = new_event(payload, event_id=derive_id(trigger_id, "evidence.published"), change_id=change_id,
                          tenant=tenant, ts=trigger.ts, actor=NAME, source=origin.source,
                          visibility=origin.visibility)
        for _ in range(MAX_CONFLICT_RETRIES):
            try:
                await self.store.append(log, [event])
                break
            except ConcurrencyConflict:
                log = await self.store.read(tenant, change_id)
        self.published += 1


def _same_size_head(heads: ChangeLog, size: int) -> LogHead | None:
    """The last stored head, if it covers exactly ``size`` events (then it is the head of this tree)."""
    last = heads.events[-1] if heads.events else None
    payload = last.event.payload if last is not None else None
    if last is None or not isinstance(payload, LogHeadSigned) or payload.size != size:
        return None
    return LogHead(seq=last.seq, size=payload.size, root=payload.root, signed_at=payload.signed_at,
                   key_id=payload.key_id, signature=payload.signature)
