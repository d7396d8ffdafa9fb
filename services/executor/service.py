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
import msgspec

from events.lifecycle import Direction
from events.model import (
    ChangeApproved,
    ChangeStalled,
    Check,
    CredentialsIssued,
    CredentialsRevoked,
    Event,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionResumed,
    ExecutionStarted,
    Payload,
    RollbackApproved,
    RollbackCompleted,
    RollbackFailed,
    RollbackStarted,
    StepCompleted,
    StepFailed,
    StepOutput,
    StepRetried,
    TlsFallbackUsed,
    WaveStarted,
)
from events.plan import Command, Plan, Step
from providers import Absent, Unknown, compare
from services.common import metrics
from services.common.runtime import Context
from services.common.tracing import TRACER
from services.executor.config import ExecutorConfig
from services.executor.decide import (
    WAYS,
    Action,
    Finish,
    Gate,
    Observed,
    OpenWave,
    Probe,
    ProbeStep,
    Run,
    Skip,
    Start,
    Way,
    gate_outcome,
    next_action,
    probe_together,
    steps_of,
)
from services.executor.limits import RateLimits, rate_buckets
from services.executor.outputs import OutputStore
from services.executor.waves import WaveRun, waves_of
from services.guard import Redactor
from services.guard.steps import Executed, already_done, batch_observe, execute, read_back, shows_done
from services.security.credentials import (
    CredentialsBroker,
    CredentialsUnavailable,
    IssuedCredentials,
    broker_for,
)
from services.security.scope import Scope, load_scope

log = logging.getLogger("upm.executor")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Run:
    """One run of one trigger: its context, plan, direction and the credentials it holds."""

    ctx: Context
    plan: Plan
    way: Way
    trigger: str
    started: float = field(default_factory=time.perf_counter)
    creds: dict[str, IssuedCredentials] = field(default_factory=dict)
    redactor: Redactor = field(default_factory=Redactor)
    issued: bool = False
    started_at: str = ""

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)

    def env(self, step: Step) -> Mapping[str, str]:
        issued = self.creds.get(step.target)
        return issued.env if issued else {}

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for c in self.creds.values() for s in c.secrets)


