"""`upm score`: levels per phase, the evidence gates as caps, on hand-built logs."""

from __future__ import annotations

from pathlib import Path

import msgspec
from upm_history import History, make_plan

from events.model import (
    ApprovalGranted,
    ChangeApproved,
    CredentialsIssued,
    DriftDetected,
    ExecutionPaused,
    ExecutionResumed,
    LogHeadSigned,
    PlanCompiled,
    RollbackApproved,
    RollbackPlanned,
    WaveCompleted,
    WaveStarted,
)
from events.plan import seal
from events.subjects import LOG_HEADS_CHANGE_ID, SYSTEM_TENANT
from projections import score
from projections.db import ProjectionDB


def complete(*, rollback: bool = True, published: bool = True, rollback_verified: bool | None = True) -> History:
    """A log with evidence for every L4 clause, every KPI in its L4 band (``rollback_verified``: how
    the rollback's restored state read back: matched, failed, or never verified)."""
    h = History()
    plan = seal(msgspec.structs.replace(make_plan(("a", "b")), variant="canary"))
    for i in range(50):
        at = 100.0 * i
        c = h.change().intent(at)
        c.plan = plan
        c.add(PlanCompiled(plan=plan, compile_ms=20.0, simulation={"steps": 2, "creates": 2}), at + 1, "planner")
        c.policy(at + 2, allowed=True)
        c.preflight(at + 2, approve=False)
        if i % 2:
            c.add(ChangeApproved(plan_hash=plan.hash, lane="auto", rule="low-risk"), at + 3)
        else:
            c.request_approval(at + 3, required=2)
            c.add(ApprovalGranted(plan_hash=plan.hash, approver="bob"), at + 3).add(
                ApprovalGranted(plan_hash=plan.hash, approver="carol"), at + 3)
            c.approve(at + 3, ("bob", "carol"))
        c.add(CredentialsIssued(target="local", kind="token", ref="cred://1", expires_at="2026-01-02T00:00:00Z"), at + 4)
        c.add(WaveStarted(wave=0, targets=("local",)), at + 4).add(WaveCompleted(wave=0, healthy=True), at + 4)
        c.add(ExecutionPaused(plan_hash=plan.hash, reason="health gate"), at + 4)
        c.add(ExecutionResumed(plan_hash=plan.hash, by="op"), at + 4)
        failing = i == 0
        c.execute(at + 5)
        c.verify(at + 7, ok=not failing)
        c.close(at + 8, "failed" if failing else "succeeded")
        if published:
            c.published(at + 9)
        if failing and rollback:
            c.add(RollbackApproved(plan_hash=plan.hash, lane="auto", by="verifier"), at + 9)
            c.rollback(at + 10, ok=True, verified=rollback_verified)
        elif failing:  # the rollback is planned (documented) but never run
            c.add(RollbackPlanned(plan_hash=plan.hash, reason="verification failed", commands=plan.rollback), at + 9)
        if failing:
            c.add(DriftDetected(resource="local_dir:local:/tmp/a", diff=(), baseline_hash="b", current_hash="c",
                                action="reconcile"), at + 20)
    h.append(SYSTEM_TENANT, LOG_HEADS_CHANGE_ID,
             LogHeadSigned(size=len(h.records), root="00" * 32, signed_at="2026-01-01T10:00:00Z", key_id="k",
                           signature="s"), 9000, "auditor", "team")
    return h


def scored(tmp_path: Path, h: History) -> score.Score:
    db = ProjectionDB(tmp_path / "p")
    try:
        db.ingest(h.records)
        return score.compute(db.main)
    finally:
        db.close()


def test_a_complete_log_reaches_l4(tmp_path: Path) -> None:
    s = scored(tmp_path, complete())
    assert [p.level for p in s.phases] == [4, 4, 4, 4, 4], s.phases
    assert s.overall == 4
    assert all(g.met for g in s.gates)
    assert s.row["Overall UPM (0–4)"] == 4
    assert s.row["ChangeSuccess_%"] == 98.0
    assert s.evidence_links and s.evidence_links[0].startswith("upm://evidence/acme/")
    assert all(p.next_level_missing == [] for p in s.phases)


def test_no_rollback_evidence_caps_at_l3(tmp_path: Path) -> None:
    s = scored(tmp_path, complete(rollback=False))
    assert s.overall == 3
    gate = next(g for g in s.gates if g.cap == 3)
    assert not gate.met
    audit = next(p for p in s.phases if p.phase == "Audit&Rollback")
    assert "an executed rollback recorded with evidence" in audit.next_level_missing


def test_a_rollback_whose_restored_state_was_not_read_back_and_matched_is_no_evidence(tmp_path: Path) -> None:
    """A completed rollback proves nothing until its restored state reads back: one whose rollback-scope
    verification failed (a diff, or a read-back that could not answer) or never ran does not meet the gate,
    and counts as a failed rollback in RollbackSuccess."""
    for verified in (False, None):
        s = scored(tmp_path / str(verified), complete(rollback_verified=verified))
        assert not next(g for g in s.gates if g.cap == 3).met, verified
        assert s.overall == 3
        assert s.kpis["rollback_success_pct"] == 0.0
    assert scored(tmp_path / "ok", complete()).kpis["rollback_success_pct"] == 100.0


def test_no_exportable_trail_caps_at_l2(tmp_path: Path) -> None:
    s = scored(tmp_path, complete(published=False))
    assert s.overall == 2
    assert not next(g for g in s.gates if g.cap == 2).met
    plan_phase = next(p for p in s.phases if p.phase == "Intent&Plan")
    assert plan_phase.level == 4  # the phase itself is fine; the gate caps the platform
    assert any("evidence gate" in m for p in s.phases for m in p.next_level_missing)


def test_an_empty_log_scores_zero_and_says_why() -> None:
    s = score.score({}, {}, [])
    assert s.overall == 0
    assert s.phases[0].next_level_missing == ["a compiled plan"]
