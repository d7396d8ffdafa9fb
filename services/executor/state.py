"""Where a change stands for the executor, read from its events alone (pure).

The log is the only state: what ran, what was skipped, where it paused, which credentials are
still open, whether a rollback ran. A restarted executor (or another replica) rebuilds all of
it from the change's events, which is what makes resume after ``kill -9`` safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from events.model import (
    ChangeApproved,
    ChangeClosed,
    CredentialsIssued,
    CredentialsRevoked,
    Event,
    ExecutionCancelled,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionPaused,
    ExecutionResumed,
    ExecutionStarted,
    PlanCompiled,
    RollbackApproved,
    RollbackCompleted,
    RollbackFailed,
    RollbackStarted,
    RollbackStepCompleted,
    RollbackStepFailed,
    RollbackStepSkipped,
    RollbackStepStarted,
    StepCompleted,
    StepFailed,
    StepSkipped,
    StepStarted,
    VerificationFailed,
    WaveCompleted,
    WaveStarted,
)
from events.plan import Plan

Status = Literal[
    "pending", "approved", "executing", "paused", "completed", "failed", "cancelled",
    "rolling-back", "rolled-back", "rollback-failed",
]


@dataclass(frozen=True)
class ChangeView:
    """The executor's view of one change (its events in log order)."""

    events: tuple[Event, ...]

    @classmethod
    def of(cls, events: Sequence[Event]) -> ChangeView:
        return cls(tuple(events))

    def plan(self, plan_hash: str) -> Plan | None:
        """The latest compiled plan with ``plan_hash`` (an approval names the plan it approves)."""
        for event in reversed(self.events):
            if isinstance(event.payload, PlanCompiled) and event.payload.plan.hash == plan_hash:
                return event.payload.plan
        return None

    @property
    def plan_hash(self) -> str:
        """The hash of the approved plan ('' before any approval)."""
        for event in reversed(self.events):
            if isinstance(event.payload, ChangeApproved):
                return event.payload.plan_hash
        return ""

    def latest_trigger(self) -> Event | None:
        """The last event that (re)starts a run: the approval, or a resume."""
        for event in reversed(self.events):
            if isinstance(event.payload, (ChangeApproved, ExecutionResumed)):
                return event
        return None

    def first(self, kind: type) -> Event | None:
        return next((e for e in self.events if isinstance(e.payload, kind)), None)

    def finished_steps(self) -> set[str]:
        """Step ids recorded as completed or skipped: never run again."""
        return {e.payload.step_id for e in self.events if isinstance(e.payload, (StepCompleted, StepSkipped))}

    def completed_steps(self) -> list[str]:
        """Step ids that actually ran to completion, in the order they completed."""
        return [e.payload.step_id for e in self.events if isinstance(e.payload, StepCompleted)]

    def in_doubt(self, step_id: str) -> bool:
        """Whether the step was started and no outcome was recorded after (a crash mid-step)."""
        doubt = False
        for e in self.events:
            p = e.payload
            if isinstance(p, StepStarted) and p.step_id == step_id:
                doubt = True
            elif isinstance(p, (StepCompleted, StepSkipped, StepFailed)) and p.step_id == step_id:
                doubt = False
        return doubt

    def rollback_finished(self) -> set[str]:
        return {
            e.payload.step_id
            for e in self.events
            if isinstance(e.payload, (RollbackStepCompleted, RollbackStepSkipped))
        }

    def rollback_in_doubt(self, step_id: str) -> bool:
        doubt = False
        for e in self.events:
            p = e.payload
            if isinstance(p, RollbackStepStarted) and p.step_id == step_id:
                doubt = True
            elif isinstance(p, (RollbackStepCompleted, RollbackStepSkipped, RollbackStepFailed)) and (
                p.step_id == step_id
            ):
                doubt = False
        return doubt

    def rollback_ended_after(self, event_id: str) -> bool:
        """Whether a rollback ended (completed or failed) after the event ``event_id``."""
        ids = [e.id for e in self.events]
        start = ids.index(event_id) if event_id in ids else 0
        return any(isinstance(e.payload, (RollbackCompleted, RollbackFailed)) for e in self.events[start:])

    def waves_started(self) -> set[int]:
        return {e.payload.wave for e in self.events if isinstance(e.payload, WaveStarted)}

    def waves_gated(self) -> set[int]:
        return {e.payload.wave for e in self.events if isinstance(e.payload, WaveCompleted)}

    def open_credentials(self) -> list[CredentialsIssued]:
        """Credentials issued and not yet recorded as revoked."""
        revoked = {e.payload.ref for e in self.events if isinstance(e.payload, CredentialsRevoked)}
        return [
            e.payload
            for e in self.events
            if isinstance(e.payload, CredentialsIssued) and e.payload.ref not in revoked
        ]

    @property
    def closed(self) -> ChangeClosed | None:
        for e in reversed(self.events):
            if isinstance(e.payload, ChangeClosed):
                return e.payload
        return None

    @property
    def failed_at(self) -> str:
        """When the change first went wrong (what MTTR counts from); '' if it never did."""
        for e in self.events:
            p = e.payload
            if isinstance(p, (ExecutionFailed, ExecutionPaused, ExecutionCancelled)) or (
                isinstance(p, VerificationFailed) and p.scope == "change"
            ):
                return e.ts
        return ""

    @property
    def status(self) -> Status:
        """The execution state the commands check."""
        status: Status = "pending"
        for e in self.events:
            match e.payload:
                case ChangeApproved():
                    status = "approved" if status == "pending" else status
                case ExecutionStarted() | ExecutionResumed():
                    status = "executing"
                case ExecutionPaused():
                    status = "paused"
                case ExecutionCompleted():
                    status = "completed"
                case ExecutionFailed():
                    status = "failed"
                case ExecutionCancelled():
                    status = "cancelled"
                case RollbackApproved() | RollbackStarted():
                    status = "rolling-back"
                case RollbackCompleted():
                    status = "rolled-back"
                case RollbackFailed():
                    status = "rollback-failed"
        return status


def parse_ts(ts: str) -> datetime:
    """An event timestamp (RFC 3339, UTC) as an aware datetime."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def running_seconds(events: Sequence[Event], now: datetime) -> float:
    """How long the execution has been running, pauses excluded (what the change deadline counts)."""
    total, since = 0.0, None
    for e in events:
        if isinstance(e.payload, (ExecutionStarted, ExecutionResumed)) and since is None:
            since = parse_ts(e.ts)
        elif isinstance(e.payload, ExecutionPaused) and since is not None:
            total += (parse_ts(e.ts) - since).total_seconds()
            since = None
    if since is not None:
        total += (now - since).total_seconds()
    return total
