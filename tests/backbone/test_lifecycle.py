"""The change lifecycle (events/lifecycle.py): one table over every event type, and the guarantee
that nothing else in the code derives a change's status."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from lifecycle_cases import PLAN, SAMPLES, STEP, change_events

from events.lifecycle import ACTIVE, NEUTRAL, STATUSES, WAITING, ChangeState, evolve, fold
from events.model import PAYLOAD_TYPES, ChangeClosed

ROOT = Path(__file__).resolve().parents[2]
START = ("intent.submitted", "plan.compiled")
RUN = (*START, "preflight.passed", "change.approved", "execution.started")

# (events, expected status, expected outcome): every event type appears in at least one row.
TABLE: list[tuple[tuple[str, ...], str, str | None]] = [
    ((), "unknown", None),
    (("intent.submitted",), "planning", None),
    (START, "preflight", None),
    (("intent.submitted", "plan.rejected"), "ended", "rejected"),
    ((*START, "preflight.failed"), "ended", "rejected"),
    ((*START, "policy.evaluated"), "preflight", None),
    ((*START, "preflight.passed"), "approving", None),
    ((*START, "preflight.passed", "approval.requested"), "awaiting-approval", None),
    ((*START, "preflight.passed", "approval.requested", "approval.granted"), "approving", None),
    ((*START, "preflight.passed", "approval.requested", "approval.denied"), "ended", "denied"),
    ((*START, "preflight.passed", "change.scheduled"), "scheduled", None),
    ((*START, "preflight.passed", "change.approved"), "approved", None),
    (RUN, "executing", None),
    ((*RUN, "step.started", "step.retried", "tls.fallback"), "executing", None),
    ((*RUN, "credentials.issued", "step.started", "step.completed", "credentials.revoked"), "executing", None),
    ((*RUN, "step.skipped", "wave.started", "wave.completed"), "executing", None),
    ((*RUN, "step.started", "step.failed", "execution.failed"), "rollback-planning", None),
    ((*RUN, "execution.paused"), "paused", None),
    ((*RUN, "execution.paused", "execution.resumed"), "executing", None),
    ((*RUN, "execution.cancelled"), "ended", "cancelled"),
    ((*RUN, "step.completed", "execution.completed"), "verifying", None),
    ((*RUN, "step.completed", "execution.completed", "verification.passed"), "ended", "succeeded"),
    ((*RUN, "step.completed", "execution.completed", "verification.passed", "change.closed"), "closed",
     "succeeded"),
    ((*RUN, "step.completed", "execution.completed", "verification.failed"), "rollback-planning", None),
    ((*RUN, "step.completed", "execution.completed", "verification.failed", "rollback.planned"),
     "awaiting-rollback", None),
    ((*RUN, "step.completed", "execution.completed", "verification.failed", "rollback.planned",
      "rollback.approved", "rollback.started", "rollback.step.started"), "rolling-back", None),
    ((*RUN, "step.completed", "execution.completed", "rollback.approved", "rollback.started",
      "rollback.step.started", "rollback.step.completed", "rollback.completed"), "verifying-rollback", None),
    ((*RUN, "step.completed", "execution.completed", "rollback.approved", "rollback.step.skipped",
      "rollback.completed", "verification.passed_rollback"), "ended", "rolled_back"),
    ((*RUN, "step.completed", "execution.completed", "rollback.approved", "rollback.step.started",
      "rollback.step.failed", "rollback.failed"), "ended", "failed"),
    ((*RUN, "step.completed", "execution.completed", "verification.passed", "change.closed", "rollback.approved",
      "rollback.started"), "rolling-back", "succeeded"),
    ((*RUN, "step.completed", "execution.completed", "verification.passed", "change.closed", "rollback.approved",
      "rollback.completed", "verification.passed_rollback"), "closed", "rolled_back"),
    ((*RUN, "change.stalled"), "executing", None),
    ((*RUN, "change.stalled_close"), "ended", "stalled"),
    ((*RUN, "chain.broken"), "chain-broken", None),
    ((*RUN, "drift.detected", "drift.resolved", "drift.scanned", "slo.breached"), "executing", None),
    ((*RUN, "step.completed", "execution.completed", "verification.passed", "change.closed", "plan.recompiled",
      "evidence.published", "log.head"), "closed", "succeeded"),
]


def _events(names: tuple[str, ...]) -> list:  # type: ignore[type-arg]
    from events import model as m

    special = {
        "verification.passed_rollback": m.VerificationPassed(scope="rollback", checks=(), baseline_hash="b",
                                                             current_hash="b", duration_ms=1.0),
        "change.stalled_close": m.ChangeStalled(status="executing", since="2026-12-07T12:00:04.000Z",
                                                last_event_id="e", last_type="execution.started", waited_s=9.0,
                                                action="close", attempt=3),
    }
    out = []
    for i, name in enumerate(names):
        base = name.split("_")[0]
        kwargs = {base.replace(".", "_"): special[name]} if name in special else {}
        out += change_events(base, start=i if i == 0 else None, **kwargs)
    return out


@pytest.mark.parametrize(("names", "status", "outcome"), TABLE, ids=[" ".join(r[0][-3:]) or "empty" for r in TABLE])
def test_evolve_over_every_event_type(names: tuple[str, ...], status: str, outcome: str | None) -> None:
    state = fold(_events(names))
    assert (state.status, state.outcome) == (status, outcome)
    assert state.phase in ("plan", "preflight", "execute", "verify", "audit")
    assert state.status in STATUSES


def test_the_table_covers_every_event_type_and_every_status() -> None:
    seen = {name.split("_")[0] for names, _, _ in TABLE for name in names}
    assert seen == set(PAYLOAD_TYPES) == set(SAMPLES)
    assert {status for _, status, _ in TABLE} == set(STATUSES)
    assert ACTIVE.isdisjoint(WAITING) and set(STATUSES) >= ACTIVE | WAITING


def test_state_carries_what_the_services_need() -> None:
    state = fold(_events((*RUN, "credentials.issued", "step.started")))
    assert state.approved_plan == PLAN and state.approved_hash == PLAN.hash and state.plan_for(PLAN.hash) == PLAN
    assert STEP in state.forward.in_doubt and state.started and state.credentials
    assert state.initiator == "alice" and state.environment == "dev" and state.trigger
    done = fold(_events(("step.completed",)), state)
    assert STEP not in done.forward.in_doubt and done.forward.completed == (STEP,) and STEP in done.forward.finished


def test_a_new_plan_revision_voids_the_approvals_of_the_old_one() -> None:
    state = fold(_events((*START, "preflight.passed", "approval.requested", "approval.granted")))
    assert state.grants == ("bob",)
    again = fold(_events(("plan.compiled",)), state)
    assert again.status == "preflight" and again.grants == () and again.passed is None


def test_evolve_is_incremental_and_equal_to_a_fold() -> None:
    events = _events((*RUN, "step.started", "step.completed", "execution.completed", "verification.passed"))
    state = ChangeState()
    for event in events:
        state = evolve(state, event)
    assert state == fold(events)
    assert fold(events[3:], fold(events[:3])) == state


def test_the_closed_reason_and_outcome_come_from_the_lifecycle() -> None:
    state = fold(_events((*START, "preflight.passed", "approval.requested", "approval.denied")))
    assert state.reason == "approval.denied by bob: not today"
    closed = fold(change_events("change.closed", change_closed=ChangeClosed(outcome="denied", reason=state.reason,
                                                                           events=6, chain_head="h")), state)
    assert (closed.status, closed.outcome) == ("closed", "denied")


def test_no_status_is_derived_anywhere_else() -> None:
    """Every former status computation is gone; the lifecycle is the only one."""
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    offenders = []
    patterns = re.compile(r"STATE_AFTER|def outcome_of|class ChangeView|def status\(self\)|ChangeView\.of")
    for name in tracked:
        if name.startswith("tests/") or name == "events/lifecycle.py":
            continue
        text = (ROOT / name).read_text()
        offenders += [f"{name}: {m.group(0)}" for m in patterns.finditer(text)]
    assert offenders == []


@pytest.mark.parametrize("neutral", sorted(NEUTRAL))
def test_neutral_event_types_never_change_status_or_outcome(neutral: str) -> None:
    for names in {names for names, _, _ in TABLE if names}:
        before = fold(_events(names))
        after = fold(change_events(neutral), before)
        assert (after.status, after.outcome) == (before.status, before.outcome), names
