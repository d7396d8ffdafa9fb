"""The executor service: runs an approved plan's steps under the guard-rails.

``change.approved`` → ``execution.started``, then per step ``step.skipped`` (its guard read-back
shows it is already done) or ``step.started`` + ``step.completed`` / ``step.failed``, then
``execution.completed`` or ``execution.failed``. Every event id is derived from the approval
event, and steps already recorded as done are never run again, so a redelivered approval (after
a crash) resumes where the change stopped.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from events.model import (
    ChangeApproved,
    Event,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionStarted,
    PlanCompiled,
    StepCompleted,
    StepFailed,
    StepSkipped,
    StepStarted,
)
from events.plan import Plan
from services.runtime import Context, ServiceSpec
from services.steps import already_done, run_command

NAME = "executor"


def approved_plan(history: Sequence[Event], plan_hash: str) -> Plan | None:
    """The latest compiled plan with ``plan_hash`` (an approval names the plan it approves)."""
    for event in reversed(history):
        if isinstance(event.payload, PlanCompiled) and event.payload.plan.hash == plan_hash:
            return event.payload.plan
    return None


def finished_steps(events: Sequence[Event]) -> set[str]:
    """Step ids recorded as completed or skipped."""
    return {e.payload.step_id for e in events if isinstance(e.payload, (StepCompleted, StepSkipped))}


def execution_over(events: Sequence[Event], plan_hash: str) -> bool:
    return any(
        isinstance(e.payload, (ExecutionCompleted, ExecutionFailed)) and e.payload.plan_hash == plan_hash
        for e in events
    )


async def handle(ctx: Context, history: list[Event], event: Event) -> None:
    if not isinstance(event.payload, ChangeApproved):
        return
    plan_hash = event.payload.plan_hash
    plan = approved_plan(history, plan_hash)
    if plan is None:
        await ctx.emit(
            ExecutionFailed(
                plan_hash=plan_hash,
                step_id="",
                reason=f"no compiled plan with hash {plan_hash} in the change; nothing was run",
                duration_ms=0.0,
            )
        )
        return
    recorded = [s.event for s in ctx.log.events]
    if execution_over(recorded, plan_hash):
        return
    started = time.perf_counter()
    await ctx.emit(ExecutionStarted(plan_hash=plan_hash, steps=len(plan.steps), waves=max(1, len(plan.waves))))
    done = finished_steps(recorded)
    for step in plan.steps:
        if step.id in done:
            continue
        if await already_done(step):
            reason = f"guard read-back `{step.guard.display if step.guard else ''}` shows it is already done"
            await ctx.emit((StepSkipped(step_id=step.id, index=step.index, reason=reason), f"skip:{step.id}"))
            continue
        display = step.command.display
        await ctx.emit((StepStarted(step_id=step.id, index=step.index, command=display), f"start:{step.id}"))
        out = await run_command(step.command, timeout_s=step.timeout_s, stdin=step.stdin, target=step.target)
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        if out.rc != 0:
            error = f"`{display}` exited {out.rc}: {out.stderr.strip()[-500:]}"
            await ctx.emit(
                (StepFailed(step_id=step.id, index=step.index, command=display, output=out, error=error),
                 f"fail:{step.id}"),
                ExecutionFailed(plan_hash=plan_hash, step_id=step.id, reason=error, duration_ms=elapsed),
            )
            return
        await ctx.emit(
            (StepCompleted(step_id=step.id, index=step.index, command=display, output=out), f"done:{step.id}")
        )
    elapsed = round((time.perf_counter() - started) * 1000, 3)
    await ctx.emit(ExecutionCompleted(plan_hash=plan_hash, duration_ms=elapsed))


def spec() -> ServiceSpec:
    return ServiceSpec(name=NAME, consumes=("change.approved",), handle=handle, concurrency=8)
