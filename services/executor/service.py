"""The executor's thin async shell: run an approved plan wave by wave, or roll it back.

``change.approved`` / ``execution.resumed`` → :meth:`Executor.execute`; ``rollback.approved``
→ :meth:`Executor.roll_back`. Every decision comes from the pure modules (state, waves, gates,
limits, rollback); this module runs commands, issues credentials and appends events. Every
event id is derived from the input event and a key naming the step (``start:<step>``,
``done:<step>``, ``rb-done:<step>``...), so a redelivery after a crash re-derives the same ids,
and steps recorded as completed or skipped are never run again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import anyio

from events.model import (
    ChangeApproved,
    Check,
    CredentialsIssued,
    CredentialsRevoked,
    Event,
    ExecutionCancelled,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionPaused,
    ExecutionResumed,
    ExecutionStarted,
    Payload,
    RollbackApproved,
    RollbackCompleted,
    RollbackFailed,
    RollbackStarted,
    RollbackStepCompleted,
    RollbackStepFailed,
    RollbackStepSkipped,
    RollbackStepStarted,
    StepCompleted,
    StepFailed,
    StepOutput,
    StepRetried,
    StepSkipped,
    StepStarted,
    TlsFallbackUsed,
    WaveCompleted,
    WaveStarted,
)
from events.plan import Command, Plan, Step
from providers import Absent, Unknown, compare
from services.credentials import CredentialsBroker, IssuedCredentials, broker_for
from services.executor.config import ExecutorConfig
from services.executor.gates import anomaly, gate
from services.executor.limits import RateLimits, blast_radius_violation, rate_buckets
from services.executor.outputs import OutputStore
from services.executor.rollback import rollback_plan, undone_when_absent
from services.executor.state import ChangeView, running_seconds
from services.executor.waves import WaveRun, is_progressive, waves_of
from services.guard import Redactor
from services.runtime import Context
from services.steps import Executed, already_done, execute, read_back

log = logging.getLogger("upm.executor")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Run:
    """One handling of one input event: its context, plan and the credentials it holds."""

    ctx: Context
    plan: Plan
    started: float = field(default_factory=time.perf_counter)
    creds: dict[str, IssuedCredentials] = field(default_factory=dict)
    redactor: Redactor = field(default_factory=Redactor)

    def view(self) -> ChangeView:
        return ChangeView.of([s.event for s in self.ctx.log.events])

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)

    def env(self, step: Step) -> Mapping[str, str]:
        issued = self.creds.get(step.target)
        return issued.env if issued else {}

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for c in self.creds.values() for s in c.secrets)

    def cancelled(self) -> bool:
        return any(isinstance(s.event.payload, ExecutionCancelled) for s in self.ctx.log.events)


class Executor:
    """The executor service's state across changes: policy, rate buckets, brokers, outputs."""

    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config
        self.rates: RateLimits | None = None  # opened on the first step: the buckets are on the bus
        self.pins = config.pin_table()
        self.policy = config.guard_policy()
        token_store = config.credentials.token_store
        self.brokers: dict[str, CredentialsBroker] = {
            provider: broker_for(kind, token_store=token_store)
            for provider, kind in config.credentials.brokers.items()
        }
        self.by_kind: dict[str, CredentialsBroker] = {b.kind: b for b in self.brokers.values()}
        self._outputs: OutputStore | None = None

    async def handle(self, ctx: Context, history: list[Event], event: Event) -> None:
        match event.payload:
            case ChangeApproved(plan_hash=plan_hash) | ExecutionResumed(plan_hash=plan_hash):
                await self.execute(ctx, event, plan_hash)
            case RollbackApproved(plan_hash=plan_hash):
                await self.roll_back(ctx, plan_hash)

    # -- forward ------------------------------------------------------------------------

    async def execute(self, ctx: Context, event: Event, plan_hash: str) -> None:
        view = ChangeView.of([s.event for s in ctx.log.events])
        plan = view.plan(plan_hash)
        if plan is None:
            await ctx.emit(ExecutionFailed(plan_hash=plan_hash, step_id="", rule="no-plan", duration_ms=0.0,
                                           reason=f"no compiled plan with hash {plan_hash} in the change; nothing was run"))
            return
        trigger = view.latest_trigger()
        if trigger is None or trigger.id != event.id or view.status not in ("approved", "executing"):
            return  # a newer approval or resume owns the run, or the execution is over or paused
        run = _Run(ctx, plan)
        if view.first(ExecutionStarted) is None:
            refused = blast_radius_violation(plan, self.config.limits)
            if refused is not None:
                await ctx.emit(ExecutionFailed(plan_hash=plan_hash, step_id="", reason=refused,
                                               duration_ms=0.0, rule="blast-radius"))
                return
            await ctx.emit(ExecutionStarted(plan_hash=plan_hash, steps=len(plan.steps),
                                            waves=max(1, len(waves_of(plan)))))
        try:
            await self._issue(run, [s for s in plan.steps if s.id not in view.finished_steps()])
            end = await self._waves(run)
            if end is not None:
                await ctx.emit(end)
        finally:
            with anyio.CancelScope(shield=True):
                await self._revoke(run)

    async def _waves(self, run: _Run) -> Payload | None:
        """Run every unfinished wave; the closing event (None: stop without one)."""
        plan, progressive = run.plan, is_progressive(run.plan)
        for wave in waves_of(plan):
            view = run.view()
            finished = view.finished_steps()
            if all(s.id in finished for s in wave.steps) and (not progressive or wave.index in view.waves_gated()):
                continue
            if progressive and wave.index not in view.waves_started():
                await run.ctx.emit((WaveStarted(wave=wave.index, targets=wave.targets), f"wave-start:{wave.index}"))
            outputs = _outputs_of(view, wave, since=run.ctx.input.id)
            for step in wave.steps:
                if step.id in run.view().finished_steps():
                    continue
                if run.cancelled():
                    return None
                stop = await self._step(run, wave, step, outputs)
                if stop is not None:
                    return stop
            if progressive:
                stop = await self._gate(run, wave, outputs)
                if stop is not None:
                    return stop
        return ExecutionCompleted(plan_hash=plan.hash, duration_ms=run.elapsed_ms())

    async def _step(self, run: _Run, wave: WaveRun, step: Step, outputs: list[StepOutput]) -> Payload | None:
        ctx, plan_hash = run.ctx, run.plan.hash
        remaining = self.config.deadlines.change_timeout_s - running_seconds(run.view().events, _now())
        if remaining <= 0:
            return ExecutionFailed(
                plan_hash=plan_hash, step_id=step.id, rule="deadline", duration_ms=run.elapsed_ms(),
                reason=f"the change ran longer than its deadline of {self.config.deadlines.change_timeout_s:g}s "
                       f"before step {step.id}; raise deadlines.change_timeout_s or split the change")
        in_doubt = run.view().in_doubt(step.id)
        if await already_done(step, env=run.env(step), secrets=run.secrets(), pins=self.pins):
            shown = step.guard.display if step.guard else ""
            if in_doubt:
                out = StepOutput(rc=0, stdout=f"outcome unknown after a restart; `{shown}` shows it done")
                await ctx.emit((StepCompleted(step_id=step.id, index=step.index, command=step.command.display,
                                              output=out, recovered=True), f"done:{step.id}"))
            else:
                await ctx.emit((StepSkipped(step_id=step.id, index=step.index,
                                            reason=f"guard read-back `{shown}` shows it is already done"),
                                f"skip:{step.id}"))
            return None
        await self._rate(ctx, step)
        display = step.command.display
        await ctx.emit((StepStarted(step_id=step.id, index=step.index, command=display), f"start:{step.id}"))
        timeout = min(self.config.step_timeout(step.timeout_s), remaining)
        done = await self._exec(run, step, step.command, step.stdin, timeout)
        out = await self._bounded(ctx, done.output, f"{step.id}.{ctx.input.id}")
        await self._attempts(run, step, done)
        outputs.append(out)
        if out.rc != 0:
            error = f"`{display}` exited {out.rc}: {out.stderr.strip()[-500:]}"
            await ctx.emit((StepFailed(step_id=step.id, index=step.index, command=display, output=out,
                                       error=error), f"fail:{step.id}"))
            if out.tries and out.tries[-1].timed_out and timeout >= remaining:
                return ExecutionFailed(
                    plan_hash=plan_hash, step_id=step.id, rule="deadline", duration_ms=run.elapsed_ms(),
                    reason=f"step {step.id} was stopped at the change's deadline of "
                           f"{self.config.deadlines.change_timeout_s:g}s; raise deadlines.change_timeout_s "
                           "or split the change")
            if self.config.anomalies.on_step_failure == "pause":
                return ExecutionPaused(plan_hash=plan_hash, reason=f"step {step.id} failed: {error}",
                                       wave=wave.index, anomaly="step-failed")
            return ExecutionFailed(plan_hash=plan_hash, step_id=step.id, reason=error, duration_ms=run.elapsed_ms())
        await ctx.emit((StepCompleted(step_id=step.id, index=step.index, command=display, output=out),
                        f"done:{step.id}"))
        verdict = anomaly(outputs, self.config.anomalies)
        if not verdict.ok:
            return ExecutionPaused(plan_hash=plan_hash, reason=verdict.reason, wave=wave.index, anomaly=verdict.anomaly)
        return None

    async def _exec(self, run: _Run, step: Step, command: Command, stdin: str | None, timeout_s: float) -> Executed:
        return await execute(
            command,
            timeout_s=timeout_s,
            stdin=stdin,
            target=step.target,
            max_attempts=self.config.retries.max_attempts,
            redactor=run.redactor,
            env=run.env(step),
            secrets=run.secrets(),
            pins=self.pins,
            policy=self.policy,
        )

    async def _attempts(self, run: _Run, step: Step, done: Executed) -> None:
        """One event per retried attempt and per TLS fallback."""
        items: list[tuple[Payload, str]] = [
            (StepRetried(step_id=step.id, index=step.index, attempt=t), f"retry:{step.id}:{t.n}")
            for t in done.output.tries[:-1]
        ]
        items += [
            (TlsFallbackUsed(step_id=step.id, command=w.command, error=w.message), f"tls:{step.id}:{w.attempt}")
            for w in done.warnings
        ]
        if items:
            await run.ctx.emit(*items)

    async def _gate(self, run: _Run, wave: WaveRun, outputs: list[StepOutput]) -> Payload | None:
        if self.config.gates.bake_s > 0:
            await anyio.sleep(self.config.gates.bake_s)
        checks = await self._health(run, wave.steps)
        verdict = gate(checks, outputs, self.config.gates)
        await run.ctx.emit((WaveCompleted(wave=wave.index, healthy=verdict.ok, checks=tuple(checks),
                                          reason=verdict.reason, error_ratio=round(verdict.error_ratio, 4)),
                            f"wave-done:{wave.index}"))
        if verdict.ok:
            return None
        return ExecutionPaused(plan_hash=run.plan.hash, reason=f"wave {wave.name}: {verdict.reason}",
                               wave=wave.index, anomaly=verdict.anomaly)

    async def _health(self, run: _Run, steps: Sequence[Step]) -> list[Check]:
        """Each resource's health: its health command, else its read-back against ``desired``."""
        last = {s.resource.key: s for s in steps}
        checks: list[Check] = []
        for step in sorted(last.values(), key=lambda s: s.index):
            if step.health is not None:
                done = await execute(step.health, timeout_s=step.timeout_s, env=run.env(step),
                                     secrets=run.secrets(), redactor=run.redactor, pins=self.pins)
                ok = done.output.rc == 0
                detail = "healthy" if ok else f"`{step.health.display}` exited {done.output.rc}: " \
                                             f"{done.output.stderr.strip()[-200:]}"
                checks.append(Check(name="health", target=step.resource.key, ok=ok, detail=detail))
                continue
            seen = await read_back(step.resource, step.readback, timeout_s=step.timeout_s, env=run.env(step),
                                   secrets=run.secrets(), pins=self.pins)
            if isinstance(seen, Unknown):
                checks.append(Check(name="readback", target=step.resource.key, ok=False,
                                    detail=f"could not read back {step.resource.key}: {seen.reason}"))
                continue
            delta = compare(step.desired, seen.fields)
            detail = "; ".join(f"{d.field}: {d.desired!r} → {d.observed!r}" for d in delta) or "matches"
            checks.append(Check(name="readback", target=step.resource.key, ok=not delta, detail=detail))
        return checks

    # -- rollback -----------------------------------------------------------------------

    async def roll_back(self, ctx: Context, plan_hash: str) -> None:
        view = ChangeView.of([s.event for s in ctx.log.events])
        if view.rollback_ended_after(ctx.input.id):
            return  # a redelivery: this approval's rollback already ended (a newer one may retry it)
        plan = view.plan(plan_hash)
        if plan is None:
            await ctx.emit(RollbackFailed(plan_hash=plan_hash, step_id="", duration_ms=0.0, failed_at=view.failed_at,
                                          reason=f"no compiled plan with hash {plan_hash} in the change"))
            return
        run = _Run(ctx, plan)
        undo = rollback_plan(plan, view)
        await ctx.emit((RollbackStarted(plan_hash=plan_hash, steps=len(undo)), "rb-started"))
        started_at = next(s.event.ts for s in ctx.log.events if isinstance(s.event.payload, RollbackStarted))
        try:
            await self._issue(run, [u.step for u in undo])
            for item in undo:
                step = item.step
                if step.id in run.view().rollback_finished():
                    continue
                failed = await self._undo(run, step)
                if failed is not None:
                    await ctx.emit(RollbackFailed(plan_hash=plan_hash, step_id=step.id, reason=failed,
                                                  duration_ms=run.elapsed_ms(), started_at=started_at,
                                                  failed_at=view.failed_at))
                    return
            await ctx.emit(RollbackCompleted(plan_hash=plan_hash, duration_ms=run.elapsed_ms(), steps=len(undo),
                                             started_at=started_at, finished_at=ctx.clock(),
                                             failed_at=view.failed_at))
        finally:
            with anyio.CancelScope(shield=True):
                await self._revoke(run)

    async def _undo(self, run: _Run, step: Step) -> str | None:
        """Undo one completed step; the failure reason, or None.

        Skipped only when its read-back proves the resource absent. An unknown read-back (a refused
        certificate, an unreachable target) proves nothing, so the inverse runs: it either undoes
        the step or fails on the same fault, failing the rollback honestly (its error then says why
        the read-back could not tell)."""
        ctx = run.ctx
        assert step.rollback is not None
        display = step.rollback.display
        unread = ""
        if undone_when_absent(step):
            seen = await read_back(step.resource, step.readback, timeout_s=step.timeout_s, env=run.env(step),
                                   secrets=run.secrets(), pins=self.pins)
            if isinstance(seen, Unknown):
                unread = f" (its read-back could not tell whether it was already undone: {seen.reason})"
            elif isinstance(seen, Absent):
                if run.view().rollback_in_doubt(step.id):
                    out = StepOutput(rc=0, stdout=f"outcome unknown after a restart; `{step.readback.display}` "
                                                  "shows it undone")
                    await ctx.emit((RollbackStepCompleted(step_id=step.id, index=step.index, command=display,
                                                          output=out, recovered=True), f"rb-done:{step.id}"))
                else:
                    await ctx.emit((RollbackStepSkipped(step_id=step.id, index=step.index,
                                                        reason=f"`{step.readback.display}` shows it already absent"),
                                    f"rb-skip:{step.id}"))
                return None
        await self._rate(ctx, step)
        await ctx.emit((RollbackStepStarted(step_id=step.id, index=step.index, command=display), f"rb-start:{step.id}"))
        done = await self._exec(run, step, step.rollback, None, self.config.step_timeout(step.timeout_s))
        out = await self._bounded(ctx, done.output, f"{step.id}.{ctx.input.id}.rollback")
        if out.rc != 0:
            error = f"`{display}` exited {out.rc}: {out.stderr.strip()[-500:]}{unread}"
            await ctx.emit((RollbackStepFailed(step_id=step.id, index=step.index, command=display, output=out,
                                               error=error), f"rb-fail:{step.id}"))
            return error
        await ctx.emit((RollbackStepCompleted(step_id=step.id, index=step.index, command=display, output=out),
                        f"rb-done:{step.id}"))
        return None

    # -- rates, credentials and outputs ----------------------------------------------------

    async def _rate(self, ctx: Context, step: Step) -> None:
        """Wait for the step's tokens from the tenant's and the target's buckets (shared by every
        replica through the ``UPM_RATES`` key-value bucket, created on the first step if missing)."""
        if self.rates is None:
            opened = RateLimits(await rate_buckets(ctx.store.js), self.config.rates)
            self.rates = self.rates or opened  # two first steps may both open it: keep one
        await self.rates.step(ctx.input.tenant, step.target)

    async def _issue(self, run: _Run, steps: Sequence[Step]) -> None:
        """Short-lived credentials for each target the steps act on, recorded by reference."""
        ctx = run.ctx
        targets = dict.fromkeys((s.resource.provider, s.target) for s in steps)
        for provider, target in targets:
            broker = self.brokers.get(provider)
            if broker is None:
                continue
            issued = await broker.issue(tenant=ctx.input.tenant, change_id=ctx.input.change_id, target=target,
                                        ttl_s=self.config.credentials.ttl_s)
            if issued is None:
                continue
            run.creds[target] = issued
            for secret in issued.secrets:
                run.redactor.register(secret)
            await ctx.emit((CredentialsIssued(target=target, kind=issued.kind, ref=issued.ref,
                                              expires_at=issued.expires_at), f"creds:{issued.ref}"))

    async def _revoke(self, run: _Run) -> None:
        """Revoke every credential of the change still open (this run's, and a crashed run's)."""
        for issued in run.view().open_credentials():
            broker = self.by_kind.get(issued.kind)
            if broker is None:
                log.warning("no %s broker configured to revoke %s; it expires at %s",
                            issued.kind, issued.ref, issued.expires_at)
                continue
            await broker.revoke(issued.ref)
            await run.ctx.emit((CredentialsRevoked(target=issued.target, ref=issued.ref), f"revoke:{issued.ref}"))
        run.creds.clear()

    async def _bounded(self, ctx: Context, out: StepOutput, name: str) -> StepOutput:
        if self._outputs is None:
            self._outputs = OutputStore(ctx.store.js, self.config.output.bucket, self.config.output.event_bytes)
        return await self._outputs.bounded(out, f"{ctx.input.tenant}/{ctx.input.change_id}/{name}")


def _outputs_of(view: ChangeView, wave: WaveRun, *, since: str) -> list[StepOutput]:
    """The outputs of the wave's steps recorded since the event ``since`` (what anomalies and
    gates count: an operator's resume starts a new count)."""
    ids = {s.id for s in wave.steps}
    events = list(view.events)
    start = next((i for i, e in enumerate(events) if e.id == since), 0)
    return [e.payload.output for e in events[start:]
            if isinstance(e.payload, (StepCompleted, StepFailed)) and e.payload.step_id in ids]
