"""Rollout variants: which wave each step runs in, and the blue-green rewrite of deployments.

- ``all-at-once``: one wave.
- ``canary``: the first target named runs first (wave ``canary``), the rest after (``rest``).
- ``waves``: cumulative wave sizes from configuration (default ``1, 25%, 100%``) over the
  targets in the order named: 10 targets → waves of 1, 2 and 7.
- ``blue-green``: each deployment change becomes three steps: create ``<name>-<new colour>``
  alongside the live one (wave ``green``), switch the service ``<name>`` selector to it
  (``switch``), and retire the old colour by scaling it to 0 (``retire``: reversible, so
  the rollback plan scales it back and switches the selector back). The live colour is the
  deployment's ``live`` field (default ``blue``).

Steps whose target is not a rollout target run in wave 0; a step never runs in an earlier wave
than a step it depends on. Everything is a function of the request: deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from providers import CATALOG
from services.planner.config import PlannerConfig
from services.planner.errors import VariantError
from services.planner.nodes import Node

Make = Callable[..., Node]


def waves_for(
    variant: str, rollout: tuple[str, ...], nodes: dict[str, Node], config: PlannerConfig
) -> list[str]:
    """Set each node's wave for ``variant``; return the wave names by index."""
    if variant == "blue-green":
        return ["green", "switch", "retire"]
    if variant == "all-at-once":
        return ["all"]
    if variant == "canary":
        wave_of = {t: (0 if i == 0 else 1) for i, t in enumerate(rollout)}
        names = ["canary", "rest"]
    else:
        sizes = config.wave_sizes(len(rollout)) if rollout else [0]
        wave_of = {t: next(w for w, size in enumerate(sizes) if i < size) for i, t in enumerate(rollout)}
        names = [f"wave-{w + 1}" for w in range(len(sizes))]
    for node in nodes.values():
        node.wave = wave_of.get(node.target, 0)
    return names


def blue_green(nodes: dict[str, Node], make: Make, put: Callable[[Node], Node]) -> None:
    """Rewrite every deployment create/update into green / switch / retire (see the docstring)."""
    deployments = [n for n in nodes.values() if n.rtype.name == "k8s_deployment" and n.action != "delete"]
    if not deployments:
        raise VariantError(
            "blue-green applies to Kubernetes deployment changes and this request has none; "
            "use canary or waves for other multi-target changes"
        )
    for node in sorted(deployments, key=lambda n: n.key):
        if "image" not in node.given:
            raise VariantError(f"blue-green for {node.label} needs the new image (e.g. 'image nginx:1.27')")
        del nodes[node.key]
        name, live = node.values["name"], node.values["live"]
        new = "green" if live == "blue" else "blue"
        common: dict[str, Any] = {"namespace": node.values["namespace"]}
        green = put(
            make(
                node.rtype,
                "create",
                node.target,
                {
                    **common,
                    "name": f"{name}-{new}",
                    "image": node.values["image"],
                    "replicas": node.values["replicas"],
                },
                wave=0,
            )
        )
        switch = put(
            make(
                CATALOG["k8s_service_selector"],
                "update",
                node.target,
                {**common, "name": name, "app": f"{name}-{new}"},
                extra={"previous_app": f"{name}-{live}"},
                wave=1,
                depends_on=(green.key,),
            )
        )
        put(
            make(
                node.rtype,
                "update",
                node.target,
                {**common, "name": f"{name}-{live}", "replicas": 0},
                extra={"previous_replicas": node.values["replicas"]},
                wave=2,
                depends_on=(switch.key,),
            )
        )
