"""Hand-built change histories with known answers, for the projections tests.

A :class:`History` hands out stream sequences and seals each change's hash chain exactly as
the event store would, so its ``records`` are what ``read_raw`` returns for the same events.
Times are seconds after :data:`BASE`, never the wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from events import chain
from events.ids import derive_id
from events.model import (
    ApprovalGranted,
    ApprovalRequested,
    ChangeApproved,
    ChangeClosed,
    Check,
    EvidencePublished,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionStarted,
    FieldDiff,
    IntentSubmitted,
    Outcome,
    Payload,
    PlanCompiled,
    PolicyEvaluated,
    PreflightFailed,
    PreflightPassed,
    RollbackCompleted,
    RollbackFailed,
    RollbackPlanned,
    RollbackStarted,
    StepCompleted,
    StepOutput,
    StepStarted,
    VerificationFailed,
    VerificationPassed,
    decode_event,
    encode_event,
)
from events.plan import Annotations, Command, Graph, GraphNode, Plan, ResourceRef, Step, seal
from events.store import ChangeLog, EventStore, new_event

BASE = datetime(2026, 1, 1, tzinfo=UTC)
NS = "0190f0a0-0000-7000-8000-000000000000"


def ts(at: float) -> str:
    return (BASE + timedelta(seconds=at)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_plan(names: tuple[str, ...] = ("a",), *, request: str = "create directories", initiator: str = "alice",
              tenant: str = "acme", action: str = "create") -> Plan:
    steps = []
    for i, name in enumerate(names):
        key = f"local_dir:local:/tmp/{name}"
        steps.append(Step(
            id=f"s{i + 1}", index=i, action=action,  # type: ignore[arg-type]
            resource=ResourceRef(provider="local", type="local_dir", name=f"/tmp/{name}", target="local", key=key),
            command=Command(argv=("mkdir", "-p", f"/tmp/{name}"), display=f"mkdir -p /tmp/{name}"),
            guard=None, readback=Command(argv=("stat", f"/tmp/{name}"), display=f"stat /tmp/{name}"), health=None,
            rollback=Command(argv=("rmdir", f"/tmp/{name}"), display=f"rmdir /tmp/{name}"),
            desired={"exists": True}, depends_on=(), target="local", cli="coreutils", timeout_s=30.0,
            destructive=False,
        ))
    return seal(Plan(
        hash="", request=request, tenant=tenant, steps=tuple(steps),
        resources=tuple({"type": "local_dir", "name": f"/tmp/{n}"} for n in names), resources_needed=(),
        rollback=tuple(s.rollback for s in reversed(steps) if s.rollback is not None),
        graph=Graph(nodes=tuple(GraphNode(id=s.id, label=s.resource.key, action=s.action) for s in steps), edges=()),
        annotations=Annotations(initiator=initiator, reason="test"),
    ))


@dataclass
class History:
    """Events of many changes, in stream order, as stored ``(seq, bytes)`` records."""

    records: list[tuple[int, bytes]] = field(default_factory=list)
    heads: dict[str, str] = field(default_factory=dict)
    counter: int = 0

    def change(self, tenant: str = "acme", *, visibility: str = "team") -> ChangeBuilder:
        self.counter += 1
        change_id = derive_id(NS, f"change-{self.counter}")
        return ChangeBuilder(self, tenant, change_id, visibility)

    def append(self, tenant: str, change_id: str, payload: Payload, at: float, actor: str, visibility: str) -> None:
        seq = len(self.records) + 1
        event = new_event(payload, event_id=derive_id(change_id, f"e{seq}"), change_id=change_id, tenant=tenant,
                          ts=ts(at), actor=actor, source="api", visibility=visibility)
        sealed = chain.seal(event, self.heads.get(change_id, ""))
        self.heads[change_id] = sealed.hash
        self.records.append((seq, encode_event(sealed)))


@dataclass
class ChangeBuilder:
    """One change of a :class:`History`; each method appends one event (``at`` in seconds)."""

    history: History
    tenant: str
    change_id: str
    visibility: str
    plan: Plan | None = None

    def add(self, payload: Payload, at: float, actor: str = "svc") -> ChangeBuilder:
        self.history.append(self.tenant, self.change_id, payload, at, actor, self.visibility)
        return self

    def intent(self, at: float, request: str = "create directories", initiator: str = "alice") -> ChangeBuilder:
        return self.add(IntentSubmitted(request=request, initiator=initiator), at, initiator)

    def compiled(self, at: float, plan: Plan | None = None, ms: float = 10.0, revision: int = 1) -> ChangeBuilder:
        self.plan = plan or make_plan(tenant=self.tenant)
        return self.add(PlanCompiled(plan=self.plan, revision=revision, compile_ms=ms), at, "planner")

    @property
    def plan_hash(self) -> str:
        assert self.plan is not None
        return self.plan.hash

    def preflight(self, at: float, ok: bool = True, approve: bool = True) -> ChangeBuilder:
        if not ok:
            return self.add(PreflightFailed(plan_hash=self.plan_hash, reasons=("missing prerequisite",)), at)
        self.add(PreflightPassed(plan_hash=self.plan_hash), at)
        if approve:
            self.add(ChangeApproved(plan_hash=self.plan_hash, lane="auto", rule="auto"), at)
        return self

    def policy(self, at: float, allowed: bool = True, required: int = 0) -> ChangeBuilder:
        return self.add(PolicyEvaluated(plan_hash=self.plan_hash, pack="default", pack_hash="sha256:p",
                                        input_digest="sha256:i", allowed=allowed, required_approvals=required), at)

    def request_approval(self, at: float, required: int = 2) -> ChangeBuilder:
        return self.add(ApprovalRequested(plan_hash=self.plan_hash, groups=("platform-owners",), required=required), at)

    def grant(self, at: float, approver: str) -> ChangeBuilder:
        return self.add(ApprovalGranted(plan_hash=self.plan_hash, approver=approver, group="platform-owners"), at,
                        approver)

    def approve(self, at: float, approvers: tuple[str, ...] = ()) -> ChangeBuilder:
        return self.add(ChangeApproved(plan_hash=self.plan_hash, lane="manual", approvers=approvers), at)

    def execute(self, at: float, ok: bool = True, stdout: str = "done") -> ChangeBuilder:
        plan = self.plan
        assert plan is not None
        self.add(ExecutionStarted(plan_hash=plan.hash, steps=len(plan.steps)), at, "executor")
        for step in plan.steps:
            self.add(StepStarted(step_id=step.id, index=step.index, command=step.command.display), at, "executor")
            out = StepOutput(rc=0 if ok else 1, stdout=stdout, duration_ms=5.0)
            self.add(StepCompleted(step_id=step.id, index=step.index, command=step.command.display, output=out),
                     at + 1, "executor")
        if ok:
            return self.add(ExecutionCompleted(plan_hash=plan.hash, duration_ms=1000.0), at + 1, "executor")
        return self.add(ExecutionFailed(plan_hash=plan.hash, step_id=plan.steps[-1].id, reason="rc 1",
                                        duration_ms=1000.0), at + 1, "executor")

    def verify(self, at: float, ok: bool = True, ms: float = 100.0, scope: str = "change") -> ChangeBuilder:
        plan = self.plan
        assert plan is not None
        checks = tuple(Check(name="readback", target=s.resource.key, ok=ok) for s in plan.steps)
        if ok:
            return self.add(VerificationPassed(scope=scope, checks=checks, baseline_hash="sha256:b",  # type: ignore[arg-type]
                                               current_hash="sha256:b", duration_ms=ms), at, "verifier")
        diff = tuple(FieldDiff(resource=s.resource.key, field="exists", desired=True, observed=False)
                     for s in plan.steps)
        return self.add(VerificationFailed(scope=scope, checks=checks, diff=diff, baseline_hash="sha256:b",  # type: ignore[arg-type]
                                           current_hash="sha256:c", duration_ms=ms), at, "verifier")

    def rollback(self, at: float, ok: bool = True, verified: bool | None = None) -> ChangeBuilder:
        plan = self.plan
        assert plan is not None
        self.add(RollbackPlanned(plan_hash=plan.hash, reason="verification failed", commands=plan.rollback,
                                 automatic=True), at, "verifier")
        self.add(RollbackStarted(plan_hash=plan.hash, steps=len(plan.rollback)), at, "executor")
        if ok:
            self.add(RollbackCompleted(plan_hash=plan.hash, duration_ms=500.0), at + 1, "executor")
        else:
            self.add(RollbackFailed(plan_hash=plan.hash, step_id="r1", reason="rc 1", duration_ms=500.0), at + 1,
                     "executor")
        if verified is not None:
            self.verify(at + 2, ok=verified, scope="rollback")
        return self

    def close(self, at: float, outcome: Outcome) -> ChangeBuilder:
        return self.add(ChangeClosed(outcome=outcome, events=0, chain_head=self.history.heads[self.change_id]), at,
                        "auditor")

    def published(self, at: float) -> ChangeBuilder:
        return self.add(EvidencePublished(permalink=f"upm://evidence/{self.tenant}/{self.change_id}",
                                          object_name=f"{self.tenant}/{self.change_id}.tar",
                                          manifest_sha256="0" * 64, signature="sig", key_id="k"), at, "auditor")


def happy(h: History, tenant: str = "acme", at: float = 0.0, *, published: bool = True, ms: float = 10.0,
          verify_ms: float = 100.0, plan: Plan | None = None) -> ChangeBuilder:
    """A change that compiles, passes, runs, verifies and closes 'succeeded'."""
    c = h.change(tenant).intent(at).compiled(at + 1, plan, ms=ms).preflight(at + 2).execute(at + 3)
    c.verify(at + 5, ms=verify_ms).close(at + 6, "succeeded")
    return c.published(at + 7) if published else c


def failed(h: History, tenant: str = "acme", at: float = 0.0, *, rollback_ok: bool | None = True,
           restore_after_s: float = 60.0, published: bool = True) -> ChangeBuilder:
    """A change whose verification fails; then (unless ``rollback_ok`` is None) a verified rollback."""
    c = h.change(tenant).intent(at).compiled(at + 1).preflight(at + 2).execute(at + 3)
    c.verify(at + 5, ok=False).close(at + 6, "failed")
    if published:
        c.published(at + 7)
    if rollback_ok is not None:
        c.rollback(at + 3 + restore_after_s, ok=rollback_ok, verified=True if rollback_ok else None)
    return c


async def publish(store: EventStore, records: list[tuple[int, bytes]]) -> int:
    """Append hand-built records through the event store, in order; return the last sequence."""
    logs: dict[str, ChangeLog] = {}
    last = 0
    for _, data in records:
        event = decode_event(data)
        log = logs.setdefault(event.change_id, ChangeLog(event.tenant, event.change_id))
        stored = await store.append(log, [event])
        last = stored[-1].seq
    return last
