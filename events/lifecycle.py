"""The change lifecycle: one frozen :class:`ChangeState` and a pure :func:`evolve`.

This is the only place that knows what state a change is in. Every service, the client
(``upm status``, ``--wait``), the access checks and the projections read it; nothing else
derives a status. A state is evolved event by event (:func:`evolve`), so a long-lived reader
keeps one per change instead of re-folding history; :func:`fold` rebuilds one from a log.

Statuses (:data:`Status`) and who owes the next event:

=====================  ===================================================  ===============
status                 after                                                next event by
=====================  ===================================================  ===============
``unknown``            nothing stored                                       —
``planning``           ``intent.submitted``                                 planner
``preflight``          ``plan.compiled``                                    pre-flight
``approving``          ``preflight.passed``; a grant that meets the asks    pre-flight
``awaiting-approval``  ``approval.requested``; a grant that does not        people
``scheduled``          ``change.scheduled``                                 pre-flight (window)
``approved``           ``change.approved``                                  executor
``executing``          ``execution.started`` / ``execution.resumed``        executor
``paused``             ``execution.paused``                                 people
``verifying``          ``execution.completed``                              verifier
``rollback-planning``  ``execution.failed``; ``verification.failed``        verifier
                       (change); an automatic ``rollback.planned``
``awaiting-rollback``  a manual ``rollback.planned``                        people
``rolling-back``       ``rollback.approved`` / ``rollback.started``         executor
``verifying-rollback`` ``rollback.completed``                               verifier
``ended``              a terminal fact (:attr:`ChangeState.outcome` set)    auditor
``closed``             ``change.closed``                                    —
``chain-broken``       ``chain.broken``                                     people
=====================  ===================================================  ===============

:data:`ACTIVE` statuses are those a service owes the next event for: the stall watchdog
watches exactly those. A rollback approved after the change closed reopens it; its end
closes it again (the outcome follows the rollback) without a second ``change.closed``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from events.model import (
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    ChainVerificationFailed,
    ChangeApproved,
    ChangeClosed,
    ChangeScheduled,
    ChangeStalled,
    CredentialsIssued,
    CredentialsRevoked,
    Event,
    ExecutionCancelled,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionPaused,
    ExecutionResumed,
    ExecutionStarted,
    IntentSubmitted,
    Outcome,
    Phase,
    PlanCompiled,
    PlanRejected,
    PolicyEvaluated,
    PreflightFailed,
    PreflightPassed,
    RollbackApproved,
    RollbackCompleted,
    RollbackFailed,
    RollbackPlanned,
    RollbackStarted,
    RollbackStepCompleted,
    RollbackStepFailed,
    RollbackStepSkipped,
    RollbackStepStarted,
    Source,
    StepCompleted,
    StepFailed,
    StepSkipped,
    StepStarted,
    VerificationFailed,
    VerificationPassed,
    Visibility,
    WaveCompleted,
    WaveStarted,
)
from events.plan import Plan

Status = Literal[
    "unknown", "planning", "preflight", "approving", "awaiting-approval", "scheduled", "approved", "executing",
    "paused", "verifying", "rollback-planning", "awaiting-rollback", "rolling-back", "verifying-rollback",
    "ended", "closed", "chain-broken",
]
STATUSES: tuple[Status, ...] = Status.__args__  # type: ignore[attr-defined]

ACTIVE: frozenset[Status] = frozenset({
    "planning", "preflight", "approving", "approved", "executing", "verifying", "rollback-planning",
    "rolling-back", "verifying-rollback", "ended",
})
"""Statuses in which a service owes the next event (people and windows owe the others)."""

WAITING: frozenset[Status] = frozenset({"awaiting-approval", "scheduled", "paused", "awaiting-rollback"})
"""Statuses in which the change waits for people (or its maintenance window)."""

NEUTRAL: frozenset[str] = frozenset({
    "policy.evaluated", "step.retried", "tls.fallback", "credentials.issued", "credentials.revoked",
    "drift.detected", "drift.resolved", "drift.scanned", "slo.breached", "plan.recompiled", "evidence.published",
    "log.head",
})
"""Event types that never change a change's status or outcome (a reader that only wants those
may skip them)."""

PHASE_OF: dict[Status, Phase] = {
    "unknown": "plan", "planning": "plan", "preflight": "preflight", "approving": "preflight",
    "awaiting-approval": "preflight", "scheduled": "preflight", "approved": "execute", "executing": "execute",
    "paused": "execute", "verifying": "verify", "rollback-planning": "verify", "awaiting-rollback": "verify",
    "rolling-back": "execute", "verifying-rollback": "verify", "ended": "audit", "closed": "audit",
    "chain-broken": "audit",
}

Direction = Literal["forward", "rollback"]


def parse_ts(ts: str) -> datetime:
    """An event timestamp (RFC 3339, UTC) as an aware datetime."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


