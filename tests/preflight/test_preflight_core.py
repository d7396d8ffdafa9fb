"""The pure core: lanes, approvals with separation of duties, revisions, denials, windows, expiry."""

from __future__ import annotations

from datetime import timedelta

import pytest
from preflight_helpers import (
    MONDAY_NOON,
    PROD_WINDOW,
    SATURDAY_NIGHT,
    command,
    config,
    event,
    history,
    plan_of,
)

from events.lifecycle import fold
from events.model import (
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    ChangeApproved,
    ChangeScheduled,
    Check,
    Event,
    Payload,
    PlanCompiled,
    PreflightFailed,
    PreflightPassed,
)
from services.preflight import assess, decide_command, decide_release
from services.preflight.config import PreflightConfig
from services.preflight.errors import ApprovalRefused
from services.preflight.risk import Subject
from services.preflight.trail import approval_trail


def _preflight(events: list[Event], cfg: PreflightConfig, checks: tuple[Check, ...] = (), now=MONDAY_NOON):
    state = fold(events)
    assert state.plan is not None
    subject = Subject(tenant="acme", change_id=state.change_id, environment=state.environment,
                      initiator=state.initiator, plan=state.plan, revision=state.revision)
    payloads = assess(subject, checks, cfg, now)
    return [*events, *(event(p, now) for p in payloads)], payloads


def _approve(events: list[Event], cfg: PreflightConfig, by: str, now=MONDAY_NOON, **kw: str) -> list[Payload]:
    payloads = decide_command(fold(events), "approve", command(by, **kw), cfg, now)
    events.extend(event(p, now, actor=by) for p in payloads)
    return payloads


def test_a_missing_prerequisite_halts_with_the_explicit_message_and_no_approval() -> None:
    missing = Check(name="exists", target="local_directory:local:/srv", ok=False,
                    detail="missing prerequisite local_directory /srv on local: create it first")
    _, payloads = _preflight(history(plan_of("Create directory /srv/app")), config(), (missing,))
    (failed,) = payloads
    assert isinstance(failed, PreflightFailed)
    assert failed.reasons == (missing.detail,)
    assert not any(isinstance(p, ChangeApproved) for p in payloads)


def test_a_low_risk_dev_change_is_auto_approved_naming_its_rule() -> None:
    _, payloads = _preflight(history(plan_of("Create directory /srv/app")), config())
    passed, approved = payloads
    assert isinstance(passed, PreflightPassed) and passed.lane == "auto"
    assert passed.risk is not None and passed.risk.level == "low"
    assert passed.policy and passed.policy[0].pack_hash.startswith("sha256:")
    assert isinstance(approved, ChangeApproved) and approved.lane == "auto"
    assert approved.rule.startswith("low-risk-auto: ")


def test_policy_violations_fail_preflight_listing_each() -> None:
    cfg = config(limits={"max_resources": 0}, budgets={"acme": 0.1})
    _, payloads = _preflight(history(plan_of("Create S3 bucket logs-acme in us-east-1")), cfg)
    (failed,) = payloads
    assert isinstance(failed, PreflightFailed)
    assert [r.split(":")[0] for r in failed.reasons] == ["policy bucket-encrypted", "policy blast-radius",
                                                           "policy budget"]
    assert failed.policy and not failed.policy[0].allowed


def test_the_initiator_cannot_approve_their_own_change() -> None:
    events, _ = _preflight(history(plan_of("Create directory /srv/app"), environment="prod"), config())
    with pytest.raises(ApprovalRefused, match="separation of duties") as err:
        _approve(events, config(), "alice")
    assert err.value.rule == "separation-of-duties"


def test_one_approver_twice_counts_once_and_two_distinct_approvers_release() -> None:
    cfg = config()
    events, payloads = _preflight(history(plan_of("Create directory /srv/app"), environment="prod"), cfg)
    assert [type(p) for p in payloads] == [PreflightPassed, ApprovalRequested]
    assert [type(p) for p in _approve(events, cfg, "bob")] == [ApprovalGranted]
    with pytest.raises(ApprovalRefused, match="counts once"):
        _approve(events, cfg, "bob")
    # even if the log held bob twice, he would count once
    events.append(event(ApprovalGranted(plan_hash=fold(events).plan_hash, approver="bob", group="platform-owners")))
    assert fold(events).status == "awaiting-approval"
    _, approved = _approve(events, cfg, "carol", reason="looks fine")
    assert isinstance(approved, ChangeApproved)
    assert (approved.lane, approved.approvers) == ("manual", ("bob", "carol"))
    assert approved.rule == "prod-two-approvers"
    assert fold(events).status == "approved"
    with pytest.raises(ApprovalRefused, match="already approved"):
        _approve(events, cfg, "dave")


def test_an_approver_outside_the_required_groups_is_refused() -> None:
    cfg = config()
    events, _ = _preflight(history(plan_of("Create directory /srv/app"), environment="prod"), cfg)
    with pytest.raises(ApprovalRefused, match="not a member of platform-owners") as err:
        _approve(events, cfg, "erin")
    assert err.value.rule == "group-membership"
    with pytest.raises(ApprovalRefused, match="not a member of group security"):
        _approve(events, cfg, "bob", group="security")


