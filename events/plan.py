"""The plan model: what the planner compiles and every later phase consumes.

A :class:`Plan` is an ordered list of :class:`Step` s (topological order, stable tie-break), each
one an exact command (argv, never a shell) with its idempotency guard, read-back, health check
and rollback command, plus the resources that must already exist, the dependency graph, the
policy annotations (who / why / when, impact, cost) and the rollout variant with its waves.

Everything here is a frozen, ``kw_only`` msgspec Struct with no I/O. ``Plan.hash`` is
``events.codec.digest`` of the plan with ``hash=""``: no timestamp is part of a plan, so one input
always gives one hash. A plan never holds a secret value: credentials are references that the
executor resolves at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from events.codec import digest

Action = Literal["create", "update", "delete"]


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """One command: ``argv`` is what runs (no shell, ever); ``display`` is the human/spec form."""

    argv: tuple[str, ...]
    display: str


class ResourceRef(msgspec.Struct, frozen=True, kw_only=True):
    """Which resource a step acts on; ``key`` (``type:target:name``) is unique within a plan."""

    provider: str
    type: str
    name: str
    target: str
    key: str


class Step(msgspec.Struct, frozen=True, kw_only=True):
    """One command of the plan with everything needed to run, skip, verify and undo it.

    ``guard`` is the idempotency read-back: when its parsed output already shows ``desired``, the
    step is done and a re-run skips it. ``readback`` is what the verifier runs to observe the
    resource; ``desired`` is the field → value state it compares with the parsed read-back
    (``{"exists": False}`` for a delete). ``stdin`` is data fed to the command (there is no shell
    and no redirection). ``implied`` steps were added by the planner (e.g. the resource group an
    AKS cluster needs): they are guarded and are not undone by the rollback plan. ``parent`` is
    set on a facet step (one that sets a field of another resource: a directory's mode, a bucket's
    versioning): the key of that resource, whose desired state the step's fields belong to.
    """

    id: str
    index: int
    resource: ResourceRef
    action: Action
    command: Command
    guard: Command | None
    readback: Command
    health: Command | None
    rollback: Command | None
    desired: dict[str, Any]
    depends_on: tuple[str, ...]
    wave: int = 0
    target: str
    cli: str
    timeout_s: float
    destructive: bool
    stdin: str | None = None
    implied: bool = False
    description: str = ""
    parent: str = ""


class Prerequisite(msgspec.Struct, frozen=True, kw_only=True):
    """A resource the plan needs but does not create; ``check`` exits 0 when it exists."""

    resource: ResourceRef
    check: Command
    hint: str


class GraphNode(msgspec.Struct, frozen=True, kw_only=True):
    """One step of the dependency graph."""

    id: str
    label: str
    action: Action
    wave: int = 0


class GraphEdge(msgspec.Struct, frozen=True, kw_only=True):
    """``source`` must run before ``target`` (both step ids)."""

    source: str
    target: str


class Graph(msgspec.Struct, frozen=True, kw_only=True):
    """The dependency graph of the plan's steps."""

    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]


class Impact(msgspec.Struct, frozen=True, kw_only=True):
    """What the plan does to the world, by resource key."""

    created: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    destroyed: tuple[str, ...] = ()
    destructive: bool = False
    notes: tuple[str, ...] = ()


class CostItem(msgspec.Struct, frozen=True, kw_only=True):
    """The monthly cost delta of one resource (negative for a delete)."""

    key: str
    monthly: float


class CostEstimate(msgspec.Struct, frozen=True, kw_only=True):
    """Estimated monthly cost delta of the plan, from the configured cost table."""

    currency: str = "USD"
    monthly: float = 0.0
    items: tuple[CostItem, ...] = ()


class Annotations(msgspec.Struct, frozen=True, kw_only=True):
    """Policy annotations: who, why, when, impact and cost."""

    initiator: str = ""
    reason: str = ""
    window: str | None = None
    impact: Impact = Impact()
    cost: CostEstimate = CostEstimate()


class Wave(msgspec.Struct, frozen=True, kw_only=True):
    """One wave of a progressive rollout: its targets and the steps it runs."""

    index: int
    name: str
    targets: tuple[str, ...]
    steps: tuple[str, ...]


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """A compiled, deterministic plan (see the module docstring)."""

    hash: str
    version: int = 1
    request: str = ""
    tenant: str = "default"
    steps: tuple[Step, ...]
    resources: tuple[dict[str, Any], ...]
    resources_needed: tuple[Prerequisite, ...]
    rollback: tuple[Command, ...]
    graph: Graph
    annotations: Annotations
    variant: str = "all-at-once"
    waves: tuple[Wave, ...] = ()
    targets: tuple[str, ...] = ()


def undo_steps(plan: Plan, completed: Sequence[str]) -> list[Step]:
    """The steps whose ``rollback`` undoes a change: those recorded as completed (``completed``
    holds their ids in completion order), latest first. Steps that never ran or were skipped
    changed nothing; ``implied`` steps and steps without an inverse are left as they are.
    The verifier plans and the executor runs exactly this list."""
    by_id = {s.id: s for s in plan.steps}
    ran = [by_id[i] for i in reversed(list(dict.fromkeys(completed))) if i in by_id]
    return [s for s in ran if s.rollback is not None and not s.implied]


def plan_digest(plan: Plan) -> str:
    """The hash ``plan.hash`` must hold: the digest of the plan with ``hash=""``."""
    return digest(msgspec.structs.replace(plan, hash=""))


def seal(plan: Plan) -> Plan:
    """``plan`` with its ``hash`` filled in."""
    return msgspec.structs.replace(plan, hash=plan_digest(plan))
