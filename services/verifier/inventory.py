"""The inventory: every managed resource's baseline, derived from the log alone.

Pure. A change that closed ``succeeded`` sets the baseline of each resource it touched to its
final desired state (a delete removes it). Nothing else changes the inventory: a change that
failed or was rolled back never set a baseline (its skipped steps touched resources that were
already managed). So the inventory can be rebuilt at any time by replaying closed changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from events.model import ChangeClosed, Event, ExecutionCompleted, IntentSubmitted
from events.plan import Step
from services.verifier import core


class Managed(msgspec.Struct, frozen=True, kw_only=True):
    """One managed resource: the step holding its baseline, and the change that set it."""

    tenant: str
    key: str
    change_id: str
    environment: str
    step: Step


Inventory = dict[str, dict[str, Managed]]


def apply(inventory: Inventory, change: Sequence[Event]) -> list[str]:
    """Fold one closed change into ``inventory``; return the keys it set or removed."""
    closed = next((e.payload for e in reversed(change) if isinstance(e.payload, ChangeClosed)), None)
    if closed is None or not change:
        return []
    tenant, change_id = change[0].tenant, change[0].change_id
    intent = next((e.payload for e in change if isinstance(e.payload, IntentSubmitted)), None)
    environment = intent.environment if intent else "dev"
    managed = inventory.setdefault(tenant, {})
    touched: list[str] = []
    if closed.outcome == "succeeded":
        executed = next((e.payload for e in reversed(change) if isinstance(e.payload, ExecutionCompleted)), None)
        plan = core.plan_named(change, executed.plan_hash) if executed else None
        for step in core.final_steps(plan) if plan else []:
            key = step.resource.key
            if step.desired.get("exists", True) is False:
                managed.pop(key, None)
            else:
                managed[key] = Managed(tenant=tenant, key=key, change_id=change_id, environment=environment, step=step)
            touched.append(key)
    return touched
