"""Topological order with a stable tie-break, and cycle reporting."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from services.planner.errors import DependencyCycle


def toposort(nodes: Sequence[str], edges: Iterable[tuple[str, str]], key: Callable[[str], Any]) -> list[str]:
    """``nodes`` ordered so every ``(before, after)`` edge holds; ties broken by ``key``.

    Kahn's algorithm with a heap: among the nodes whose predecessors are all placed, the one
    with the smallest ``key`` goes next, so the order never depends on input order or hashing.
    Raises :class:`DependencyCycle` naming one cycle.
    """
    succ: dict[str, set[str]] = {n: set() for n in nodes}
    indegree = dict.fromkeys(nodes, 0)
    for before, after in edges:
        if after not in succ[before]:
            succ[before].add(after)
            indegree[after] += 1
    ready = [(key(n), n) for n in nodes if indegree[n] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, node = heapq.heappop(ready)
        order.append(node)
        for nxt in succ[node]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                heapq.heappush(ready, (key(nxt), nxt))
    if len(order) < len(nodes):
        stuck = {n for n in nodes if indegree[n] > 0}
        preds = {n: sorted(p for p in stuck if n in succ[p]) for n in stuck}
        cycle = find_cycle(preds)[::-1]
        raise DependencyCycle(
            "the dependencies form a cycle: " + " → ".join(cycle) + "; remove one of these depends_on edges",
            tuple(cycle),
        )
    return order


def find_cycle(succ: Mapping[str, Sequence[str]]) -> list[str]:
    """One cycle (first node repeated at the end) in a graph where every node has a successor."""
    node = min(succ)
    seen: dict[str, int] = {}
    path: list[str] = []
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(n for n in succ[node] if n in succ)
    return [*path[seen[node] :], node]
