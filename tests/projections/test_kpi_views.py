"""Each KPI on a hand-built history with a known answer (pure: real DuckDB files, no NATS)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from upm_history import BASE, History, failed, happy, make_plan

from events.model import DriftDetected
from projections import kpi
from projections.db import ProjectionDB


def figures(tmp_path: Path, h: History, period: kpi.Range = kpi.EVER) -> dict[str, float | None]:
    db = ProjectionDB(tmp_path / "proj")
    try:
        db.ingest(h.records)
        return kpi.compute(db.main, period)
    finally:
        db.close()


def test_no_changes_gives_no_figure_at_all(tmp_path: Path) -> None:
    assert set(figures(tmp_path, History()).values()) == {None}


def test_plan_determinism(tmp_path: Path) -> None:
    h = History()
    h.change().intent(0, "A").compiled(1, make_plan(("a",)))
    h.change().intent(10, "A").compiled(11, make_plan(("a",)))  # same input, same plan: deterministic
    h.change().intent(20, "B").compiled(21, make_plan(("x",)))
    h.change().intent(30, "B").compiled(31, make_plan(("y",)))  # same input, another plan: not
    h.change().intent(40, "C").compiled(41)  # compiled once: not counted
    assert figures(tmp_path, h)["plan_determinism_pct"] == 50.0


def test_approval_coverage(tmp_path: Path) -> None:
    h = History()
    happy(h)  # auto-approved, executed: covered
    c = h.change().intent(10).compiled(11).preflight(12, approve=False)
    c.request_approval(12, required=2).grant(13, "bob").approve(14, ("bob",)).execute(15)  # 1 of 2: not covered
    c = h.change().intent(20).compiled(21).preflight(22, approve=False)
    c.request_approval(22, required=2).grant(23, "bob").grant(24, "carol").approve(25).execute(26)  # covered
    h.change().intent(30).compiled(31).preflight(32, approve=False).execute(33)  # never approved
    h.change().intent(40).compiled(41).preflight(42)  # approved, never executed: not counted
    assert figures(tmp_path, h)["approval_coverage_pct"] == 50.0


def test_policy_pass(tmp_path: Path) -> None:
    h = History()
    h.change().intent(0).compiled(1).policy(2).preflight(2)  # pass
    h.change().intent(10).compiled(11).preflight(12, ok=False)  # pre-flight failed
    h.change().intent(20).compiled(21).policy(22, allowed=False).preflight(22)  # a policy denied
    h.change().intent(30).compiled(31).preflight(32)  # pass, no policy pack involved
    h.change().intent(40).compiled(41)  # not evaluated yet
    assert figures(tmp_path, h)["policy_pass_pct"] == 50.0


def test_change_success(tmp_path: Path) -> None:
    h = History()
    for i in range(3):
        happy(h, at=10 * i)
    failed(h, at=40)
    h.change().intent(60).compiled(61).preflight(62, ok=False).close(63, "rejected")  # never ran: not counted
    assert figures(tmp_path, h)["change_success_pct"] == 75.0


def test_a_change_closed_stalled_counts_as_not_successful(tmp_path: Path) -> None:
    h = History()
    happy(h, at=0)
    h.change().intent(20).compiled(21).preflight(22).close(30, "stalled")  # approved, never executed
    assert figures(tmp_path, h)["change_success_pct"] == 50.0


def test_change_success_when_all_failed(tmp_path: Path) -> None:
    h = History()
    failed(h, at=0)
    failed(h, at=100, rollback_ok=None)
    got = figures(tmp_path, h)
    assert got["change_success_pct"] == 0.0
    assert got["mttr_failed_change_min"] == 1.0  # only the restored one counts


def test_rollback_success(tmp_path: Path) -> None:
    h = History()
    failed(h, at=0)  # completed, verified: success
    c = h.change().intent(100).compiled(101).preflight(102).execute(103)
    c.verify(105, ok=False).rollback(110)  # completed, never verified: no evidence, counts as failed
    failed(h, at=200, rollback_ok=False)  # the rollback itself failed
    c = h.change().intent(300).compiled(301).preflight(302).execute(303)
    c.verify(305, ok=False).rollback(310, ok=True, verified=False)  # completed, but the read-back refutes it
    assert figures(tmp_path, h)["rollback_success_pct"] == 25.0


def test_rollback_success_when_the_only_rollback_failed(tmp_path: Path) -> None:
    h = History()
    failed(h, rollback_ok=False)
    got = figures(tmp_path, h)
    assert got["rollback_success_pct"] == 0.0
    assert got["mttr_failed_change_min"] is None  # never restored


def test_mttr_after_failed_change(tmp_path: Path) -> None:
    h = History()
    failed(h, at=0, restore_after_s=600)
    failed(h, at=1000, restore_after_s=1200)
    c = h.change().intent(3000).compiled(3001).preflight(3002).execute(3003, ok=False)  # execution failed at 3004
    c.rollback(3004 + 1800 - 1)  # an unverified rollback completes 30 min after: no evidence, no row
    failed(h, at=5000, rollback_ok=False)  # not restored: no row
    happy(h, at=6000)
    assert figures(tmp_path, h)["mttr_failed_change_min"] == 15.0  # (10 + 20) / 2


def test_plan_compile_p95(tmp_path: Path) -> None:
    h = History()
    for i in range(1, 21):
        happy(h, at=100 * i, ms=float(i))
    assert figures(tmp_path, h)["plan_compile_p95_ms"] == 19.05


def test_verification_p95_counts_rollback_verifications_too(tmp_path: Path) -> None:
    h = History()
    for i in range(1, 20):
        happy(h, at=100 * i, verify_ms=float(i))
    c = h.change().intent(5000).compiled(5001).preflight(5002).execute(5003)
    c.verify(5005, ok=False, ms=1000.0).rollback(5010)
    c.verify(5013, ms=20.0, scope="rollback")
    # 21 durations: 1..19, 20, 1000 → P95 = 20 + 0.0 × (1000 − 20)
    assert figures(tmp_path, h)["verification_p95_ms"] == 20.0


def test_drift_coverage(tmp_path: Path) -> None:
    h = History()
    happy(h, plan=make_plan(("a", "b")))  # a, b read back: baselined
    h.change().intent(10).compiled(11, make_plan(("c",))).preflight(12).execute(13)  # c never verified
    c = h.change().intent(20).compiled(21, make_plan(("d",))).preflight(22).execute(23)
    c.add(DriftDetected(resource="local_dir:local:/tmp/d", diff=(), baseline_hash="b", current_hash="c"), 30)
    h.change().intent(40).compiled(41, make_plan(("e",), action="delete")).preflight(42).execute(43)  # a delete
    assert figures(tmp_path, h)["drift_coverage_pct"] == 75.0


def test_evidence_completeness(tmp_path: Path) -> None:
    h = History()
    happy(h)
    happy(h, at=10, published=False)
    failed(h, at=20)
    h.change().intent(30).compiled(31)  # open change: not counted
    assert figures(tmp_path, h)["evidence_completeness_pct"] == pytest.approx(66.667)


def test_tenant_and_time_range_filters(tmp_path: Path) -> None:
    h = History()
    happy(h, "acme", at=0)
    failed(h, "acme", at=3600)
    failed(h, "other", at=0)
    db = ProjectionDB(tmp_path / "proj")
    db.ingest(h.records)
    db.flush_all()  # tenant files are written in larger batches; a query of the tenant flushes first
    late = kpi.Range(since=BASE + timedelta(minutes=30))
    assert kpi.compute(db.main)["change_success_pct"] == pytest.approx(33.333)
    assert kpi.compute(db.tenant("acme"))["change_success_pct"] == 50.0
    assert kpi.compute(db.tenant("acme"), late)["change_success_pct"] == 0.0
    assert kpi.compute(db.tenant("acme"), kpi.Range(until=BASE + timedelta(minutes=30)))["change_success_pct"] == 100.0
    db.close()


def test_rows_put_the_spec_bands_beside_each_figure() -> None:
    values: dict[str, float | None] = {k.name: None for k in kpi.KPIS}
    values |= {"change_success_pct": 96.0, "mttr_failed_change_min": 10.0, "approval_coverage_pct": 100.0}
    rows = {r.kpi: r for r in kpi.rows(values)}
    assert (rows["change_success_pct"].l3, rows["change_success_pct"].l4) == ("≥ 95", "≥ 98")
    assert (rows["change_success_pct"].meets_l3, rows["change_success_pct"].meets_l4) == (True, False)
    assert (rows["mttr_failed_change_min"].meets_l3, rows["mttr_failed_change_min"].meets_l4) == (True, True)
    assert rows["approval_coverage_pct"].meets_l4 is True
    assert rows["plan_determinism_pct"].meets_l3 is None
    assert all(r.formula for r in rows.values())
