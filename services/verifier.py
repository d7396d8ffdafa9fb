"""The verifier service: proves the intended state after execution.

``execution.completed`` → every resource the change touched is read back through its provider
and compared with the plan's desired state → ``verification.passed`` or
``verification.failed`` with the per-resource checks, the field diffs, and the baseline and
current hashes (the spec's drift block).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import anyio

from events.codec import digest
from events.model import (
    Check,
    Event,
    ExecutionCompleted,
    FieldDiff,
    Payload,
    PlanCompiled,
    VerificationFailed,
    VerificationPassed,
)
from events.plan import Plan, Step
from providers import compare
from services.runtime import Context, ServiceSpec
from services.steps import read_back

NAME = "verifier"
READBACK_CONCURRENCY = 16


def final_steps(plan: Plan) -> list[Step]:
    """The last step acting on each resource: it holds the resource's final desired state."""
    last: dict[str, Step] = {}
    for step in plan.steps:
        last[step.resource.key] = step
    return sorted(last.values(), key=lambda s: s.index)


def decide(
    steps: Sequence[Step], observed: Sequence[dict[str, Any] | None], duration_ms: float
) -> list[Payload]:
    """The pure verdict from desired and observed state."""
    checks: list[Check] = []
    diffs: list[FieldDiff] = []
    baseline: dict[str, Any] = {}
    current: dict[str, Any] = {}
    for step, seen in zip(steps, observed, strict=True):
        key = step.resource.key
        delta = compare(step.desired, seen)
        baseline[key] = step.desired
        current[key] = None if seen is None else {f: seen.get(f) for f in step.desired}
        detail = "; ".join(f"{d.field}: {d.desired!r} → {d.observed!r}" for d in delta) or "matches"
        checks.append(Check(name="readback", target=key, ok=not delta, detail=detail))
        diffs += [FieldDiff(resource=key, field=d.field, desired=d.desired, observed=d.observed) for d in delta]
    base, now = digest(baseline), digest(current)
    if diffs:
        return [VerificationFailed(checks=tuple(checks), diff=tuple(diffs), baseline_hash=base,
                                   current_hash=now, duration_ms=duration_ms)]
    return [VerificationPassed(checks=tuple(checks), baseline_hash=base, current_hash=now,
                               duration_ms=duration_ms)]


async def observe_all(steps: Sequence[Step]) -> list[dict[str, Any] | None]:
    results: list[dict[str, Any] | None] = [None] * len(steps)
    limiter = anyio.CapacityLimiter(READBACK_CONCURRENCY)

    async def one(i: int, step: Step) -> None:
        async with limiter:
            results[i] = await read_back(step.resource, step.readback, timeout_s=step.timeout_s)

    async with anyio.create_task_group() as tg:
        for i, step in enumerate(steps):
            tg.start_soon(one, i, step)
    return results


async def handle(ctx: Context, history: list[Event], event: Event) -> None:
    if not isinstance(event.payload, ExecutionCompleted):
        return
    plan_hash = event.payload.plan_hash
    plan = next(
        (e.payload.plan for e in reversed(history)
         if isinstance(e.payload, PlanCompiled) and e.payload.plan.hash == plan_hash),
        None,
    )
    if plan is None:
        return
    started = time.perf_counter()
    steps = final_steps(plan)
    observed = await observe_all(steps)
    await ctx.emit(*decide(steps, observed, round((time.perf_counter() - started) * 1000, 3)))


def spec() -> ServiceSpec:
    return ServiceSpec(name=NAME, consumes=("execution.completed",), handle=handle)
