"""The rollback planner (pure): the inverse of what actually ran, in reverse order.

Only steps recorded as ``step.completed`` are undone (a skipped step was already done before
the change; a step that never ran changed nothing); ``implied`` steps and steps without an
inverse are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from events.plan import Command, Plan, Step, undo_steps
from services.executor.state import ChangeView


@dataclass(frozen=True)
class Undo:
    """One rollback step: the completed ``step`` and the ``command`` that undoes it."""

    step: Step
    command: Command


def rollback_plan(plan: Plan, view: ChangeView) -> list[Undo]:
    """What to run to undo the change, in order (latest completed first)."""
    return [Undo(step, step.rollback) for step in undo_steps(plan, view.completed_steps()) if step.rollback]


def undone_when_absent(step: Step) -> bool:
    """Whether a read-back showing the resource absent proves the undo done (undo of a create)."""
    return step.action == "create"
