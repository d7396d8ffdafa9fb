"""The auditor service: re-verifies a finished change's hash chain and closes it; its witness
keeps the Merkle tree over every event, signs log heads and publishes evidence packs.

A terminal event (see :func:`outcome_of`: rejected, denied, cancelled, succeeded, rolled back,
failed) → the whole change is re-read from the stream, its chain verified from the stored
bytes, and ``change.closed`` (outcome, reason, event count, chain head) or ``chain.broken``
(naming the first bad event) is appended.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats.js.errors
from anyio.abc import Process
from nats.aio.client import Client as NATS
from nats.js import api

from events import chain, merkle, signing
from events.codec import decode_event
from events.errors import ChainBroken, ConcurrencyConflict
from events.ids import derive_id
from events.model import (
    ApprovalDenied,
    ChainVerificationFailed,
    ChangeClosed,
    Event,
    EvidencePublished,
    ExecutionCancelled,
    IntentSubmitted,
    LogHeadSigned,
    Outcome,
    Payload,
    PlanCompiled,
    PlanRecompiled,
    PlanRejected,
    PreflightFailed,
    RollbackFailed,
    RollbackPlanned,
    VerificationFailed,
    VerificationPassed,
    type_of,
)
from events.store import ChangeLog, EventStore, StoredEvent, new_event
from events.subjects import EVENT_ROOT, LOG_HEADS_CHANGE_ID, STREAM, SYSTEM_TENANT
from projections import evidence
from projections.evidence import EVIDENCE_BUCKET, LogHead
from services.runtime import MAX_CONFLICT_RETRIES, Context, Handler, ServiceSpec

NAME = "auditor"
RECOMPILE_TIMEOUT_S = 30.0

CLOSING_TYPES: tuple[type[Payload], ...] = (
    PlanRejected,
    PreflightFailed,
    ApprovalDenied,
    ExecutionCancelled,
    VerificationPassed,
    VerificationFailed,
    RollbackPlanned,
    RollbackFailed,
)


def outcome_of(payload: Payload) -> Outcome | None:
    """The outcome a terminal event closes its change with; ``None`` when the change goes on.

    A failed verification or execution is not terminal by itself: the verifier always follows it
    with ``rollback.planned``. A plan with nothing to undo closes the change as failed; otherwise
    the rollback (automatic, or an operator's) ends it as ``rolled_back`` once its restored state
    is verified, or ``failed``.
    """
    match payload:
        case PlanRejected() | PreflightFailed():
            return "rejected"
        case ApprovalDenied():
            return "denied"
        case ExecutionCancelled():
            return "cancelled"
        case VerificationPassed(scope="change"):
            return "succeeded"
        case VerificationPassed(scope="rollback"):
            return "rolled_back"
        case VerificationFailed(scope="rollback") | RollbackFailed():
            return "failed"
        case RollbackPlanned(commands=()):
            return "failed"
        case _:
            return None


def reason_of(payload: Payload, stored: Sequence[StoredEvent]) -> str:
    """Why the change ended, in one line (empty for a success)."""
    match payload:
        case PlanRejected(reason=reason) | RollbackPlanned(reason=reason):
            return reason
        case RollbackFailed(reason=reason):
            return f"rollback failed: {reason}"
        case PreflightFailed(reasons=reasons):
            return "; ".join(reasons)
        case ApprovalDenied(approver=who, reason=reason) | ExecutionCancelled(by=who, reason=reason):
            return f"{type_of(payload)} by {who}" + (f": {reason}" if reason else "")
        case VerificationFailed(diff=diff, checks=checks):
            diffed = {d.resource for d in diff}
            return "; ".join([f"{d.resource} {d.field}: {d.desired!r} → {d.observed!r}" for d in diff]
                             + [c.detail for c in checks if not c.ok and c.target not in diffed])
        case VerificationPassed(scope="rollback"):
            planned = [s.event.payload for s in stored if isinstance(s.event.payload, RollbackPlanned)]
            return f"rolled back after: {planned[-1].reason}" if planned else "rolled back"
        case _:
            return ""


def decide(stored: Sequence[StoredEvent], event: Event) -> list[Payload]:
    """Close the change on a terminal event, after re-verifying its chain from stored bytes."""
    outcome = outcome_of(event.payload)
    if outcome is None or any(isinstance(s.event.payload, ChangeClosed) for s in stored):
        return []
    try:
        head = chain.verify(event.change_id, [(s.seq, s.data) for s in stored])
    except ChainBroken as broken:
        return [ChainVerificationFailed(event_id=broken.event_id, seq=broken.seq, reason=broken.reason)]
    reason = reason_of(event.payload, stored)
    return [ChangeClosed(outcome=outcome, reason=reason, events=len(stored), chain_head=head)]


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
    async def handle(ctx: Context, history: list[Event], event: Event) -> None:
        payloads = decide(ctx.log.events, event)
        if payloads:
            await ctx.emit(*payloads)
        if any(isinstance(p, ChangeClosed) for p in payloads):
            witnessed = await recompiler.check([s.event for s in ctx.log.events])
            if witnessed is not None:
                await ctx.emit(witnessed)

    return handle


def spec() -> ServiceSpec:
    consumes = tuple(sorted(type_of(cls) for cls in CLOSING_TYPES))
    return ServiceSpec(name=NAME, consumes=consumes, handle=make_handler(Recompiler()))


# -- the witness: Merkle tree over every event, signed log heads, evidence packs ----------

HEAD_INTERVAL_S = 60.0


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


class Witness:
    """The auditor's second task: an ordered follower of the whole stream from sequence 1.

    It keeps the RFC 6962 tree over every stored event, appends a signed ``log.head`` (tenant
    ``_system``, change ``LOG_HEADS_CHANGE_ID``) every ``interval`` seconds when events arrived,
    and, once caught up, for every closed change without a current pack: signs a head, builds
    the pack (:func:`projections.evidence.pack_from_log`, pure), stores it in the object store
    ``UPM_EVIDENCE`` and appends ``evidence.published`` to the change. Heads and packs carry
    times from the log (the latest covered event), and their ids are derived, so a restarted
    witness re-derives the same records.
    """

    def __init__(self, nc: NATS, data_dir: Path | str | None = None, *, interval: float = HEAD_INTERVAL_S) -> None:
        self.store = EventStore(nc)
        self.signer = signing.load_or_create(data_folder(data_dir))
        self.interval = interval
        self.tree = merkle.MerkleTree()
        self.content_size = 0
        self.head_size = 0
        self.last_ts = ""
        self.closed: set[str] = set()
        self.pending: dict[str, tuple[str, int, str]] = {}  # change → (tenant, trigger seq, trigger id)
        self.published = 0
        self._heads = ChangeLog(SYSTEM_TENANT, LOG_HEADS_CHANGE_ID)
        self._head: LogHead | None = None
        self._caught_up = False
        self._objects: Any = None

    async def run(self, *, ready: anyio.Event | None = None) -> None:
        js = self.store.js
        try:
            self._objects = await js.object_store(EVIDENCE_BUCKET)
        except nats.js.errors.BucketNotFoundError:
            self._objects = await js.create_object_store(
                EVIDENCE_BUCKET, config=api.ObjectStoreConfig(storage=api.StorageType.FILE, description="UPM evidence")
            )
        caught_up_at = (await js.stream_info(STREAM)).state.last_seq
        self._heads = await self.store.read_tail(SYSTEM_TENANT, LOG_HEADS_CHANGE_ID)
        sub = await js.subscribe(f"{EVENT_ROOT}.>", ordered_consumer=True, deliver_policy=api.DeliverPolicy.ALL)
        if ready is not None:
            ready.set()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._tick)
                if caught_up_at == 0:
                    self._caught_up = True
                async for msg in sub.messages:
                    seq = msg.metadata.sequence.stream
                    self.observe(seq, msg.data)
                    if seq >= caught_up_at:
                        self._caught_up = True
                        await self.flush()
        finally:
            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()

    def observe(self, seq: int, data: bytes) -> None:
        """Add one stored event to the tree and to what is pending (pure bookkeeping)."""
        self.tree.append(data)
        try:
            event = decode_event(data)
        except (msgspec.ValidationError, msgspec.DecodeError):
            self.content_size = self.tree.size
            return
        if isinstance(event.payload, LogHeadSigned):
            self.head_size = max(self.head_size, event.payload.size)
            self._head = LogHead(seq=seq, size=event.payload.size, root=event.payload.root,
                                 signed_at=event.payload.signed_at, key_id=event.payload.key_id,
                                 signature=event.payload.signature)
            return
        self.content_size = self.tree.size
        self.last_ts = event.ts
        if isinstance(event.payload, EvidencePublished):
            pending = self.pending.get(event.change_id)
            if pending is not None and pending[1] < seq:
                del self.pending[event.change_id]
            return
        if pack_trigger(event.payload, event.change_id in self.closed):
            self.closed.add(event.change_id)
            self.pending[event.change_id] = (event.tenant, seq, event.id)

    async def _tick(self) -> None:
        while True:
            await anyio.sleep(self.interval)
            if self._caught_up and self.content_size > self.head_size:
                await self.sign_head()

    async def sign_head(self) -> LogHead:
        """Append a signed head of the tree as it is now (unless one of this size is stored)."""
        payload = evidence.sign_head(self.signer, self.tree, self.last_ts)
        event = new_event(payload, event_id=derive_id(LOG_HEADS_CHANGE_ID, f"head-{payload.size}"),
                          change_id=LOG_HEADS_CHANGE_ID, tenant=SYSTEM_TENANT, ts=payload.signed_at,
                          actor=NAME, source="api")
        for _ in range(MAX_CONFLICT_RETRIES):
            try:
                stored = await self.store.append(self._heads, [event])
                break
            except ConcurrencyConflict:
                self._heads = await self.store.read_tail(SYSTEM_TENANT, LOG_HEADS_CHANGE_ID)
        else:
            raise ConcurrencyConflict(LOG_HEADS_CHANGE_ID, self._heads.last_seq, "too many concurrent head writers")
        seq = stored[0].seq if stored else self._heads.last_seq  # stored before: it is the log's last
        self._heads.trim()  # heads are only appended: keep where to append, not their history
        self.head_size = max(self.head_size, payload.size)
        self._head = LogHead(seq=seq, size=payload.size, root=payload.root, signed_at=payload.signed_at,
                             key_id=payload.key_id, signature=payload.signature)
        return self._head

    async def flush(self) -> None:
        """Publish a pack for every change waiting for one, oldest trigger first."""
        for change_id, (tenant, trigger_seq, trigger_id) in sorted(self.pending.items(), key=lambda kv: kv[1][1]):
            await self.publish(tenant, change_id, trigger_seq, trigger_id)
            self.pending.pop(change_id, None)

    async def publish(self, tenant: str, change_id: str, trigger_seq: int, trigger_id: str) -> None:
        head = self._head
        if head is None or head.size < trigger_seq:
            head = await self.sign_head()
        log = await self.store.read(tenant, change_id)
        records = [(s.seq, s.data) for s in log.events if s.seq <= trigger_seq]
        pack = evidence.pack_from_log(records, self.tree, head, self.signer)
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