class Executor:
    """The executor service's state across changes: policy, rate buckets, brokers, outputs."""

    def __init__(self, config: ExecutorConfig, scope: Scope | None = None) -> None:
        self.config = config
        self.scope = scope or load_scope()  # where local steps may write: checked again before each
        self.rates: RateLimits | None = None  # opened on the first step: the buckets are on the bus
        self.pins = config.pin_table()
        self.policy = config.guard_policy()
        self.secrets = config.secrets.resolver()
        token_store = config.credentials.token_store
        self.brokers: dict[str, CredentialsBroker] = {
            provider: broker_for(kind, token_store=token_store)
            for provider, kind in config.credentials.brokers.items()
        }
        self.by_kind: dict[str, CredentialsBroker] = {b.kind: b for b in self.brokers.values()}
        self._outputs: OutputStore | None = None

    async def handle(self, ctx: Context, history: list[Event], event: Event) -> None:
        state = ctx.state
        match event.payload:
            case ChangeApproved(plan_hash=plan_hash) | ExecutionResumed(plan_hash=plan_hash):
                await self.drive(ctx, "forward", plan_hash)
            case RollbackApproved(plan_hash=plan_hash):
                await self.drive(ctx, "rollback", plan_hash)
            case ChangeStalled() if state.status in ("approved", "executing"):
                await self.drive(ctx, "forward", state.approved_hash)
            case ChangeStalled() if state.status == "rolling-back":
                await self.drive(ctx, "rollback", state.approved_hash)

    async def drive(self, ctx: Context, direction: Direction, plan_hash: str) -> None:
        """Perform :func:`next_action` until the run ends (one loop for forward and rollback)."""
        plan = ctx.state.plan_for(plan_hash)
        if plan is None:
            owner = ctx.state.trigger if direction == "forward" else ctx.state.rollback_trigger
            if owner == ctx.input.id:
                await ctx.emit(_no_plan(direction, plan_hash, ctx.state.failed_at))
            return
        run = _Run(ctx, plan, WAYS[direction], ctx.input.id)
        seen = Observed(outputs=_outputs_since(ctx, plan, run.trigger) if direction == "forward" else {})
        try:
            while True:
                action = next_action(ctx.state, plan, direction, self.config, _now(), seen, trigger=run.trigger)
                if isinstance(action, Finish):
                    if action.payload is not None:
                        await self._revoke_before_closing(run)
                        await ctx.emit(self._closing(run, action.payload))
                    return
                try:
                    await self._perform(run, action, seen)
                except CredentialsUnavailable as err:  # a terminal failure, never a silent retry loop
                    await ctx.emit(self._closing(run, _no_credentials(direction, plan, str(err), ctx.state.failed_at)))
                    return
        finally:
            with anyio.CancelScope(shield=True):
                await self._revoke(run)

    async def _perform(self, run: _Run, action: Action, seen: Observed) -> None:
        ctx, plan, way = run.ctx, run.plan, run.way
        match action:
            case Start() if way.direction == "forward":
                await ctx.emit(ExecutionStarted(plan_hash=plan.hash, steps=len(plan.steps),
                                                waves=max(1, len(waves_of(plan)))))
            case Start():
                undo = steps_of(ctx.state, plan, "rollback")
                await ctx.emit((RollbackStarted(plan_hash=plan.hash, steps=len(undo)), "rb-started"))
            case OpenWave(wave=wave):
                await ctx.emit((WaveStarted(wave=wave.index, targets=wave.targets), f"wave-start:{wave.index}"))
            case ProbeStep(step=step, command=command):
                await self._issue_once(run)
                if way.direction == "forward":
                    await self._probe_together(run, step, seen)
                if step.id not in seen.probes:
                    seen.probes[step.id] = await self._probe(run, step, command, seen)
            case Skip(step=step, recovered=True):
                shown = way.probe(step)
                out = StepOutput(rc=0, stdout=f"outcome unknown after a restart; `{shown.display if shown else ''}` "
                                              f"shows it {'done' if way.direction == 'forward' else 'undone'}")
                await ctx.emit((way.completed(step_id=step.id, index=step.index, command=way.command(step).display,
                                              output=out, recovered=True), way.key("done", step)))
            case Skip(step=step):
                shown = way.probe(step)
                reason = (f"guard read-back `{shown.display}` shows it is already done" if way.direction == "forward"
                          else f"`{shown.display}` shows it already absent") if shown else "already done"
                await ctx.emit((way.skipped(step_id=step.id, index=step.index, reason=reason), way.key("skip", step)))
            case Run(step=step, timeout_s=timeout_s, at_deadline=at_deadline):
                await self._run_step(run, step, timeout_s, at_deadline, seen)
            case Gate(wave=wave):
                await self._gate(run, wave, seen)

    async def _run_step(self, run: _Run, step: Step, timeout_s: float, at_deadline: bool, seen: Observed) -> None:
        ctx, way = run.ctx, run.way
        await self._issue_once(run)
        await self._rate(ctx, step)
        command = way.command(step)
        display = command.display
        await ctx.emit((way.started(step_id=step.id, index=step.index, command=display), way.key("start", step)))
        started = time.perf_counter()
        with TRACER.start_as_current_span(f"executor step {step.id}", attributes={
                "upm.step_id": step.id, "upm.direction": way.direction, "upm.target": step.target}) as span:
            done = await self._exec(run, step, command, way.stdin(step), timeout_s)
            span.set_attribute("upm.rc", done.output.rc)
        metrics.STEP_SECONDS.labels(way.direction, "ok" if done.output.rc == 0 else "failed").observe(
            time.perf_counter() - started)
        suffix = "" if way.direction == "forward" else ".rollback"
        out = await self._bounded(ctx, done.output, f"{step.id}.{ctx.input.id}{suffix}")
        if way.direction == "forward":
            await self._attempts(run, step, done)
            seen.outputs.setdefault(step.wave, []).append(out)
        if out.rc != 0:
            error = f"`{display}` exited {out.rc}: {out.stderr.strip()[-500:]}"
            if step.id in seen.unread:
                error += f" ({seen.unread[step.id]})"
            await ctx.emit((way.failed(step_id=step.id, index=step.index, command=display, output=out, error=error),
                            way.key("fail", step)))
            seen.failed, seen.error = step.id, error
            seen.at_deadline = at_deadline and bool(out.tries) and out.tries[-1].timed_out
            return
        await ctx.emit((way.completed(step_id=step.id, index=step.index, command=display, output=out),
                        way.key("done", step)))

    def _closing(self, run: _Run, payload: Payload) -> Payload:
        """The run's closing event with what only the shell knows: durations and times."""
        ctx = run.ctx
        match payload:
            case ExecutionCompleted() | ExecutionFailed():
                return msgspec.structs.replace(payload, duration_ms=run.elapsed_ms())
            case RollbackCompleted():
                return msgspec.structs.replace(payload, duration_ms=run.elapsed_ms(), steps=len(
                    steps_of(ctx.state, run.plan, "rollback")), started_at=_rollback_started_at(ctx),
                    finished_at=ctx.clock(), failed_at=ctx.state.failed_at)
            case RollbackFailed():
                return msgspec.structs.replace(payload, duration_ms=run.elapsed_ms(),
                                               started_at=_rollback_started_at(ctx))
            case _:
                return payload

    async def _probe(self, run: _Run, step: Step, command: Command, seen: Observed) -> Probe:
        """Whether the step is already in its target state (forward: the guard shows it done;
        rollback: the created resource reads back absent). A read-back that cannot tell (unknown)
        proves nothing, so the step runs: it either does its work or fails on the same fault, and
        its error then also says why the read-back could not tell."""
        if run.way.direction == "forward":
            done = await already_done(step, env=run.env(step), secrets=run.secrets(), pins=self.pins)
            return "done" if done else "not-done"
        found = await read_back(step.resource, command, timeout_s=step.timeout_s, env=run.env(step),
                                secrets=run.secrets(), pins=self.pins)
        if isinstance(found, Unknown):
            seen.unread[step.id] = f"its read-back could not tell whether it was already undone: {found.reason}"
        return "done" if isinstance(found, Absent) else "not-done"

    async def _probe_together(self, run: _Run, step: Step, seen: Observed) -> None:
        """Probe ``step`` and the rest of its wave that can be (:func:`probe_together`, same
        environment) with one batch read-back: one ``stat`` over twenty paths instead of twenty
        processes. A probe the batch could not answer is read alone when its turn comes, as before."""
        env = run.env(step)
        group = [s for s in probe_together(run.plan, step, run.ctx.state.progress("forward").finished, seen.probes)
                 if run.env(s) == env]
        if len(group) < 2:
            return
        answered = await batch_observe(group, env=env, secrets=run.secrets(), pins=self.pins)
        for i, observed in answered.items():
            seen.probes[group[i].id] = "done" if shows_done(group[i], observed) else "not-done"

    async def _exec(self, run: _Run, step: Step, command: Command, stdin: str | None, timeout_s: float) -> Executed:
        """Run a step's (or its inverse's) command; a local path out of the tenant's scope is refused
        again here, and the local writer itself never follows a link (:mod:`upm_localfs`)."""
        refused = self.scope.step_refusal(run.ctx.input.tenant, step)
        if refused is not None:
            return Executed(StepOutput(rc=126, stderr=f"refused before running ({refused})"))
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
            resolver=self.secrets,
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

    async def _gate(self, run: _Run, wave: WaveRun, seen: Observed) -> None:
        if self.config.gates.bake_s > 0:
            await anyio.sleep(self.config.gates.bake_s)
        checks = await self._health(run, wave.steps)
        completed, paused = gate_outcome(run.plan, wave, checks, seen.outputs.get(wave.index, []), self.config)
        await run.ctx.emit((completed, f"wave-done:{wave.index}"))
        if paused is not None:
            await run.ctx.emit(paused)

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

    # -- rates, credentials and outputs ----------------------------------------------------

    async def _rate(self, ctx: Context, step: Step) -> None:
        """Wait for the step's tokens from the tenant's and the target's buckets (shared by every
        replica through the ``UPM_RATES`` key-value bucket, created on the first step if missing)."""
        if self.rates is None:
            opened = RateLimits(await rate_buckets(ctx.store.js), self.config.rates)
            self.rates = self.rates or opened  # two first steps may both open it: keep one
        await self.rates.step(ctx.input.tenant, step.target)

    async def _issue_once(self, run: _Run) -> None:
        """Short-lived credentials for each target the run's unfinished steps act on, recorded by
        reference (once per run, before its first read-back or step)."""
        if run.issued:
            return
        run.issued = True
        finished = run.ctx.state.progress(run.way.direction).finished
        steps = [s for _, s in steps_of(run.ctx.state, run.plan, run.way.direction) if s.id not in finished]
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

    async def _revoke_before_closing(self, run: _Run) -> None:
        """Revoke before the run's last event: whoever acts on that event (the verifier) then finds the
        change as the run left it (a revocation appended after it made every AWS change's verification
        conflict and run twice) and acts without the run's credentials. A broker that cannot revoke now
        does not hold the run's end back: the run closes, and the revocation is tried again after it
        (as it always is, in :meth:`drive`'s ``finally``) and on every later delivery."""
        try:
            await self._revoke(run)
        except CredentialsUnavailable as err:
            log.warning("revoking the credentials of %s before its run's last event failed (%s); closing it, "
                        "then trying again", run.ctx.input.change_id, err)

    async def _revoke(self, run: _Run) -> None:
        """Revoke every credential of the change still open (this run's, and a crashed run's)."""
        for issued in run.ctx.state.credentials:
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


