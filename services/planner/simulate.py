"""The simulation report: what each step of a plan would do against an observed state (a dry run).

``observed`` maps ``ResourceRef.key`` to the observed fields (a present read-back's
``fields``, see :func:`providers.observe`; a state snapshot file holds the same mapping) or ``None`` for absent; a key that is
not in the mapping is absent too. A facet step (e.g. S3 versioning) falls back to its parent's
entry, so one snapshot entry per resource suffices. Nothing is run and nothing is mutated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from events.plan import Plan, Step
from providers import CATALOG, Mismatch, compare
from services.planner.nodes import make_key

Outcome = Literal["create", "update", "no-op", "delete", "blocked"]


class SimulatedStep(msgspec.Struct, frozen=True, kw_only=True):
    """What one step would do, and why (the field differences)."""

    step: str
    index: int
    action: str
    outcome: Outcome
    command: str
    diffs: tuple[Mismatch, ...] = ()
    note: str = ""


class SimulationReport(msgspec.Struct, frozen=True, kw_only=True):
    """The dry run of a whole plan: one entry per step, and counts per outcome."""

    plan_hash: str
    steps: tuple[SimulatedStep, ...]
    counts: dict[str, int]
    changes: int


def simulate(plan: Plan, observed: Mapping[str, Mapping[str, Any] | None]) -> SimulationReport:
    """What ``plan`` would do given ``observed`` (see the module docstring)."""
    steps = tuple(_one(step, _observed(step, observed)) for step in plan.steps)
    counts = {
        o: sum(1 for s in steps if s.outcome == o) for o in ("create", "update", "delete", "no-op", "blocked")
    }
    return SimulationReport(
        plan_hash=plan.hash,
        steps=steps,
        counts=counts,
        changes=sum(v for k, v in counts.items() if k in {"create", "update", "delete"}),
    )


def _observed(step: Step, observed: Mapping[str, Mapping[str, Any] | None]) -> Mapping[str, Any] | None:
    ref = step.resource
    if ref.key in observed:
        return observed[ref.key]
    for parent in CATALOG[ref.type].facet_of:
        key = make_key(parent, ref.target, ref.name)
        if key in observed:
            return observed[key]
    return None


def _one(step: Step, state: Mapping[str, Any] | None) -> SimulatedStep:
    diffs = tuple(compare(step.desired, state))
    if step.action == "delete":
        return _entry(step, "delete" if state is not None else "no-op")
    if not diffs:
        return _entry(step, "no-op", note="already in the desired state: the guard skips it")
    if state is None and step.action == "update":
        return _entry(step, "blocked", diffs, "the resource to update is absent")
    if state is None:
        fields = tuple(
            Mismatch(field=k, desired=v, observed=None)
            for k, v in sorted(step.desired.items())
            if k != "exists"
        )
        return _entry(step, "create", fields or diffs)
    return _entry(step, "update", diffs)


def _entry(step: Step, outcome: Outcome, diffs: tuple[Mismatch, ...] = (), note: str = "") -> SimulatedStep:
    return SimulatedStep(
        step=step.id,
        index=step.index,
        action=step.action,
        outcome=outcome,
        command=step.command.display,
        diffs=diffs,
        note=note,
    )
