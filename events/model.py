"""The event contract: one envelope, one tagged union of payloads.

Every event is an :class:`Event` envelope whose ``payload`` is one of the payload Structs below;
the payload's ``type`` tag (``plan.compiled`` ...) is the event type, the last tokens of its
subject. Evolution rules: a new field has a default, a field never changes type, and a new
meaning gets a new tag.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import msgspec

from events.codec import canonical_json
from events.plan import Command, Plan

Phase = Literal["plan", "preflight", "execute", "verify", "audit"]
Source = Literal["chatops", "api", "ticket", "drift"]
Visibility = Literal["team", "org", "private"]
Outcome = Literal["succeeded", "failed", "rejected", "denied", "rolled_back", "cancelled", "stalled"]

PHASES: tuple[Phase, ...] = ("plan", "preflight", "execute", "verify", "audit")
SOURCES: tuple[Source, ...] = ("chatops", "api", "ticket", "drift")
PRODUCER_SOURCES: tuple[Source, ...] = ("chatops", "api", "ticket")
VISIBILITIES: tuple[Visibility, ...] = ("team", "org", "private")
AGENT = "agent-session"


class Payload(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every payload; subclasses set ``tag`` (the event type) and ``PHASE``."""

    PHASE: ClassVar[Phase]


# -- plan ---------------------------------------------------------------------------------


class IntentSubmitted(Payload, tag="intent.submitted", frozen=True, kw_only=True):
    """A producer asked for a change, in natural language (``request``) or as a spec."""

    PHASE = "plan"
    request: str | None = None
    spec: dict[str, Any] | None = None
    initiator: str
    reason: str = ""
    window: str | None = None
    variant: str | None = None
    environment: str = "dev"
    idempotency_key: str | None = None

    def compile_fields(self, tenant: str) -> dict[str, Any]:
        """What the planner compiles from this intent (the fields of its ``CompileInput``)."""
        return {"request": self.request, "spec": self.spec, "tenant": tenant, "initiator": self.initiator,
                "reason": self.reason, "window": self.window, "variant": self.variant}


class PlanCompiled(Payload, tag="plan.compiled", frozen=True, kw_only=True):
    """The planner compiled the intent into ``plan`` (revision ``revision``)."""

    PHASE = "plan"
    plan: Plan
    revision: int = 1
    compile_ms: float
    simulation: dict[str, Any] | None = None


class PlanRejected(Payload, tag="plan.rejected", frozen=True, kw_only=True):
    """The intent could not be compiled; ``reason`` says what to change."""

    PHASE = "plan"
    reason: str
    error: str
    revision: int = 1


# -- preflight ----------------------------------------------------------------------------


class Check(msgspec.Struct, frozen=True, kw_only=True):
    """One pre-flight or verification check and its result."""

    name: str
    target: str
    ok: bool
    detail: str = ""


class RiskFactor(msgspec.Struct, frozen=True, kw_only=True):
    """One reason a plan is risky, and the points it adds to the risk score."""

    name: str
    points: float
    detail: str = ""


class RiskAssessment(msgspec.Struct, frozen=True, kw_only=True):
    """The plan's risk score (0-100), its level and the factors it sums."""

    score: float
    level: Literal["low", "medium", "high"]
    factors: tuple[RiskFactor, ...] = ()


class WindowRequirement(msgspec.Struct, frozen=True, kw_only=True):
    """Policy ``rule`` requires the change to run inside ``environment``'s maintenance window;
    ``outside`` says whether a change outside it waits (``change.scheduled``) or is refused."""

    environment: str
    rule: str
    message: str = ""
    outside: Literal["wait", "refuse"] = "wait"


class PreflightPassed(Payload, tag="preflight.passed", frozen=True, kw_only=True):
    """Checks passed and policy allows the plan; ``policy`` holds each pack's decision, ``lane``
    how it is approved, ``window`` the maintenance window it must run in (if any)."""

    PHASE = "preflight"
    plan_hash: str
    checks: tuple[Check, ...] = ()
    duration_ms: float = 0.0
    policy: tuple[PolicyEvaluated, ...] = ()
    risk: RiskAssessment | None = None
    lane: Literal["auto", "manual", ""] = ""
    window: WindowRequirement | None = None


