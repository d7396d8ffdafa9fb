"""Checks before any mutation: scope, ownership, prerequisites, the dry run (conflicts), quotas.

* **reachable** — each remote target the plan acts on answers a read-only call with UPM's
  credentials (:mod:`services.preflight.reach`); a failure says what to start or configure.
* **scope** — each local step's path lies below its tenant's roots and no component of it is a
  symbolic link (:mod:`services.security.scope`; rules ``path-scope``, ``path-symlink``, ``path-characters``).
* **ownership** — no step acts on a resource another tenant owns (the desired-state inventory,
  :mod:`events.desired`): ``policy tenant-ownership``, without saying who owns it. Implied steps
  (created only when absent, never rolled back) are exempt.
* **exists** — each ``resources_needed`` entry's check command (a read-back, through the guarded
  runner); a missing one names the resource and how to provide it; one the check could not read
  (a refused certificate or password, an unreachable target) fails as "could not check", with why.
* **dry-run** — each step's guard read-back compared with its desired state: ``create``,
  ``no-op`` (already done: the read-back matches and, for a managed resource, the inventory's
  desired state already equals the step's), ``delete``, or a failure: a resource to be created that already exists
  and differs from the plan (a conflict), or an update of something absent (blocked). A read-back
  that cannot answer (its CLI cannot run here, the target refused it) is reported as unknown, with
  why, and does not fail: never as absent.
* **quota** — resources of each type the plan creates against the tenant's configured quota (pure).

Read-backs run concurrently (``CHECK_CONCURRENCY`` at a time); the dry run's are batched where the
provider can (one ``stat`` over many paths).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

import anyio

from events.desired import EMPTY, Inventory, owner_of, resource_key
from events.model import Check, StepOutput
from events.plan import Command, Plan, Prerequisite, Step
from providers import CATALOG, Observed, Unknown, compare
from providers.readback import unknown
from services.guard.steps import batch_observe, observe_one, run_command, timed_out
from services.preflight.config import PreflightConfig
from services.preflight.reach import Runner as Runner  # re-exported: the service passes its own
from services.preflight.reach import reach
from services.preflight.reach import targets as reach_targets
from services.security.scope import Scope, load_scope, symlink_refusal

CHECK_CONCURRENCY = 8


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


def scope_checks(plan: Plan, tenant: str, scope: Scope) -> list[Check]:
    """One failed check per step whose local path is out of ``tenant``'s scope or goes through a
    symbolic link (lstat of each component: the executor's writer refuses links again as it writes)."""
    out = []
    for step in plan.steps:
        refusal = scope.step_refusal(tenant, step) or symlink_refusal(step)
        if refusal is not None:
            out.append(Check(name="scope", target=step.id, ok=False, detail=refusal))
    return out


def ownership(plan: Plan, tenant: str, inventory: Inventory) -> list[Check]:
    """One failed check per resource the plan acts on that another tenant owns (pure). The detail
    names the rule and the resource the requester named, never the owner or its change."""
    foreign = dict.fromkeys(
        resource_key(step) for step in plan.steps
        if not step.implied and owner_of(inventory, resource_key(step)) not in (None, tenant)
    )
    return [Check(name="ownership", target=key, ok=False,
                  detail=f"policy tenant-ownership: {key} is managed by another tenant; a change may act only on "
                         "its own tenant's resources and unmanaged ones: ask the owning team to make this change")
            for key in foreign]


def desired_changes(step: Step, inventory: Inventory) -> list[str]:
    """The fields whose desired state ``step`` changes, for a managed resource (pure); none for an
    unmanaged one."""
    found = inventory.resources.get(resource_key(step))
    if found is None:
        return []
    have = found.desired
    return [f"{name}: {have.get(name)!r} → {value!r}" for name, value in step.desired.items() if have.get(name) != value]


async def dry_run(step: Step, run: Runner = guarded_read, inventory: Inventory = EMPTY) -> Check:
    """What the step would do against the resource as read back now and its desired state."""
    command = step.guard or step.readback
    _, seen = await observe_one(step.resource, command, lambda c: run(c, step.target, step.timeout_s))
    return judged(step, seen, inventory)


async def dry_runs(steps: Sequence[Step], run: Runner = guarded_read, inventory: Inventory = EMPTY) -> list[Check]:
    """Every step's dry run. With the guarded runner, the steps whose guard is their read-back are
    read in batches where their provider can (one ``stat`` over many paths: :func:`batch_observe`);
    the rest, and what a batch could not tell, one by one (which says why it is unknown)."""
    batchable = [s for s in steps if (s.guard or s.readback) == s.readback] if run is guarded_read else []
    answered = await batch_observe(batchable)
    seen = {batchable[i].id: observed for i, observed in answered.items()}
    return await _all([functools.partial(_judge, seen[s.id], s, inventory) if s.id in seen
                       else functools.partial(dry_run, s, run, inventory) for s in steps])


async def _judge(seen: Observed, step: Step, inventory: Inventory) -> Check:
    return judged(step, seen, inventory)


def judged(step: Step, seen: Observed, inventory: Inventory = EMPTY) -> Check:
    """The dry run's verdict on ``step`` given its resource as read back (pure)."""
    if isinstance(seen, Unknown):
        return Check(name="dry-run", target=step.id, ok=True,
                     detail=f"{step.action}: current state unknown (could not read back {step.resource.key}: "
                            f"{seen.reason})")
    observed = seen.fields
    diffs = compare(step.desired, observed)
    if step.action == "delete":
        return Check(name="dry-run", target=step.id, ok=True, detail="delete" if observed is not None else "no-op: absent")
    if not diffs:
        changes = desired_changes(step, inventory)
        if changes:
            return Check(name="dry-run", target=step.id, ok=True,
                         detail=f"{step.action}: reads back as planned already; its desired state changes "
                                f"({', '.join(changes)})")
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


async def run_checks(
    plan: Plan, tenant: str, config: PreflightConfig, run: Runner = guarded_read, *, scope: Scope | None = None,
    inventory: Inventory = EMPTY,
) -> tuple[Check, ...]:
    """Quotas, scope (default: :func:`~services.security.scope.load_scope`) and ownership, each remote target's
    reachability, then every prerequisite (when every target answered); the dry run only when all passed (a halt says why, and nothing is read back
    through a refused path)."""
    checks: list[Check] = [*quotas(plan, tenant, config), *scope_checks(plan, tenant, scope or load_scope()),
                           *ownership(plan, tenant, inventory)]
    reached = await _all([functools.partial(reach, provider, target, run, cache=run is guarded_read)
                          for provider, target in reach_targets(plan)])
    checks += reached
    if all(c.ok for c in reached):  # a target that does not answer: its read-backs would only say so again
        checks += await _all([functools.partial(prerequisite, p, run) for p in plan.resources_needed])
    if all(c.ok for c in checks):
        checks += await dry_runs(plan.steps, run, inventory)
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
