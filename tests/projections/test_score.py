"""`upm score`: clause-by-clause judging (projections/clauses.py), the gating rule and the evidence
gates, on hand-built logs and on exercise counts. One occurrence of a fact is not a capability: a
clause nobody exercised is "not exercised", never held."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from upm_history import History, happy, make_plan

from events.model import (
    ApprovalGranted,
    ChangeApproved,
    PlanCompiled,
    RollbackApproved,
    RollbackCompleted,
    RollbackPlanned,
    RollbackStarted,
    RollbackStepCompleted,
    StepAttempt,
    StepOutput,
    StepRetried,
)
from events.plan import seal
from projections import clauses, kpi, score
from projections.clauses import CLAUSES, MIN_SAMPLE, Exercise, Sample
from projections.db import ProjectionDB

EX = Exercise(tenant="acme", change_id="c", event_id="e", ok=True)
BAD = Exercise(tenant="acme", change_id="c2", event_id="e2", ok=False)


def all_held() -> tuple[dict[str, tuple[int, int, list[Exercise]]], dict[str, Sample]]:
    """Counts where every clause and gate was exercised and passed, and every KPI on a big L4 sample."""
    counts = {c.id: (3, 0, [EX, EX, EX]) for c in CLAUSES if c.sql}
    counts |= {g.id: (1, 0, [EX]) for g, _, _ in clauses.GATES}
    best = {k.name: Sample(value=k.l4.bound, n=MIN_SAMPLE) for k in kpi.KPIS}
    return counts, best


def test_every_clause_held_is_l4() -> None:
    counts, samples = all_held()
    s = score.score(counts, samples, ["upm://evidence/acme/x"])
    assert [p.level for p in s.phases] == [4, 4, 4, 4, 4]
    assert s.overall == 4 and s.not_exercised == []
    assert s.row["Overall UPM (0–4)"] == 4


@pytest.mark.parametrize("clause", [c for c in CLAUSES if c.level >= 2], ids=lambda c: c.id)
def test_an_unexercised_clause_is_never_held_and_caps_its_phase(clause: clauses.Clause) -> None:
    counts, samples = all_held()
    if clause.kpi:
        samples = dict(samples) | {clause.kpi: Sample(value=samples[clause.kpi].value, n=MIN_SAMPLE - 1)}
    else:
        del counts[clause.id]
    s = score.score(counts, samples, [])
    phase = next(p for p in s.phases if p.phase == clause.phase_name)
    assert phase.level <= clause.level - 1
    assert clause.id in s.not_exercised
    assert any("not exercised" in m for m in phase.next_level_missing)


def test_one_failed_exercise_is_not_held_and_names_the_failing_change() -> None:
    counts, samples = all_held()
    counts["audit.l4.executed_rollback"] = (5, 1, [BAD, EX])
    s = score.score(counts, samples, [])
    j = next(j for j in s.clauses if j.id == "audit.l4.executed_rollback")
    assert j.status == "not held" and j.evidence[0].change_id == "c2"
    assert s.phases[4].level == 3 and s.overall == 3


def test_a_small_failing_kpi_sample_is_not_judged_and_does_not_drag_the_level() -> None:
    """The reviewer's case: ChangeSuccess 75 % on four deliberately failing changes said L2 overall."""
    counts, samples = all_held()
    samples = dict(samples) | {"change_success_pct": Sample(value=75.0, n=4)}
    s = score.score(counts, samples, [])
    j = next(j for j in s.clauses if j.id == "kpi.change_success_pct.l3")
    assert j.status == "not exercised" and "at least 20" in j.note
    assert s.phases[2].level == 2  # not exercised caps the phase below L3, but it is not L2 for a failure
    samples |= {"change_success_pct": Sample(value=75.0, n=40)}
    assert next(j for j in score.score(counts, samples, []).clauses
                if j.id == "kpi.change_success_pct.l3").status == "not held"


def test_gates_cap_the_overall_level() -> None:
    counts, samples = all_held()
    del counts["gate.rollback_evidence"]
    s = score.score(counts, samples, [])
    assert s.overall == 3 and s.uncapped == 4
    counts["gate.exportable_trail"] = (1, 1, [BAD])
    assert score.score(counts, samples, []).overall == 2


def test_an_empty_log_scores_zero_with_every_clause_not_exercised() -> None:
    s = score.score({}, {}, [])
    assert s.overall == 0
    assert set(s.not_exercised) == {c.id for c in CLAUSES}
    assert "not exercised" in s.phases[0].next_level_missing[0]


