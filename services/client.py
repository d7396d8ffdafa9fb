"""Library functions behind the producer-side CLI: submit, wait, status, watch.

Any NATS client can do the same: a request on ``upm.cmd.<tenant>.intent`` and an ordinary
JetStream consumer on ``upm.evt.<tenant>.>``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import msgspec
import nats.errors
from nats.aio.client import Client as NATS

from events.model import (
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    ChainVerificationFailed,
    ChangeApproved,
    ChangeClosed,
    Event,
    ExecutionFailed,
    PlanCompiled,
    PlanRejected,
    PreflightFailed,
    RollbackApproved,
    RollbackPlanned,
    RollbackStepCompleted,
    RollbackStepStarted,
    StepCompleted,
    StepFailed,
    StepSkipped,
    StepStarted,
    VerificationFailed,
    VerificationPassed,
)
from events.store import ChangeLog, EventStore, StoredEvent
from events.subjects import change_filter, command_subject, tenant_filter
from services.errors import CommandRejected, NotRunning

STATE_AFTER: dict[str, str] = {
    "intent.submitted": "planning",
    "plan.compiled": "preflight",
    "preflight.passed": "approving",
    "approval.requested": "awaiting-approval",
    "approval.granted": "awaiting-approval",
    "change.scheduled": "scheduled",
    "change.approved": "approved",
    "execution.started": "executing",
    "step.started": "executing",
    "step.completed": "executing",
    "step.skipped": "executing",
    "execution.completed": "verifying",
    "execution.paused": "paused",
    "execution.resumed": "executing",
    "execution.failed": "failed",
    "verification.failed": "awaiting-rollback",
    "rollback.planned": "awaiting-rollback",
    "rollback.approved": "rolling-back",
    "rollback.started": "rolling-back",
    "rollback.completed": "verifying-rollback",
}


class EventLine(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    ts: str
    phase: str
    type: str
    actor: str
    summary: str


class ChangeStatus(msgspec.Struct, frozen=True, kw_only=True):
    change_id: str
    tenant: str
    state: str
    outcome: str | None
    reason: str
    subject: str
    events: tuple[EventLine, ...]


async def submit(nc: NATS, tenant: str, command: dict[str, Any], *, within: float = 10.0) -> str:
    """Send an intent; return its change id, or raise :class:`CommandRejected` with the reason."""
    try:
        reply = await nc.request(command_subject(tenant, "intent"), msgspec.json.encode(command), timeout=within)
    except nats.errors.NoRespondersError as exc:
        raise NotRunning("no gateway answers intents: is `upm up` running?") from exc
    except nats.errors.TimeoutError as exc:
        raise NotRunning(f"the gateway did not answer within {within}s") from exc
    body = msgspec.json.decode(reply.data)
    if not body.get("ok"):
        error = body.get("error") or {}
        raise CommandRejected(
            str(error.get("message", "rejected")), field=str(error.get("field", "")), rule=str(error.get("rule", ""))
        )
    return str(body["change_id"])


def summary(event: Event) -> str:
    """One line about an event, for people."""
    match event.payload:
        case PlanCompiled(plan=plan, revision=rev, compile_ms=ms):
            return f"revision {rev}: {len(plan.steps)} step(s), {plan.hash[:19]}, {ms:.1f} ms"
        case PlanRejected(reason=reason) | ExecutionFailed(reason=reason):
            return reason
        case PreflightFailed(reasons=reasons):
            return "; ".join(reasons)
        case StepStarted(command=command) | StepCompleted(command=command):
            return command
        case StepSkipped(reason=reason):
            return reason
        case StepFailed(error=error):
            return error
        case VerificationPassed(checks=checks):
            return f"{len(checks)} resource(s) read back, all match"
        case VerificationFailed(diff=diff):
            return "; ".join(f"{d.resource} {d.field}: {d.desired!r} → {d.observed!r}" for d in diff)
        case RollbackPlanned(commands=commands, automatic=automatic):
            undo = "; ".join(c.display for c in commands) or "nothing to undo"
            return f"undo: {undo}" + (" (automatic)" if automatic and commands else "")
        case RollbackApproved(lane=lane, by=by):
            return f"{lane}, by {by}"
        case RollbackStepStarted(command=command) | RollbackStepCompleted(command=command):
            return command
        case ApprovalRequested(groups=groups, required=required):
            return f"{required} approval(s) from {', '.join(groups)}"
        case ApprovalGranted(approver=who, group=group, by_policy=rule):
            return f"by policy: {rule}" if rule else f"{who} ({group})"
        case ApprovalDenied(approver=who, reason=reason):
            return f"{who}: {reason}"
        case ChangeApproved(lane=lane, rule=rule, approvers=approvers):
            return f"{lane} lane" + (f": {rule}" if rule else "") + (f" ({', '.join(approvers)})" if approvers else "")
        case ChangeClosed(outcome=outcome, events=n):
            return f"{outcome} after {n} events"
        case ChainVerificationFailed(event_id=eid, reason=reason):
            return f"chain broken at {eid}: {reason}"
        case _:
            return ""


def line(stored: StoredEvent) -> EventLine:
    e = stored.event
    return EventLine(seq=stored.seq, ts=e.ts, phase=e.phase, type=e.type, actor=e.actor, summary=summary(e))


def status_of(log: ChangeLog) -> ChangeStatus:
    """Where a change stands, from its events."""
    events = [s.event for s in log.events]
    closed = next((e.payload for e in reversed(events) if isinstance(e.payload, ChangeClosed)), None)
    if closed is not None:
        state, outcome, reason = "closed", closed.outcome, closed.reason
    elif any(isinstance(e.payload, ChainVerificationFailed) for e in events):
        state, outcome, reason = "chain-broken", None, summary(events[-1])
    else:
        state = next((STATE_AFTER[e.type] for e in reversed(events) if e.type in STATE_AFTER), "unknown")
        outcome, reason = None, ""
    return ChangeStatus(
        change_id=log.change_id,
        tenant=log.tenant,
        state=state,
        outcome=outcome,
        reason=reason,
        subject=change_filter(log.tenant, log.change_id),
        events=tuple(line(s) for s in log.events),
    )


async def status(store: EventStore, change_id: str, tenant: str = "*") -> ChangeStatus:
    log = await store.read(tenant, change_id)
    if not log.events:
        raise CommandRejected(f"no change {change_id} in the log (tenant {tenant})", field="change_id", rule="exists")
    return status_of(log)


async def wait_closed(
    store: EventStore,
    tenant: str,
    change_id: str,
    *,
    within: float = 120.0,
    on_event: Callable[[StoredEvent], None] | None = None,
) -> ChangeStatus:
    """Follow a change until it is closed (or its chain is reported broken)."""
    with anyio.fail_after(within):
        async for stored in store.follow(change_filter(tenant, change_id)):
            if on_event is not None:
                on_event(stored)
            if isinstance(stored.event.payload, (ChangeClosed, ChainVerificationFailed)):
                break
    return await status(store, change_id, tenant)


def watch(store: EventStore, tenant: str = "*", change_id: str | None = None,
          *, from_start: bool = False) -> AsyncIterator[StoredEvent]:
    """Every event of a tenant (or of one change) as it is stored."""
    subject = change_filter(tenant, change_id) if change_id else tenant_filter(tenant)
    return store.follow(subject, from_start=from_start or change_id is not None)

