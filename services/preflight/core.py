"""The pure core of pre-flight: a change's state folded from its events, and every decision.

No I/O and no clock of its own: each decision gets ``now``. Three entry points:

* :func:`decide_preflight` — the checks' results and the policy verdict of a freshly compiled
  plan → ``preflight.failed``, or ``preflight.passed`` then the lane: ``change.approved`` (auto),
  ``change.scheduled`` (auto, window closed) or one ``approval.requested`` per requirement;
* :func:`decide_command` — an approve / deny command → ``approval.granted`` (+ the release once
  the requirements are met) or ``approval.denied``; :class:`ApprovalRefused` says why not;
* :func:`decide_release` — a scheduled change whose window is open now → ``change.approved``.

``change.approved`` is emitted at most once per plan revision, only after checks passed, policy
allowed, the approvals are met (or the auto lane) and the window is open. Approvals count per
revision: only those granted after the latest ``plan.compiled`` and naming its hash, from
distinct people, never the initiator, each a member of a group the requirement names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from events.commands import ChangeCommand
from events.model import (
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    ChangeApproved,
    ChangeClosed,
    ChangeScheduled,
    Check,
    Event,
    IntentSubmitted,
    Payload,
    PlanCompiled,
    PolicyEvaluated,
    PreflightFailed,
    PreflightPassed,
    RiskAssessment,
    WindowRequirement,
)
from events.plan import Plan
from services.preflight.config import PreflightConfig
from services.preflight.errors import ApprovalRefused
from services.preflight.verdict import Verdict

Status = Literal[
    "unknown", "planning", "preflight", "failed", "awaiting-approval", "scheduled", "approved", "denied", "closed"
]


def parse_ts(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ChangeState:
    """What pre-flight knows about one change (its current plan revision only)."""

    tenant: str = ""
    change_id: str = ""
    initiator: str = ""
    environment: str = "dev"
    plan: Plan | None = None
    revision: int = 0
    passed: PreflightPassed | None = None
    failed: bool = False
    requests: tuple[ApprovalRequested, ...] = ()
    grants: tuple[str, ...] = ()  # approvers of the current revision, in order
    denied: ApprovalDenied | None = None
    scheduled: ChangeScheduled | None = None
    approved: bool = False
    closed: bool = False
    scheduled_event: str = ""
    events: int = 0
    auto_rule: str = ""

    @property
    def plan_hash(self) -> str:
        return self.plan.hash if self.plan is not None else ""

    @property
    def status(self) -> Status:
        if self.denied is not None:  # a denial stays the reason, also once the auditor closed the change
            return "denied"
        if self.closed:
            return "closed"
        if not self.events:
            return "unknown"
        if self.plan is None:
            return "planning"
        if self.failed:
            return "failed"
        if self.denied is not None:
            return "denied"
        if self.approved:
            return "approved"
        if self.scheduled is not None:
            return "scheduled"
        if self.passed is None:
            return "preflight"
        return "awaiting-approval"


def fold(events: Sequence[Event]) -> ChangeState:
    """The state of a change from its events, in order."""
    s = ChangeState()
    for event in events:
        s = _apply(s, event)
    return s


def _apply(s: ChangeState, event: Event) -> ChangeState:
    base = dict(s.__dict__, tenant=event.tenant, change_id=event.change_id, events=s.events + 1)
    match event.payload:
        case IntentSubmitted(initiator=initiator, environment=environment):
            base.update(initiator=initiator, environment=environment)
        case PlanCompiled(plan=plan, revision=revision):
            base.update(plan=plan, revision=revision, passed=None, failed=False, requests=(), grants=(), denied=None,
                        scheduled=None, approved=False, scheduled_event="", auto_rule="")
        case PreflightPassed(plan_hash=h) as passed if h == s.plan_hash:
            base.update(passed=passed, auto_rule=_auto_rule(passed.policy))
        case PreflightFailed(plan_hash=h) if h == s.plan_hash:
            base.update(failed=True)
        case ApprovalRequested(plan_hash=h) as req if h == s.plan_hash:
            base.update(requests=(*s.requests, req))
        case ApprovalGranted(plan_hash=h, approver=who) if h == s.plan_hash:
            base.update(grants=(*s.grants, who))
        case ApprovalDenied(plan_hash=h) as denied if h == s.plan_hash:
            base.update(denied=denied)
        case ChangeScheduled(plan_hash=h) as scheduled if h == s.plan_hash:
            base.update(scheduled=scheduled, scheduled_event=event.id)
        case ChangeApproved(plan_hash=h) if h == s.plan_hash:
            base.update(approved=True)
        case ChangeClosed():
            base.update(closed=True)
        case _:
            pass
    return ChangeState(**base)


def _auto_rule(records: Sequence[PolicyEvaluated]) -> str:
    for record in records:
        for rule in record.output.get("auto_approve", []):
            if isinstance(rule, dict):
                return f"{rule.get('rule', '')}: {rule.get('message', '')}".rstrip(": ")
    return ""


# -- pre-flight ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Assessment:
    """Everything the shell measured and evaluated for one plan revision."""

    plan: Plan
    environment: str
    checks: tuple[Check, ...]
    risk: RiskAssessment | None = None
    verdict: Verdict | None = None
    records: tuple[PolicyEvaluated, ...] = ()
    duration_ms: float = 0.0


def decide_preflight(a: Assessment, config: PreflightConfig, now: datetime) -> list[Payload]:
    """The pre-flight outcome of a plan revision (see the module docstring)."""
    plan_hash = a.plan.hash
    failed_checks = [c for c in a.checks if not c.ok]
    if failed_checks or a.verdict is None:
        reasons = tuple(c.detail for c in failed_checks) or ("policy was not evaluated",)
        return [PreflightFailed(plan_hash=plan_hash, checks=a.checks, reasons=reasons, duration_ms=a.duration_ms)]
    verdict = a.verdict

    def fail(*reasons: str) -> list[Payload]:
        return [PreflightFailed(plan_hash=plan_hash, checks=a.checks, reasons=reasons, duration_ms=a.duration_ms,
                                policy=a.records, risk=a.risk)]

    if not verdict.allowed:
        return fail(*(f"policy {v.rule}: {v.message}" for v in verdict.violations))
    window = window_requirement(verdict, config, a.environment)
    if window is not None and window.environment not in config.windows:
        return fail(
            f"policy {window.rule} requires the {window.environment} maintenance window, but none is configured: "
            f"add windows.{window.environment} to the pre-flight configuration ({config.source})"
        )
    passed = PreflightPassed(plan_hash=plan_hash, checks=a.checks, duration_ms=a.duration_ms, policy=a.records,
                             risk=a.risk, lane=verdict.lane, window=window)
    if verdict.lane == "auto":
        auto = verdict.auto[0]
        rule = f"{auto.rule}: {auto.message}".rstrip(": ")
        release = _release(window, config, now, lane="auto", rule=rule, approvers=(), plan_hash=plan_hash)
        if isinstance(release[0], PreflightFailed):
            return fail(*release[0].reasons)
        return [passed, *release]
    expires = iso(now + config.approval_expiry)
    requests = [
        ApprovalRequested(plan_hash=plan_hash, groups=r.groups, required=r.count, reason=r.message, rule=r.rule,
                          expires_at=expires)
        for r in verdict.requirements()
    ]
    return [passed, *requests]


def window_requirement(verdict: Verdict, config: PreflightConfig, environment: str) -> WindowRequirement | None:
    """The window the change must run in: a policy's window rule, or an environment window for all."""
    env = config.windows.get(environment)
    rule = verdict.window_rule()
    if rule is not None:
        refuse = rule.outside == "refuse" or (env is not None and env.outside == "refuse")
        outside: Literal["wait", "refuse"] = "refuse" if refuse else "wait"
        return WindowRequirement(environment=environment, rule=rule.rule, message=rule.message, outside=outside)
    if env is not None and env.applies_to == "all":
        return WindowRequirement(environment=environment, rule="config-window",
                                 message=f"every {environment} change runs inside its window", outside=env.outside)
    return None


