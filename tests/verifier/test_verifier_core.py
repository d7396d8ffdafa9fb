"""The verifier's pure core, without fixtures: plans compiled for real."""

from __future__ import annotations

from events.model import (
    Event,
    Payload,
    PlanCompiled,
    RollbackApproved,
    RollbackPlanned,
    SloBreached,
    StepCompleted,
    StepOutput,
    StepSkipped,
    VerificationFailed,
    VerificationPassed,
)
from events.plan import Plan
from events.store import new_event
from providers import Absent, Present, Unknown
from services.planner import CompileInput, compile_intent
from services.verifier import core

CID = "01a2190a-0000-7000-8000-000000000001"


def _plan(request: str) -> Plan:
    return compile_intent(CompileInput(request=request))


def _events(*payloads: Payload, tenant: str = "acme", change_id: str = CID) -> list[Event]:
    return [
        new_event(p, event_id=f"01a2190a-0000-7000-8000-{i:012d}", change_id=change_id, tenant=tenant,
                  ts="2026-11-26T00:00:00.000Z", actor="t", source="api")
        for i, p in enumerate(payloads)
    ]


def _done(step_id: str) -> StepCompleted:
    return StepCompleted(step_id=step_id, index=0, command="x", output=StepOutput(rc=0))


def test_a_matching_read_back_passes_with_equal_hashes() -> None:
    plan = _plan("Create directory /srv/a with mode 0750")
    step = plan.steps[0]
    result = core.verdict(core.change_targets(plan), [Present({"exists": True, **step.desired})], 3.0)
    assert isinstance(result, VerificationPassed)
    assert result.baseline_hash == result.current_hash
    assert [c.ok for c in result.checks] == [True]


def test_a_mismatch_fails_with_the_field_diff_and_different_hashes() -> None:
    plan = _plan("Create directory /srv/a with mode 0750")
    observed = Present({"exists": True, "kind": "directory", "mode": "0700", "owner": "root"})
    result = core.verdict(core.change_targets(plan), [observed], 3.0)
    assert isinstance(result, VerificationFailed)
    assert [(d.field, d.desired, d.observed) for d in result.diff] == [("mode", "0750", "0700")]
    assert result.baseline_hash != result.current_hash
    assert "mode: '0750' → '0700'" in result.checks[0].detail


def test_rollback_undoes_only_what_ran_newest_first() -> None:
    plan = _plan("Create directory /srv/a with mode 0750 and directory /srv/b and directory /srv/c")
    a, b, c = plan.steps
    history = _events(PlanCompiled(plan=plan, compile_ms=1), _done(a.id), StepSkipped(step_id=b.id, index=1, reason="x"),
                      _done(c.id))
    assert [s.id for s in core.rollback_steps(plan, history)] == [c.id, a.id]
    planned = core.plan_rollback(plan, history, "verification failed", automatic=False)
    assert len(planned) == 1 and isinstance(planned[0], RollbackPlanned)
    assert [cmd.display for cmd in planned[0].commands] == [f"upm-localfs rmdir {c.resource.name}", f"upm-localfs rmdir {a.resource.name}"]


def test_automatic_rollback_is_approved_by_policy_only_when_something_ran() -> None:
    plan = _plan("Create directory /srv/a")
    ran = _events(PlanCompiled(plan=plan, compile_ms=1), _done(plan.steps[0].id))
    auto = core.plan_rollback(plan, ran, "r", automatic=True)
    assert isinstance(auto[1], RollbackApproved) and auto[1].lane == "auto"
    nothing = core.plan_rollback(plan, ran[:1], "r", automatic=True)
    assert len(nothing) == 1 and isinstance(nothing[0], RollbackPlanned) and nothing[0].commands == ()


def test_a_rollback_is_verified_against_the_state_before_the_change() -> None:
    plan = _plan("Create directory /srv/a")
    history = _events(PlanCompiled(plan=plan, compile_ms=1), _done(plan.steps[0].id))
    targets = core.rollback_targets(plan, history)
    assert [desired for _, desired in targets] == [{"exists": False}]
    assert isinstance(core.verdict(targets, [Absent("No such file or directory")], 1.0, "rollback"), VerificationPassed)
    still_there = core.verdict(targets, [Present({"exists": True, "mode": "0755"})], 1.0, "rollback")
    assert isinstance(still_there, VerificationFailed) and still_there.scope == "rollback"


TLS = Unknown(rc=255, kind="tls", summary="SSL validation failed for https://127.0.0.1:4566/ [SSL: "
              "CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate (_ssl.c:1006)")


def test_a_read_back_that_could_not_answer_fails_with_the_reason_and_claims_no_diff() -> None:
    """A rollback's "is it gone?" over a broken endpoint is no proof it is gone: it fails, says why, and
    the diff claims nothing about the resource (no ``exists: False``)."""
    plan = _plan("Create directory /srv/a")
    history = _events(PlanCompiled(plan=plan, compile_ms=1), _done(plan.steps[0].id))
    for targets, scope in ((core.rollback_targets(plan, history), "rollback"), (core.change_targets(plan), "change")):
        result = core.verdict(targets, [TLS], 1.0, scope)  # type: ignore[arg-type]
        assert isinstance(result, VerificationFailed) and result.scope == scope
        assert result.diff == ()
        [check] = result.checks
        key = plan.steps[0].resource.key
        assert not check.ok and check.detail == f"could not read back {key}: {TLS.reason}"
        assert "tls (exit 255): SSL validation failed" in core.failure_reason(result)


def test_a_slow_verification_breaches_its_slo() -> None:
    assert core.slo_breach(10.0, 1200.0) == []
    [breach] = core.slo_breach(1500.0, 1200.0)
    assert isinstance(breach, SloBreached) and breach.phase == "verify"
