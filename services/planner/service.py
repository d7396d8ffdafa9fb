"""The planner service: ``intent.submitted`` → ``plan.compiled`` or ``plan.rejected``.

The core :func:`decide` is pure (the compile duration is the only measurement it takes); the
runtime does the rest. A change's later intents (revisions) compile to plan revision N+1.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from events.model import Event, IntentSubmitted, Payload, PlanCompiled, PlanRejected
from services.planner import CompileInput, PlanError, PlannerConfig, compile_intent
from services.planner.config import DEFAULT_CONFIG
from services.runtime import ServiceSpec, pure

NAME = "planner"


def revision_of(history: Sequence[Event]) -> int:
    """The plan revision the next compile produces: one more than compiled or rejected so far."""
    return 1 + sum(isinstance(e.payload, (PlanCompiled, PlanRejected)) for e in history)


def decide(history: Sequence[Event], event: Event, config: PlannerConfig = DEFAULT_CONFIG) -> list[Payload]:
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
            return [PlanCompiled(plan=plan, revision=revision, compile_ms=round(elapsed_ms, 3))]
        case _:
            return []


def spec(config: PlannerConfig = DEFAULT_CONFIG) -> ServiceSpec:
    return ServiceSpec(
        name=NAME,
        consumes=("intent.submitted",),
        handle=pure(lambda history, event: decide(history, event, config)),
    )
