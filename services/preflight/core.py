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

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from events.commands import ChangeCommand
from events.lifecycle import ChangeState, parse_ts
from events.model import (
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    ChangeApproved,
    ChangeScheduled,
    Check,
    Payload,
    PolicyEvaluated,
    PreflightFailed,
    PreflightPassed,
    RiskAssessment,
    WindowRequirement,
)
from events.plan import Plan
from services.preflight.config import DEFAULT, PreflightConfig
from services.preflight.errors import ApprovalRefused
from services.preflight.policy import ApprovalRule
from services.preflight.verdict import Verdict, verdict_of


def iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
    return [passed, *approval_requests(verdict.requirements(), plan_hash, config, now)]


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


def where_groups(config: PreflightConfig) -> str:
    """Where approver groups are set, in words: with no configuration, how to name approvers at all."""
    if config.source == DEFAULT.source:
        return ("no approver groups are configured (embedded defaults): start UPM with `upm up --approvers "
                "NAME[,NAME]`, or give groups in a pre-flight configuration (`upm up --preflight-config FILE`)")
    return f"groups are set under groups in {config.source}"


def decide_command(
    state: ChangeState, verb: str, cmd: ChangeCommand, config: PreflightConfig, now: datetime
) -> list[Payload]:
    """The events an approve or deny command appends; :class:`ApprovalRefused` if it may not."""
    _check_open(state, verb, cmd)
    members = config.group_members(state.tenant)
    asked = sorted({g for r in state.requests for g in r.groups})
    mine = groups_of(cmd.by, members)
    if cmd.group is not None and cmd.group not in mine:
        raise ApprovalRefused(f"{cmd.by} is not a member of group {cmd.group} (tenant {state.tenant}); "
                              f"{where_groups(config)}", field="group", rule="group-membership")
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
    if cmd.by in state.grants and state.approval is None and satisfied(state, members):
        return _approve(state, config, now)  # a crash fell between the grant and the release: finish it
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
            f"which this change needs; {where_groups(config)}",
            field="by", rule="group-membership")
    group = cmd.group or min(eligible)
    grant = ApprovalGranted(plan_hash=state.plan_hash, approver=cmd.by, group=group, reason=cmd.reason)
    after = dataclasses.replace(state, grants=(*state.grants, cmd.by))
    if not satisfied(after, members):
        return [grant]
    return [grant, *_approve(after, config, now)]


def _approve(state: ChangeState, config: PreflightConfig, now: datetime) -> list[Payload]:
    """The release of a change whose approvals are met (``change.approved``, or its schedule)."""
    approvers = tuple(sorted(set(state.grants) - {state.initiator}))
    rule = ", ".join(r.rule for r in state.requests)
    window = state.passed.window if state.passed is not None else None
    return _release(window, config, now, lane="manual", rule=rule, approvers=approvers, plan_hash=state.plan_hash)


def decide_pending(state: ChangeState, config: PreflightConfig, now: datetime) -> list[Payload]:
    """What pre-flight still owes a change it already decided on, when a crash cut its decision
    short (seen on a redelivered ``plan.compiled``, a grant, or the watchdog's nudge): the approval
    requests of a manual pass, the release of an auto-lane pass or of met approvals. Rebuilt from
    what ``preflight.passed`` recorded, never evaluated again. Nothing when nothing is owed."""
    passed = state.passed
    if state.status not in ("approving", "awaiting-approval") or passed is None or state.approval is not None:
        return []
    if passed.lane == "auto":
        return _release(passed.window, config, now, lane="auto", rule=state.auto_rule, approvers=(),
                        plan_hash=state.plan_hash)
    asked = {r.rule for r in state.requests}
    missing = [r for r in verdict_of(passed.policy).requirements() if r.rule not in asked]
    if missing:
        return list(approval_requests(missing, state.plan_hash, config, now))
    return _approve(state, config, now) if satisfied(state, config.group_members(state.tenant)) else []


def approval_requests(
    requirements: Sequence[ApprovalRule], plan_hash: str, config: PreflightConfig, now: datetime
) -> tuple[ApprovalRequested, ...]:
    expires = iso(now + config.approval_expiry)
    return tuple(ApprovalRequested(plan_hash=plan_hash, groups=r.groups, required=r.count, reason=r.message,
                                   rule=r.rule, expires_at=expires) for r in requirements)


def _check_open(state: ChangeState, verb: str, cmd: ChangeCommand) -> None:
    status = state.status
    if status == "unknown":
        raise ApprovalRefused(f"no change {cmd.change_id} in the log of this tenant", rule="exists")
    if cmd.plan_hash is not None and state.plan is not None and cmd.plan_hash != state.plan_hash:
        raise ApprovalRefused(
            f"plan {cmd.plan_hash} is not the change's current plan (revision {state.revision} is "
            f"{state.plan_hash}); review the new revision and {verb} that", field="plan_hash", rule="stale-plan")
    if state.denied is not None:
        raise ApprovalRefused(f"cannot {verb} change {cmd.change_id}: the change was denied by "
                              f"{state.denied.approver}; a denied change never executes", rule="denied")
    if state.preflight_failed:
        raise ApprovalRefused(f"cannot {verb} change {cmd.change_id}: pre-flight failed on the current plan; "
                              "nothing can be approved", rule="failed")
    if status == "scheduled":
        if verb == "approve":
            raise ApprovalRefused(f"change {cmd.change_id} is already approved and waits for its window",
                                  rule=status)
        return
    reasons = {
        "planning": ("the change has no compiled plan yet", "planning"),
        "preflight": ("pre-flight has not finished on the current plan", "preflight"),
    }
    if status in reasons:
        reason, rule = reasons[status]
        raise ApprovalRefused(f"cannot {verb} change {cmd.change_id}: {reason}", rule=rule)
    if state.approval is not None:
        raise ApprovalRefused(f"cannot {verb} change {cmd.change_id}: the change is already approved",
                              rule="approved")
    if status not in ("approving", "awaiting-approval"):
        raise ApprovalRefused(f"cannot {verb} change {cmd.change_id}: the change is closed", rule="closed")


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