def rollback_log(*, undo_steps: bool, verified: bool | None) -> History:
    """A failing change rolled back automatically; ``undo_steps``: the rollback undid a step."""
    h = History()
    plan = seal(make_plan(("a", "b")))
    c = h.change().intent(0)
    c.plan = plan
    c.add(PlanCompiled(plan=plan, compile_ms=20.0), 1, "planner").policy(2).preflight(2, approve=False)
    c.add(ChangeApproved(plan_hash=plan.hash, lane="auto", rule="low-risk"), 3)
    c.execute(5).verify(7, ok=False)
    c.add(RollbackApproved(plan_hash=plan.hash, lane="auto", by="verifier"), 9)
    if undo_steps:  # the history's own rollback undoes nothing: spell the run out with its step
        c.add(RollbackPlanned(plan_hash=plan.hash, reason="verification failed", commands=plan.rollback,
                              automatic=True), 10, "verifier")
        c.add(RollbackStarted(plan_hash=plan.hash, steps=1), 10, "executor")
        c.add(RollbackStepCompleted(step_id="s1", index=0, command="rmdir /tmp/a", output=StepOutput(rc=0)), 10)
        c.add(RollbackCompleted(plan_hash=plan.hash, duration_ms=500.0, steps=1), 11, "executor")
        if verified is not None:
            c.verify(12, ok=verified, scope="rollback")
    else:
        c.rollback(10, ok=True, verified=verified)
    c.close(13, "rolled_back")
    return h


def judged(tmp_path: Path, h: History) -> score.Score:
    db = ProjectionDB(tmp_path / "p")
    try:
        db.ingest(h.records)
        return score.compute(db.main)
    finally:
        db.close()


def test_a_rollback_that_undid_nothing_or_did_not_read_back_is_no_evidence(tmp_path: Path) -> None:
    """The old score took a verified rollback that deleted nothing as executed-rollback evidence."""
    for name, undo, verified in (("nothing", False, True), ("unread", True, None), ("diff", True, False)):
        s = judged(tmp_path / name, rollback_log(undo_steps=undo, verified=verified))
        j = next(j for j in s.clauses if j.id == "audit.l4.executed_rollback")
        assert j.status == "not held", name
        assert not next(g for g in s.gates if g.cap == 3).met, name
    s = judged(tmp_path / "ok", rollback_log(undo_steps=True, verified=True))
    assert next(j for j in s.clauses if j.id == "audit.l4.executed_rollback").status == "held"
    assert next(j for j in s.clauses if j.id == "verify.l4.auto_rollback").status == "held"
    assert next(g for g in s.gates if g.cap == 3).met


def test_self_approval_breaks_separation_of_duties(tmp_path: Path) -> None:
    h = History()
    plan = seal(make_plan(("a",)))
    c = h.change().intent(0, initiator="alice")
    c.plan = plan
    c.add(PlanCompiled(plan=plan, compile_ms=1.0), 1, "planner").preflight(2, approve=False)
    c.request_approval(3, required=2)
    c.add(ApprovalGranted(plan_hash=plan.hash, approver="alice"), 4)
    c.add(ApprovalGranted(plan_hash=plan.hash, approver="bob"), 4)
    s = judged(tmp_path, h)
    sod = next(j for j in s.clauses if j.id == "preflight.l3.sod")
    assert sod.status == "not held" and sod.failed == 1 and sod.exercises == 2
    assert [e.ok for e in sod.evidence] == [False, True]


def test_score_json_is_stable() -> None:
    counts, samples = all_held()
    a = msgspec.json.encode(score.score(counts, samples, ["x"]))
    assert a == msgspec.json.encode(score.score(counts, samples, ["x"]))


def test_the_exercises_query_counts_every_exercise_and_lists_only_the_first_few(tmp_path: Path) -> None:
    """At 10,000 changes every exercise of every clause was one ~80 MB answer, more than a bus message
    may carry: the query counts them all but lists only the first EVIDENCE_KEPT (failures first)."""
    h = History()
    for i in range(clauses.EVIDENCE_KEPT + 5):
        happy(h, "acme", at=10.0 * i)
    db = ProjectionDB(tmp_path / "p")
    try:
        db.ingest(h.records)
        rows = db.main.execute(clauses.EXERCISES_QUERY).fetchall()
    finally:
        db.close()
    closed = next(r for r in rows if r[0] == "audit.l1.closed")
    assert closed[1] == clauses.EVIDENCE_KEPT + 5 and len(closed[3].splitlines()) == clauses.EVIDENCE_KEPT


@pytest.mark.parametrize(("stderr", "status"), [
    ("InternalServerError: could not store Value '***', try again", "held"),
    ("InternalServerError: could not store Value 'AKIACONFORMANCE0TEST', try again", "not held"),
])
def test_a_secret_given_as_a_whole_value_is_a_secret_exercise_and_a_quoted_value_leaks(
        tmp_path: Path, stderr: str, status: str) -> None:
    """An SSM parameter from ``secret:NAME`` (not only file content with ``${secret:NAME}``) uses a secret:
    its change is an exercise of masked egress, and the value in a retried attempt's stderr is a leak."""
    h = History()
    c = h.change().intent(0, request="Create ssm parameter /app/token with value secret:APP_TOKEN")
    c.compiled(1).preflight(2).execute(3)
    c.add(StepRetried(step_id="s", index=0, attempt=StepAttempt(n=1, rc=255, verdict="retryable",
                                                              stderr_tail=stderr)), 3, "executor")
    j = next(j for j in judged(tmp_path, h).clauses if j.id == "exec.l3.masked_secrets")
    assert (j.status, j.exercises) == (status, 1)
