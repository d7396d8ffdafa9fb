"""Plan diff: what changed between two plans (e.g. revision 1 and 2 of a change).

Steps are matched by id (the resource key); a step is *changed* when its action, command,
desired state, rollback, guard, dependencies, wave or stdin differ.
"""

from __future__ import annotations

from typing import Any

import msgspec

from events.codec import to_builtins
from events.plan import Plan, Step

_COMPARED = ("action", "command", "desired", "rollback", "guard", "depends_on", "wave", "stdin", "target")


class FieldChange(msgspec.Struct, frozen=True, kw_only=True):
    """One field of a step, before and after."""

    field: str
    before: Any
    after: Any


class StepChange(msgspec.Struct, frozen=True, kw_only=True):
    """A step present in both plans whose fields differ."""

    step: str
    changes: tuple[FieldChange, ...]


class PlanDiff(msgspec.Struct, frozen=True, kw_only=True):
    """Added, removed and changed steps from plan ``a`` to plan ``b``."""

    a: str
    b: str
    identical: bool
    added: tuple[Step, ...] = ()
    removed: tuple[Step, ...] = ()
    changed: tuple[StepChange, ...] = ()
    variant: tuple[str, str] | None = None


def diff_plans(a: Plan, b: Plan) -> PlanDiff:
    """The difference from ``a`` to ``b``."""
    before = {s.id: s for s in a.steps}
    after = {s.id: s for s in b.steps}
    changed = []
    for step in b.steps:
        old = before.get(step.id)
        if old is None:
            continue
        fields = tuple(
            FieldChange(field=name, before=_plain(getattr(old, name)), after=_plain(getattr(step, name)))
            for name in _COMPARED
            if getattr(old, name) != getattr(step, name)
        )
        if fields:
            changed.append(StepChange(step=step.id, changes=fields))
    return PlanDiff(
        a=a.hash,
        b=b.hash,
        identical=a.hash == b.hash,
        added=tuple(s for s in b.steps if s.id not in before),
        removed=tuple(s for s in a.steps if s.id not in after),
        changed=tuple(changed),
        variant=None if a.variant == b.variant else (a.variant, b.variant),
    )


def _plain(value: Any) -> Any:
    if isinstance(value, msgspec.Struct) and hasattr(value, "display"):
        return value.display
    return to_builtins(value)
