"""Risk and budget scoring from the plan's content. Pure.

The score (0-100) sums named factors: the environment (dev 0, test 5, staging 15, prod 35),
destructive actions (by environment: dev 10, test 15, staging 20, prod 25; +1 per destroyed resource
after the first, up to +10), the number of steps (1 per step after the first, up to 20), the number of targets (5 per target after the
first, up to 15), the monthly cost estimate against the tenant's budget (up to 20 in proportion,
30 over budget) and timing (10 when the environment's maintenance window is closed now). The
level is ``low`` below ``risk.low_below``, ``high`` from ``risk.high_from``, else ``medium``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from events.model import RiskAssessment, RiskFactor
from events.plan import Plan
from services.preflight.config import PreflightConfig

Level = Literal["low", "medium", "high"]
ENVIRONMENT_POINTS = {"dev": 0.0, "test": 5.0, "staging": 15.0, "prod": 35.0}
# Destroying in dev is routine: a dev delete of one resource stays in the automatic lane.
DESTRUCTIVE_POINTS = {"dev": 10.0, "test": 15.0, "staging": 20.0, "prod": 25.0}


@dataclass(frozen=True)
class Subject:
    """What pre-flight decides about: the plan and who asked for it, where."""

    tenant: str
    change_id: str
    environment: str
    initiator: str
    plan: Plan
    revision: int = 1


def is_destructive(plan: Plan) -> bool:
    return plan.annotations.impact.destructive or any(s.destructive or s.action == "delete" for s in plan.steps)


def targets_of(plan: Plan) -> tuple[str, ...]:
    return plan.targets or tuple(dict.fromkeys(s.target for s in plan.steps))


def window_open(config: PreflightConfig, environment: str, now: datetime) -> bool | None:
    """Whether the environment's window is open now (``None``: it has no window)."""
    env = config.windows.get(environment)
    return None if env is None else env.window.is_open(now)


def score(subject: Subject, config: PreflightConfig, now: datetime) -> RiskAssessment:
    """The risk assessment of ``subject`` (see the module docstring)."""
    plan = subject.plan
    factors: list[RiskFactor] = []

    def add(name: str, points: float, detail: str) -> None:
        if points > 0:
            factors.append(RiskFactor(name=name, points=round(points, 2), detail=detail))

    add("environment", ENVIRONMENT_POINTS.get(subject.environment, 35.0), f"environment {subject.environment}")
    destroyed = len(plan.annotations.impact.destroyed) or sum(s.action == "delete" for s in plan.steps)
    if is_destructive(plan):
        add("destructive", DESTRUCTIVE_POINTS.get(subject.environment, 25.0) + min(10, max(0, destroyed - 1)), f"{destroyed} resource(s) destroyed or replaced")
    steps = len(plan.steps)
    add("resources", min(20.0, 1.0 * max(0, steps - 1)), f"{steps} step(s)")
    targets = len(targets_of(plan))
    add("targets", min(15.0, 5.0 * max(0, targets - 1)), f"{targets} target(s)")
    cost, budget = plan.annotations.cost.monthly, config.budget(subject.tenant)
    if budget is not None and cost > 0:
        if cost > budget:
            add("budget", 30.0, f"monthly cost {cost:.2f} exceeds the budget {budget:.2f}")
        else:
            add("budget", 20.0 * cost / budget if budget else 0.0, f"monthly cost {cost:.2f} of budget {budget:.2f}")
    if window_open(config, subject.environment, now) is False:
        add("timing", 10.0, f"outside the {subject.environment} maintenance window")
    total = round(min(100.0, sum(f.points for f in factors)), 2)
    level: Level = "low" if total < config.risk.low_below else "high" if total >= config.risk.high_from else "medium"
    return RiskAssessment(score=total, level=level, factors=tuple(factors))
