"""The pre-flight service shell: the ``plan.compiled`` handler, the approve/deny command
subscriber and the release loop. Every decision is the pure core's (:mod:`.core`); this module
reads, runs read-backs, evaluates packs, appends and replies.

* :meth:`Preflight.handle` (the :class:`ServiceSpec` handler) — checks, risk, policy, decision;
  records the duration and appends ``slo.breached`` when the rolling P95 crosses its target.
* :meth:`Preflight.serve_commands` — ``upm.cmd.*.approve`` / ``upm.cmd.*.deny`` (queue group
  ``upm-preflight``): validate, decide on the change as stored, append with optimistic
  concurrency (re-read and re-decide on a conflict), reply.
* :meth:`Preflight.release_loop` — every ``release_interval`` (injected clock): scheduled changes
  whose window is open get ``change.approved`` (id derived from the schedule: effectively once).
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from events.commands import ChangeCommand, error_reply, parse_change_command
from events.desired import Inventory
from events.errors import ConcurrencyConflict, InvalidEvent, StoreError
from events.ids import derive_id, new_id
from events.lifecycle import ChangeState, fold, parse_ts
from events.model import (
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    ChangeApproved,
    ChangeScheduled,
    Check,
    Event,
    Payload,
    PlanCompiled,
    PreflightFailed,
    PreflightPassed,
    SloBreached,
    decode_event,
)
from events.store import ChangeLog, EventStore, new_event
from events.subjects import command_filter, parse_caller_subject, type_filter
from services.common import retry
from services.common.inventory import Follower, InventoryBehind
from services.common.responder import reply_to
from services.common.runtime import MAX_CONFLICT_RETRIES, Context, ServiceSpec
from services.common.runtime import Runner as RuntimeRunner
from services.guard import worker
from services.preflight import verdict as verdicts
from services.preflight.checks import Runner, guarded_read, run_checks
from services.preflight.config import PreflightConfig, load_config
from services.preflight.core import (
    Assessment,
    decide_command,
    decide_pending,
    decide_preflight,
    decide_release,
    iso,
)
from services.preflight.errors import ApprovalRefused, PolicyEvaluationError, PolicyLoadError
from services.preflight.risk import Subject, score
from services.security.access import Access, Forbidden, refusal
from services.security.access import load as load_access
from services.security.scope import Scope, load_scope
from services.verifier.inventory import from_log

log = logging.getLogger("upm.preflight")
NAME = "preflight"
QUEUE = "upm-preflight"
Clock = Callable[[], datetime]
INVENTORY_WAIT_S = 10.0
"""How long a decision waits for the inventory follower to reach the plan being decided."""
_reply = msgspec.json.Encoder()


def utc_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class SloTracker:
    """Rolling pre-flight durations; reports the P95 when it crosses above the target."""

    target_ms: float
    window: int
    min_samples: int
    samples: deque[float] = field(default_factory=deque)
    breached: bool = False

    def observe(self, duration_ms: float) -> float | None:
        self.samples.append(duration_ms)
        while len(self.samples) > self.window:
            self.samples.popleft()
        if len(self.samples) < self.min_samples:
            return None
        ordered = sorted(self.samples)
        p95 = ordered[max(0, -(-95 * len(ordered) // 100) - 1)]
        was, self.breached = self.breached, p95 > self.target_ms
        return p95 if self.breached and not was else None


def assess(subject: Subject, checks: tuple[Check, ...], config: PreflightConfig, now: datetime,
           read_ms: float = 0.0) -> list[Payload]:
    """The synchronous decision after the read-backs: risk, policy, lane (what the bench measures)."""
    started = time.perf_counter()
    plan = subject.plan
    if not all(c.ok for c in checks):
        return decide_preflight(Assessment(plan=plan, environment=subject.environment, checks=checks,
                                           duration_ms=round(read_ms, 3)), config, now)
    risk = score(subject, config, now)
    try:
        packs = verdicts.packs_for(config, subject.tenant)
        document = verdicts.policy_input(subject, risk, config, now)
        verdict, records = verdicts.evaluate(packs, document, plan.hash, risk)
    except (PolicyLoadError, PolicyEvaluationError) as err:
        failed = Check(name="policy", target=subject.tenant, ok=False,
                       detail=f"policy could not be evaluated, so the change is refused: {err}")
        return decide_preflight(Assessment(plan=plan, environment=subject.environment, checks=(*checks, failed),
                                           risk=risk, duration_ms=round(read_ms, 3)), config, now)
    elapsed = read_ms + (time.perf_counter() - started) * 1000
    return decide_preflight(
        Assessment(plan=plan, environment=subject.environment, checks=checks, risk=risk, verdict=verdict,
                   records=records, duration_ms=round(elapsed, 3)),
        config, now,
    )


@dataclass
class Preflight:
    """The service: configuration, clock and read-back runner are injectable."""

    config: PreflightConfig
    clock: Clock = utc_clock
    reads: Runner = guarded_read
    access: Access = field(default_factory=load_access)
    scope: Scope = field(default_factory=load_scope)
    follower: Follower | None = None
    slo: SloTracker = field(init=False)

    def __post_init__(self) -> None:
        s = self.config.slo
        self.slo = SloTracker(target_ms=s.p95_ms, window=s.window, min_samples=s.min_samples)
        verdicts.packs_for(self.config, "*")  # a broken default pack stops the service at start

    def spec(self) -> ServiceSpec:
        return ServiceSpec(name=NAME, consumes=("plan.compiled", "approval.granted", "change.stalled"),
                           handle=self.handle, on_stop=worker.close)  # its read-backs' idle workers end with it

    # -- plan.compiled, and finishing a decision a crash cut short --------------------------

    async def handle(self, ctx: Context, history: list[Event], event: Event) -> None:
        stored = ctx.state
        if isinstance(event.payload, PlanCompiled) and stored.revision != event.payload.revision:
            return  # superseded by a newer revision
        if stored.status != "preflight":
            await self._finish(ctx, stored)  # a grant, a nudge, or a redelivery after a crash mid-decision
            return
        events = [s.event for s in ctx.log.events]
        at = max(i for i, e in enumerate(events) if isinstance(e.payload, PlanCompiled))
        event, history = events[at], events[:at]  # the revision to decide on (also when nudged)
        assert isinstance(event.payload, PlanCompiled)
        state = fold([*history, event])
        subject = Subject(tenant=event.tenant, change_id=event.change_id, environment=state.environment,
                          initiator=state.initiator, plan=event.payload.plan, revision=event.payload.revision)
        started = time.perf_counter()
        try:
            inventory = await self.inventory_at(ctx.store, ctx.log.events[at].seq)
            checks = await run_checks(subject.plan, subject.tenant, self.config, self.reads, scope=self.scope,
                                      inventory=inventory)
        except InventoryBehind as err:
            checks = (Check(name="ownership", target=subject.tenant, ok=False, detail=f"policy tenant-ownership: {err}"),)
        payloads = assess(subject, checks, self.config, self.clock(), (time.perf_counter() - started) * 1000)
        duration = next((p.duration_ms for p in payloads if isinstance(p, (PreflightPassed, PreflightFailed))), 0.0)
        items: list[Payload | tuple[Payload, str] | Event] = []
        p95 = self.slo.observe(duration)
        if p95 is not None:
            items.append(SloBreached(phase="preflight", metric="preflight_p95_ms", value_ms=round(p95, 3),
                                     target_ms=self.config.slo.p95_ms))
        decision = ctx.derived(payloads[0], event.id, f"{_tag(payloads[0])}:0")
        items += [decision, *_following(ctx, decision.id, payloads[1:])]
        await ctx.emit(*items)

    async def inventory_at(self, store: EventStore, seq: int) -> Inventory:
        """The desired-state inventory with every event up to stream sequence ``seq`` folded: the
        follower's (:class:`Host` runs one), else folded from the whole stream now."""
        if self.follower is None:
            return await from_log(store)
        return await self.follower.at_least(seq, INVENTORY_WAIT_S)

    async def _finish(self, ctx: Context, state: ChangeState) -> None:
        """Append what pre-flight still owes the change (:func:`decide_pending`), with the ids the
        interrupted decision would have used."""
        payloads = decide_pending(state, self.config, self.clock())
        if payloads:
            asks = isinstance(payloads[0], ApprovalRequested) or not state.requests
            origin = state.passed_event if asks else state.last_grant_event
            await ctx.emit(*_following(ctx, origin, payloads))

    # -- approve / deny --------------------------------------------------------------------

    async def serve_commands(self, nc: NATS, *, ready: anyio.Event | None = None) -> None:
        store = EventStore(nc)
        subs = [await nc.subscribe(command_filter(verb), queue=QUEUE) for verb in ("approve", "deny")]
        if ready is not None:
            ready.set()
        try:
            async with anyio.create_task_group() as tg:
                for sub in subs:
                    tg.start_soon(self._consume, store, sub)
        finally:
            with anyio.CancelScope(shield=True):
                for sub in subs:
                    await sub.unsubscribe()

    async def _consume(self, store: EventStore, sub: Subscription) -> None:
        async for msg in sub.messages:
            if self.access.caller(msg.subject, msg.reply) is None:
                continue
            await reply_to(msg, functools.partial(self.on_command, store), what="an approval command")

    async def on_command(self, store: EventStore, msg: Msg) -> bytes:
        """The reply to one approve/deny request (nothing is appended for a refusal)."""
        tenant, verb, principal = parse_caller_subject(msg.subject)
        try:
            cmd = parse_change_command(tenant, verb, principal, msg.data)
            return await self.apply_command(store, tenant, verb, cmd)
        except InvalidEvent as err:
            return error_reply(err)
        except Forbidden as err:
            return refusal(err)
        except ApprovalRefused as err:
            return error_reply(InvalidEvent(str(err), field=err.field, rule=err.rule))
        except StoreError as err:
            log.error("%s on %s not stored: %s", verb, tenant, err)
            return error_reply(InvalidEvent(f"not stored: {err}; retry", field="store", rule="unavailable"))

    async def apply_command(self, store: EventStore, tenant: str, verb: str, cmd: ChangeCommand) -> bytes:
        """Decide on the change as stored and append; re-read and re-decide on a conflict. A release
        that follows a grant derives its id from the grant (as :meth:`_finish` does), so a crash
        between the two is finished by whoever comes next, once."""
        decision_id = new_id()

        async def attempt(_: int) -> bytes:
            change = await store.read(tenant, cmd.change_id)
            state = fold(s.event for s in change.events)
            if change.events:  # RBAC on the caller's authenticated identity (cmd.by is the subject's principal)
                self.access.require(cmd.by, tenant, verb, initiator=state.initiator)
            now = self.clock()
            payloads = decide_command(state, verb, cmd, self.config, now)
            first = decision_id if isinstance(payloads[0], (ApprovalGranted, ApprovalDenied)) else None
            origin = first or state.last_grant_event
            ids = [first] if first else []
            ids += [derive_id(origin, f"{_tag(p)}:{i}") for i, p in enumerate(payloads[len(ids):])]
            await store.append(change, [self._event(change, p, ids[i], cmd.by, now) for i, p in enumerate(payloads)])
            return _reply.encode(_outcome(cmd, state.plan_hash, payloads))

        return await retry.on_conflict(attempt, attempts=MAX_CONFLICT_RETRIES)

    def _event(self, change: ChangeLog, payload: Payload, event_id: str, by: str, now: datetime) -> Event:
        origin = change.events[0].event
        actor = by if isinstance(payload, (ApprovalGranted, ApprovalDenied)) else NAME
        return new_event(payload, event_id=event_id, change_id=change.change_id, tenant=change.tenant, ts=iso(now),
                         actor=actor, source=origin.source, visibility=origin.visibility)

    # -- release loop ------------------------------------------------------------------------

    async def release_loop(self, nc: NATS, *, interval: float | None = None) -> None:
        """Release scheduled changes whose window has opened, every ``interval`` seconds."""
        store = EventStore(nc)
        pending: dict[tuple[str, str], str] = {}
        cursor = 0
        while True:
            for seq, data in await store.read_raw(type_filter("change.scheduled"), start_seq=cursor + 1):
                cursor = seq
                event = decode_event(data)
                if isinstance(event.payload, ChangeScheduled):
                    pending[(event.tenant, event.change_id)] = event.payload.release_at
            await self.release_due(store, pending)
            await anyio.sleep(self.config.release_interval if interval is None else interval)

    async def release_due(self, store: EventStore, pending: dict[tuple[str, str], str]) -> None:
        now = self.clock()
        for (tenant, change_id), release_at in list(pending.items()):
            if parse_ts(release_at) > now:
                continue
            change = await store.read(tenant, change_id)
            state = fold(s.event for s in change.events)
            if state.status != "scheduled":
                pending.pop((tenant, change_id), None)
                continue
            payloads = decide_release(state, self.config, now)
            if not payloads:
                continue
            events = [self._event(change, p, derive_id(state.scheduled_event, "release"), NAME, now) for p in payloads]
            try:
                await store.append(change, events)
            except ConcurrencyConflict:
                continue  # someone appended meanwhile: re-read on the next pass
            pending.pop((tenant, change_id), None)