class PreflightFailed(Payload, tag="preflight.failed", frozen=True, kw_only=True):
    """Pre-flight halted the change; ``reasons`` are actionable messages."""

    PHASE = "preflight"
    plan_hash: str
    checks: tuple[Check, ...] = ()
    reasons: tuple[str, ...]
    duration_ms: float = 0.0
    policy: tuple[PolicyEvaluated, ...] = ()
    risk: RiskAssessment | None = None


class ChangeApproved(Payload, tag="change.approved", frozen=True, kw_only=True):
    """The change may execute: the plan ``plan_hash`` was approved through ``lane``."""

    PHASE = "preflight"
    plan_hash: str
    lane: Literal["auto", "manual"]
    rule: str = ""
    approvers: tuple[str, ...] = ()


class Violation(msgspec.Struct, frozen=True, kw_only=True):
    """One policy rule a plan breaks."""

    rule: str
    message: str
    resource: str = ""


class PolicyEvaluated(Payload, tag="policy.evaluated", frozen=True, kw_only=True):
    """A policy pack's decision on a plan: every violation, the input digest, the pack hash."""

    PHASE = "preflight"
    plan_hash: str
    pack: str
    pack_hash: str
    input_digest: str
    allowed: bool
    violations: tuple[Violation, ...] = ()
    risk_score: float = 0.0
    lane: Literal["auto", "manual"] = "manual"
    required_approvals: int = 0
    approver_groups: tuple[str, ...] = ()
    output: dict[str, Any] = msgspec.field(default_factory=dict)
    input: dict[str, Any] = msgspec.field(default_factory=dict)


class ApprovalRequested(Payload, tag="approval.requested", frozen=True, kw_only=True):
    PHASE = "preflight"
    plan_hash: str
    groups: tuple[str, ...]
    required: int
    reason: str = ""
    expires_at: str | None = None
    rule: str = ""


class ApprovalGranted(Payload, tag="approval.granted", frozen=True, kw_only=True):
    """An approval of the plan ``plan_hash``; ``by_policy`` names the rule of an automatic one."""

    PHASE = "preflight"
    plan_hash: str
    approver: str
    group: str = ""
    reason: str = ""
    by_policy: str | None = None


class ApprovalDenied(Payload, tag="approval.denied", frozen=True, kw_only=True):
    PHASE = "preflight"
    plan_hash: str
    approver: str
    group: str = ""
    reason: str = ""


class ChangeScheduled(Payload, tag="change.scheduled", frozen=True, kw_only=True):
    """The change waits for its maintenance window to open at ``release_at``."""

    PHASE = "preflight"
    plan_hash: str
    window: str
    release_at: str


# -- execute ------------------------------------------------------------------------------


class ExecutionStarted(Payload, tag="execution.started", frozen=True, kw_only=True):
    PHASE = "execute"
    plan_hash: str
    steps: int
    waves: int = 1


class StepStarted(Payload, tag="step.started", frozen=True, kw_only=True):
    PHASE = "execute"
    step_id: str
    index: int
    command: str


class StepAttempt(msgspec.Struct, frozen=True, kw_only=True):
    """One try at a step as the guarded runner recorded it (redacted): no output but ``stderr_tail``, the
    last bytes of its stderr (the guard policy's ``stderr_tail_bytes``), so a retried attempt says in
    the target's own words why it failed."""

    n: int
    rc: int
    verdict: str
    reason: str = ""
    started: str = ""
    duration_ms: float = 0.0
    backoff_s: float = 0.0
    timed_out: bool = False
    tls_fallback: bool = False
    stderr_tail: str = ""


class StepOutput(msgspec.Struct, frozen=True, kw_only=True):
    """A step's redacted, bounded output (the spec's ``stdout`` / ``stderr_trunc``).

    ``stdout_ref`` / ``stderr_ref`` name the full (redacted) output when the event holds only
    its head (``obs://<bucket>/<object>``); ``tries`` records every attempt.
    """

    rc: int
    stdout: str = ""
    stderr: str = ""
    stdout_trunc: bool = False
    stderr_trunc: bool = False
    attempts: int = 1
    duration_ms: float = 0.0
    stdout_ref: str = ""
    stderr_ref: str = ""
    tries: tuple[StepAttempt, ...] = ()


