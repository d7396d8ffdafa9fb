"""The pre-flight service: checks before any mutation, then the approval lane.

``plan.compiled`` → the prerequisite checks (each ``resources_needed`` entry's check command,
read-only) → ``preflight.passed`` + ``change.approved``, or ``preflight.failed`` with one
actionable reason per missing prerequisite. A failed change never reaches the executor.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import anyio

from events.model import (
    ChangeApproved,
    Check,
    Event,
    Payload,
    PlanCompiled,
    PreflightFailed,
    PreflightPassed,
)
from events.plan import Plan, Prerequisite
from services.runtime import Context, ServiceSpec
from services.steps import run_command

NAME = "preflight"
AUTO_LANE_RULE = "no-approval-policy: no policy pack requires approval for this change"
CHECK_CONCURRENCY = 8


def decide(plan: Plan, checks: Sequence[Check], duration_ms: float) -> list[Payload]:
    """The pure pre-flight decision from the plan and the checks' results."""
    missing = [c for c in checks if not c.ok]
    if missing:
        return [
            PreflightFailed(
                plan_hash=plan.hash,
                checks=tuple(checks),
                reasons=tuple(f"missing prerequisite {c.target}: {c.detail}" for c in missing),
                duration_ms=duration_ms,
            )
        ]
    return [
        PreflightPassed(plan_hash=plan.hash, checks=tuple(checks), duration_ms=duration_ms),
        ChangeApproved(plan_hash=plan.hash, lane="auto", rule=AUTO_LANE_RULE),
    ]


async def check_prerequisite(pre: Prerequisite) -> Check:
    out = await run_command(pre.check, timeout_s=30.0, target=pre.resource.target)
    ok = out.rc == 0
    detail = "exists" if ok else f"{pre.hint} (check `{pre.check.display}` exited {out.rc})"
    return Check(name="exists", target=pre.resource.key, ok=ok, detail=detail)


async def handle(ctx: Context, history: list[Event], event: Event) -> None:
    if not isinstance(event.payload, PlanCompiled):
        return
    plan = event.payload.plan
    started = time.perf_counter()
    results: list[Check | None] = [None] * len(plan.resources_needed)
    limiter = anyio.CapacityLimiter(CHECK_CONCURRENCY)

    async def one(i: int, pre: Prerequisite) -> None:
        async with limiter:
            results[i] = await check_prerequisite(pre)

    async with anyio.create_task_group() as tg:
        for i, pre in enumerate(plan.resources_needed):
            tg.start_soon(one, i, pre)
    checks = [c for c in results if c is not None]
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    await ctx.emit(*decide(plan, checks, duration_ms))


def spec() -> ServiceSpec:
    return ServiceSpec(name=NAME, consumes=("plan.compiled",), handle=handle)
