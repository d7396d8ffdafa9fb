"""The wave planner (pure): which steps run in which wave, in order.

A plan's ``waves`` name the rollout's waves; each step carries its ``wave`` index. Waves run in
index order and steps in plan order within a wave. A plan with no waves is one wave.
"""

from __future__ import annotations

from dataclasses import dataclass

from events.plan import Plan, Step


@dataclass(frozen=True)
class WaveRun:
    """One wave as the executor runs it."""

    index: int
    name: str
    targets: tuple[str, ...]
    steps: tuple[Step, ...]


def waves_of(plan: Plan) -> list[WaveRun]:
    """The plan's waves in order, each with its steps (empty waves dropped)."""
    named = {w.index: w for w in plan.waves}
    indexes = sorted({s.wave for s in plan.steps} | set(named))
    out: list[WaveRun] = []
    for index in indexes:
        steps = tuple(s for s in sorted(plan.steps, key=lambda s: s.index) if s.wave == index)
        if not steps:
            continue
        wave = named.get(index)
        targets = wave.targets if wave else tuple(dict.fromkeys(s.target for s in steps))
        out.append(WaveRun(index=index, name=wave.name if wave else f"wave-{index}", targets=targets, steps=steps))
    return out


def is_progressive(plan: Plan) -> bool:
    """Whether the plan has more than one wave (only then are waves recorded and gated)."""
    return len(waves_of(plan)) > 1
