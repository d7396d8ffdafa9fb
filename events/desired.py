"""The desired state of every managed resource: one pure fold over the log (DESIGN §3a).

Rules, applied in log (stream sequence) order:

- A change that closes ``succeeded`` sets the desired state of every resource its executed plan
  acts on, step by step: a create or an update merges the step's fields over the resource's
  current desired state, a delete removes the resource. A facet step (``Step.parent``: a
  directory's mode, a file's content, a bucket's versioning) sets fields of its parent resource,
  so an update of a resource is one entry with its own baseline, never a second one beside it.
- An executed rollback of a change that had succeeded (an operator's ``upm rollback``, after
  ``change.closed``) restores each resource an undone step touched to its desired state before
  that change: what the change created is no longer desired, what it updated goes back.
  A step counts as undone when its inverse ran (``rollback.step.completed``) or its read-back
  showed it already undone (``rollback.step.skipped``). A rollback of a change that never
  succeeded (the automatic one after a failed verification) changes nothing: the change never
  set anything.
- What a later rollback needs is kept only while one can come, so the fold stays as small as the
  changes that can still be undone, however long the log: a rollback undoes only the steps that
  ran (``step.completed``; a skipped step changed nothing), so a change none of whose steps ran
  (a no-op) keeps nothing, and a change rolled back to the end (``rollback.completed``) is
  forgotten (it cannot be rolled back again).
- Reconcile changes (source ``drift``) are changes like any other. Failed, rejected, denied and
  cancelled changes set nothing.
- A resource is owned by the tenant whose change first put it in the inventory (created it);
  later changes, of any tenant, do not change its owner.

:func:`evolve` is the fold's step (one event, no I/O; the input is never mutated), :func:`fold`
rebuilds an inventory from events. Each resource holds the steps whose read-backs observe it
(:attr:`Resource.checks`): its own step, with the merged desired state, and the facet steps whose
fields its own read-back does not show (a bucket's versioning is not in ``head-bucket``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from events.model import (
    ChangeClosed,
    Event,
    ExecutionCompleted,
    ExecutionStarted,
    IntentSubmitted,
    PlanCompiled,
    RollbackCompleted,
    RollbackFailed,
    RollbackStarted,
    RollbackStepCompleted,
    RollbackStepSkipped,
    StepCompleted,
)
from events.plan import Plan, Step


class Resource(msgspec.Struct, frozen=True, kw_only=True):
    """One managed resource: who owns it, which change last set it, and how to observe it."""

    key: str
    owner: str
    created_by: str
    change_id: str
    environment: str
    checks: tuple[Step, ...]

    @property
    def desired(self) -> dict[str, Any]:
        """The whole desired state: every check's fields."""
        out: dict[str, Any] = {}
        for check in self.checks:
            out |= check.desired
        return out


Before = tuple[str, Resource | None]  # (resource key, the resource before the change)


class _Open(msgspec.Struct, frozen=True, kw_only=True):
    """What the fold keeps of a change until it closes."""

    environment: str = "dev"
    plans: Mapping[str, Plan] = msgspec.field(default_factory=dict)
    started: str = ""
    executed: str = ""
    completed: frozenset[str] = frozenset()  # the steps that ran: all a later rollback can undo


class Inventory(msgspec.Struct, frozen=True, kw_only=True):
    """The fold's state: the desired resources by key, open changes, and, for every change that
    succeeded and can still be rolled back, what each step that ran found (so that the rollback can
    restore it)."""

    resources: Mapping[str, Resource] = msgspec.field(default_factory=dict)
    open: Mapping[tuple[str, str], _Open] = msgspec.field(default_factory=dict)
    undo: Mapping[tuple[str, str], Mapping[str, Before]] = msgspec.field(default_factory=dict)
    rolling_back: frozenset[tuple[str, str]] = frozenset()


EMPTY = Inventory()


def resource_key(step: Step) -> str:
    """The key of the resource whose desired state ``step`` sets (a facet's parent)."""
    return step.parent or step.resource.key


def owner_of(inventory: Inventory, key: str) -> str | None:
    """The tenant that owns the resource ``key`` (see :func:`resource_key`), ``None`` if unmanaged."""
    found = inventory.resources.get(key)
    return None if found is None else found.owner


def owned_by(inventory: Inventory, tenant: str) -> list[Resource]:
    """``tenant``'s resources (``*``: everyone's), by key."""
    return [r for k, r in sorted(inventory.resources.items()) if tenant in ("*", r.owner)]


def in_change(inventory: Inventory) -> set[str]:
    """Keys of the resources a change is acting on: one that started executing and has not closed,
    or a rollback of a closed change that is running. Their state is in flux until then (and
    then the fold says what they should be)."""
    executing = {
        resource_key(step)
        for opened in inventory.open.values()
        if opened.started in opened.plans
        for step in opened.plans[opened.started].steps
    }
    return executing | {key for change in inventory.rolling_back for key, _ in inventory.undo[change].values()}


