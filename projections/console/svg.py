"""Server-side SVG for the console, as pure functions (no I/O, no JavaScript library).

* :func:`dag` draws a plan's dependency graph: nodes in columns by their longest path from a
  root (a step is right of everything it depends on), ordered within a column as given, edges as
  arrows. Labels are escaped; the result is a standalone ``<svg>`` element.
* :func:`chart` draws one KPI over time against its L3 and L4 bands: a line through the points,
  the two bands as dashed lines labelled ``L3``/``L4``, the side of the L4 line that meets it
  shaded, and each point coloured by the best level it meets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from projections.kpi import Band

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 190, 34, 60, 18, 12
ACTION_CLASS = {"create": "create", "update": "update", "delete": "delete"}


@dataclass(frozen=True)
class Node:
    id: str
    label: str
    kind: str = ""  # a CSS class suffix (the step's action)


def layers(nodes: Sequence[Node], edges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Each node's column: 0 for a node nothing points to, else 1 + the deepest of its sources.
    Edges naming unknown nodes are ignored; a cycle (never in a compiled plan) is cut where found."""
    known = {n.id for n in nodes}
    sources: dict[str, list[str]] = {n.id: [] for n in nodes}
    for src, dst in edges:
        if src in known and dst in known and src != dst:
            sources[dst].append(src)
    depth: dict[str, int] = {}
    visiting: set[str] = set()

    def of(node: str) -> int:
        if node in depth:
            return depth[node]
        visiting.add(node)
        deepest = max((of(s) + 1 for s in sources[node] if s not in visiting), default=0)
        visiting.discard(node)
        depth[node] = deepest
        return deepest

    return {n.id: of(n.id) for n in nodes}


def _text(x: float, y: float, label: str, width: int, css: str = "") -> str:
    shown = label if len(label) <= width else label[: width - 1] + "…"
    cls = f' class="{css}"' if css else ""
    return f'<text x="{x:.1f}" y="{y:.1f}"{cls}>{escape(shown)}<title>{escape(label)}</title></text>'


def dag(nodes: Sequence[Node], edges: Sequence[tuple[str, str]], *, title: str = "dependency graph") -> str:
    """The graph as SVG (see the module docstring); an empty graph is a one-line note."""
    if not nodes:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" class="dag" role="img" width="240" height="30">'
                f'<title>{escape(title)}</title><text x="4" y="20">no steps</text></svg>')
    column = layers(nodes, edges)
    rows: dict[int, int] = {}
    at: dict[str, tuple[float, float]] = {}
    for node in nodes:
        c = column[node.id]
        r = rows.get(c, 0)
        rows[c] = r + 1
        at[node.id] = (PAD + c * (NODE_W + GAP_X), PAD + r * (NODE_H + GAP_Y))
    width = PAD * 2 + (max(column.values()) + 1) * (NODE_W + GAP_X) - GAP_X
    height = PAD * 2 + max(rows.values()) * (NODE_H + GAP_Y) - GAP_Y
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="dag" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}"><title>{escape(title)}</title>',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z"/></marker></defs>']
    known = set(at)
    for src, dst in edges:
        if src in known and dst in known and src != dst:
            (x1, y1), (x2, y2) = at[src], at[dst]
            parts.append(f'<line class="edge" x1="{x1 + NODE_W:.1f}" y1="{y1 + NODE_H / 2:.1f}" '
                         f'x2="{x2:.1f}" y2="{y2 + NODE_H / 2:.1f}" marker-end="url(#arrow)"/>')
    for node in nodes:
        x, y = at[node.id]
        kind = ACTION_CLASS.get(node.kind, "other")
        parts.append(f'<g class="node {kind}" data-id="{escape(node.id)}"><rect x="{x:.1f}" y="{y:.1f}" '
                     f'width="{NODE_W}" height="{NODE_H}" rx="5"/>'
                     + _text(x + 8, y + NODE_H / 2 + 4, node.label, 28) + "</g>")
    parts.append("</svg>")
    return "".join(parts)


@dataclass(frozen=True)
class Point:
    t: float  # seconds since the epoch (the bucket's start)
    value: float
    label: str  # the bucket, for people


def _level(value: float, l3: Band, l4: Band) -> str:
    return "l4" if l4.met(value) else "l3" if l3.met(value) else "below"


def chart(name: str, points: Sequence[Point], l3: Band, l4: Band, unit: str, *,
          width: int = 360, height: int = 180) -> str:
    """One KPI over time against its bands (see the module docstring)."""
    left, right, top, bottom = 44, 34, 12, 24
    inner_w, inner_h = width - left - right, height - top - bottom
    values = [p.value for p in points] + [l3.bound, l4.bound]
    low, high = min(0.0, *values), max(values)
    if unit == "%":
        low, high = 0.0, max(100.0, high)
    high = high if high > low else low + 1
    span = high - low
    high += span * 0.05

    def y(v: float) -> float:
        return top + inner_h * (1 - (v - low) / (high - low))

    ts = [p.t for p in points]
    t0, t1 = (min(ts), max(ts)) if ts else (0.0, 1.0)

    def x(t: float) -> float:
        return left + (inner_w / 2 if t1 == t0 else inner_w * (t - t0) / (t1 - t0))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" data-kpi="{escape(name)}" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}"><title>{escape(name)} over time '
           f'(L3 {escape(str(l3))}, L4 {escape(str(l4))})</title>']
    good_top, good_bottom = (top, y(l4.bound)) if l4.direction == ">=" else (y(l4.bound), top + inner_h)
    out.append(f'<rect class="band-l4" x="{left}" y="{good_top:.1f}" width="{inner_w}" '
               f'height="{max(0.0, good_bottom - good_top):.1f}"/>')
    out.append(f'<rect class="frame" x="{left}" y="{top}" width="{inner_w}" height="{inner_h}"/>')
    for band, css in ((l3, "l3"), (l4, "l4")):
        yy = y(band.bound)
        out.append(f'<line class="band {css}" x1="{left}" x2="{left + inner_w}" y1="{yy:.1f}" y2="{yy:.1f}"/>')
        out.append(f'<text class="band-label {css}" x="{left + inner_w + 3}" y="{yy + 4:.1f}">{css.upper()}</text>')
    for v in (low, high - span * 0.05 if span else high):
        out.append(f'<text class="axis" x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    if not points:
        out.append(f'<text class="nodata" x="{left + inner_w / 2}" y="{top + inner_h / 2}" '
                   'text-anchor="middle">no data</text>')
    else:
        path = " ".join(f"{'M' if i == 0 else 'L'} {x(p.t):.1f} {y(p.value):.1f}" for i, p in enumerate(points))
        out.append(f'<path class="series" d="{path}"/>')
        for p in points:
            out.append(f'<circle class="pt {_level(p.value, l3, l4)}" cx="{x(p.t):.1f}" cy="{y(p.value):.1f}" r="3">'
                       f'<title>{escape(p.label)}: {p.value:g} {escape(unit)}</title></circle>')
        out.append(f'<text class="axis" x="{left}" y="{height - 6}">{escape(points[0].label)}</text>')
        if len(points) > 1:
            out.append(f'<text class="axis" x="{left + inner_w}" y="{height - 6}" text-anchor="end">'
                       f'{escape(points[-1].label)}</text>')
    out.append("</svg>")
    return "".join(out)