class StepCompleted(Payload, tag="step.completed", frozen=True, kw_only=True):
    """The step ran and succeeded; ``recovered``: its outcome was unknown after a crash and its
    guard read-back showed it done (``output`` is then that read-back's)."""

    PHASE = "execute"
    step_id: str
    index: int
    command: str
    output: StepOutput
    recovered: bool = False


class StepRetried(Payload, tag="step.retried", frozen=True, kw_only=True):
    """An attempt of the step failed in a retryable way and was retried."""

    PHASE = "execute"
    step_id: str
    index: int
    attempt: StepAttempt


class StepSkipped(Payload, tag="step.skipped", frozen=True, kw_only=True):
    """The step's guard read-back showed it was already done."""

    PHASE = "execute"
    step_id: str
    index: int
    reason: str


class StepFailed(Payload, tag="step.failed", frozen=True, kw_only=True):
    PHASE = "execute"
    step_id: str
    index: int
    command: str
    output: StepOutput
    error: str


class ExecutionCompleted(Payload, tag="execution.completed", frozen=True, kw_only=True):
    PHASE = "execute"
    plan_hash: str
    duration_ms: float


class ExecutionFailed(Payload, tag="execution.failed", frozen=True, kw_only=True):
    """The execution stopped; ``rule`` names a limit that refused it (``blast-radius``,
    ``deadline``), empty when a step failed."""

    PHASE = "execute"
    plan_hash: str
    step_id: str
    reason: str
    duration_ms: float
    rule: str = ""


class ExecutionCancelled(Payload, tag="execution.cancelled", frozen=True, kw_only=True):
    """An operator cancelled the change: no further step starts (what ran stays; roll it back)."""

    PHASE = "execute"
    plan_hash: str
    by: str
    reason: str = ""


class WaveStarted(Payload, tag="wave.started", frozen=True, kw_only=True):
    PHASE = "execute"
    wave: int
    targets: tuple[str, ...] = ()


class WaveCompleted(Payload, tag="wave.completed", frozen=True, kw_only=True):
    """The wave's steps ran; ``healthy`` is its promotion gate (``reason`` says why not)."""

    PHASE = "execute"
    wave: int
    healthy: bool
    checks: tuple[Check, ...] = ()
    reason: str = ""
    error_ratio: float = 0.0


class ExecutionPaused(Payload, tag="execution.paused", frozen=True, kw_only=True):
    """The executor paused itself (or was paused); ``reason`` says which anomaly."""

    PHASE = "execute"
    plan_hash: str
    reason: str
    wave: int = 0
    anomaly: str = ""


class ExecutionResumed(Payload, tag="execution.resumed", frozen=True, kw_only=True):
    PHASE = "execute"
    plan_hash: str
    by: str
    reason: str = ""


class CredentialsIssued(Payload, tag="credentials.issued", frozen=True, kw_only=True):
    """Short-lived credentials for a target: a reference and an expiry, never the value."""

    PHASE = "execute"
    target: str
    kind: str
    ref: str
    expires_at: str


class CredentialsRevoked(Payload, tag="credentials.revoked", frozen=True, kw_only=True):
    PHASE = "execute"
    target: str
    ref: str


class TlsFallbackUsed(Payload, tag="tls.fallback", frozen=True, kw_only=True):
    """Warning: a step was retried once without TLS verification after a certificate error."""

    PHASE = "execute"
    step_id: str
    command: str
    error: str


class RollbackApproved(Payload, tag="rollback.approved", frozen=True, kw_only=True):
    """Run the rollback plan: by policy after a failed verification, or by an operator."""

    PHASE = "execute"
    plan_hash: str
    lane: Literal["auto", "manual"]
    by: str
    reason: str = ""


class RollbackStarted(Payload, tag="rollback.started", frozen=True, kw_only=True):
    PHASE = "execute"
    plan_hash: str
    steps: int


class RollbackStepStarted(Payload, tag="rollback.step.started", frozen=True, kw_only=True):
    """The inverse of the completed step ``step_id`` is about to run."""

    PHASE = "execute"
    step_id: str
    index: int
    command: str


