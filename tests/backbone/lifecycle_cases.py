"""Events of one change, built by type name for lifecycle tests: one sample payload per event type."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from events import model as m
from events.ids import new_id
from events.model import Event, Payload
from events.plan import Plan
from events.store import new_event
from services.planner.compiler import CompileInput, compile_intent

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
CHANGE = "01900000-0000-7000-8000-000000000001"
PLAN: Plan = compile_intent(CompileInput(request="Create directory /srv/app", tenant="acme", initiator="alice"))
STEP = PLAN.steps[0].id
H = PLAN.hash
OUT = m.StepOutput(rc=0)

SAMPLES: dict[str, Callable[[], Payload]] = {
    "intent.submitted": lambda: m.IntentSubmitted(request="Create directory /srv/app", initiator="alice"),
    "plan.compiled": lambda: m.PlanCompiled(plan=PLAN, compile_ms=1.0),
    "plan.rejected": lambda: m.PlanRejected(reason="no such resource", error="PlanError"),
    "preflight.passed": lambda: m.PreflightPassed(plan_hash=H, lane="auto"),
    "preflight.failed": lambda: m.PreflightFailed(plan_hash=H, reasons=("missing /srv",)),
    "policy.evaluated": lambda: m.PolicyEvaluated(plan_hash=H, pack="p", pack_hash="h", input_digest="d",
                                                  allowed=True),
    "approval.requested": lambda: m.ApprovalRequested(plan_hash=H, groups=("owners",), required=1),
    "approval.granted": lambda: m.ApprovalGranted(plan_hash=H, approver="bob", group="owners"),
    "approval.denied": lambda: m.ApprovalDenied(plan_hash=H, approver="bob", reason="not today"),
    "change.scheduled": lambda: m.ChangeScheduled(plan_hash=H, window="prod", release_at="2026-12-08T00:00:00Z"),
    "change.approved": lambda: m.ChangeApproved(plan_hash=H, lane="auto"),
    "execution.started": lambda: m.ExecutionStarted(plan_hash=H, steps=1),
    "step.started": lambda: m.StepStarted(step_id=STEP, index=0, command="mkdir"),
    "step.completed": lambda: m.StepCompleted(step_id=STEP, index=0, command="mkdir", output=OUT),
    "step.skipped": lambda: m.StepSkipped(step_id=STEP, index=0, reason="done"),
    "step.failed": lambda: m.StepFailed(step_id=STEP, index=0, command="mkdir", output=OUT, error="boom"),
    "step.retried": lambda: m.StepRetried(step_id=STEP, index=0, attempt=m.StepAttempt(n=1, rc=1, verdict="retry")),
    "execution.completed": lambda: m.ExecutionCompleted(plan_hash=H, duration_ms=1.0),
    "execution.failed": lambda: m.ExecutionFailed(plan_hash=H, step_id=STEP, reason="boom", duration_ms=1.0),
    "execution.cancelled": lambda: m.ExecutionCancelled(plan_hash=H, by="op", reason="stop"),
    "wave.started": lambda: m.WaveStarted(wave=0),
    "wave.completed": lambda: m.WaveCompleted(wave=0, healthy=True),
    "execution.paused": lambda: m.ExecutionPaused(plan_hash=H, reason="red"),
    "execution.resumed": lambda: m.ExecutionResumed(plan_hash=H, by="op"),
    "credentials.issued": lambda: m.CredentialsIssued(target="local", kind="token", ref="r1", expires_at="x"),
    "credentials.revoked": lambda: m.CredentialsRevoked(target="local", ref="r1"),
    "tls.fallback": lambda: m.TlsFallbackUsed(step_id=STEP, command="aws", error="cert"),
    "rollback.approved": lambda: m.RollbackApproved(plan_hash=H, lane="manual", by="op", reason="bad"),
    "rollback.started": lambda: m.RollbackStarted(plan_hash=H, steps=1),
    "rollback.step.started": lambda: m.RollbackStepStarted(step_id=STEP, index=0, command="rmdir"),
    "rollback.step.completed": lambda: m.RollbackStepCompleted(step_id=STEP, index=0, command="rmdir", output=OUT),
    "rollback.step.skipped": lambda: m.RollbackStepSkipped(step_id=STEP, index=0, reason="absent"),
    "rollback.step.failed": lambda: m.RollbackStepFailed(step_id=STEP, index=0, command="rmdir", output=OUT,
                                                         error="busy"),
    "rollback.completed": lambda: m.RollbackCompleted(plan_hash=H, duration_ms=1.0),
    "rollback.failed": lambda: m.RollbackFailed(plan_hash=H, step_id=STEP, reason="busy", duration_ms=1.0),
    "verification.passed": lambda: m.VerificationPassed(checks=(), baseline_hash="b", current_hash="b",
                                                        duration_ms=1.0),
    "verification.failed": lambda: m.VerificationFailed(
        checks=(), diff=(m.FieldDiff(resource="dir", field="mode", desired="0750", observed="0700"),),
        baseline_hash="b", current_hash="c", duration_ms=1.0),
    "rollback.planned": lambda: m.RollbackPlanned(plan_hash=H, reason="verification failed", automatic=False,
                                                  commands=(PLAN.steps[0].rollback,) if PLAN.steps[0].rollback else ()),
    "drift.detected": lambda: m.DriftDetected(resource="dir", diff=(), baseline_hash="b", current_hash="c"),
    "drift.resolved": lambda: m.DriftResolved(resource="dir"),
    "drift.scanned": lambda: m.DriftScanned(managed=1, checked=1, drifted=0, unknown=0, interval_s=1,
                                            duration_ms=1),
    "change.closed": lambda: m.ChangeClosed(outcome="succeeded", events=9, chain_head="h"),
    "change.stalled": lambda: m.ChangeStalled(status="approved", since="t", last_event_id="e",
                                              last_type="change.approved", waited_s=1.0),
    "chain.broken": lambda: m.ChainVerificationFailed(event_id="e", seq=3, reason="hash mismatch"),
    "slo.breached": lambda: m.SloBreached(phase="verify", metric="verify_ms", value_ms=2, target_ms=1),
    "plan.recompiled": lambda: m.PlanRecompiled(plan_hash=H, recompiled_hash=H, matches=True, hashseed=1),
    "evidence.published": lambda: m.EvidencePublished(permalink="upm://x", object_name="o", manifest_sha256="s",
                                                      signature="sig", key_id="k"),
    "log.head": lambda: m.LogHeadSigned(size=1, root="r", signed_at="t", key_id="k", signature="s"),
}

_clock = {"n": 0}


def change_events(*types: str, start: int | None = None, **payloads: Any) -> list[Event]:
    """Events of the change ``CHANGE`` of the given types, one second apart (from ``T0`` +
    ``start`` s, else after the previous call's); a keyword (the type with ``_`` for ``.``, or
    ``stalled``) gives that type's payload instead of the sample."""
    if start is not None:
        _clock["n"] = start
    out = []
    for name in types:
        key = name.replace(".", "_")
        payload = payloads.get(key) or (payloads.get("stalled") if name == "change.stalled" else None) \
            or SAMPLES[name]()
        ts = (T0 + timedelta(seconds=_clock["n"])).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        _clock["n"] += 1
        out.append(new_event(payload, event_id=new_id(), change_id=CHANGE, tenant="acme", ts=ts, actor="test",
                             source="api"))
    return out
