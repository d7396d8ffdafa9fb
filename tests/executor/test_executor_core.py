"""The executor's pure cores, without fixtures: waves, limits, gates, anomalies, rollback plans,
state from events, command decisions and the configuration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from executor_helpers import dirs_plan

from events.commands import ChangeCommand
from events.ids import new_id
from events.lifecycle import fold
from events.model import (
    ChangeApproved,
    Check,
    CredentialsIssued,
    CredentialsRevoked,
    Event,
    ExecutionCancelled,
    ExecutionCompleted,
    ExecutionPaused,
    ExecutionResumed,
    ExecutionStarted,
    Payload,
    PlanCompiled,
    RollbackApproved,
    RollbackCompleted,
    RollbackFailed,
    RollbackStepStarted,
    StepAttempt,
    StepCompleted,
    StepFailed,
    StepOutput,
    StepSkipped,
    StepStarted,
)
from events.plan import Plan
from events.store import new_event
from services.executor.commands import decide
from services.executor.config import DEFAULT, Anomalies, Gates, Limits, load_config, parse_config
from services.executor.decide import steps_of
from services.executor.errors import CommandNotAllowed, ExecutorConfigInvalid
from services.executor.gates import anomaly, gate
from services.executor.limits import blast_radius_violation
from services.executor.waves import is_progressive, waves_of

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CHANGE = new_id()


def _events(*payloads: Payload, step_s: float = 1.0) -> list[Event]:
    return [
        new_event(p, event_id=new_id(), change_id=CHANGE, tenant="acme", actor="t", source="api",
                  ts=(T0 + timedelta(seconds=i * step_s)).isoformat().replace("+00:00", "Z"))
        for i, p in enumerate(payloads)
    ]


def _plan(n: int = 3, waves: list[int] | None = None) -> Plan:
    return dirs_plan([Path(f"/srv/d{i}") for i in range(n)], waves=waves)


def _ok(attempts: int = 1) -> StepOutput:
    tries = tuple(StepAttempt(n=i + 1, rc=0 if i == attempts - 1 else 7,
                              verdict="ok" if i == attempts - 1 else "retryable") for i in range(attempts))
    return StepOutput(rc=0, attempts=attempts, tries=tries)


def test_waves_run_in_index_order_and_a_plan_without_waves_is_one() -> None:
    plan = _plan(4, waves=[2, 0, 1, 0])
    assert [(w.index, [s.index for s in w.steps]) for w in waves_of(plan)] == [(0, [1, 3]), (1, [2]), (2, [0])]
    assert is_progressive(plan)
    single = _plan(2)
    assert [len(w.steps) for w in waves_of(single)] == [2] and not is_progressive(single)


def test_blast_radius_per_change_and_per_wave() -> None:
    plan = _plan(4, waves=[0, 0, 1, 1])
    assert blast_radius_violation(plan, Limits()) is None
    assert "4 resources" in (blast_radius_violation(plan, Limits(max_resources_per_change=3)) or "")
    assert "wave wave-1 mutates 2" in (blast_radius_violation(plan, Limits(max_resources_per_wave=1)) or "")


def test_the_gate_needs_green_health_and_a_low_error_ratio() -> None:
    green = [Check(name="health", target="a", ok=True)]
    red = [*green, Check(name="health", target="b", ok=False, detail="`stat x` exited 1")]
    assert gate(green, [_ok()], Gates()).ok
    verdict = gate(red, [_ok()], Gates())
    assert (verdict.ok, verdict.anomaly) == (False, "health") and "b: `stat x` exited 1" in verdict.reason
    assert gate(red, [_ok()], Gates(require_healthy=False)).ok
    flaky = gate(green, [_ok(3)], Gates(max_error_ratio=0.5))
    assert (flaky.ok, flaky.anomaly, round(flaky.error_ratio, 2)) == (False, "error-ratio", 0.67)


def test_anomalies_pause_on_a_retry_spike_or_a_failure_ratio() -> None:
    assert anomaly([_ok(), _ok()], Anomalies()).ok
    assert anomaly([_ok(3)], Anomalies(max_retries_per_wave=1)).anomaly == "retries"
    ratio = anomaly([_ok(2), _ok(2)], Anomalies(max_failure_ratio=0.4, min_attempts=4))
    assert ratio.anomaly == "failure-ratio" and "2 of 4 attempts failed" in ratio.reason
    assert anomaly([_ok(2)], Anomalies(max_failure_ratio=0.4, min_attempts=4)).ok  # too few attempts yet


def test_rollback_undoes_only_completed_steps_latest_first() -> None:
    plan = _plan(3)
    a, b, c = plan.steps
    state = fold(_events(
        PlanCompiled(plan=plan, compile_ms=1), ChangeApproved(plan_hash=plan.hash, lane="auto"),
        StepCompleted(step_id=a.id, index=0, command="", output=_ok()),
        StepSkipped(step_id=b.id, index=1, reason="done"),
        StepCompleted(step_id=c.id, index=2, command="", output=_ok()),
    ))
    undo = [step for _, step in steps_of(state, plan, "rollback")]
    assert [(u.id, u.rollback.display if u.rollback else "") for u in undo] == [
        (c.id, f"upm-localfs rmdir {c.resource.name}"), (a.id, f"upm-localfs rmdir {a.resource.name}")]


def test_state_from_events() -> None:
    plan = _plan(2)
    a, b = plan.steps
    base = [PlanCompiled(plan=plan, compile_ms=1), ChangeApproved(plan_hash=plan.hash, lane="auto")]
    running = _events(*base, ExecutionStarted(plan_hash=plan.hash, steps=2),
                      StepStarted(step_id=a.id, index=0, command=""))
    view = fold(running)
    assert view.status == "executing" and a.id in view.forward.in_doubt and b.id not in view.forward.in_doubt
    assert view.plan_for(plan.hash) == plan and view.plan_for("sha256:other") is None
    failed = fold(_events(StepFailed(step_id=a.id, index=0, command="", output=_ok(), error="x")), view)
    assert a.id not in failed.forward.in_doubt
    paused_events = _events(*base, ExecutionStarted(plan_hash=plan.hash, steps=2),
                            ExecutionPaused(plan_hash=plan.hash, reason="red", wave=1))
    paused = fold(paused_events)
    assert paused.status == "paused" and paused.failed_at
    resume = _events(ExecutionResumed(plan_hash=plan.hash, by="op"))
    resumed = fold(resume, paused)
    assert resumed.status == "executing" and resumed.trigger == resume[0].id
    creds = fold(_events(CredentialsIssued(target="local", kind="token", ref="r1", expires_at="x"),
                         CredentialsIssued(target="local", kind="token", ref="r2", expires_at="x"),
                         CredentialsRevoked(target="local", ref="r1")))
    assert [c.ref for c in creds.credentials] == ["r2"]


def test_the_deadline_counts_running_time_only() -> None:
    plan = _plan(1)
    events = _events(ExecutionStarted(plan_hash=plan.hash, steps=1), ExecutionPaused(plan_hash=plan.hash, reason=""),
                     ExecutionResumed(plan_hash=plan.hash, by="op"), step_s=10)
    # ran 0→10 s, paused 10→20 s, running again since 20 s
    assert fold(events).running_seconds(T0 + timedelta(seconds=25)) == pytest.approx(15.0)


@pytest.mark.parametrize(("verb", "payloads", "rule"), [
    ("resume", ["started"], "not-paused"),
    ("rollback", ["started"], "executing"),
    ("rollback", ["started", "paused"], "nothing-to-roll-back"),
    ("rollback", ["started", "done", "completed", "rollback", "rolled"], "already-rolled-back"),
    ("cancel", ["started", "done", "completed"], "closed"),
])
def test_commands_the_state_refuses(verb: str, payloads: list[str], rule: str) -> None:
    plan = _plan(1)
    step = plan.steps[0]
    named: dict[str, Payload] = {
        "started": ExecutionStarted(plan_hash=plan.hash, steps=1),
        "paused": ExecutionPaused(plan_hash=plan.hash, reason="red"),
        "done": StepCompleted(step_id=step.id, index=0, command="", output=_ok()),
        "completed": ExecutionCompleted(plan_hash=plan.hash, duration_ms=1),
        "rollback": RollbackApproved(plan_hash=plan.hash, lane="manual", by="op"),
        "rolled": RollbackCompleted(plan_hash=plan.hash, duration_ms=1),
    }
    view = fold(_events(PlanCompiled(plan=plan, compile_ms=1), ChangeApproved(plan_hash=plan.hash, lane="auto"),
                        *(named[p] for p in payloads)))
    with pytest.raises(CommandNotAllowed) as refused:
        decide(verb, view, ChangeCommand(change_id=CHANGE, by="op"))
    assert refused.value.rule == rule


def test_commands_the_state_allows() -> None:
    plan = _plan(1)
    step = plan.steps[0]
    paused = fold(_events(PlanCompiled(plan=plan, compile_ms=1), ChangeApproved(plan_hash=plan.hash, lane="auto"),
                          ExecutionStarted(plan_hash=plan.hash, steps=1),
                          StepCompleted(step_id=step.id, index=0, command="", output=_ok()),
                          ExecutionPaused(plan_hash=plan.hash, reason="red")))
    cmd = ChangeCommand(change_id=CHANGE, by="op", reason="why")
    assert decide("resume", paused, cmd) == ExecutionResumed(plan_hash=plan.hash, by="op", reason="why")
    assert decide("rollback", paused, cmd) == RollbackApproved(plan_hash=plan.hash, lane="manual", by="op", reason="why")
    assert decide("cancel", paused, cmd) == ExecutionCancelled(plan_hash=plan.hash, by="op", reason="why")
    with pytest.raises(CommandNotAllowed, match="no change"):
        decide("resume", fold([]), cmd)


def test_the_configuration_file_and_its_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_config() == DEFAULT
    path = tmp_path / "executor.yaml"
    path.write_text("gates: {bake_s: 2}\nrates: {steps_per_s_per_tenant: 5, tenants: {acme: 1}}\n")
    monkeypatch.setenv("UPM_EXECUTOR_CONFIG", str(path))
    loaded = load_config()
    assert loaded.gates.bake_s == 2 and loaded.rates.tenants == {"acme": 1} and loaded.limits == Limits()
    with pytest.raises(ExecutorConfigInvalid, match=r"gates\.max_error_ratio must be 0\.\.1"):
        parse_config({"gates": {"max_error_ratio": 2}})
    with pytest.raises(ExecutorConfigInvalid, match="unknown field `bogus`"):
        parse_config({"gates": {"bogus": 1}})
    with pytest.raises(ExecutorConfigInvalid, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    assert DEFAULT.step_timeout(10) == 10 and parse_config({"deadlines": {"step_timeout_s": 3}}).step_timeout(10) == 3


def test_a_rollback_in_doubt_and_a_rollback_already_ended() -> None:
    plan = _plan(1)
    step = plan.steps[0]
    approved = _events(RollbackApproved(plan_hash=plan.hash, lane="auto", by="policy"))
    view = fold([*approved, *_events(RollbackStepStarted(step_id=step.id, index=0, command=""))])
    assert step.id in view.rollback.in_doubt and not view.rollback_ended
    assert view.rollback_trigger == approved[0].id
    ended = fold(_events(RollbackFailed(plan_hash=plan.hash, step_id=step.id, reason="x", duration_ms=1)), view)
    assert ended.rollback_ended and (ended.status, ended.outcome) == ("ended", "failed")
    retry = _events(RollbackApproved(plan_hash=plan.hash, lane="manual", by="op"))
    again = fold(retry, ended)
    assert not again.rollback_ended and again.rollback_trigger == retry[0].id and again.status == "rolling-back"
