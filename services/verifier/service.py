"""The verifier service shell: read-backs after execution and after rollback.

``execution.completed`` → verify the change (``verification.passed`` / ``verification.failed``;
a failure also emits ``rollback.planned``, plus ``rollback.approved`` when policy allows an
automatic rollback). ``execution.failed`` → ``rollback.planned`` for what ran. ``rollback.completed``
→ verify the restored state (``scope: rollback``). A slow verification also emits ``slo.breached``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from events.model import (
    Event,
    ExecutionCompleted,
    ExecutionFailed,
    Payload,
    RollbackCompleted,
    VerificationFailed,
    VerificationPassed,
    type_of,
)
from events.plan import Step
from services.common.runtime import Context, ServiceSpec
from services.guard import worker
from services.guard.steps import observe_many
from services.security.secrets import resolved_desired
from services.verifier import core
from services.verifier.config import VerifierConfig, load

NAME = "verifier"


async def verify(
    targets: Sequence[tuple[Step, Mapping[str, Any] | None]], scope: core.Scope
) -> VerificationPassed | VerificationFailed:
    started = time.perf_counter()
    observed = await observe_many([step for step, _ in targets])
    return core.verdict(targets, observed, round((time.perf_counter() - started) * 1000, 3), scope)


def make_handler(config: VerifierConfig) -> Any:
    async def handle(ctx: Context, history: list[Event], event: Event) -> None:
        await step(ctx, config)

    return handle


async def step(ctx: Context, config: VerifierConfig) -> None:
    """Do what the verifier owes the change now, by its lifecycle status — whatever delivered it
    (its trigger, a redelivery, or the watchdog's nudge). Every event's id derives from the
    event that made the step due, so finishing a step a crash cut short writes each event once
    (the store skips ids already in the log)."""
    state = ctx.state
    events = [s.event for s in ctx.log.events]
    automatic = config.rolls_back_automatically(state.environment)
    plan = state.approved_plan
    if plan is None or state.status not in ("verifying", "rollback-planning", "verifying-rollback"):
        return
    origin = _last(events, ExecutionCompleted, ExecutionFailed, RollbackCompleted)
    if origin is None:
        return
    out: list[Payload] = []
    match origin.payload:
        case ExecutionCompleted() if state.status == "verifying":
            resolver = config.secrets.resolver()
            targets = [(s, resolved_desired(s, resolver)) for s, _ in core.change_targets(plan)]
            result = await verify(targets, "change")
            out.append(result)
            if isinstance(result, VerificationFailed):
                out += core.plan_rollback(plan, events, core.failure_reason(result), automatic=automatic)
            out += core.slo_breach(result.duration_ms, config.verify_slo_ms)
        case ExecutionCompleted():  # verified as failed; its rollback plan was cut short
            failed = _last(events, VerificationFailed)
            assert failed is not None and isinstance(failed.payload, VerificationFailed)
            out += core.plan_rollback(plan, events, core.failure_reason(failed.payload), automatic=automatic)
        case ExecutionFailed(reason=reason):
            out += core.plan_rollback(plan, events, f"execution failed: {reason}", automatic=automatic)
        case RollbackCompleted() if state.status == "verifying-rollback":
            out.append(await verify(core.rollback_targets(plan, events), "rollback"))
        case _:
            return
    await ctx.emit(*(ctx.derived(p, origin.id, type_of(p)) for p in out))


def _last(events: Sequence[Event], *kinds: type[Payload]) -> Event | None:
    return next((e for e in reversed(events) if isinstance(e.payload, kinds)), None)


def spec(config: VerifierConfig | None = None) -> ServiceSpec:
    return ServiceSpec(
        name=NAME,
        consumes=("execution.completed", "execution.failed", "rollback.completed", "change.stalled"),
        handle=make_handler(config or load()),
        on_stop=worker.close,  # its read-backs' idle aws workers end with the verifier
    )
