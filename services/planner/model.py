"""The intermediate model both input forms compile to: an :class:`Intent` of resource intents."""

from __future__ import annotations

from typing import Any

import msgspec

from events.plan import Action

VARIANTS = ("all-at-once", "canary", "blue-green", "waves")


class ResourceIntent(msgspec.Struct, frozen=True, kw_only=True):
    """One resource the request asks for: its type, action, fields and targets.

    ``targets`` empty means the provider's default target; ``depends_on`` holds explicit
    ``type:name`` (or ``type:target:name``) references to other resources of the intent.
    """

    type: str
    action: Action = "create"
    fields: dict[str, Any] = msgspec.field(default_factory=dict)
    targets: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()


class Intent(msgspec.Struct, frozen=True, kw_only=True):
    """A whole request: resources, the rollout targets in the order given, and a variant."""

    resources: tuple[ResourceIntent, ...]
    targets: tuple[str, ...] = ()
    variant: str | None = None
    initiator: str = ""
    reason: str = ""
    window: str | None = None
    notes: tuple[str, ...] = ()
