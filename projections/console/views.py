"""The console's view models: pure functions from what was read (events, SQL rows) to what a page
shows. Status is always the lifecycle's (:func:`events.lifecycle.fold`); rights are
:class:`services.security.access.Access`'s, exactly as the CLI and the services apply them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from events.lifecycle import ChangeState, fold
from events.model import (
    PHASES,
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    ChangeApproved,
    EvidencePublished,
    PlanCompiled,
    PolicyEvaluated,
    PreflightFailed,
    PreflightPassed,
    RollbackCompleted,
    RollbackFailed,
    RollbackPlanned,
    RollbackStepCompleted,
    RollbackStepFailed,
    StepCompleted,
    StepFailed,
    StepSkipped,
    VerificationFailed,
    VerificationPassed,
)
from events.store import StoredEvent
from projections import kpi
from projections.console import svg
from services.auditor import evidence
from services.common.client import summary
from services.security.access import Access

MAX_OUTPUT = 2000  # characters of a step's (already redacted) output shown on the page


def age(since: datetime | str | None, now: datetime) -> str:
    """``3s``, ``5m``, ``2h``, ``4d``: how long ago, for people (a naive time is UTC, as the projections
    store it; over the bus it comes as ISO text)."""
    if not since:
        return ""
    if isinstance(since, str):
        since = datetime.fromisoformat(since)
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    seconds = max(0.0, (now - since).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


@dataclass(frozen=True)
class Row:
    """One line of the change list."""

    tenant: str
    change_id: str
    status: str
    outcome: str
    initiator: str
    environment: str
    visibility: str
    request: str
    age: str
    last_seq: int


def rows(records: Sequence[Mapping[str, Any]], now: datetime) -> list[Row]:
    """The change list from ``changes`` rows (newest first, as queried)."""
    return [Row(tenant=str(r["tenant"]), change_id=str(r["change_id"]), status=str(r.get("status") or ""),
                outcome=str(r.get("outcome") or ""), initiator=str(r.get("initiator") or ""),
                environment=str(r.get("environment") or ""), visibility=str(r.get("visibility") or ""),
                request=str(r.get("request") or "")[:160], age=age(r.get("submitted_at") or r.get("first_at"), now),
                last_seq=int(r.get("last_seq") or 0))
            for r in records]


@dataclass(frozen=True)
class TimelineEntry:
    seq: int
    ts: str
    phase: str
    type: str
    actor: str
    summary: str


@dataclass(frozen=True)
class StepView:
    index: int
    command: str
    status: str  # completed, failed, skipped
    rc: int | None
    stdout: str
    stderr: str
    rollback: bool = False


@dataclass(frozen=True)
class ApprovalView:
    kind: str  # requested, granted, denied, approved
    who: str
    detail: str
    ts: str


@dataclass
class ChangePage:
    """Everything the change page shows, and what the viewer may do on it."""

    state: ChangeState
    timeline: list[TimelineEntry]
    phases: Sequence[tuple[str, int]]  # (phase, events in it), in the UPM order
    graph_svg: str
    plan_steps: list[dict[str, str]]
    plan_diff: dict[str, Any]
    preflight: list[dict[str, Any]]
    policy: list[dict[str, Any]]
    risk: str
    approvals: list[ApprovalView]
    steps: list[StepView]
    verification: list[dict[str, Any]]
    rollback_plan: list[str]
    rollback_result: str
    evidence: EvidencePublished | None
    can_approve: bool
    can_evidence: bool
    why_not_approve: str = ""
    pack: dict[str, Any] = field(default_factory=dict)  # filled by the shell: the download's verification
    drift: list[tuple[str, str]] = field(default_factory=list)  # filled by the shell: (resource, ok|drifted|unknown)

    @property
    def resources(self) -> list[str]:
        """The resources the change's plan creates or updates (what drift is watched on)."""
        plan = self.state.plan
        return sorted({s.resource.key for s in plan.steps if s.action != "delete"}) if plan else []

    def with_drift(self, latest: dict[str, str]) -> None:
        """Each resource's drift status from the drift loop's ``latest`` word on it (see :func:`drift_rows`)."""
        verified = any(v["passed"] and v["scope"] == "change" for v in self.verification)
        self.drift = [(key, "drifted" if latest.get(key) == "detected"
                       else "ok" if latest.get(key) == "resolved" or verified else "unknown")
                      for key in self.resources]


