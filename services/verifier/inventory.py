"""The verifier's view of the desired-state inventory (:mod:`events.desired`): what to read back.

A thin adapter. :func:`managed` lists one :class:`Managed` per read-back check of each desired
resource; :func:`from_log` rebuilds the inventory by folding the log.
"""

from __future__ import annotations

import msgspec

from events.desired import Inventory, fold, owned_by
from events.model import decode_event
from events.plan import Step
from events.store import EventStore
from events.subjects import tenant_filter


class Managed(msgspec.Struct, frozen=True, kw_only=True):
    """One read-back of a managed resource: the step that observes it, with its desired fields.

    ``tenant`` owns the resource; ``change_id`` last set its desired state."""

    tenant: str
    key: str
    change_id: str
    environment: str
    step: Step


def managed(inventory: Inventory, tenant: str) -> list[Managed]:
    """Every check of ``tenant``'s resources (``*``: everyone's), by key."""
    return sorted(
        (
            Managed(tenant=r.owner, key=check.resource.key, change_id=r.change_id, environment=r.environment,
                    step=check)
            for r in owned_by(inventory, tenant)
            for check in r.checks
        ),
        key=lambda m: (m.tenant, m.key),
    )


async def from_log(store: EventStore, tenant: str = "*") -> Inventory:
    """The inventory folded from every stored event of ``tenant`` (``*``: all tenants)."""
    return fold(decode_event(data) for _, data in await store.read_raw(tenant_filter(tenant)))