def _tag(payload: Payload) -> str:
    tag = payload.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def _following(ctx: Context, origin_id: str, payloads: list[Payload]) -> list[Event]:
    """The events that follow a decision's first (``origin_id``), ids derived from it by position."""
    return [ctx.derived(p, origin_id, f"{_tag(p)}:{i}") for i, p in enumerate(payloads)]


def _outcome(cmd: ChangeCommand, plan_hash: str, payloads: list[Payload]) -> dict[str, Any]:
    reply: dict[str, Any] = {"ok": True, "change_id": cmd.change_id, "plan_hash": plan_hash,
                             "recorded": [p.__struct_config__.tag for p in payloads]}
    for p in payloads:
        match p:
            case ChangeApproved(approvers=approvers):
                reply.update(state="approved", approvers=list(approvers))
            case ChangeScheduled(release_at=release_at, window=window):
                reply.update(state="scheduled", release_at=release_at, window=window)
            case PreflightFailed(reasons=reasons):
                reply.update(state="refused", reasons=list(reasons))
            case ApprovalDenied():
                reply.update(state="denied")
            case _:
                reply.setdefault("state", "awaiting-approval")
    return reply


def spec(config: PreflightConfig | None = None, *, clock: Clock = utc_clock, reads: Runner = guarded_read) -> ServiceSpec:
    """The ``plan.compiled`` consumer (configuration from ``UPM_PREFLIGHT_CONFIG`` by default)."""
    return Preflight(config or load_config(), clock=clock, reads=reads).spec()


