"""Checks before any mutation: prerequisites, the dry run (conflicts), quotas.

* **exists** — each ``resources_needed`` entry's check command (a read-back, through the guarded
  runner); a missing one names the resource and how to provide it; one the check could not read
  (a refused certificate or password, an unreachable target) fails as "could not check", with why.
* **dry-run** — each step's guard read-back compared with its desired state: ``create``,
  ``no-op`` (already done), ``delete``, or a failure: a resource to be created that already exists
  and differs from the plan (a conflict), or an update of something absent (blocked). A read-back
  that cannot answer (its CLI cannot run here, the target refused it) is reported as unknown, with
  why, and does not fail: never as absent.
* **quota** — resources of each type the plan creates against the tenant's configured quota (pure).

Read-backs run concurrently (``CHECK_CONCURRENCY`` at a time).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

import anyio

from events.model import Check, StepOutput
from events.plan import Command, Plan, Prerequisite, Step
from providers import CATALOG, Unknown, compare
from providers.readback import unknown
from services.preflight.config import PreflightConfig
from services.steps import observe_one, run_command, timed_out

CHECK_CONCURRENCY = 8
Runner = Callable[[Command, str, float], Awaitable[StepOutput]]


async def guarded_read(command: Command, target: str, timeout_s: float) -> StepOutput:
    """Run a read-only command through the guarded runner (one attempt)."""
    return await run_command(command, timeout_s=timeout_s, target=target, max_attempts=1)


async def prerequisite(pre: Prerequisite, run: Runner = guarded_read) -> Check:
    out = await run(pre.check, pre.resource.target, 30.0)
    if out.rc == 0:
        return Check(name="exists", target=pre.resource.key, ok=True, detail="exists")
    rtype = CATALOG.get(pre.resource.type)
    seen = (rtype.failed(out.rc, out.stderr, timed_out=timed_out(out)) if rtype is not None
            else unknown(out.rc, out.stderr, timed_out=timed_out(out)))
    what = f"{pre.resource.type} {pre.resource.name} on {pre.resource.target}"
    if isinstance(seen, Unknown):
        detail = (f"could not check prerequisite {what}: {seen.reason} (check `{pre.check.display}`); "
                  f"fix access to the target and retry. {pre.hint}")
    else:
        detail = f"missing prerequisite {what}: {pre.hint} (check `{pre.check.display}`: {seen.proof})"
    return Check(name="exists", target=pre.resource.key, ok=False, detail=detail)


async def dry_run(step: Step, run: Runner = guarded_read) -> Check:
    """What the step would do against the resource as read back now."""
    command = step.guard or step.readback
    _, seen = await observe_one(step.resource, command, lambda c: run(c, step.target, step.timeout_s))
    if isinstance(seen, Unknown):
        return Check(name="dry-run", target=step.id, ok=True,
                     detail=f"{step.action}: current state unknown (could not read back {step.resource.key}: "
                            f"{seen.reason})")
    observed = seen.fields
    diffs = compare(step.desired, observed)
    if step.action == "delete":
        return Check(name="dry-run", target=step.id, ok=True, detail="delete" if observed is not None else "no-op: absent")
    if not diffs:
        return Check(name="dry-run", target=step.id, ok=True, detail="no-op: already in the desired state")
    if observed is None:
        if step.action == "update":
            return Check(name="dry-run", target=step.id, ok=False,
                         detail=f"blocked: {step.resource.key} does not exist, so it cannot be updated; create it first")
        return Check(name="dry-run", target=step.id, ok=True, detail="create")
    differences = ", ".join(f"{d.field}: {d.observed!r} (plan: {d.desired!r})" for d in diffs)
    facet = bool(CATALOG[step.resource.type].facet_of) if step.resource.type in CATALOG else False
    if step.action == "create" and not facet and not step.implied:
        return Check(name="dry-run", target=step.id, ok=False,
                     detail=f"conflict: {step.resource.key} already exists and differs from the plan ({differences}); "
                            "remove it, or change the request to update it")
    return Check(name="dry-run", target=step.id, ok=True, detail=f"{step.action}: {differences}")


def quotas(plan: Plan, tenant: str, config: PreflightConfig) -> list[Check]:
    """One check per resource type the plan creates, against the tenant's quota."""
    created = Counter(s.resource.type for s in plan.steps if s.action == "create" and not s.implied)
    out = []
    for rtype, count in sorted(created.items()):
        limit = config.quota(tenant, rtype)
        if limit is None:
            continue
        ok = count <= limit
        detail = f"{count} of at most {limit}" if ok else (
            f"the plan creates {count} {rtype} resources; tenant {tenant}'s quota is {limit} per change: "
            f"split the change or raise quotas.{tenant}.{rtype} in {config.source}")
        out.append(Check(name="quota", target=rtype, ok=ok, detail=detail))
    return out


async def run_checks(plan: Plan, tenant: str, config: PreflightConfig, run: Runner = guarded_read) -> tuple[Check, ...]:
    """Quotas, then every prerequisite; the dry run only when both passed (a halt says why)."""
    checks: list[Check] = quotas(plan, tenant, config)
    checks += await _all([functools.partial(prerequisite, p, run) for p in plan.resources_needed])
    if all(c.ok for c in checks):
        checks += await _all([functools.partial(dry_run, s, run) for s in plan.steps])
    return tuple(checks)


async def _all(jobs: Sequence[Callable[[], Awaitable[Check]]]) -> list[Check]:
    results: list[Check | None] = [None] * len(jobs)
    limiter = anyio.CapacityLimiter(CHECK_CONCURRENCY)

    async def one(i: int) -> None:
        async with limiter:
            results[i] = await jobs[i]()

    async with anyio.create_task_group() as tg:
        for i in range(len(jobs)):
            tg.start_soon(one, i)
    return [c for c in results if c is not None]
