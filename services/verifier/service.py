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
    IntentSubmitted,
    Payload,
    RollbackCompleted,
    VerificationFailed,
    VerificationPassed,
)
from events.plan import Step
from services.runtime import Context, ServiceSpec
from services.steps import observe_many
from services.verifier import core
from services.verifier.config import VerifierConfig, load

NAME = "verifier"


async def verify(
    targets: Sequence[tuple[Step, Mapping[str, Any] | None]], scope: core.Scope
) -> VerificationPassed | VerificationFailed:
    started = time.perf_counter()
    observed = await observe_many([step for step, _ in targets])
    return core.verdict(targets, observed, round((time.perf_counter() - started) * 1000, 3), scope)


def environment_of(history: Sequence[Event]) -> str:
    intent = next((e.payload for e in history if isinstance(e.payload, IntentSubmitted)), None)
    return intent.environment if intent is not None else "dev"


def make_handler(config: VerifierConfig) -> Any:
    async def handle(ctx: Context, history: list[Event], event: Event) -> None:
        out: list[Payload] = []
        automatic = config.rolls_back_automatically(environment_of(history))
        match event.payload:
            case ExecutionCompleted(plan_hash=plan_hash):
                plan = core.plan_named(history, plan_hash)
                if plan is None:
                    return
                result = await verify(core.change_targets(plan), "change")
                out.append(result)
                if isinstance(result, VerificationFailed):
                    out += core.plan_rollback(plan, history, core.failure_reason(result), automatic=automatic)
                out += core.slo_breach(result.duration_ms, config.verify_slo_ms)
            case ExecutionFailed(plan_hash=plan_hash, reason=reason):
                plan = core.plan_named(history, plan_hash)
                if plan is None:
                    return
                out += core.plan_rollback(plan, history, f"execution failed: {reason}", automatic=automatic)
            case RollbackCompleted(plan_hash=plan_hash):
                plan = core.plan_named(history, plan_hash)
                if plan is None:
                    return
                out.append(await verify(core.rollback_targets(plan, history), "rollback"))
            case _:
                return
        await ctx.emit(*out)

    return handle


def spec(config: VerifierConfig | None = None) -> ServiceSpec:
    return ServiceSpec(
        name=NAME,
        consumes=("execution.completed", "execution.failed", "rollback.completed"),
        handle=make_handler(config or load()),
    )