def _clip(text: str) -> str:
    return text if len(text) <= MAX_OUTPUT else text[:MAX_OUTPUT] + f"… ({len(text) - MAX_OUTPUT} more characters)"


def _policy(p: PolicyEvaluated) -> dict[str, Any]:
    return {"pack": p.pack, "allowed": p.allowed, "lane": p.lane,
            "violations": [f"{v.rule}: {v.message}" for v in p.violations],
            "required": p.required_approvals, "groups": ", ".join(p.approver_groups)}


def approve_right(rules: Access, principal: str, state: ChangeState) -> tuple[bool, str]:
    """Whether ``principal`` gets the Approve / Deny buttons, and if not, why (shown on the page).
    The buttons only save a round trip: pre-flight decides, and refuses exactly as for `upm approve`."""
    if state.status != "awaiting-approval":
        return False, f"the change is {state.status}, not awaiting approval"
    if principal == state.initiator:
        return False, "you initiated this change: someone else must approve it"
    if not rules.allows(principal, state.tenant, "approve"):
        return False, f"{principal} holds no approver role in tenant {state.tenant}"
    if principal in state.grants:
        return False, "you approved this revision already"
    return True, ""


def change_view(events: Sequence[StoredEvent], principal: str, rules: Access) -> ChangePage:
    """The change page's model from the change's events, as ``principal`` sees it."""
    evs = [s.event for s in events]
    state = fold(evs)
    timeline = [TimelineEntry(seq=s.seq, ts=s.event.ts, phase=s.event.phase, type=s.event.type, actor=s.event.actor,
                              summary=summary(s.event)) for s in events]
    phases = [(p, sum(1 for e in evs if e.phase == p)) for p in PHASES]
    plan = state.plan
    nodes = [svg.Node(n.id, n.label, n.action) for n in plan.graph.nodes] if plan else []
    edges = [(e.source, e.target) for e in plan.graph.edges] if plan else []
    plans = [(e.payload.revision, e.payload.plan) for e in evs if isinstance(e.payload, PlanCompiled)]
    preflight: list[dict[str, Any]] = []
    policy: list[dict[str, Any]] = []
    risk = ""
    approvals: list[ApprovalView] = []
    steps: list[StepView] = []
    verification: list[dict[str, Any]] = []
    rollback_plan: list[str] = []
    rollback_result = ""
    published: EvidencePublished | None = None
    for e in evs:
        p = e.payload
        match p:
            case PreflightPassed():
                policy = [_policy(d) for d in p.policy] or policy
                preflight = [{"name": c.name, "target": c.target, "ok": c.ok, "detail": c.detail} for c in p.checks]
                if p.risk is not None:
                    factors = ", ".join(f"{f.name} +{f.points:g}" for f in p.risk.factors)
                    risk = f"{p.risk.score:g} ({p.risk.level})" + (f": {factors}" if factors else "")
            case PreflightFailed():
                preflight = [{"name": "pre-flight", "target": "", "ok": False, "detail": r} for r in p.reasons]
            case PolicyEvaluated():
                policy.append(_policy(p))
            case ApprovalRequested():
                approvals.append(ApprovalView("requested", ", ".join(p.groups),
                                              f"{p.required} approval(s)" + (f" ({p.rule})" if p.rule else ""), e.ts))
            case ApprovalGranted():
                approvals.append(ApprovalView("granted", f"policy {p.by_policy}" if p.by_policy else p.approver,
                                              p.group + (f": {p.reason}" if p.reason else ""), e.ts))
            case ApprovalDenied():
                approvals.append(ApprovalView("denied", p.approver, p.reason, e.ts))
            case ChangeApproved():
                approvals.append(ApprovalView("approved", ", ".join(p.approvers) or p.lane,
                                              f"{p.lane} lane" + (f": {p.rule}" if p.rule else ""), e.ts))
            case StepCompleted() | StepFailed() | RollbackStepCompleted() | RollbackStepFailed():
                out = p.output
                steps.append(StepView(index=p.index, command=p.command,
                                      status="failed" if isinstance(p, StepFailed | RollbackStepFailed) else "completed",
                                      rc=out.rc, stdout=_clip(out.stdout), stderr=_clip(out.stderr),
                                      rollback=isinstance(p, RollbackStepCompleted | RollbackStepFailed)))
            case StepSkipped():
                steps.append(StepView(index=p.index, command=f"step {p.index}", status="skipped", rc=None,
                                      stdout=p.reason, stderr=""))
            case VerificationPassed() | VerificationFailed():
                verification.append({"scope": p.scope, "passed": isinstance(p, VerificationPassed),
                                     "checks": [{"name": c.name, "target": c.target, "ok": c.ok, "detail": c.detail}
                                                for c in p.checks],
                                     "diff": [f"{d.resource} {d.field}: {d.desired!r} → {d.observed!r}"
                                              for d in getattr(p, "diff", ())],
                                     "ms": p.duration_ms})
            case RollbackPlanned():
                rollback_plan = [c.display for c in p.commands]
            case RollbackCompleted():
                rollback_result = "completed"
            case RollbackFailed():
                rollback_result = f"failed: {p.reason}"
            case EvidencePublished():
                published = p
    can_approve, why = approve_right(rules, principal, state)
    return ChangePage(
        state=state, timeline=timeline, phases=phases, graph_svg=svg.dag(nodes, edges, title="plan dependency graph"),
        plan_steps=[{"index": str(s.index), "action": s.action, "resource": s.resource.key, "command": s.command.display,
                     "rollback": s.rollback.display if s.rollback else ""} for s in plan.steps] if plan else [],
        plan_diff=evidence.plan_diff(plans), preflight=preflight, policy=policy, risk=risk, approvals=approvals,
        steps=steps, verification=verification, rollback_plan=rollback_plan, rollback_result=rollback_result,
        evidence=published, can_approve=can_approve, why_not_approve=why,
        can_evidence=bool(evs) and rules.allows(principal, state.tenant, "evidence", initiator=state.initiator),
    )