@dataclasses.dataclass(frozen=True, slots=True)
class Progress:
    """The steps of one direction (forward, or rollback): what finished, what ran, what is in doubt."""

    finished: frozenset[str] = frozenset()  # completed or skipped: never run again
    completed: tuple[str, ...] = ()  # actually ran to completion, in order
    in_doubt: frozenset[str] = frozenset()  # started, no outcome recorded (a crash mid-step)
    failed: tuple[str, ...] = ()

    def started(self, step_id: str) -> Progress:
        return dataclasses.replace(self, in_doubt=self.in_doubt | {step_id})

    def completed_step(self, step_id: str) -> Progress:
        return Progress(finished=self.finished | {step_id}, completed=(*self.completed, step_id),
                        in_doubt=self.in_doubt - {step_id}, failed=self.failed)

    def skipped(self, step_id: str) -> Progress:
        return dataclasses.replace(self, finished=self.finished | {step_id}, in_doubt=self.in_doubt - {step_id})

    def failed_step(self, step_id: str) -> Progress:
        return dataclasses.replace(self, in_doubt=self.in_doubt - {step_id}, failed=(*self.failed, step_id))


@dataclasses.dataclass(frozen=True, slots=True)
class ChangeState:
    """Everything the services need to know about one change (see the module docstring)."""

    change_id: str = ""
    tenant: str = ""
    status: Status = "unknown"
    events: int = 0
    first_ts: str = ""
    last_ts: str = ""
    last_event_id: str = ""
    last_type: str = ""
    # origin
    initiator: str = ""
    environment: str = "dev"
    source: Source = "api"
    visibility: Visibility = "team"
    request: str = ""
    # plan
    plan: Plan | None = None
    revision: int = 0
    # pre-flight and approvals (of the current revision)
    passed: PreflightPassed | None = None
    passed_event: str = ""
    preflight_failed: bool = False
    requests: tuple[ApprovalRequested, ...] = ()
    grants: tuple[str, ...] = ()  # approvers of the current revision, in order
    grant_groups: tuple[tuple[str, str], ...] = ()  # (approver, group) as recorded
    last_grant_event: str = ""
    denied: ApprovalDenied | None = None
    scheduled: ChangeScheduled | None = None
    scheduled_event: str = ""
    auto_rule: str = ""
    approval: ChangeApproved | None = None
    # execution
    approved_plan: Plan | None = None
    trigger: str = ""  # the event that (re)starts a run: the approval, a resume, a watchdog nudge
    started: bool = False
    forward: Progress = Progress()
    waves_started: frozenset[int] = frozenset()
    waves_gated: frozenset[int] = frozenset()
    credentials: tuple[CredentialsIssued, ...] = ()  # issued and not revoked
    cancelled: bool = False
    failed_at: str = ""
    running_since: str = ""
    ran_s: float = 0.0
    # rollback
    rollback_trigger: str = ""
    rollback_started: bool = False  # the run of the latest rollback approval recorded its start
    rollback_ended: bool = False  # ... and its end (completed or failed)
    rollback: Progress = Progress()
    rollback_reason: str = ""
    # end
    outcome: Outcome | None = None
    reason: str = ""
    closed: ChangeClosed | None = None
    chain_broken: ChainVerificationFailed | None = None
    stalls: tuple[ChangeStalled, ...] = ()

    @property
    def phase(self) -> Phase:
        return PHASE_OF[self.status]

    @property
    def plan_hash(self) -> str:
        """The hash of the current plan revision ('' before one is compiled)."""
        return self.plan.hash if self.plan is not None else ""

    @property
    def approved_hash(self) -> str:
        """The hash of the approved plan ('' before any approval)."""
        return self.approved_plan.hash if self.approved_plan is not None else ""

    @property
    def active(self) -> bool:
        """Whether a service owes the next event (what the stall watchdog watches)."""
        return self.status in ACTIVE

    @property
    def ever_closed(self) -> bool:
        return self.closed is not None

    def plan_for(self, plan_hash: str) -> Plan | None:
        """The plan an approval or rollback names: the approved one, else the current one."""
        for plan in (self.approved_plan, self.plan):
            if plan is not None and plan.hash == plan_hash:
                return plan
        return None

    def progress(self, direction: Direction) -> Progress:
        return self.forward if direction == "forward" else self.rollback

    def running_seconds(self, now: datetime) -> float:
        """How long the execution has run, pauses excluded (what the change deadline counts)."""
        since = (now - parse_ts(self.running_since)).total_seconds() if self.running_since else 0.0
        return self.ran_s + since

    def approvals_met(self) -> bool:
        """Every approval request has its count of distinct approvers (never the initiator) from its
        groups, as recorded on the grants (pre-flight checked each membership when it granted)."""
        if not self.requests:
            return False
        grants = [(who, group) for who, group in self.grant_groups if who != self.initiator]
        for req in self.requests:
            eligible = {who for who, group in grants if not req.groups or group in req.groups}
            if len(eligible) < req.required:
                return False
        return True