def test_a_deny_wins_and_a_denied_change_never_executes() -> None:
    cfg = config()
    events, _ = _preflight(history(plan_of("Create directory /srv/app"), environment="prod"), cfg)
    _approve(events, cfg, "bob")
    (denied,) = decide_command(fold(events), "deny", command("dave", reason="not today"), cfg, MONDAY_NOON)
    assert isinstance(denied, ApprovalDenied)
    events.append(event(denied))
    with pytest.raises(ApprovalRefused, match="denied by dave") as err:
        _approve(events, cfg, "carol")
    assert err.value.rule == "denied"
    assert (fold(events).status, fold(events).outcome) == ("ended", "denied")
    assert not any(isinstance(e.payload, ChangeApproved) for e in events)


def test_an_approval_for_an_older_plan_hash_does_not_count() -> None:
    cfg = config()
    old_plan = plan_of("Create directory /srv/app")
    events, _ = _preflight(history(old_plan, environment="prod"), cfg)
    _approve(events, cfg, "bob")
    new_plan = plan_of("Create directory /srv/app2")
    events.append(event(PlanCompiled(plan=new_plan, revision=2, compile_ms=1.0)))
    events, _ = _preflight(events, cfg)
    state = fold(events)
    assert state.plan_hash == new_plan.hash and state.grants == ()
    with pytest.raises(ApprovalRefused, match="not the change's current plan") as err:
        _approve(events, cfg, "carol", plan_hash=old_plan.hash)
    assert err.value.rule == "stale-plan"
    assert [type(p) for p in _approve(events, cfg, "carol", plan_hash=new_plan.hash)] == [ApprovalGranted]
    assert fold(events).status == "awaiting-approval"  # bob's approval was for the old revision


def test_an_expired_approval_request_refuses_late_approvals() -> None:
    cfg = config(approval_expiry="1h")
    events, _ = _preflight(history(plan_of("Create directory /srv/app"), environment="prod"), cfg)
    with pytest.raises(ApprovalRefused, match="expired") as err:
        _approve(events, cfg, "bob", now=MONDAY_NOON + timedelta(hours=2))
    assert err.value.rule == "expired"


def test_a_destructive_prod_change_needs_two_approvals_and_then_waits_for_the_window() -> None:
    cfg = config(windows=PROD_WINDOW)
    events, payloads = _preflight(history(plan_of("Delete directory /srv/old"), environment="prod"), cfg)
    passed = payloads[0]
    assert isinstance(passed, PreflightPassed) and passed.window is not None
    assert passed.window.rule == "destructive-prod-window"
    assert [type(p) for p in _approve(events, cfg, "bob")] == [ApprovalGranted]
    _, scheduled = _approve(events, cfg, "carol")
    assert isinstance(scheduled, ChangeScheduled)
    assert scheduled.release_at == "2025-10-11T22:00:00.000Z"
    assert decide_release(fold(events), cfg, MONDAY_NOON) == []
    (approved,) = decide_release(fold(events), cfg, SATURDAY_NIGHT)
    assert isinstance(approved, ChangeApproved) and approved.approvers == ("bob", "carol")


def test_a_window_rule_without_a_configured_window_refuses_the_change() -> None:
    _, payloads = _preflight(history(plan_of("Delete directory /srv/old"), environment="prod"), config())
    (failed,) = payloads
    assert isinstance(failed, PreflightFailed) and "windows.prod" in failed.reasons[0]


def test_outside_the_window_a_refusing_policy_fails_the_auto_lane() -> None:
    cfg = config(windows={"dev": {"weekly": ["sat 22:00-06:00"], "outside": "refuse", "applies_to": "all"}})
    _, payloads = _preflight(history(plan_of("Create directory /srv/app")), cfg)
    (failed,) = payloads
    assert isinstance(failed, PreflightFailed) and "refuses changes outside it" in failed.reasons[0]
    cfg = config(windows={"dev": {"weekly": ["sat 22:00-06:00"], "applies_to": "all"}})
    _, payloads = _preflight(history(plan_of("Create directory /srv/app")), cfg)
    assert [type(p) for p in payloads] == [PreflightPassed, ChangeScheduled]


def test_the_approval_trail_lists_who_when_group_hash_and_reason() -> None:
    cfg = config()
    events, _ = _preflight(history(plan_of("Create directory /srv/app"), environment="prod"), cfg)
    _approve(events, cfg, "bob", reason="ok")
    _approve(events, cfg, "carol", reason="fine")
    trail = approval_trail(events)
    assert [(t.event, t.who) for t in trail] == [
        ("approval.requested", "policy"), ("approval.granted", "bob"), ("approval.granted", "carol"),
        ("change.approved", "bob,carol"),
    ]
    assert all(t.plan_hash == fold(events).plan_hash and t.ts for t in trail)
    assert trail[1].group == "platform-owners" and trail[1].reason == "ok"