class RollbackStepCompleted(Payload, tag="rollback.step.completed", frozen=True, kw_only=True):
    PHASE = "execute"
    step_id: str
    index: int
    command: str
    output: StepOutput
    recovered: bool = False


class RollbackStepSkipped(Payload, tag="rollback.step.skipped", frozen=True, kw_only=True):
    """The step's read-back shows it already undone."""

    PHASE = "execute"
    step_id: str
    index: int
    reason: str


class RollbackStepFailed(Payload, tag="rollback.step.failed", frozen=True, kw_only=True):
    PHASE = "execute"
    step_id: str
    index: int
    command: str
    output: StepOutput
    error: str


class RollbackCompleted(Payload, tag="rollback.completed", frozen=True, kw_only=True):
    """Every inverse ran. MTTR is ``finished_at`` − ``failed_at`` (the failure that led here)."""

    PHASE = "execute"
    plan_hash: str
    duration_ms: float
    steps: int = 0
    started_at: str = ""
    finished_at: str = ""
    failed_at: str = ""


class RollbackFailed(Payload, tag="rollback.failed", frozen=True, kw_only=True):
    PHASE = "execute"
    plan_hash: str
    step_id: str
    reason: str
    duration_ms: float
    started_at: str = ""
    failed_at: str = ""


# -- verify -------------------------------------------------------------------------------


class FieldDiff(msgspec.Struct, frozen=True, kw_only=True):
    """``field``: desired → observed."""

    resource: str
    field: str
    desired: Any = None
    observed: Any = None


class VerificationPassed(Payload, tag="verification.passed", frozen=True, kw_only=True):
    """Every resource read back matches; ``scope`` says whether it verified the change or its rollback."""

    PHASE = "verify"
    scope: Literal["change", "rollback"] = "change"
    checks: tuple[Check, ...]
    baseline_hash: str
    current_hash: str
    duration_ms: float


class VerificationFailed(Payload, tag="verification.failed", frozen=True, kw_only=True):
    PHASE = "verify"
    scope: Literal["change", "rollback"] = "change"
    checks: tuple[Check, ...]
    diff: tuple[FieldDiff, ...]
    baseline_hash: str
    current_hash: str
    duration_ms: float


class RollbackPlanned(Payload, tag="rollback.planned", frozen=True, kw_only=True):
    """The rollback plan for what actually ran (reverse order), and why it was opened."""

    PHASE = "verify"
    plan_hash: str
    reason: str
    commands: tuple[Command, ...]
    automatic: bool = False


class DriftDetected(Payload, tag="drift.detected", frozen=True, kw_only=True):
    """A managed resource no longer matches its baseline."""

    PHASE = "verify"
    resource: str
    diff: tuple[FieldDiff, ...]
    baseline_hash: str
    current_hash: str
    action: Literal["alarm", "reconcile"] = "alarm"
    reconcile_change_id: str | None = None


class DriftResolved(Payload, tag="drift.resolved", frozen=True, kw_only=True):
    PHASE = "verify"
    resource: str
    by_change_id: str = ""


class DriftScanned(Payload, tag="drift.scanned", frozen=True, kw_only=True):
    """One pass of the drift loop over a tenant's managed resources.

    Coverage = ``checked / managed``: resources read back (a definite answer) within the pass.
    ``unknown`` read-backs failed even after retries; they are not counted as drift.
    """

    PHASE = "verify"
    managed: int
    checked: int
    drifted: int
    unknown: int
    interval_s: float
    duration_ms: float


# -- audit --------------------------------------------------------------------------------


class ChangeClosed(Payload, tag="change.closed", frozen=True, kw_only=True):
    """The change is over; ``chain_head`` is the hash of the event before this one."""

    PHASE = "audit"
    outcome: Outcome
    reason: str = ""
    events: int
    chain_head: str