# -- KPIs over time ------------------------------------------------------------------------------


def bucket_seconds(first: float | None, last: float | None, buckets: int = 24) -> int:
    """The width of a time bucket so that the facts' span fits ``buckets`` of them: a whole minute,
    hour or day count (at least one minute)."""
    if first is None or last is None or last <= first:
        return 3600
    raw = (last - first) / buckets
    unit = next(u for u in (60, 3600, 86400) if raw <= u * 60 or u == 86400)
    return max(60, math.ceil(raw / unit) * unit)


@dataclass(frozen=True)
class KpiChart:
    kpi: kpi.Kpi
    value: float | None
    meets: str
    svg: str


def _label(t: float, width: int) -> str:
    moment = datetime.fromtimestamp(t, UTC)
    return moment.strftime("%Y-%m-%d" if width >= 86400 else "%m-%d %H:%M")


def kpi_charts(series: Sequence[Mapping[str, Any]], current: Mapping[str, float | None], width: int) -> list[KpiChart]:
    """One chart per KPI (all ten, in the spec's order) from ``kpi.series_query`` rows
    (``kpi``, ``t``, ``value``) and the figures over the whole range."""
    points: dict[str, list[svg.Point]] = {k.name: [] for k in kpi.KPIS}
    for r in series:
        if r.get("value") is not None and r.get("kpi") in points:
            t = float(r["t"])
            points[str(r["kpi"])].append(svg.Point(t=t, value=round(float(r["value"]), 3), label=_label(t, width)))
    charts = []
    for k in kpi.KPIS:
        value = current.get(k.name)
        meets = "no data" if value is None else "L4" if k.l4.met(value) else "L3" if k.l3.met(value) else "below L3"
        charts.append(KpiChart(kpi=k, value=value, meets=meets,
                               svg=svg.chart(k.name, sorted(points[k.name], key=lambda p: p.t), k.l3, k.l4, k.unit)))
    return charts


# -- drift ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftRow:
    tenant: str
    resource: str
    status: str  # ok, drifted, unknown
    change_id: str
    detail: str


def drift_rows(records: Sequence[Mapping[str, Any]]) -> list[DriftRow]:
    """Each managed resource's drift status from ``drift.DRIFT_QUERY`` rows: ``drifted`` when its
    latest drift event is a detection, ``ok`` when that is a resolution or a verification read it back
    as desired, ``unknown`` when nothing has read it back yet."""
    out = []
    for r in records:
        kind = r.get("last_kind")
        if kind == "detected":
            status = "drifted"
        elif kind == "resolved" or r.get("verified"):
            status = "ok"
        else:
            status = "unknown"
        out.append(DriftRow(tenant=str(r["tenant"]), resource=str(r["resource"]), status=status,
                            change_id=str(r.get("change_id") or ""), detail=str(r.get("diff") or "")))
    return out
