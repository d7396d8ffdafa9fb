"""Blast-radius limits (pure) and the rate limits the executor holds while it runs.

The blast radius of a change is the number of distinct resources its steps mutate (implied
steps included: they mutate too); each wave is bounded as well. The check runs before the
first step, from the plan alone, so a change appended straight to the log (pre-flight bypassed)
is refused all the same. Rates are token buckets per target and per tenant: a step (or an undo)
takes one of each before its ``step.started`` is recorded, so the events' timestamps show the
rate; retries within a step are spaced by the guard's backoff. The buckets are per executor
process: with N replicas, give each 1/N of the rate.
"""

from __future__ import annotations

from events.plan import Plan
from services.executor.config import Limits, Rates
from services.executor.waves import waves_of
from services.guard import RateLimiter


def blast_radius_violation(plan: Plan, limits: Limits) -> str | None:
    """Why the plan is over a blast-radius limit, or ``None``."""
    resources = {s.resource.key for s in plan.steps}
    if len(resources) > limits.max_resources_per_change:
        return (
            f"the change mutates {len(resources)} resources; the blast-radius limit is "
            f"{limits.max_resources_per_change} per change. Split the change, or raise "
            "limits.max_resources_per_change in the executor policy."
        )
    for wave in waves_of(plan):
        count = len({s.resource.key for s in wave.steps})
        if count > limits.max_resources_per_wave:
            return (
                f"wave {wave.name} mutates {count} resources; the blast-radius limit is "
                f"{limits.max_resources_per_wave} per wave. Use more waves, or raise "
                "limits.max_resources_per_wave."
            )
    return None


class RateLimits:
    """The executor's token buckets, per target and per tenant."""

    def __init__(self, rates: Rates) -> None:
        self.per_target = RateLimiter(rates.steps_per_s_per_target, burst=rates.burst, rates=rates.targets)
        self.per_tenant = RateLimiter(rates.steps_per_s_per_tenant, burst=rates.burst, rates=rates.tenants)

    async def step(self, tenant: str, target: str) -> float:
        """Wait for the tenant's and the target's tokens for one step; the seconds waited."""
        return await self.per_tenant.acquire(tenant) + await self.per_target.acquire(target)
