"""The verifier's pure core: verdicts from desired vs observed state, and rollback plans.

No I/O here. The shell (``service.py``) reads resources back and appends what these return.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from events.codec import digest
from events.desired import Resource, resource_key
from events.model import (
    Check,
    Event,
    FieldDiff,
    Payload,
    PlanCompiled,
    RollbackApproved,
    RollbackPlanned,
    SloBreached,
    StepCompleted,
    VerificationFailed,
    VerificationPassed,
)
from events.plan import Plan, Step, undo_steps
from providers import Observed, Unknown, compare

Scope = Literal["change", "rollback"]


def plan_named(history: Sequence[Event], plan_hash: str) -> Plan | None:
    """The latest compiled plan with ``plan_hash`` in a change's history."""
    for event in reversed(history):
        if isinstance(event.payload, PlanCompiled) and event.payload.plan.hash == plan_hash:
            return event.payload.plan
    return None


def final_steps(plan: Plan) -> list[Step]:
    """The last step acting on each resource: it holds the resource's final desired state."""
    last: dict[str, Step] = {}
    for step in plan.steps:
        last[step.resource.key] = step
    return sorted(last.values(), key=lambda s: s.index)


def completed_step_ids(history: Sequence[Event]) -> list[str]:
    """Ids of the plan's steps that ran to completion, in order (undo steps have their own type)."""
    return [e.payload.step_id for e in history if isinstance(e.payload, StepCompleted)]


def rollback_steps(plan: Plan, history: Sequence[Event]) -> list[Step]:
    """The steps to undo: those that actually ran and have an inverse, latest first (the same
    list the executor runs: :func:`events.plan.undo_steps`)."""
    return undo_steps(plan, completed_step_ids(history))


def restored_state(step: Step) -> dict[str, Any] | None:
    """What a rolled-back step's resource must look like afterwards (``None``: not checkable).

    A create is undone when the resource is gone; a delete when it is back. An update's prior
    value is not in the log, so only its undo command's success speaks for it.
    """
    if step.action == "create":
        return {"exists": False}
    if step.action == "delete":
        return {"exists": True}
    return None


def verdict(
    targets: Sequence[tuple[Step, Mapping[str, Any] | None]],
    observed: Sequence[Observed],
    duration_ms: float,
    scope: Scope = "change",
) -> VerificationPassed | VerificationFailed:
    """Compare each ``(step, desired)`` with what was observed; ``desired=None`` is not checkable.

    A resource whose read-back is unknown fails its check ("could not read back KEY: why") with no
    diff: nothing was observed, so nothing is claimed about it (its current state hashes as
    ``"unknown"``)."""
    checks: list[Check] = []
    diffs: list[FieldDiff] = []
    baseline: dict[str, Any] = {}
    current: dict[str, Any] = {}
    for (step, desired), seen in zip(targets, observed, strict=True):
        key = step.resource.key
        if desired is None:
            checks.append(Check(name="undo", target=key, ok=True, detail=f"`{step.rollback.display if step.rollback else ''}` succeeded; prior value not recorded"))
            continue
        baseline[key] = dict(desired)
        if isinstance(seen, Unknown):
            current[key] = "unknown"
            checks.append(Check(name="readback", target=key, ok=False, detail=f"could not read back {key}: {seen.reason}"))
            continue
        fields = seen.fields
        delta = compare(desired, fields)
        current[key] = None if fields is None else {f: fields.get(f) for f in desired}
        detail = "; ".join(f"{d.field}: {d.desired!r} → {d.observed!r}" for d in delta) or "matches"
        checks.append(Check(name="readback", target=key, ok=not delta, detail=detail))
        diffs += [FieldDiff(resource=key, field=d.field, desired=d.desired, observed=d.observed) for d in delta]
    base, now = digest(baseline), digest(current)
    if not all(c.ok for c in checks):
        return VerificationFailed(
            checks=tuple(checks), diff=tuple(diffs), baseline_hash=base, current_hash=now,
            duration_ms=duration_ms, scope=scope,
        )
    return VerificationPassed(
        checks=tuple(checks), baseline_hash=base, current_hash=now, duration_ms=duration_ms, scope=scope
    )


def failure_reason(result: VerificationFailed) -> str:
    """Why a verification failed, in one line: the fields that differ, and the failed checks with no
    diff (a resource it could not read back)."""
    differ = [f"{d.resource} {d.field}" for d in result.diff]
    diffed = {d.resource for d in result.diff}
    unread = [c.detail for c in result.checks if not c.ok and c.target not in diffed]
    return "verification failed: " + "; ".join(differ + unread)


def change_targets(plan: Plan) -> list[tuple[Step, Mapping[str, Any] | None]]:
    """What verifying a change compares: each resource's final desired state."""
    return [(s, s.desired) for s in final_steps(plan)]


def current_targets(plan: Plan, desired: Mapping[str, Resource]) -> list[tuple[Step, Mapping[str, Any] | None]]:
    """What verifying a change again later compares: each resource it touched at the desired state
    the log holds now (:mod:`events.desired`: later updates, deletes and rollbacks included), every
    check of it. A resource no longer desired is left out, unless this change deleted it (then it
    must still be absent)."""
    out: dict[str, tuple[Step, Mapping[str, Any] | None]] = {}
    for step in final_steps(plan):
        found = desired.get(resource_key(step))
        if found is not None:
            out |= {c.resource.key: (c, c.desired) for c in found.checks}
        elif step.action == "delete":
            out[step.resource.key] = (step, step.desired)
    return list(out.values())


def rollback_targets(plan: Plan, history: Sequence[Event]) -> list[tuple[Step, Mapping[str, Any] | None]]:
    """What verifying a rollback compares: each undone step's restored state."""
    return [(s, restored_state(s)) for s in rollback_steps(plan, history)]


def plan_rollback(
    plan: Plan, history: Sequence[Event], reason: str, *, automatic: bool
) -> list[Payload]:
    """``rollback.planned`` for what ran (maybe nothing), and ``rollback.approved`` when policy
    allows an automatic rollback and there is something to undo."""
    commands = tuple(s.rollback for s in rollback_steps(plan, history) if s.rollback is not None)
    out: list[Payload] = [RollbackPlanned(plan_hash=plan.hash, reason=reason, commands=commands, automatic=automatic)]
    if automatic and commands:
        out.append(RollbackApproved(plan_hash=plan.hash, lane="auto", by="policy:auto-rollback", reason=reason))
    return out


def slo_breach(duration_ms: float, target_ms: float) -> list[Payload]:
    """``slo.breached`` when a verification took longer than its target."""
    if duration_ms <= target_ms:
        return []
    return [SloBreached(phase="verify", metric="verification_ms", value_ms=duration_ms, target_ms=target_ms)]
