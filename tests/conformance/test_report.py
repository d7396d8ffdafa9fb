"""The conformance report (pure) and the change set's manifest: fast checks, no processes."""

from __future__ import annotations

import json

import msgspec
import pytest

from projections import clauses, conformance_report, kpi, score
from projections.clauses import MIN_SAMPLE, Exercise, Sample
from upm import conformance

EX = Exercise(tenant="conf", change_id="01a24f2b-0000-7000-8000-000000000001", event_id="e1", ok=True)


def held_score() -> score.Score:
    counts = {c.id: (1, 0, [EX]) for c in clauses.CLAUSES if c.sql}
    counts |= {g.id: (1, 0, [EX]) for g, _, _ in clauses.GATES}
    counts.pop("exec.l2.retries")
    samples = {k.name: Sample(value=k.l4.bound, n=MIN_SAMPLE) for k in kpi.KPIS}
    return score.score(counts, samples, [])


def test_the_report_links_every_cell_of_the_row_to_its_evidence() -> None:
    s = held_score()
    report = conformance_report.build(manifest="changeset-v1", score=s, played=[], public_key="ed25519.pub",
                                      packs={EX.change_id: f"evidence/{EX.change_id}.evidence.tar"},
                                      excluded={"change_success_pct": []}, seconds=1.0)
    assert report.level == 1 and "exec.l2.retries" in report.not_exercised
    page = conformance_report.html(report)
    row = page[page.index("<table>"):page.index("</table>")]
    assert row.count("<a href=") == len(report.row) - 1  # every cell but the platform's name links somewhere
    assert 'href="#safe-exec"' in row and 'href="#kpi-change_success_pct"' in row and 'href="#gates"' in row
    assert f'href="evidence/{EX.change_id}.evidence.tar"' in page
    assert "not exercised" in page
    again = msgspec.json.decode(msgspec.json.encode(report), type=conformance_report.Report)
    assert again == report


def test_the_manifest_is_a_fixed_set_of_at_least_100_changes_over_three_targets() -> None:
    m = conformance.load_manifest()
    assert len(m.changes) >= 100
    assert {c.target for c in m.changes} == {"local", "aws", "postgres"}
    assert {c.expect for c in m.changes} == {"succeeded", "rejected", "rolled_back", "failed"}
    assert any(c.iac for c in m.changes) and any(c.spec for c in m.changes) and any(c.request for c in m.changes)
    known = {c.id for c in clauses.CLAUSES}
    for c in m.changes:
        assert set(c.exercises) <= known, c.id
        assert c.expect != "succeeded" or not c.setup, c.id


def test_a_subset_keeps_what_its_changes_come_after() -> None:
    m = conformance.subset(conformance.load_manifest(), ["I001", "U002"])
    assert [c.id for c in m.changes] == ["L001", "I001", "S002", "U002"]
    with pytest.raises(ValueError, match="no change Z999"):
        conformance.subset(conformance.load_manifest(), ["Z999"])


def test_faults_are_left_out_per_kpi() -> None:
    played = [conformance.Played(id="F001", title="", expect="rolled_back", change_id="a"),
              conformance.Played(id="Q001", title="", expect="failed", change_id="b"),
              conformance.Played(id="L001", title="", expect="succeeded", change_id="c")]
    out = conformance.faults(played)
    assert out["change_success_pct"] == ["a", "b"] and out["rollback_success_pct"] == ["b"]
    json.dumps(out)
