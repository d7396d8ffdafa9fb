"""The UPM acceptance clauses, one table, and how each is judged from the log. Pure (SQL text + judging).

Every clause of every level of every phase of the spec (``docs/spec/upm-v2.md``) that UPM can
show in its log is a :class:`Clause`. A clause is judged from **exercises**: rows
``(tenant, change_id, event_id, ok)`` that a read-only SELECT over the projections returns, one per
occasion in the log that tested the clause (a change whose plan must be explicit, a grant that must
not come from the initiator, a rollback whose restored state must read back…), ``ok`` saying whether
that occasion passed. A KPI clause is judged from the KPI's fact rows: its figure inside the spec's
band for the level, on a sample of at least :data:`MIN_SAMPLE`.

* **held**: exercised, and every exercise passed;
* **not held**: at least one exercise failed (a refuted result — a rollback whose restored state did
  not read back — is a failure, never evidence); the failing change and event ids are the evidence;
* **not exercised**: nothing in the log tested it (or the KPI sample is too small to tell). Never
  held: one fact is not a capability, and the absence of a test is not a pass.

A phase's level is the highest level whose clauses, and every lower level's, are all held (the spec's
gating rule). :func:`judge` is pure; :data:`EXERCISES_QUERY` and :func:`kpi_sample_query` are the
only SQL it needs (both single SELECTs, so they run through ``upm sql``'s isolation as anyone).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec

from events.subjects import CHANGE_ID_RE
from projections import kpi

PHASES = ("Intent&Plan", "Pre-flight&Approvals", "Safe Exec", "Verify&Drift", "Audit&Rollback")
MIN_SAMPLE = 20
"""A KPI band is judged only on at least this many fact rows; below it the clause is not exercised."""
EVIDENCE_KEPT = 25
"""Exercises kept per clause in a judgement (failures first); the counts cover all of them."""

Status = Literal["held", "not held", "not exercised"]

# Shell metacharacters of the spec's meta-blocking example (`; && || \ $() < > >>` and backquotes),
# and the pipe allow-list.
META_RE = r"[;`<>\\]|&&|\|\||\$\("
SECRET_VALUE_RE = r"AKIA[0-9A-Z]{16}|(?i:bearer) [A-Za-z0-9._~+/-]{20,}|-----BEGIN [A-Z ]*PRIVATE KEY"
"""What a leaked secret value looks like in an event (an AWS key id, a bearer token, a private key)."""
SECRET_REFERENCE_RE = r"(^|[^A-Za-z0-9_])secret:[A-Za-z_]"
"""A secret reference in an intent: ``secret:NAME`` as a whole value (an SSM parameter's) or ``${secret:NAME}`` in file content."""
PIPE_ALLOWED_RE = r"\|\s*(jq|grep|wc|head|tail|cut|sort|uniq)(\s|$)"


@dataclass(frozen=True)
class Clause:
    """One acceptance clause: id, phase (index into :data:`PHASES`), level 1–4, what it says, and
    either ``sql`` (its exercises: ``tenant, change_id, event_id, ok``) or ``kpi`` (a band)."""

    id: str
    phase: int
    level: int
    text: str
    sql: str = ""
    kpi: str = ""

    @property
    def phase_name(self) -> str:
        return PHASES[self.phase]


def _ev(where: str, ok: str = "true", table: str = "events e") -> str:
    return f"SELECT e.tenant, e.change_id, e.id AS event_id, ({ok}) AS ok FROM {table} WHERE {where}"


def _later(change: str, types: str, after: str = "e.seq") -> str:
    """EXISTS an event of ``types`` (SQL list) in the change of ``change`` after ``after``."""
    return (f"EXISTS (SELECT 1 FROM events x WHERE x.tenant = {change}.tenant AND x.change_id = {change}.change_id "
            f"AND x.type IN ({types}) AND x.seq > {after})")


_INITIATOR = ("(SELECT i.payload->>'$.initiator' FROM events i WHERE i.tenant = e.tenant AND i.change_id = "
              "e.change_id AND i.type = 'intent.submitted' ORDER BY i.seq DESC LIMIT 1)")
_INTENT = ("(SELECT i.payload FROM events i WHERE i.tenant = e.tenant AND i.change_id = e.change_id "
           "AND i.type = 'intent.submitted' AND i.seq < e.seq ORDER BY i.seq DESC LIMIT 1)")
"""The intent a plan (or an approval) ``e`` answers: the change's latest before it."""
_STEPS = "json_array_length(e.payload->'$.plan.steps')"
_ROLLBACK_VERIFIED = (
    # the restored state read back and matched: a passing rollback-scope verification with a check,
    # after this run's end and before the next run's, and no failing one in between
    "EXISTS (SELECT 1 FROM events v WHERE v.tenant = e.tenant AND v.change_id = e.change_id "
    "AND v.type = 'verification.passed' AND v.payload->>'$.scope' = 'rollback' AND v.seq > e.seq "
    "AND json_array_length(v.payload->'$.checks') > 0 AND NOT EXISTS (SELECT 1 FROM events r WHERE "
    "r.tenant = e.tenant AND r.change_id = e.change_id AND r.type = 'rollback.started' AND r.seq > e.seq "
    "AND r.seq < v.seq)) AND NOT EXISTS (SELECT 1 FROM events v WHERE v.tenant = e.tenant "
    "AND v.change_id = e.change_id AND v.type = 'verification.failed' AND v.payload->>'$.scope' = 'rollback' "
    "AND v.seq > e.seq AND NOT EXISTS (SELECT 1 FROM events r WHERE r.tenant = e.tenant "
    "AND r.change_id = e.change_id AND r.type = 'rollback.started' AND r.seq > e.seq AND r.seq < v.seq))"
)
_UNDONE = (
    # the run undid something: a rollback step completed between its start and this end
    "EXISTS (SELECT 1 FROM events s WHERE s.tenant = e.tenant AND s.change_id = e.change_id "
    "AND s.type = 'rollback.step.completed' AND s.seq < e.seq AND s.seq > coalesce((SELECT max(r.seq) "
    "FROM events r WHERE r.tenant = e.tenant AND r.change_id = e.change_id AND r.type = 'rollback.started' "
    "AND r.seq < e.seq), 0))"
)
_EXECUTED_ROLLBACK = _ev("e.type = 'rollback.completed'", f"{_UNDONE} AND {_ROLLBACK_VERIFIED}")
"""Each rollback run that claimed success: it holds only if it undid steps and its restored state read
back and matched (a run that failed and said so is no claim; RollbackSuccess counts it)."""


_DRY_RUN = (
    "(SELECT count(*) FROM checks k WHERE k.seq = e.seq AND k.name = 'dry-run') > 0 AND (SELECT count(*) FROM "
    "checks k WHERE k.seq = e.seq AND k.name = 'dry-run') >= (SELECT count(DISTINCT s.step_id) FROM plan_steps s "
    "WHERE s.tenant = e.tenant AND s.change_id = e.change_id AND s.plan_hash = e.payload->>'$.plan_hash')"
)
"""A pre-flight ``e`` simulated every step of its plan (one dry-run check per step)."""


def _c(cid: str, phase: int, level: int, text: str, sql: str) -> Clause:
    return Clause(cid, phase, level, text, sql=sql)


def _k(phase: int, level: int, name: str) -> Clause:
    k = kpi.BY_NAME[name]
    band = k.l3 if level == 3 else k.l4
    return Clause(f"kpi.{name}.l{level}", phase, level, f"{k.column} {band} (L{level} band, n ≥ {MIN_SAMPLE})",
                  kpi=name)


CLAUSES: tuple[Clause, ...] = (
    # -- 1 Intent & Planning ------------------------------------------------------------------
    _c("plan.l1.compiled", 0, 1, "requests compile to plans with steps",
       _ev("e.type = 'plan.compiled'", f"{_STEPS} > 0")),
    _c("plan.l2.explicit", 0, 2, "every plan step has an explicit command and resource, in a stable order",
       "SELECT e.tenant, e.change_id, e.id AS event_id, count(s.step_id) > 0 AND bool_and(coalesce(s.command, '') "
       "<> '' AND coalesce(s.resource_key, '') <> '') AS ok FROM events e LEFT JOIN plan_steps s ON s.seq = e.seq "
       "WHERE e.type = 'plan.compiled' GROUP BY e.tenant, e.change_id, e.id"),
    _c("plan.l2.deterministic", 0, 2, "the same input compiles to the same plan hash in a fresh process "
       "(the determinism witness)",
       _ev("e.type = 'plan.recompiled'", "(e.payload->>'$.matches')::BOOLEAN AND coalesce(e.payload->>'$.error', '') = ''")),
    _c("plan.l2.idempotent", 0, 2, "idempotent steps: re-applying what is done is skipped on its guard read-back "
       "and the change succeeds",
       "SELECT e.tenant, e.change_id, min(e.id) AS event_id, bool_and(c.outcome = 'succeeded') AS ok FROM events e "
       "JOIN changes c ON c.tenant = e.tenant AND c.change_id = e.change_id WHERE e.type = 'step.skipped' "
       "GROUP BY e.tenant, e.change_id"),
    _c("plan.l3.annotated", 0, 3, "policy-annotated plans: who (initiator) and why (reason) on every plan",
       _ev("e.type = 'plan.compiled'", "coalesce(e.payload->>'$.plan.annotations.initiator', '') <> '' "
           "AND coalesce(e.payload->>'$.plan.annotations.reason', '') <> ''")),
    _c("plan.l3.window", 0, 3, "a requested change window is carried in the plan (when)",
       _ev(f"e.type = 'plan.compiled' AND coalesce({_INTENT}->>'$.window', '') <> ''",
           f"e.payload->>'$.plan.annotations.window' = {_INTENT}->>'$.window'")),
    _c("plan.l4.nl", 0, 4, "natural-language requests compile to plans (NL→plan)",
       _ev(f"e.type = 'plan.compiled' AND coalesce({_INTENT}->>'$.request', '') <> ''", f"{_STEPS} > 0")),
    _c("plan.l4.simulation", 0, 4, "simulation report: before anything runs, every step of a plan is simulated "
       "against the target's read-back state (its outcome: create, update with the diff, no-op, conflict)",
       _ev("e.type = 'preflight.passed'", _DRY_RUN)),
    _c("plan.l4.graph", 0, 4, "multi-resource plans export their dependency graph",
       _ev(f"e.type = 'plan.compiled' AND {_STEPS} > 1",
           f"json_array_length(e.payload->'$.plan.graph.nodes') = {_STEPS}")),
    _c("plan.l4.variants", 0, 4, "canary / blue-green variants compile to plans in several waves",
       "SELECT e.tenant, e.change_id, e.id AS event_id, count(DISTINCT s.wave) > 1 AS ok FROM events e "
       "JOIN plan_steps s ON s.seq = e.seq WHERE e.type = 'plan.compiled' "
       "AND e.payload->>'$.plan.variant' IN ('canary', 'blue-green') GROUP BY e.tenant, e.change_id, e.id"),
    _k(0, 3, "plan_determinism_pct"), _k(0, 4, "plan_determinism_pct"),
    _k(0, 3, "plan_compile_p95_ms"), _k(0, 4, "plan_compile_p95_ms"),
    # -- 2 Pre-flight & Approvals -------------------------------------------------------------
    _c("preflight.l1.result", 1, 1, "every compiled plan gets a pre-flight result",
       _ev("e.type = 'plan.compiled' AND NOT " + _later("e", "'plan.compiled', 'intent.submitted'"),
           _later("e", "'preflight.passed', 'preflight.failed'"))),
    _c("preflight.l2.gates_execution", 1, 2, "nothing executes without a passed pre-flight of that plan",
       _ev("e.type = 'execution.started'",
           "EXISTS (SELECT 1 FROM events p WHERE p.tenant = e.tenant AND p.change_id = e.change_id "
           "AND p.type = 'preflight.passed' AND p.seq < e.seq "
           "AND p.payload->>'$.plan_hash' = e.payload->>'$.plan_hash')")),
    _c("preflight.l2.dry_run", 1, 2, "dry run: pre-flight reads back what every step acts on before mutation",
       _ev("e.type = 'preflight.passed'", _DRY_RUN)),
    _c("preflight.l2.missing_prereq", 1, 2, "a missing prerequisite halts the change in pre-flight with an "
       "actionable message",
       _ev("e.type = 'preflight.failed' AND EXISTS (SELECT 1 FROM checks k WHERE k.seq = e.seq AND NOT k.ok)",
           "json_array_length(e.payload->'$.reasons') > 0 AND NOT " + _later("e", "'execution.started'"))),
    _c("preflight.l3.policy", 1, 3, "a policy violation is listed and halts the change",
       "SELECT p.tenant, p.change_id, e.id AS event_id, p.violations > 0 AND NOT " + _later("p", "'execution.started'",
                                                                                          "p.seq")
       + " AS ok FROM policy_decisions p JOIN events e ON e.seq = p.seq WHERE NOT p.allowed"),
    _c("preflight.l3.two_person", 1, 3, "a change asking for two approvers runs only after two distinct people "
       "approved its plan",
       _ev("e.type = 'approval.requested' AND (e.payload->>'$.required')::INT >= 2 AND "
           + _later("e", "'execution.started'"),
           "(SELECT count(DISTINCT g.payload->>'$.approver') FROM events g WHERE g.tenant = e.tenant "
           "AND g.change_id = e.change_id AND g.type = 'approval.granted' AND g.payload->>'$.by_policy' IS NULL "
           "AND g.payload->>'$.plan_hash' = e.payload->>'$.plan_hash') >= (e.payload->>'$.required')::INT")),
    _c("preflight.l3.sod", 1, 3, "separation of duties: nobody approves their own change",
       _ev("e.type = 'approval.granted' AND e.payload->>'$.by_policy' IS NULL",
           f"e.payload->>'$.approver' IS DISTINCT FROM {_INITIATOR}")),
    _c("preflight.l3.windows", 1, 3, "maintenance windows enforced: a change outside its window waits (or is "
       "refused) and never starts before the window opens",
       _ev("e.type = 'change.scheduled'",
           "NOT EXISTS (SELECT 1 FROM events x WHERE x.tenant = e.tenant AND x.change_id = e.change_id "
           "AND x.type = 'execution.started' AND x.seq > e.seq "
           "AND x.at_utc < CAST(e.payload->>'$.release_at' AS TIMESTAMPTZ)::TIMESTAMP)")),
    _k(1, 3, "approval_coverage_pct"), _k(1, 3, "policy_pass_pct"),
    _c("preflight.l4.auto_lane", 1, 4, "auto-approval only within guard-rails: a low-risk change outside prod",
       _ev("e.type = 'change.approved' AND e.payload->>'$.lane' = 'auto'",
           f"coalesce({_INTENT}->>'$.environment', 'dev') <> 'prod' AND "
           "(SELECT p.payload->>'$.risk.level' FROM events p WHERE p.tenant = e.tenant AND p.change_id = e.change_id "
           "AND p.type = 'preflight.passed' AND p.seq < e.seq ORDER BY p.seq DESC LIMIT 1) = 'low'")),
    _c("preflight.l4.risk", 1, 4, "every change pre-flight lets through carries a risk score",
       _ev("e.type = 'preflight.passed'", "json_type(e.payload, '$.risk') = 'OBJECT'")),
    _c("preflight.l4.budget", 1, 4, "budget scoring: a plan's cost estimate is scored against the tenant's budget",
       _ev("e.type IN ('preflight.passed', 'preflight.failed') AND EXISTS (SELECT 1 FROM "
           "(SELECT unnest(from_json(e.payload->'$.risk.factors', '[\"JSON\"]')) AS f) WHERE f->>'$.name' = 'budget')",
           "(e.payload->>'$.risk.score')::DOUBLE > 0")),
    _c("preflight.l4.slo", 1, 4, "pre-flight SLO: a pre-flight slower than its target is recorded as a breach",
       _ev("e.type = 'slo.breached' AND e.payload->>'$.phase' = 'preflight'",
           "(e.payload->>'$.value_ms')::DOUBLE > (e.payload->>'$.target_ms')::DOUBLE")),
    _k(1, 4, "approval_coverage_pct"), _k(1, 4, "policy_pass_pct"),
    # -- 3 Safe Execution ---------------------------------------------------------------------
    _c("exec.l1.executed", 2, 1, "approved plans execute and end (completed, failed or cancelled)",
       _ev("e.type = 'execution.started'",
           _later("e", "'execution.completed', 'execution.failed', 'execution.cancelled'"))),
    _c("exec.l2.step_logs", 2, 2, "every step records its exit code and bounded output",
       _ev("e.type IN ('step.completed', 'step.failed', 'rollback.step.completed', 'rollback.step.failed')",
           "e.payload->>'$.output.rc' IS NOT NULL")),
    _c("exec.l2.meta_blocking", 2, 2, "meta blocking: a request with shell metacharacters is refused with a clear "
       "error and nothing runs",
       _ev(f"e.type = 'intent.submitted' AND regexp_matches(coalesce(e.payload->>'$.request', ''), '{META_RE}')",
           "NOT " + _later("e", "'step.started'") + " AND EXISTS (SELECT 1 FROM events r WHERE r.tenant = e.tenant "
           "AND r.change_id = e.change_id AND r.type IN ('plan.rejected', 'preflight.failed') "
           "AND coalesce(r.payload->>'$.reason', r.payload->>'$.reasons[0]', '') <> '')")),
    _c("exec.l2.pipe_allowlist", 2, 2, "pipe allow-list: a request piping to a program outside "
       "jq|grep|wc|head|tail|cut|sort|uniq is refused and nothing runs",
       _ev("e.type = 'intent.submitted' AND contains(coalesce(e.payload->>'$.request', ''), '|') "
           "AND NOT contains(coalesce(e.payload->>'$.request', ''), '||') "
           f"AND NOT regexp_matches(coalesce(e.payload->>'$.request', ''), '{PIPE_ALLOWED_RE}')",
           "NOT " + _later("e", "'step.started'") + " AND " + _later("e", "'plan.rejected', 'preflight.failed'"))),
    _c("exec.l2.retries", 2, 2, "timeouts and retries: a transient failure is retried after a backoff",
       _ev("e.type = 'step.retried'", "(e.payload->>'$.attempt.n')::INT >= 1")),
    _c("exec.l2.tls_fallback", 2, 2, "TLS fallback: a certificate error is retried once without verification, "
       "and logged",
       _ev("e.type = 'tls.fallback'", "coalesce(e.payload->>'$.error', '') <> ''")),
    _c("exec.l3.waves", 2, 3, "progressive rollout: a wave's change promotes to the next wave only when healthy",
       _ev("e.type = 'wave.completed'",
           "(e.payload->>'$.healthy')::BOOLEAN OR NOT " + _later("e", "'wave.started'"))),
    _c("exec.l3.ephemeral_creds", 2, 3, "ephemeral credentials: issued per change with an expiry, never the value",
       _ev("e.type = 'credentials.issued'", "coalesce(e.payload->>'$.expires_at', '') <> '' "
           "AND coalesce(e.payload->>'$.ref', '') <> ''")),
    _c("exec.l3.blast_radius", 2, 3, "blast-radius limit: a change over the limit is refused before any step",
       _ev("e.type = 'execution.failed' AND e.payload->>'$.rule' = 'blast-radius'",
           "NOT EXISTS (SELECT 1 FROM events s WHERE s.tenant = e.tenant AND s.change_id = e.change_id "
           "AND s.type = 'step.started' AND s.seq < e.seq)")),
    _c("exec.l3.masked_secrets", 2, 3, "masked secret egress: a change using a secret reference runs, and no "
       "secret value appears in any of its events",
       _ev("e.type = 'intent.submitted' AND regexp_matches(coalesce(e.payload->>'$.request', '') || ' ' || "
           f"coalesce(CAST(e.payload->'$.spec' AS VARCHAR), ''), '{SECRET_REFERENCE_RE}')",
           "EXISTS (SELECT 1 FROM events x WHERE x.tenant = e.tenant AND x.change_id = e.change_id "
           "AND x.type = 'execution.completed') AND NOT EXISTS (SELECT 1 FROM events x WHERE x.tenant = e.tenant "
           f"AND x.change_id = e.change_id AND regexp_matches(CAST(x.payload AS VARCHAR), '{SECRET_VALUE_RE}'))")),
    _k(2, 3, "change_success_pct"),
    _c("exec.l4.health_gates", 2, 4, "health-gated progression: every wave is gated on its health checks",
       _ev("e.type = 'wave.completed'", "json_array_length(e.payload->'$.checks') > 0")),
    _c("exec.l4.self_pause", 2, 4, "self-pause on an anomaly, naming it",
       _ev("e.type = 'execution.paused' AND e.actor = 'executor'",
           "coalesce(e.payload->>'$.anomaly', e.payload->>'$.reason', '') <> ''")),
    _k(2, 4, "change_success_pct"),
    # -- 4 Verification & Drift ---------------------------------------------------------------
    _c("verify.l1.verified", 3, 1, "completed executions are verified",
       _ev("e.type = 'execution.completed'", _later("e", "'verification.passed', 'verification.failed'"))),
    _c("verify.l2.readbacks", 3, 2, "verifications read back the resources (checks per resource)",
       _ev("e.type IN ('verification.passed', 'verification.failed')",
           "json_array_length(e.payload->'$.checks') > 0")),
    _c("verify.l2.unknown", 3, 2, "a target that cannot be read is unknown, not absent: a verification check "
       "fails naming why and claims no diff; the drift loop counts it unknown, not drifted",
       "SELECT e.tenant, e.change_id, e.id AS event_id, NOT EXISTS (SELECT 1 FROM (SELECT unnest(from_json("
       "e.payload->'$.diff', '[\"JSON\"]')) AS d) WHERE d->>'$.resource' = k.target) AS ok FROM events e "
       "JOIN checks k ON k.seq = e.seq WHERE e.type IN ('verification.passed', 'verification.failed') "
       "AND NOT k.ok AND k.detail LIKE 'could not read back %' UNION ALL "
       + _ev("e.type = 'drift.scanned' AND (e.payload->>'$.unknown')::INT > 0",
             "(e.payload->>'$.drifted')::INT <= (e.payload->>'$.managed')::INT")),
    _c("verify.l2.baseline_follows_log", 3, 2, "the drift baseline follows the log: a resource a rollback "
       "removed is never reported as drift",
       _ev("e.type = 'rollback.completed' AND " + _UNDONE,
           "NOT EXISTS (SELECT 1 FROM drift d JOIN plan_steps s ON s.tenant = e.tenant AND s.change_id = e.change_id "
           "AND s.action = 'create' AND s.resource_key = d.resource WHERE d.tenant = e.tenant AND d.kind = 'detected' "
           "AND d.seq > e.seq)")),
    _c("verify.l3.baseline", 3, 3, "baseline diffs: every verification records baseline and current state hashes",
       _ev("e.type IN ('verification.passed', 'verification.failed')",
           "coalesce(e.payload->>'$.baseline_hash', '') <> '' AND coalesce(e.payload->>'$.current_hash', '') <> ''")),
    _c("verify.l3.rollback_plan", 3, 3, "a failed execution or verification opens a rollback plan",
       _ev("(e.type = 'execution.failed' AND coalesce(e.payload->>'$.step_id', '') <> '') OR "
           "(e.type = 'verification.failed' AND e.payload->>'$.scope' = 'change')",
           _later("e", "'rollback.planned'"))),
    _c("verify.l3.drift_alarm", 3, 3, "drift monitors: drift on a managed resource raises an alarm with its diff",
       _ev("e.type = 'drift.detected'", "json_array_length(e.payload->'$.diff') > 0")),
    _k(3, 3, "drift_coverage_pct"), _k(3, 3, "verification_p95_ms"),
    _c("verify.l4.reconcile", 3, 4, "continuous drift reconciliation: reconciled drift is resolved",
       _ev("e.type = 'drift.detected' AND e.payload->>'$.action' = 'reconcile'",
           "EXISTS (SELECT 1 FROM events r WHERE r.tenant = e.tenant AND r.type = 'drift.resolved' AND r.seq > e.seq "
           "AND r.payload->>'$.resource' = e.payload->>'$.resource')")),
    _c("verify.l4.auto_rollback", 3, 4, "auto-rollback on failure: run, and its restored state read back",
       "SELECT e.tenant, e.change_id, e.id AS event_id, ok FROM (" + _EXECUTED_ROLLBACK + ") q JOIN events e "
       "ON e.id = q.event_id WHERE EXISTS (SELECT 1 FROM events a WHERE a.tenant = e.tenant "
       "AND a.change_id = e.change_id AND a.type = 'rollback.approved' AND a.payload->>'$.lane' = 'auto' "
       "AND a.seq < e.seq)"),
    _c("verify.l4.slo", 3, 4, "post-change SLO checks: a verification slower than its target is recorded",
       _ev("e.type = 'slo.breached' AND e.payload->>'$.phase' = 'verify'",
           "(e.payload->>'$.value_ms')::DOUBLE > (e.payload->>'$.target_ms')::DOUBLE")),
    _k(3, 4, "drift_coverage_pct"), _k(3, 4, "verification_p95_ms"),
    # -- 5 Audit, Governance & Rollback -------------------------------------------------------
    _c("audit.l1.closed", 4, 1, "every change ends in a recorded outcome", _ev("e.type = 'change.closed'")),
    _c("audit.l2.attribution", 4, 2, "every intent is attributed to its initiator",
       _ev("e.type = 'intent.submitted'", "coalesce(e.payload->>'$.initiator', '') <> ''")),
    _c("audit.l3.chain", 4, 3, "immutable audit: every change closes over a verified hash chain",
       _ev("e.type = 'change.closed'", "coalesce(e.payload->>'$.chain_head', '') <> '' AND NOT EXISTS "
           "(SELECT 1 FROM events b WHERE b.tenant = e.tenant AND b.change_id = e.change_id AND b.type = 'chain.broken')")),
    _c("audit.l3.evidence_pack", 4, 3, "every closed change gets a published evidence pack",
       _ev("e.type = 'change.closed'", _later("e", "'evidence.published'"))),
    _c("audit.l3.rollback_plan", 4, 3, "documented rollback plan: the rollback plan of a change that ran steps "
       "lists their inverse commands",
       _ev("e.type = 'rollback.planned' AND EXISTS (SELECT 1 FROM events s WHERE s.tenant = e.tenant "
           "AND s.change_id = e.change_id AND s.type = 'step.completed' AND s.seq < e.seq)",
           "json_array_length(e.payload->'$.commands') > 0")),
    _k(4, 3, "rollback_success_pct"), _k(4, 3, "mttr_failed_change_min"), _k(4, 3, "evidence_completeness_pct"),
    _c("audit.l4.executed_rollback", 4, 4, "executed rollback recorded with evidence: it undid steps and its "
       "restored state read back and matched", _EXECUTED_ROLLBACK),
    _c("audit.l4.signed_heads", 4, 4, "signed log heads over every event",
       _ev("e.type = 'log.head'", "coalesce(e.payload->>'$.signature', '') <> ''")),
    _c("audit.l4.permalinks", 4, 4, "exportable evidence packs with permalinks",
       _ev("e.type = 'evidence.published'", "coalesce(e.payload->>'$.permalink', '') <> '' "
           "AND coalesce(e.payload->>'$.manifest_sha256', '') <> ''")),
    _k(4, 4, "rollback_success_pct"), _k(4, 4, "mttr_failed_change_min"), _k(4, 4, "evidence_completeness_pct"),
)
BY_ID = {c.id: c for c in CLAUSES}

# The evidence gates (the spec's caps), each judged like a clause.
GATES: tuple[tuple[Clause, int, str], ...] = (
    (_c("gate.exportable_trail", 4, 2, "plan diff + approval trail + execution logs exportable",
        _ev("e.type = 'evidence.published' AND EXISTS (SELECT 1 FROM events x WHERE x.tenant = e.tenant "
            "AND x.change_id = e.change_id AND x.type = 'execution.started')",
            "EXISTS (SELECT 1 FROM events x WHERE x.tenant = e.tenant AND x.change_id = e.change_id "
            "AND x.type = 'plan.compiled') AND EXISTS (SELECT 1 FROM events x WHERE x.tenant = e.tenant "
            "AND x.change_id = e.change_id AND x.type = 'change.approved') AND EXISTS (SELECT 1 FROM events x "
            "WHERE x.tenant = e.tenant AND x.change_id = e.change_id AND x.type IN ('step.completed', "
            "'step.failed', 'execution.failed', 'execution.completed'))")), 2,
     "no published evidence pack holds a plan, its approval and its execution log"),
    (_c("gate.rollback_evidence", 4, 3, "rollback evidence: an executed rollback whose restored state read back",
        _EXECUTED_ROLLBACK), 3,
     "no executed rollback undid steps and had its restored state read back and matched"),
)


def _union(clauses: Iterable[Clause]) -> str:
    parts = [f"SELECT '{c.id}' AS clause, q.tenant, q.change_id, q.event_id, coalesce(q.ok, false) AS ok "
             f"FROM ({c.sql}) q" for c in clauses if c.sql]
    return "\nUNION ALL\n".join(parts)


EXERCISES_QUERY = (
    "SELECT clause, count(*) AS n, count(*) FILTER (WHERE NOT ok) AS failed, "
    "string_agg(tenant || ' ' || change_id || ' ' || event_id || ' ' || CASE WHEN ok THEN 'ok' ELSE 'FAILED' END, "
    f"chr(10) ORDER BY ok, change_id, event_id) FILTER (WHERE shown <= {EVIDENCE_KEPT}) AS evidence FROM ("
    "SELECT *, row_number() OVER (PARTITION BY clause ORDER BY ok, change_id, event_id) AS shown FROM (\n"
    + _union([*CLAUSES, *(g for g, _, _ in GATES)]) + "\n)) GROUP BY clause"
)
"""One row per exercised clause: how many exercises, how many failed, and the first :data:`EVIDENCE_KEPT`
of them (failures first): every exercise of a 10,000-change log would not fit in one bus message."""

EXCLUDABLE = frozenset({"change_success_pct", "policy_pass_pct", "rollback_success_pct"})
"""KPIs whose rows name a change, so a conformance run can leave out the changes it makes fail on purpose."""

Excluded = Mapping[str, Sequence[str]]
"""KPI name → change ids left out of its sample (only :data:`EXCLUDABLE` KPIs)."""


def kpi_sample_query(period: kpi.Range = kpi.EVER, excluded: Excluded | None = None) -> str:
    """One row: for every KPI, ``<name>`` (its figure) and ``<name>__n`` (its sample), with the changes
    ``excluded`` names for it (a conformance set's injected faults) left out."""
    where = period.where()
    cols = []
    for k in kpi.KPIS:
        ids = list((excluded or {}).get(k.name, ())) if k.name in EXCLUDABLE else []
        bad = [i for i in ids if not CHANGE_ID_RE.match(i)]
        if bad:
            raise ValueError(f"not change ids: {', '.join(repr(b[:40]) for b in bad[:3])}")
        cond = where + (" AND change_id NOT IN (" + ", ".join(f"'{i}'" for i in ids) + ")" if ids else "")
        cols.append(f"(SELECT {kpi.AGGREGATES[k.aggregate]} FROM {k.view} WHERE {cond}) AS {k.name}")
        cols.append(f"(SELECT count(*) FROM {k.view} WHERE {cond}) AS {k.name}__n")
    return "SELECT\n  " + ",\n  ".join(cols)


class Exercise(msgspec.Struct, frozen=True, kw_only=True):
    """One occasion in the log that tested a clause."""

    tenant: str
    change_id: str
    event_id: str
    ok: bool


class Judgement(msgspec.Struct, frozen=True, kw_only=True):
    """A clause judged: held / not held / not exercised, how many exercises, and the evidence."""

    id: str
    phase: str
    level: int
    text: str
    status: Status
    exercises: int
    failed: int
    evidence: list[Exercise]
    note: str = ""


class Sample(msgspec.Struct, frozen=True, kw_only=True):
    """A KPI's figure and how many fact rows it stands on."""

    value: float | None
    n: int


def parse_evidence(text: str | None) -> list[Exercise]:
    """The ``evidence`` column of :data:`EXERCISES_QUERY`."""
    out = []
    for line in (text or "").splitlines():
        tenant, change_id, event_id, verdict = line.split(" ")
        out.append(Exercise(tenant=tenant, change_id=change_id, event_id=event_id, ok=verdict == "ok"))
    return out


def samples_from(record: Mapping[str, object]) -> dict[str, Sample]:
    """The KPI samples from the one row of :func:`kpi_sample_query`."""
    out = {}
    for k in kpi.KPIS:
        raw = record.get(k.name)
        value = None if raw is None else round(float(str(raw)), 3)
        out[k.name] = Sample(value=value, n=int(str(record.get(f"{k.name}__n") or 0)))
    return out


def _judge_kpi(c: Clause, sample: Sample | None) -> Judgement:
    k = kpi.BY_NAME[c.kpi]
    band = k.l3 if c.level == 3 else k.l4
    if sample is None or sample.value is None or sample.n < MIN_SAMPLE:
        n = 0 if sample is None else sample.n
        return Judgement(id=c.id, phase=c.phase_name, level=c.level, text=c.text, status="not exercised",
                         exercises=n, failed=0, evidence=[],
                         note=f"{n} fact rows; a band is judged on at least {MIN_SAMPLE}")
    met = band.met(sample.value)
    return Judgement(id=c.id, phase=c.phase_name, level=c.level, text=c.text,
                     status="held" if met else "not held", exercises=sample.n, failed=0 if met else 1, evidence=[],
                     note=f"{k.column} = {sample.value:g} over {sample.n} ({k.formula})")


def judge_one(c: Clause, counts: Mapping[str, tuple[int, int, list[Exercise]]],
              samples: Mapping[str, Sample]) -> Judgement:
    """One clause from the exercise counts (``clause → (n, failed, evidence)``) and KPI samples."""
    if c.kpi:
        return _judge_kpi(c, samples.get(c.kpi))
    n, failed, evidence = counts.get(c.id, (0, 0, []))
    status: Status = "not exercised" if n == 0 else "not held" if failed else "held"
    note = "" if n else "nothing in the log exercised it"
    return Judgement(id=c.id, phase=c.phase_name, level=c.level, text=c.text, status=status, exercises=n,
                     failed=failed, evidence=evidence[:EVIDENCE_KEPT], note=note)


def counts_from(rows: Iterable[Mapping[str, object]]) -> dict[str, tuple[int, int, list[Exercise]]]:
    """The rows of :data:`EXERCISES_QUERY` by clause id."""
    return {str(r["clause"]): (int(str(r["n"])), int(str(r["failed"])),
                               parse_evidence(None if r["evidence"] is None else str(r["evidence"])))
            for r in rows}


def judge(counts: Mapping[str, tuple[int, int, list[Exercise]]], samples: Mapping[str, Sample],
          clauses: Sequence[Clause] = CLAUSES) -> list[Judgement]:
    """Every clause of ``clauses`` judged."""
    return [judge_one(c, counts, samples) for c in clauses]


def phase_level(phase: str, judgements: Sequence[Judgement]) -> int:
    """The highest level whose clauses, and every lower level's, are all held (the gating rule)."""
    level = 0
    for candidate in range(1, 5):
        if all(j.status == "held" for j in judgements if j.phase == phase and j.level == candidate):
            level = candidate
        else:
            break
    return level