def _release(
    window: WindowRequirement | None,
    config: PreflightConfig,
    now: datetime,
    *,
    lane: Literal["auto", "manual"],
    rule: str,
    approvers: tuple[str, ...],
    plan_hash: str,
) -> list[Payload]:
    approved = ChangeApproved(plan_hash=plan_hash, lane=lane, rule=rule, approvers=approvers)
    if window is None:
        return [approved]
    env = config.windows.get(window.environment)
    if env is None:
        reason = (f"policy {window.rule} requires the {window.environment} maintenance window, but none is "
                  f"configured: add windows.{window.environment} to the pre-flight configuration ({config.source})")
        return [PreflightFailed(plan_hash=plan_hash, reasons=(reason,))]
    opens = env.window.next_open(now)
    if opens == now:
        return [approved]
    if opens is None:
        return [PreflightFailed(plan_hash=plan_hash, reasons=(
            f"the {window.environment} maintenance window does not open within a year; fix windows.{window.environment}",
        ))]
    if window.outside == "refuse":
        return [PreflightFailed(plan_hash=plan_hash, reasons=(
            f"outside the {window.environment} maintenance window and policy {window.rule} refuses changes outside "
            f"it; resubmit when it is open (next: {iso(opens)})",
        ))]
    return [ChangeScheduled(plan_hash=plan_hash, window=window.environment, release_at=iso(opens))]


# -- approvals ----------------------------------------------------------------------------


def groups_of(user: str, members: dict[str, frozenset[str]]) -> set[str]:
    return {g for g, people in members.items() if user in people}


def satisfied(state: ChangeState, members: dict[str, frozenset[str]]) -> bool:
    """Every requirement has ``required`` distinct approvers (not the initiator) from its groups."""
    approvers = set(state.grants) - {state.initiator}
    for req in state.requests:
        eligible = {a for a in approvers if not req.groups or groups_of(a, members) & set(req.groups)}
        if len(eligible) < req.required:
            return False
    return bool(state.requests)