async def run(
    nc: NATS,
    *,
    ready: anyio.Event | None = None,
    clock: Clock = utc_clock,
    config: PreflightConfig | None = None,
    interval: float | None = None,
) -> None:
    """The approve/deny command subscriber and the release loop, until cancelled (the
    ``plan.compiled`` consumer is :func:`spec`, run by the shared runtime)."""
    await _extras(Preflight(config or load_config(), clock=clock), nc, ready, interval)


async def _extras(service: Preflight, nc: NATS, ready: anyio.Event | None, interval: float | None) -> None:
    async with anyio.create_task_group() as tg:
        subscribed = anyio.Event()
        tg.start_soon(functools.partial(service.serve_commands, nc, ready=subscribed))
        await subscribed.wait()
        tg.start_soon(functools.partial(service.release_loop, nc, interval=interval))
        if ready is not None:
            ready.set()


class Host:
    """All of pre-flight on one connection: the ``plan.compiled`` consumer (shared runtime),
    the follower keeping the desired-state inventory, the approve/deny subscriber and the release loop; ``run(ready=...)`` as ``upm service`` expects."""

    def __init__(self, nc: NATS, *, config: PreflightConfig | None = None, clock: Clock = utc_clock,
                 reads: Runner = guarded_read, interval: float | None = None, access: Access | None = None,
                 scope: Scope | None = None) -> None:
        self.nc = nc
        self.follower = Follower(EventStore(nc))
        self.service = Preflight(config or load_config(), clock=clock, reads=reads,
                                 access=access if access is not None else load_access(),
                                 scope=scope if scope is not None else load_scope(), follower=self.follower)
        self.interval = interval

    async def run(self, *, ready: anyio.Event | None = None) -> None:
        async with anyio.create_task_group() as tg:
            consuming, serving = anyio.Event(), anyio.Event()
            tg.start_soon(functools.partial(RuntimeRunner(self.nc, self.service.spec()).run, ready=consuming))
            await consuming.wait()  # the stream is there: follow it
            tg.start_soon(self.follower.run)  # the desired-state inventory, for ownership and the dry run
            tg.start_soon(_extras, self.service, self.nc, serving, self.interval)
            await serving.wait()
            if ready is not None:
                ready.set()