def fold(events: Iterable[Event], state: ChangeState | None = None) -> ChangeState:
    """The state of a change after ``events`` (in log order), from ``state`` or from nothing."""
    s = state if state is not None else ChangeState()
    for event in events:
        s = evolve(s, event)
    return s


def auto_rule(records: Iterable[PolicyEvaluated]) -> str:
    """The auto-approval rule a pre-flight verdict applied (``rule: message``), if any."""
    for record in records:
        for rule in record.output.get("auto_approve", []):
            if isinstance(rule, dict):
                return f"{rule.get('rule', '')}: {rule.get('message', '')}".rstrip(": ")
    return ""


def failure_text(failed: VerificationFailed) -> str:
    """What a failed verification found, in one line: each difference, and each check that failed
    without one (a resource that could not be read back says why)."""
    diffed = {d.resource for d in failed.diff}
    return "; ".join([f"{d.resource} {d.field}: {d.desired!r} → {d.observed!r}" for d in failed.diff]
                     + [c.detail for c in failed.checks if not c.ok and c.target not in diffed])


def evolve(s: ChangeState, event: Event) -> ChangeState:
    """The state after ``event``. Pure; events of another revision's plan leave pre-flight alone."""
    r = dataclasses.replace
    s = r(s, change_id=event.change_id, tenant=event.tenant, events=s.events + 1, first_ts=s.first_ts or event.ts,
          last_ts=event.ts, last_event_id=event.id, last_type=event.type)
    match event.payload:
        case IntentSubmitted() as p:
            return r(s, status="planning" if s.status == "unknown" else s.status, initiator=p.initiator,
                     environment=p.environment, source=event.source, visibility=event.visibility,
                     request=p.request or "")
        case PlanCompiled(plan=plan, revision=revision):
            return r(s, status="preflight", plan=plan, revision=revision, passed=None, passed_event="",
                     preflight_failed=False, requests=(), grants=(), grant_groups=(), last_grant_event="", denied=None, scheduled=None, scheduled_event="",
                     auto_rule="", approval=None)
        case PlanRejected(reason=reason):
            return _end(s, "rejected", reason)
        case PreflightPassed(plan_hash=h) as p if h == s.plan_hash:
            return r(s, status="approving", passed=p, passed_event=event.id, auto_rule=auto_rule(p.policy))
        case PreflightFailed(plan_hash=h, reasons=reasons) if h == s.plan_hash:
            return _end(r(s, preflight_failed=True), "rejected", "; ".join(reasons))
        case ApprovalRequested(plan_hash=h) as p if h == s.plan_hash:
            return r(s, status="awaiting-approval", requests=(*s.requests, p))
        case ApprovalGranted(plan_hash=h, approver=who, group=group) if h == s.plan_hash:
            s = r(s, grants=(*s.grants, who), grant_groups=(*s.grant_groups, (who, group)),
                  last_grant_event=event.id)
            if s.status in ("awaiting-approval", "approving"):
                s = r(s, status="approving" if s.approvals_met() else "awaiting-approval")
            return s
        case ApprovalDenied(plan_hash=h, approver=who, reason=reason) as p if h == s.plan_hash:
            return _end(r(s, denied=p), "denied", f"approval.denied by {who}" + (f": {reason}" if reason else ""))
        case ChangeScheduled(plan_hash=h) as p if h == s.plan_hash:
            return r(s, status="scheduled", scheduled=p, scheduled_event=event.id)
        case ChangeApproved(plan_hash=h) as p if h == s.plan_hash:
            return r(s, status="approved", approval=p, approved_plan=s.plan, trigger=event.id)
        case ExecutionStarted():
            return r(s, status="executing", started=True, running_since=s.running_since or event.ts)
        case ExecutionResumed():
            return r(s, status="executing", trigger=event.id, running_since=s.running_since or event.ts)
        case StepStarted() | StepCompleted() | StepSkipped() | StepFailed() as p:
            return r(s, forward=_step(s.forward, p))
        case WaveStarted(wave=wave):
            return r(s, waves_started=s.waves_started | {wave})
        case WaveCompleted(wave=wave):
            return r(s, waves_gated=s.waves_gated | {wave})
        case ExecutionCompleted():
            return r(_stop_clock(s, event.ts), status="verifying")
        case ExecutionFailed():
            return r(_stop_clock(s, event.ts), status="rollback-planning", failed_at=s.failed_at or event.ts)
        case ExecutionPaused():
            return r(_stop_clock(s, event.ts), status="paused", failed_at=s.failed_at or event.ts)
        case ExecutionCancelled(by=who, reason=reason):
            s = r(_stop_clock(s, event.ts), cancelled=True, failed_at=s.failed_at or event.ts)
            return _end(s, "cancelled", f"execution.cancelled by {who}" + (f": {reason}" if reason else ""))
        case CredentialsIssued() as p:
            return r(s, credentials=(*s.credentials, p))
        case CredentialsRevoked(ref=ref):
            return r(s, credentials=tuple(c for c in s.credentials if c.ref != ref))
        case VerificationPassed(scope="change"):
            return _end(s, "succeeded", "")
        case VerificationPassed(scope="rollback"):
            return _end(s, "rolled_back", f"rolled back after: {s.rollback_reason}" if s.rollback_reason
                        else "rolled back")
        case VerificationFailed(scope="change"):
            return r(s, status="rollback-planning", failed_at=s.failed_at or event.ts)
        case VerificationFailed(scope="rollback") as p:
            return _end(s, "failed", failure_text(p))
        case RollbackPlanned(commands=(), reason=reason):
            return _end(r(s, rollback_reason=reason), "failed", reason)
        case RollbackPlanned(automatic=automatic, reason=reason):
            return r(s, status="rollback-planning" if automatic else "awaiting-rollback", rollback_reason=reason)
        case RollbackApproved(reason=reason):
            return r(s, status="rolling-back", rollback_trigger=event.id, rollback_started=False, rollback_ended=False,
                     rollback_reason=s.rollback_reason or reason)
        case RollbackStarted():
            return r(s, status="rolling-back", rollback_started=True)
        case RollbackStepStarted() | RollbackStepCompleted() | RollbackStepSkipped() | RollbackStepFailed() as p:
            return r(s, rollback=_step(s.rollback, p))
        case RollbackCompleted():
            return r(s, status="verifying-rollback", rollback_ended=True)
        case RollbackFailed(reason=reason):
            return _end(r(s, rollback_ended=True), "failed", f"rollback failed: {reason}")
        case ChangeStalled(action="close", status=where, since=since, last_type=last_type):
            return _end(r(s, stalls=(*s.stalls, event.payload)), "stalled",
                        f"stalled: no progress while {where} since {since} (last event {last_type})")
        case ChangeStalled() as p:
            nudged = r(s, stalls=(*s.stalls, p))
            if s.status in ("approved", "executing"):
                return r(nudged, trigger=event.id)
            if s.status == "rolling-back":
                return r(nudged, rollback_trigger=event.id)
            return nudged
        case ChangeClosed(outcome=outcome, reason=reason) as p:
            return r(s, status="closed", closed=p, outcome=outcome, reason=reason)
        case ChainVerificationFailed() as p:
            return r(s, status="chain-broken", chain_broken=p)
        case _:
            return s