def fold(events: Iterable[Event], inventory: Inventory = EMPTY) -> Inventory:
    """``inventory`` with ``events`` (in log order) applied."""
    for event in events:
        inventory = evolve(inventory, event)
    return inventory


def evolve(inventory: Inventory, event: Event) -> Inventory:
    """The inventory after one event (the same object when the event changes nothing)."""
    change = (event.tenant, event.change_id)
    opened = inventory.open.get(change)
    match event.payload:
        case IntentSubmitted(environment=environment):
            return _reopen(inventory, change, _Open(environment=environment))
        case PlanCompiled(plan=plan):
            was = opened or _Open()
            return _reopen(inventory, change, msgspec.structs.replace(was, plans={**was.plans, plan.hash: plan}))
        case ExecutionStarted(plan_hash=plan_hash) if opened is not None:
            return _reopen(inventory, change, msgspec.structs.replace(opened, started=plan_hash))
        case StepCompleted(step_id=step_id) if opened is not None:
            return _reopen(inventory, change, msgspec.structs.replace(opened, completed=opened.completed | {step_id}))
        case ExecutionCompleted(plan_hash=plan_hash) if opened is not None:
            return _reopen(inventory, change, msgspec.structs.replace(opened, executed=plan_hash))
        case ChangeClosed(outcome=outcome) if opened is not None:
            still_open = {k: v for k, v in inventory.open.items() if k != change}
            executed = opened.plans.get(opened.executed)
            if outcome != "succeeded" or executed is None:
                return msgspec.structs.replace(inventory, open=still_open)
            resources, before = _apply(inventory.resources, executed, event, opened.environment)
            undoable = {step_id: found for step_id, found in before.items() if step_id in opened.completed}
            return Inventory(resources=resources, open=still_open, rolling_back=inventory.rolling_back,
                             undo={**inventory.undo, change: undoable} if undoable else inventory.undo)
        case RollbackStarted() if change in inventory.undo:
            return msgspec.structs.replace(inventory, rolling_back=inventory.rolling_back | {change})
        case RollbackCompleted() if change in inventory.undo:  # rolled back: never again, nothing left to undo
            return msgspec.structs.replace(inventory, rolling_back=inventory.rolling_back - {change},
                                           undo={k: v for k, v in inventory.undo.items() if k != change})
        case RollbackFailed() if change in inventory.rolling_back:  # it may be approved again: keep its undo
            return msgspec.structs.replace(inventory, rolling_back=inventory.rolling_back - {change})
        case RollbackStepCompleted(step_id=step_id) | RollbackStepSkipped(step_id=step_id):
            found = inventory.undo.get(change, {}).get(step_id)
            if found is None:
                return inventory
            key, previous = found
            resources = {k: v for k, v in inventory.resources.items() if k != key}
            if previous is not None:
                resources[key] = previous
            return msgspec.structs.replace(inventory, resources=resources)
        case _:
            return inventory


def _reopen(inventory: Inventory, change: tuple[str, str], opened: _Open) -> Inventory:
    return msgspec.structs.replace(inventory, open={**inventory.open, change: opened})


def _apply(
    resources: Mapping[str, Resource], plan: Plan, closed: Event, environment: str
) -> tuple[dict[str, Resource], dict[str, Before]]:
    """Every step of a succeeded plan applied in order; and, per step, its resource before the change."""
    out = dict(resources)
    first: dict[str, Resource | None] = {}
    before: dict[str, Before] = {}
    for step in plan.steps:
        key = resource_key(step)
        first.setdefault(key, out.get(key))
        before[step.id] = (key, first[key])
        if step.desired.get("exists", True) is False:
            out.pop(key, None)
            continue
        current = out.get(key)
        checks = _merge(current.checks if current else (), step)
        out[key] = Resource(
            key=key,
            owner=current.owner if current else closed.tenant,
            created_by=current.created_by if current else closed.change_id,
            change_id=closed.change_id,
            environment=current.environment if current else environment,
            checks=checks,
        )
    return out, before


def _merge(checks: tuple[Step, ...], step: Step) -> tuple[Step, ...]:
    """``checks`` with ``step``'s fields merged over the check that observes them all (the
    resource's own step, or the same facet), or with ``step`` added as a check of its own."""
    fields = set(step.desired) - {"exists"}
    for i, check in enumerate(checks):
        if check.resource.key == step.resource.key or (fields and fields <= set(check.desired)):
            merged = msgspec.structs.replace(
                step if check.resource.key == step.resource.key else check,
                desired=check.desired | step.desired,
                stdin=step.stdin if step.stdin is not None else check.stdin,
            )
            return (*checks[:i], merged, *checks[i + 1:])
    return (*checks, step) if step.parent else (step, *checks)