def decide_command(
    state: ChangeState, verb: str, cmd: ChangeCommand, config: PreflightConfig, now: datetime
) -> list[Payload]:
    """The events an approve or deny command appends; :class:`ApprovalRefused` if it may not."""
    _check_open(state, verb, cmd)
    members = config.group_members(state.tenant)
    asked = sorted({g for r in state.requests for g in r.groups})
    mine = groups_of(cmd.by, members)
    if cmd.group is not None and cmd.group not in mine:
        raise ApprovalRefused(f"{cmd.by} is not a member of group {cmd.group} (tenant {state.tenant}); groups are "
                              f"set under groups in {config.source}", field="group", rule="group-membership")
    if verb == "deny":
        relevant = (mine & set(asked)) if asked else mine
        if cmd.by != state.initiator and not relevant:
            raise ApprovalRefused(
                f"{cmd.by} may not deny this change: only the initiator or a member of "
                f"{', '.join(asked) or 'an approver group'} may", field="by", rule="group-membership")
        group = cmd.group or min(relevant, default="")
        return [ApprovalDenied(plan_hash=state.plan_hash, approver=cmd.by, group=group, reason=cmd.reason)]
    if cmd.by == state.initiator:
        raise ApprovalRefused(
            f"{cmd.by} initiated this change and cannot approve it (separation of duties); ask another "
            f"member of {', '.join(asked) or 'an approver group'}", field="by", rule="separation-of-duties")
    expired = [r.expires_at for r in state.requests if r.expires_at and parse_ts(r.expires_at) <= now]
    if expired:
        raise ApprovalRefused(
            f"the approval request expired at {expired[0]}; resubmit the change to ask again",
            field="change_id", rule="expired")
    if cmd.by in state.grants:
        raise ApprovalRefused(f"{cmd.by} already approved plan {state.plan_hash}; one person counts once",
                              field="by", rule="duplicate-approver")
    eligible = set(asked) & mine if asked else mine
    if cmd.group is not None and asked and cmd.group not in asked:
        raise ApprovalRefused(f"group {cmd.group} is not asked to approve this change; it needs {', '.join(asked)}",
                              field="group", rule="group-membership")
    if not eligible:
        raise ApprovalRefused(
            f"{cmd.by} is not a member of {', '.join(asked) or 'any approver group'} (tenant {state.tenant}), "
            f"which this change needs; groups are set under groups in {config.source}",
            field="by", rule="group-membership")
    group = cmd.group or min(eligible)
    grant = ApprovalGranted(plan_hash=state.plan_hash, approver=cmd.by, group=group, reason=cmd.reason)
    after = ChangeState(**dict(state.__dict__, grants=(*state.grants, cmd.by)))
    if not satisfied(after, members):
        return [grant]
    approvers = tuple(sorted(set(after.grants) - {state.initiator}))
    rule = ", ".join(r.rule for r in state.requests)
    window = state.passed.window if state.passed is not None else None
    return [grant, *_release(window, config, now, lane="manual", rule=rule, approvers=approvers,
                             plan_hash=state.plan_hash)]


def _check_open(state: ChangeState, verb: str, cmd: ChangeCommand) -> None:
    status = state.status
    if status == "unknown":
        raise ApprovalRefused(f"no change {cmd.change_id} in the log of this tenant", rule="exists")
    if cmd.plan_hash is not None and state.plan is not None and cmd.plan_hash != state.plan_hash:
        raise ApprovalRefused(
            f"plan {cmd.plan_hash} is not the change's current plan (revision {state.revision} is "
            f"{state.plan_hash}); review the new revision and {verb} that", field="plan_hash", rule="stale-plan")
    reasons = {
        "closed": "the change is closed",
        "planning": "the change has no compiled plan yet",
        "preflight": "pre-flight has not finished on the current plan",
        "failed": "pre-flight failed on the current plan; nothing can be approved",
        "denied": f"the change was denied by {state.denied.approver if state.denied else ''}; a denied change "
                  "never executes",
        "approved": "the change is already approved",
    }
    if status in reasons:
        raise ApprovalRefused(f"cannot {verb} change {cmd.change_id}: {reasons[status]}", rule=status)
    if status == "scheduled" and verb == "approve":
        raise ApprovalRefused(f"change {cmd.change_id} is already approved and waits for its window", rule=status)


# -- release ------------------------------------------------------------------------------


def decide_release(state: ChangeState, config: PreflightConfig, now: datetime) -> list[Payload]:
    """``change.approved`` for a scheduled change whose window is open at ``now``."""
    if state.status != "scheduled" or state.scheduled is None or state.passed is None:
        return []
    env = config.windows.get(state.scheduled.window)
    if env is not None and not env.window.is_open(now):
        return []
    approvers: tuple[str, ...] = ()
    if state.passed.lane == "auto":
        lane: Literal["auto", "manual"] = "auto"
        rule = state.auto_rule
    else:
        lane = "manual"
        rule = ", ".join(r.rule for r in state.requests)
        approvers = tuple(sorted(set(state.grants) - {state.initiator}))
    return [ChangeApproved(plan_hash=state.plan_hash, lane=lane, rule=rule, approvers=approvers)]