StepEvent = (
    StepStarted | StepCompleted | StepSkipped | StepFailed
    | RollbackStepStarted | RollbackStepCompleted | RollbackStepSkipped | RollbackStepFailed
)


def _step(progress: Progress, p: StepEvent) -> Progress:
    """One step event of either direction applied to that direction's progress."""
    match p:
        case StepStarted() | RollbackStepStarted():
            return progress.started(p.step_id)
        case StepCompleted() | RollbackStepCompleted():
            return progress.completed_step(p.step_id)
        case StepSkipped() | RollbackStepSkipped():
            return progress.skipped(p.step_id)
        case _:
            return progress.failed_step(p.step_id)


def _end(s: ChangeState, outcome: Outcome, reason: str) -> ChangeState:
    """A terminal fact: the auditor closes the change (a change closed before stays closed)."""
    if s.status == "chain-broken":
        return dataclasses.replace(s, outcome=outcome, reason=reason)
    return dataclasses.replace(s, status="closed" if s.ever_closed else "ended", outcome=outcome, reason=reason)


def _stop_clock(s: ChangeState, ts: str) -> ChangeState:
    if not s.running_since:
        return s
    ran = (parse_ts(ts) - parse_ts(s.running_since)).total_seconds()
    return dataclasses.replace(s, running_since="", ran_s=s.ran_s + max(0.0, ran))
