"""The compiler's working graph: one :class:`Node` per resource action, before it becomes a step."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from events.plan import Action, ResourceRef
from providers import ResourceType
from providers.errors import InvalidValue, MissingField, ProviderError
from services.planner.errors import (
    InvalidFieldValue,
    InvalidName,
    MissingRequiredField,
    PlanError,
    UnsupportedAction,
)

DEFAULT_TARGETS = frozenset({"default", "local", "global"})


@dataclass(slots=True)
class Node:
    """One resource action of the plan being compiled.

    ``given`` are the fields the request named (an update changes only those); ``extra`` holds
    template variables that are not fields (``previous_*`` values a blue-green undo needs);
    ``parent`` is the key of a facet's resource; a ``virtual`` node (an update done entirely by
    facets) emits no step of its own.
    """

    rtype: ResourceType
    action: Action
    target: str
    values: dict[str, Any]
    given: frozenset[str]
    extra: dict[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)
    implied: bool = False
    implied_by: str = ""
    parent: str | None = None
    virtual: bool = False
    wave: int = 0
    depends_on: tuple[str, ...] = ()
    variables: dict[str, Any] = field(init=False)
    name: str = field(init=False)
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.variables = self.rtype.variables({**self.context, **self.extra, **self.values}, self.target)
        self.name = self.rtype.identity(self.variables)
        self.key = make_key(self.rtype.name, self.target, self.name)

    @property
    def ref(self) -> ResourceRef:
        return ResourceRef(
            provider=self.rtype.provider,
            type=self.rtype.name,
            name=self.name,
            target=self.target,
            key=self.key,
        )

    @property
    def label(self) -> str:
        where = "" if self.target in DEFAULT_TARGETS else f" on {self.target}"
        return f"{self.action} {self.rtype.name} {self.name}{where}"


def make_key(type_name: str, target: str, name: str) -> str:
    """The stable unique id of a resource: ``type:target:name``."""
    return f"{type_name}:{target}:{name}"


def validate(rtype: ResourceType, raw: Mapping[str, Any], action: Action) -> dict[str, Any]:
    """``raw`` validated for ``action`` (an update or delete needs only the naming fields)."""
    try:
        return rtype.validate(raw, required=None if action == "create" else rtype.ident_fields)
    except ProviderError as exc:
        raise as_plan_error(rtype, exc) from None


def as_plan_error(rtype: ResourceType, exc: ProviderError) -> PlanError:
    """The planner error for a provider's validation error."""
    if isinstance(exc, MissingField):
        return MissingRequiredField(exc.message)
    if isinstance(exc, InvalidValue) and exc.field in rtype.ident_fields:
        return InvalidName(exc.message)
    return InvalidFieldValue(exc.message)


def rename_refusal(rtype: ResourceType, name: str, new_name: str) -> UnsupportedAction:
    """Why ``rtype`` ``name`` cannot become ``new_name``, and what to do instead: a resource's name is
    its identity (its key, its read-back), so no type renames in place."""
    advice = rtype.renaming.format(old=name, new=new_name) if rtype.renaming else (
        f"create {rtype.nouns[0] if rtype.nouns else rtype.name} {new_name} and delete {name} (one request may do both)"
    )
    return UnsupportedAction(f"{rtype.name} {name} cannot be renamed to {new_name}: {advice}")