class ChangeStalled(Payload, tag="change.stalled", frozen=True, kw_only=True):
    """The watchdog found the change making no progress: ``status`` is where it stopped, ``since``
    the time of its last event (``last_event_id``, of type ``last_type``). ``action`` says what
    the watchdog did: ``redrive`` asks the owning service to finish its step again (every service
    consumes this event and decides from the change's state whether the next step is its own);
    ``close`` gives up (``change.closed`` with outcome ``stalled`` follows)."""

    PHASE = "audit"
    status: str
    since: str
    last_event_id: str
    last_type: str
    waited_s: float
    action: Literal["redrive", "close"] = "redrive"
    attempt: int = 1


class ChainVerificationFailed(Payload, tag="chain.broken", frozen=True, kw_only=True):
    """The auditor found the change's hash chain broken at ``event_id``."""

    PHASE = "audit"
    event_id: str
    seq: int
    reason: str


class SloBreached(Payload, tag="slo.breached", frozen=True, kw_only=True):
    """A phase took longer than its SLO target."""

    PHASE = "audit"
    phase: Phase
    metric: str
    value_ms: float
    target_ms: float


class PlanRecompiled(Payload, tag="plan.recompiled", frozen=True, kw_only=True):
    """The determinism witness: the change's intent compiled again in a fresh process (another
    ``PYTHONHASHSEED``), after the change closed. ``matches``: the same plan hash came out."""

    PHASE = "audit"
    plan_hash: str
    recompiled_hash: str
    matches: bool
    hashseed: int
    error: str = ""


class EvidencePublished(Payload, tag="evidence.published", frozen=True, kw_only=True):
    """The change's evidence pack is stored; ``permalink`` resolves it."""

    PHASE = "audit"
    permalink: str
    object_name: str
    manifest_sha256: str
    signature: str
    key_id: str


class LogHeadSigned(Payload, tag="log.head", frozen=True, kw_only=True):
    """A signed head of the Merkle tree over every event up to stream sequence ``size``."""

    PHASE = "audit"
    size: int
    root: str
    signed_at: str
    key_id: str
    signature: str


AnyPayload = (
    IntentSubmitted
    | PlanCompiled
    | PlanRejected
    | PreflightPassed
    | PreflightFailed
    | ChangeApproved
    | PolicyEvaluated
    | ApprovalRequested
    | ApprovalGranted
    | ApprovalDenied
    | ChangeScheduled
    | ExecutionStarted
    | StepStarted
    | StepCompleted
    | StepSkipped
    | StepFailed
    | StepRetried
    | ExecutionCompleted
    | ExecutionFailed
    | ExecutionCancelled
    | WaveStarted
    | WaveCompleted
    | ExecutionPaused
    | ExecutionResumed
    | CredentialsIssued
    | CredentialsRevoked
    | TlsFallbackUsed
    | RollbackApproved
    | RollbackStarted
    | RollbackStepStarted
    | RollbackStepCompleted
    | RollbackStepSkipped
    | RollbackStepFailed
    | RollbackCompleted
    | RollbackFailed
    | VerificationPassed
    | VerificationFailed
    | RollbackPlanned
    | DriftDetected
    | DriftResolved
    | DriftScanned
    | ChangeClosed
    | ChangeStalled
    | ChainVerificationFailed
    | SloBreached
    | PlanRecompiled
    | EvidencePublished
    | LogHeadSigned
)


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """The envelope. ``prev_hash`` and ``hash`` are filled in by the event store on append."""

    id: str
    change_id: str
    tenant: str
    phase: Phase
    ts: str
    actor: str
    source: Source
    visibility: Visibility = "team"
    prev_hash: str = ""
    hash: str = ""
    payload: AnyPayload

    @property
    def type(self) -> str:
        """The event type: the payload's tag."""
        return type_of(self.payload)


def type_of(payload: Payload | type[Payload]) -> str:
    """The tag (event type) of a payload or payload class."""
    cls = payload if isinstance(payload, type) else type(payload)
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


PAYLOAD_TYPES: dict[str, type[Payload]] = {type_of(cls): cls for cls in AnyPayload.__args__}


_event_decoder = msgspec.json.Decoder(Event)


def encode_event(event: Event) -> bytes:
    """The stored bytes of an event: its canonical JSON."""
    return canonical_json(event)


def decode_event(data: bytes) -> Event:
    """An event from its stored bytes; raises ``msgspec.ValidationError`` naming the field."""
    return _event_decoder.decode(data)