def _outputs_since(ctx: Context, plan: Plan, trigger: str) -> dict[int, list[StepOutput]]:
    """The outputs of forward steps recorded since the event ``trigger``, per wave (what anomalies
    and gates count: an operator's resume starts a new count)."""
    waves = {s.id: s.wave for s in plan.steps}
    events = [s.event for s in ctx.log.events]
    start = next((i for i, e in enumerate(events) if e.id == trigger), len(events))
    outputs: dict[int, list[StepOutput]] = {}
    for e in events[start:]:
        if isinstance(e.payload, (StepCompleted, StepFailed)) and e.payload.step_id in waves:
            outputs.setdefault(waves[e.payload.step_id], []).append(e.payload.output)
    return outputs


def _rollback_started_at(ctx: Context) -> str:
    return next((s.event.ts for s in reversed(ctx.log.events) if isinstance(s.event.payload, RollbackStarted)), "")


def _no_credentials(direction: Direction, plan: Plan, error: str, failed_at: str) -> Payload:
    reason = f"no credentials for the change's targets, so nothing more was run: {error}"
    if direction == "forward":
        return ExecutionFailed(plan_hash=plan.hash, step_id="", rule="credentials", duration_ms=0.0, reason=reason)
    return RollbackFailed(plan_hash=plan.hash, step_id="", duration_ms=0.0, failed_at=failed_at, reason=reason)


def _no_plan(direction: Direction, plan_hash: str, failed_at: str) -> Payload:
    reason = f"no compiled plan with hash {plan_hash} in the change; nothing was run"
    if direction == "forward":
        return ExecutionFailed(plan_hash=plan_hash, step_id="", rule="no-plan", duration_ms=0.0, reason=reason)
    return RollbackFailed(plan_hash=plan_hash, step_id="", duration_ms=0.0, failed_at=failed_at, reason=reason)
