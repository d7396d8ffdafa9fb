"""The dependency graph of a plan as JSON, Graphviz DOT or Mermaid text."""

from __future__ import annotations

from typing import Literal

from events.codec import canonical_json
from events.plan import Plan

GraphFormat = Literal["json", "dot", "mermaid"]


def export_graph(plan: Plan, fmt: GraphFormat) -> str:
    """``plan.graph`` in ``fmt``; nodes are ``s<index>`` labelled with the step description."""
    if fmt == "json":
        return canonical_json(plan.graph).decode()
    ids = {node.id: f"s{i}" for i, node in enumerate(plan.graph.nodes)}
    if fmt == "dot":
        lines = ["digraph plan {", "  rankdir=LR;", "  node [shape=box];"]
        lines += [f"  {ids[n.id]} [label={_dot(n.label)}];" for n in plan.graph.nodes]
        lines += [f"  {ids[e.source]} -> {ids[e.target]};" for e in plan.graph.edges]
        return "\n".join([*lines, "}"])
    if fmt == "mermaid":
        lines = ["flowchart TD"]
        lines += [f'  {ids[n.id]}["{_mermaid(n.label)}"]' for n in plan.graph.nodes]
        lines += [f"  {ids[e.source]} --> {ids[e.target]}" for e in plan.graph.edges]
        return "\n".join(lines)
    raise ValueError(f"graph format {fmt!r} is unknown; use json, dot or mermaid")


def _dot(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mermaid(text: str) -> str:
    return text.replace('"', "#quot;")
