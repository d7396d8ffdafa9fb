"""Assembling the plan from the compiler's expanded nodes: order, steps, waves, graph, annotations.

The order is topological with the tie-break (wave, target rank, key); each node renders to one
:class:`Step` (command, guard, read-back, health, rollback, desired state); the rollback plan is
the steps' inverses in reverse order (implied steps excluded); impact and cost are summed per
resource. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from events.plan import (
    Annotations,
    Command,
    CostEstimate,
    CostItem,
    Graph,
    GraphEdge,
    GraphNode,
    Impact,
    Plan,
    Prerequisite,
    Step,
    Wave,
    seal,
)
from providers.base import Template, command, is_set, template_vars
from services.planner.config import PlannerConfig
from services.planner.dag import toposort
from services.planner.errors import MissingRequiredField
from services.planner.nodes import DEFAULT_TARGETS, Node


def assemble(
    nodes: dict[str, Node],
    edges_in: set[tuple[str, str]],
    needed: dict[str, Prerequisite],
    config: PlannerConfig,
    request: str,
    tenant: str,
    variant: str,
    rollout: tuple[str, ...],
    wave_names: list[str],
    annotations: Annotations,
) -> Plan:
    """The sealed plan of the expanded ``nodes``: order, steps, waves, graph, annotations."""
    live = {k: n for k, n in nodes.items() if not n.virtual}
    edges = {(a, b) for a, b in edges_in if a in live and b in live}
    for node in live.values():
        for dep in node.depends_on:
            edges.add((dep, node.key))
    preds: dict[str, set[str]] = {k: set() for k in live}
    for a, b in edges:
        preds[b].add(a)
    _propagate_waves(live, preds)
    rank = {t: i for i, t in enumerate(rollout)}
    order = toposort(sorted(live), edges, lambda k: (live[k].wave, rank.get(live[k].target, -1), k))
    index = {k: i for i, k in enumerate(order)}
    steps = tuple(_step(live[k], index[k], tuple(sorted(preds[k], key=index.__getitem__))) for k in order)
    waves = tuple(
        _wave(i, name, [s for s in steps if s.wave == i], rollout) for i, name in enumerate(wave_names)
    )
    plan = Plan(
        hash="",
        request=request,
        tenant=tenant,
        steps=steps,
        resources=_resources(nodes, steps),
        resources_needed=tuple(
            needed[k] for k in sorted(needed) if k not in live or live[k].action != "create"
        ),
        rollback=tuple(s.rollback for s in reversed(steps) if s.rollback is not None),
        graph=Graph(
            nodes=tuple(GraphNode(id=s.id, label=s.description, action=s.action, wave=s.wave) for s in steps),
            edges=tuple(GraphEdge(source=d, target=s.id) for s in steps for d in s.depends_on),
        ),
        annotations=msgspec.structs.replace(
            annotations,
            impact=_impact(nodes, steps, annotations.impact.notes),
            cost=_cost(nodes, steps, config),
        ),
        variant=variant,
        waves=tuple(w for w in waves if w.steps),
        targets=rollout,
    )
    return seal(plan)


def _base(nodes: dict[str, Node], step: Step) -> Node:
    node = nodes[step.id]
    return nodes[node.parent] if node.parent and node.parent in nodes else node


def _resources(nodes: dict[str, Node], steps: Iterable[Step]) -> tuple[dict[str, Any], ...]:
    seen: dict[str, dict[str, Any]] = {}
    for step in steps:
        node = _base(nodes, step)
        if node.key in seen or node.rtype.facet_of:
            continue
        entry: dict[str, Any] = {"type": node.rtype.name, "name": node.name}
        for name in node.rtype.summary:
            value = node.variables.get(name)
            if value is not None and (node.action == "create" or name in node.given):
                entry[name] = value
        if node.action != "create":
            entry["action"] = node.action
        if node.target not in DEFAULT_TARGETS and node.target != node.variables.get("region"):
            entry["target"] = node.target
        seen[node.key] = entry
    return tuple(seen.values())


def _impact(nodes: dict[str, Node], steps: tuple[Step, ...], given: tuple[str, ...]) -> Impact:
    """What the plan does, with ``given`` notes (readings of the request, assumptions) first."""
    by_action: dict[str, dict[str, None]] = {"create": {}, "update": {}, "delete": {}}
    notes: list[str] = list(given)
    for step in steps:
        node = _base(nodes, step)
        by_action[step.action if node is nodes[step.id] else node.action][node.key] = None
        if step.implied and node is nodes[step.id]:
            notes.append(
                f"{step.resource.key} is implied by {node.implied_by}: created only if missing, "
                "and kept by the rollback plan"
            )
        if step.action != "create" and step.rollback is None:
            notes.append(f"{step.id}: no automatic undo ({step.action} of state the plan cannot restore)")
    return Impact(
        created=tuple(by_action["create"]),
        changed=tuple(by_action["update"]),
        destroyed=tuple(by_action["delete"]),
        destructive=any(s.destructive for s in steps),
        notes=tuple(notes),
    )


def _cost(nodes: dict[str, Node], steps: tuple[Step, ...], config: PlannerConfig) -> CostEstimate:
    items: list[CostItem] = []
    for step in steps:
        node = nodes[step.id]
        if node.parent is not None or step.action == "update":
            continue
        rate = config.costs.get(node.rtype.name, node.rtype.monthly_cost)
        units = float(node.variables.get(node.rtype.cost_unit, 1)) if node.rtype.cost_unit else 1.0
        amount = round(rate * units * (-1 if step.action == "delete" else 1), 2)
        if amount:
            items.append(CostItem(key=step.id, monthly=amount))
    return CostEstimate(monthly=round(sum(i.monthly for i in items), 2), items=tuple(items))


def _propagate_waves(live: dict[str, Node], preds: dict[str, set[str]]) -> None:
    """A step never runs in an earlier wave than a step it depends on."""
    changed = True
    while changed:
        changed = False
        for key, node in live.items():
            wave = max([node.wave, *(live[p].wave for p in preds[key])])
            if wave != node.wave:
                node.wave = wave
                changed = True


def _step(node: Node, index: int, depends_on: tuple[str, ...]) -> Step:
    rtype, v = node.rtype, node.variables
    template = {"create": rtype.create, "update": rtype.update or rtype.create, "delete": rtype.delete}[
        node.action
    ]
    run = command(template, v)
    if run is None:
        raise MissingRequiredField(
            f"{node.label} needs {', '.join(_missing(template, v))}; add them to the request or the spec"
        )
    readback = command(rtype.readback, v)
    assert readback is not None
    return Step(
        id=node.key,
        index=index,
        resource=node.ref,
        action=node.action,
        command=run,
        guard=readback if rtype.guarded else None,
        readback=readback,
        health=None if node.action == "delete" else command(rtype.health, v),
        rollback=_rollback(node),
        desired=_desired(node),
        depends_on=depends_on,
        wave=node.wave,
        target=node.target,
        cli=rtype.cli,
        timeout_s=rtype.timeout_s,
        destructive=node.action == "delete",
        stdin=str(v[rtype.stdin_field]) if rtype.stdin_field and node.action != "delete" else None,
        implied=node.implied,
        description=node.label,
        parent=node.parent or "",
    )


def _rollback(node: Node) -> Command | None:
    if node.implied:
        return None
    rtype = node.rtype
    if node.action == "create":
        return command(rtype.delete, node.variables)
    if node.action == "update":
        return command(rtype.undo, node.variables)
    return command(rtype.create, node.variables) if rtype.restorable else None


def _desired(node: Node) -> dict[str, Any]:
    if node.action == "delete":
        return {"exists": False}
    desired = node.rtype.desired(node.variables)
    if node.action == "update" and not node.rtype.facet_of:
        keep = node.given | set(node.rtype.constants) | {"exists"}
        desired = {k: v for k, v in desired.items() if k in keep}
    return desired


def _missing(template: Template | None, variables: dict[str, Any]) -> list[str]:
    return sorted({n for n in template_vars(template or ()) if not is_set(variables.get(n))})


def _wave(index: int, name: str, steps: list[Step], rollout: tuple[str, ...]) -> Wave:
    targets = tuple(t for t in rollout if any(s.target == t for s in steps))
    return Wave(index=index, name=name, targets=targets, steps=tuple(s.id for s in steps))
