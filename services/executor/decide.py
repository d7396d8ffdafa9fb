"""The executor's pure core: what to do next in a run, forward or rollback (no I/O).

:func:`next_action` reads the change's lifecycle state (:mod:`events.lifecycle`), the plan, the
run's direction, the configuration, the time and what the shell observed in this run, and
answers one action. The shell (:mod:`services.executor.service`) performs it, appends its events
(which evolve the state) and asks again until the run ends. Forward and rollback are one loop
with a :class:`Way`: forward runs the plan's steps wave by wave, rollback the inverses of the
completed steps, latest first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from events.lifecycle import ChangeState, Direction
from events.model import (
    Check,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionPaused,
    Payload,
    RollbackCompleted,
    RollbackFailed,
    RollbackStepCompleted,
    RollbackStepFailed,
    RollbackStepSkipped,
    RollbackStepStarted,
    StepCompleted,
    StepFailed,
    StepOutput,
    StepSkipped,
    StepStarted,
    WaveCompleted,
)
from events.plan import Command, Plan, Step, undo_steps
from services.executor.config import ExecutorConfig
from services.executor.gates import anomaly, gate
from services.executor.limits import blast_radius_violation
from services.executor.waves import WaveRun, waves_of

Probe = Literal["done", "not-done"]
"""What a step's probe read-back showed: already in its target state, or not (unknown is not)."""


@dataclass(frozen=True)
class Way:
    """What differs between the two directions: the command a step runs, its probe, its events."""

    direction: Direction
    prefix: str  # of event id keys: "" forward, "rb-" rollback
    started: type[StepStarted] | type[RollbackStepStarted]
    completed: type[StepCompleted] | type[RollbackStepCompleted]
    skipped: type[StepSkipped] | type[RollbackStepSkipped]
    failed: type[StepFailed] | type[RollbackStepFailed]

    def command(self, step: Step) -> Command:
        command = step.command if self.direction == "forward" else step.rollback
        assert command is not None, f"step {step.id} has no {self.direction} command"
        return command

    def stdin(self, step: Step) -> str | None:
        return step.stdin if self.direction == "forward" else None

    def probe(self, step: Step) -> Command | None:
        """The read-back that can show a step already done: its guard forward; in rollback, the
        read-back of a resource the step created (absent = undone). None: always run it."""
        if self.direction == "forward":
            return step.guard
        return step.readback if step.action == "create" else None

    def key(self, kind: str, step: Step) -> str:
        return f"{self.prefix}{kind}:{step.id}"


FORWARD = Way("forward", "", StepStarted, StepCompleted, StepSkipped, StepFailed)
ROLLBACK = Way("rollback", "rb-", RollbackStepStarted, RollbackStepCompleted, RollbackStepSkipped,
               RollbackStepFailed)
WAYS: dict[Direction, Way] = {"forward": FORWARD, "rollback": ROLLBACK}


# -- actions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """Record the run's start (``execution.started`` / ``rollback.started``)."""


@dataclass(frozen=True)
class OpenWave:
    wave: WaveRun


@dataclass(frozen=True)
class ProbeStep:
    """Read the step's probe back before deciding whether to run it."""

    step: Step
    command: Command


@dataclass(frozen=True)
class Skip:
    """The probe shows the step done: record it skipped or, in doubt after a crash, completed."""

    step: Step
    recovered: bool


@dataclass(frozen=True)
class Run:
    """Run the step's command; ``at_deadline``: its time-out is the change's remaining time."""

    step: Step
    timeout_s: float
    at_deadline: bool


@dataclass(frozen=True)
class Gate:
    """Check the wave's health (its promotion gate)."""

    wave: WaveRun


@dataclass(frozen=True)
class Finish:
    """End the run with ``payload``; ``None``: stop without a record (a newer trigger owns the
    run, or it was cancelled or is over)."""

    payload: Payload | None


Action = Start | OpenWave | ProbeStep | Skip | Run | Gate | Finish


@dataclass
class Observed:
    """What the shell saw in this run: probe results, outputs per wave since the trigger, and the
    step that failed (with its error, and whether it was stopped at the change's deadline)."""

    probes: dict[str, Probe] = field(default_factory=dict)
    unread: dict[str, str] = field(default_factory=dict)  # step → why its probe could not tell
    outputs: dict[int, list[StepOutput]] = field(default_factory=dict)
    failed: str = ""
    error: str = ""
    at_deadline: bool = False


def probe_together(plan: Plan, step: Step, finished: frozenset[str], probed: Mapping[str, Probe]) -> list[Step]:
    """The steps of ``step``'s wave (itself included) whose forward probe may be read in one batch
    with it, in plan order: not finished, not probed yet, depending on no other step (whatever
    that step does could change what they read), and probed by their read-back command (what a
    batch read-back reads)."""
    return [s for s in plan.steps if s.wave == step.wave and s.id not in finished and s.id not in probed
            and not s.depends_on and s.guard is not None and s.guard == s.readback]


# -- deciding ------------------------------------------------------------------------------


def steps_of(state: ChangeState, plan: Plan, direction: Direction) -> list[tuple[WaveRun | None, Step]]:
    """The run's steps in order with their wave (rollback runs outside waves)."""
    if direction == "rollback":
        return [(None, s) for s in undo_steps(plan, state.forward.completed)]
    return list(_forward(plan)[0])


Ordered = tuple[tuple[WaveRun | None, Step], ...]
_FORWARD: dict[str, tuple[Ordered, bool]] = {}


