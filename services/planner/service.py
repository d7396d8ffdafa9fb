"""The planner service: ``intent.submitted`` → ``plan.compiled`` or ``plan.rejected``.

The core :func:`decide` is pure (the compile duration is the only measurement it takes); the
runtime does the rest. A change's later intents (revisions) compile to plan revision N+1.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from events.model import ChangeStalled, Event, IntentSubmitted, Payload, PlanCompiled, PlanRejected, type_of
from services.common.runtime import Context, Handler, ServiceSpec, pure
from services.planner import CompileInput, PlanError, PlannerConfig, compile_intent
from services.planner.config import DEFAULT_CONFIG, config_from_environment
from services.security.scope import Scope, load_scope

NAME = "planner"


def revision_of(history: Sequence[Event]) -> int:
    """The plan revision the next compile produces: one more than compiled or rejected so far."""
    return 1 + sum(isinstance(e.payload, (PlanCompiled, PlanRejected)) for e in history)


def decide(
    history: Sequence[Event], event: Event, config: PlannerConfig = DEFAULT_CONFIG, scope: Scope | None = None
) -> list[Payload]:
    """Compile the intent; a plan with a local path out of the tenant's ``scope`` is rejected."""
    match event.payload:
        case IntentSubmitted() as intent:
            revision = revision_of(history)
            inp = CompileInput(**intent.compile_fields(event.tenant))
            started = time.perf_counter()
            try:
                plan = compile_intent(inp, config)
            except PlanError as err:
                return [PlanRejected(reason=str(err), error=type(err).__name__, revision=revision)]
            elapsed_ms = (time.perf_counter() - started) * 1000
            refusals = scope.plan_refusals(event.tenant, plan) if scope is not None else []
            if refusals:
                return [PlanRejected(reason="; ".join(refusals), error="OutOfScope", revision=revision)]
            return [PlanCompiled(plan=plan, revision=revision, compile_ms=round(elapsed_ms, 3))]
        case _:
            return []


def make_handler(config: PlannerConfig, scope: Scope) -> Handler:
    """Compile each intent; on the watchdog's nudge, compile the intent a crash left uncompiled
    (ids derived from that intent, as its first compile would have written them)."""
    compile_each = pure(lambda history, event: decide(history, event, config, scope))

    async def handle(ctx: Context, history: list[Event], event: Event) -> None:
        if not isinstance(event.payload, ChangeStalled):
            await compile_each(ctx, history, event)
            return
        if ctx.state.status != "planning":
            return
        events = [s.event for s in ctx.log.events]
        at = max(i for i, e in enumerate(events) if isinstance(e.payload, IntentSubmitted))
        intent = events[at]
        await ctx.emit(*(ctx.derived(p, intent.id, type_of(p)) for p in decide(events[:at], intent, config, scope)))

    return handle


def spec(config: PlannerConfig | None = None, scope: Scope | None = None) -> ServiceSpec:
    """The planner service; its configuration is ``config``, else the file $UPM_PLANNER_CONFIG names."""
    return ServiceSpec(name=NAME, consumes=("intent.submitted", "change.stalled"),
                       handle=make_handler(config or config_from_environment(), scope or load_scope()))
