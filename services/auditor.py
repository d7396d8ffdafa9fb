"""The auditor service: re-verifies a finished change's hash chain and closes it.

A terminal event (``plan.rejected``, ``preflight.failed``, ``execution.failed``,
``verification.passed`` / ``verification.failed``) → the whole change is re-read from the
stream, its chain verified from the stored bytes, and ``change.closed`` (outcome, event count,
chain head) or ``chain.broken`` (naming the first bad event) is appended.
"""

from __future__ import annotations

from collections.abc import Sequence

from events import chain
from events.errors import ChainBroken
from events.model import (
    ChainVerificationFailed,
    ChangeClosed,
    Event,
    ExecutionFailed,
    Outcome,
    Payload,
    PlanRejected,
    PreflightFailed,
    VerificationFailed,
    VerificationPassed,
    type_of,
)
from events.store import StoredEvent
from services.runtime import Context, ServiceSpec

NAME = "auditor"

TERMINAL: dict[type[Payload], Outcome] = {
    PlanRejected: "rejected",
    PreflightFailed: "rejected",
    ExecutionFailed: "failed",
    VerificationFailed: "failed",
    VerificationPassed: "succeeded",
}


def reason_of(payload: Payload) -> str:
    match payload:
        case PlanRejected(reason=reason) | ExecutionFailed(reason=reason):
            return reason
        case PreflightFailed(reasons=reasons):
            return "; ".join(reasons)
        case VerificationFailed(diff=diff):
            return "; ".join(f"{d.resource} {d.field}: {d.desired!r} → {d.observed!r}" for d in diff)
        case _:
            return ""


def decide(stored: Sequence[StoredEvent], event: Event) -> list[Payload]:
    """Close the change on a terminal event, after re-verifying its chain from stored bytes."""
    outcome = TERMINAL.get(type(event.payload))
    if outcome is None or any(isinstance(s.event.payload, ChangeClosed) for s in stored):
        return []
    try:
        head = chain.verify(event.change_id, [(s.seq, s.data) for s in stored])
    except ChainBroken as broken:
        return [ChainVerificationFailed(event_id=broken.event_id, seq=broken.seq, reason=broken.reason)]
    return [ChangeClosed(outcome=outcome, reason=reason_of(event.payload), events=len(stored), chain_head=head)]


async def handle(ctx: Context, history: list[Event], event: Event) -> None:
    payloads = decide(ctx.log.events, event)
    if payloads:
        await ctx.emit(*payloads)


def spec() -> ServiceSpec:
    consumes = tuple(sorted(type_of(cls) for cls in TERMINAL))
    return ServiceSpec(name=NAME, consumes=consumes, handle=handle)