def _forward(plan: Plan) -> tuple[Ordered, bool]:
    """The plan's steps with their waves, in order, and whether it has several waves: computed
    once per plan (by its hash), since :func:`next_action` asks at every action."""
    found = _FORWARD.get(plan.hash)
    if found is None:
        if len(_FORWARD) >= 256:
            _FORWARD.clear()
        waves = waves_of(plan)
        found = _FORWARD[plan.hash] = (tuple((w, s) for w in waves for s in w.steps), len(waves) > 1)
    return found


def next_action(
    state: ChangeState, plan: Plan, direction: Direction, config: ExecutorConfig, now: datetime, seen: Observed,
    *, trigger: str,
) -> Action:
    """What to do next in the run that ``trigger`` started (an approval, a resume, a rollback
    approval or the watchdog's nudge)."""
    owner = state.trigger if direction == "forward" else state.rollback_trigger
    if owner != trigger:
        return Finish(None)
    if direction == "forward":
        if state.status not in ("approved", "executing") or state.cancelled:
            return Finish(None)  # over, paused or cancelled
        if not state.started:
            refused = blast_radius_violation(plan, config.limits)
            return Finish(_failed(plan, "", refused, "blast-radius")) if refused else Start()
    elif state.rollback_ended:
        return Finish(None)
    elif not state.rollback_started:
        return Start()
    if seen.failed:
        return Finish(_after_failure(state, plan, direction, config, seen))
    ordered, progressive = (steps_of(state, plan, direction), False) if direction == "rollback" else _forward(plan)
    progress = state.progress(direction)
    for wave, step in ordered:
        if wave is not None:
            outputs = seen.outputs.get(wave.index, [])
            verdict = anomaly(outputs, config.anomalies) if outputs else None
            if verdict is not None and not verdict.ok:
                return Finish(ExecutionPaused(plan_hash=plan.hash, reason=verdict.reason, wave=wave.index,
                                              anomaly=verdict.anomaly))
            if progressive and wave.index not in state.waves_started:
                return OpenWave(wave)
        if step.id not in progress.finished:
            return _step_action(state, plan, WAYS[direction], step, config, now, seen)
        if wave is not None and progressive and step is wave.steps[-1] and wave.index not in state.waves_gated:
            return Gate(wave)
    if direction == "forward":
        return Finish(ExecutionCompleted(plan_hash=plan.hash, duration_ms=0.0))
    return Finish(RollbackCompleted(plan_hash=plan.hash, duration_ms=0.0))


def _step_action(
    state: ChangeState, plan: Plan, way: Way, step: Step, config: ExecutorConfig, now: datetime, seen: Observed
) -> Action:
    timeout = config.step_timeout(step.timeout_s)
    if way.direction == "forward":
        remaining = config.deadlines.change_timeout_s - state.running_seconds(now)
        if remaining <= 0:
            return Finish(_failed(
                plan, step.id, f"the change ran longer than its deadline of {config.deadlines.change_timeout_s:g}s "
                f"before step {step.id}; raise deadlines.change_timeout_s or split the change", "deadline"))
        if remaining < timeout:
            timeout, at_deadline = remaining, True
        else:
            at_deadline = False
    else:
        at_deadline = False
    probe = way.probe(step)
    if probe is not None and step.id not in seen.probes:
        return ProbeStep(step, probe)
    if seen.probes.get(step.id) == "done":
        return Skip(step, recovered=step.id in state.progress(way.direction).in_doubt)
    return Run(step, timeout_s=timeout, at_deadline=at_deadline)


def _after_failure(
    state: ChangeState, plan: Plan, direction: Direction, config: ExecutorConfig, seen: Observed
) -> Payload:
    """How a run ends after its step failed: a rollback fails; forward fails at the deadline, else
    pauses or fails as the anomaly policy says."""
    if direction == "rollback":
        return RollbackFailed(plan_hash=plan.hash, step_id=seen.failed, reason=seen.error, duration_ms=0.0,
                              failed_at=state.failed_at)
    if seen.at_deadline:
        return _failed(plan, seen.failed, f"step {seen.failed} was stopped at the change's deadline of "
                       f"{config.deadlines.change_timeout_s:g}s; raise deadlines.change_timeout_s or split the "
                       "change", "deadline")
    if config.anomalies.on_step_failure == "pause":
        step = next((s for s in plan.steps if s.id == seen.failed), None)
        return ExecutionPaused(plan_hash=plan.hash, reason=f"step {seen.failed} failed: {seen.error}",
                               wave=step.wave if step else 0, anomaly="step-failed")
    return _failed(plan, seen.failed, seen.error, "")


def gate_outcome(
    plan: Plan, wave: WaveRun, checks: Sequence[Check], outputs: Sequence[StepOutput], config: ExecutorConfig
) -> tuple[WaveCompleted, ExecutionPaused | None]:
    """The wave's promotion gate: its record, and the pause when it is not healthy."""
    verdict = gate(checks, outputs, config.gates)
    completed = WaveCompleted(wave=wave.index, healthy=verdict.ok, checks=tuple(checks), reason=verdict.reason,
                              error_ratio=round(verdict.error_ratio, 4))
    if verdict.ok:
        return completed, None
    return completed, ExecutionPaused(plan_hash=plan.hash, reason=f"wave {wave.name}: {verdict.reason}",
                                      wave=wave.index, anomaly=verdict.anomaly)


def _failed(plan: Plan, step_id: str, reason: str, rule: str) -> ExecutionFailed:
    return ExecutionFailed(plan_hash=plan.hash, step_id=step_id, reason=reason, duration_ms=0.0, rule=rule)
