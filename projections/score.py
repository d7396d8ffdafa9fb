"""`upm score`: the spec's comparison-template row for this stack, from evidence in the log.

Each phase has acceptance clauses per level (1–4); a clause is a fact found in the projected
log (a SQL predicate) or a KPI inside the spec's band for that level. A phase's level is the
highest level whose clauses, and every lower level's, all hold (the spec's gating rule). The
overall level is the lowest phase level, then capped by the evidence gates:

* plan diff + approval trail + execution logs not exportable (no published pack holding a
  compiled plan, an approval and step logs) → cap at L2;
* no rollback evidence (no rollback run that completed and whose restored state was then read back
  and matched: a passing rollback-scope verification; one never verified, or whose read-back failed
  or could not answer, is no evidence) → cap at L3.

For each phase the score names what keeps it from the next level. :func:`score` is pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import duckdb
import msgspec

from projections import kpi

Facts = Mapping[str, bool]
Kpis = Mapping[str, float | None]

FACTS: dict[str, str] = {
    "plans": "SELECT count(*) > 0 FROM plans",
    "explicit_commands": "SELECT count(*) > 0 FROM plan_steps WHERE coalesce(command, '') <> ''",
    "annotated_plans": "SELECT count(*) > 0 FROM events WHERE type = 'plan.compiled' "
    "AND coalesce(payload->>'$.plan.annotations.initiator', '') <> '' "
    "AND coalesce(payload->>'$.plan.annotations.reason', '') <> ''",
    "nl_plans": "SELECT count(*) > 0 FROM plans p JOIN intents i ON i.tenant = p.tenant AND i.change_id = p.change_id "
    "WHERE coalesce(i.request, '') <> ''",
    "simulation": "SELECT count(*) > 0 FROM events WHERE type = 'plan.compiled' "
    "AND json_type(payload, '$.simulation') = 'OBJECT'",
    "graph": "SELECT count(*) > 0 FROM events WHERE type = 'plan.compiled' "
    "AND json_array_length(payload->'$.plan.graph.nodes') > 0",
    "variants": "SELECT count(*) > 0 FROM plans WHERE coalesce(variant, 'all-at-once') <> 'all-at-once'",
    "preflight": "SELECT count(*) > 0 FROM changes WHERE preflight IS NOT NULL",
    "preflight_gates_execution": "SELECT count(*) = 0 FROM changes "
    "WHERE execution_started_at IS NOT NULL AND preflight IS DISTINCT FROM 'passed'",
    "policy": "SELECT count(*) > 0 FROM policy_decisions",
    "approvals": "SELECT count(*) > 0 FROM approvals WHERE kind IN ('approval.granted', 'change.approved')",
    "two_person": "SELECT count(*) > 0 FROM (SELECT 1 FROM approvals WHERE kind = 'approval.granted' "
    "GROUP BY tenant, change_id, plan_hash HAVING count(DISTINCT approver) >= 2)",
    "auto_lane": "SELECT count(*) > 0 FROM approvals WHERE kind = 'change.approved' AND lane = 'auto'",
    "risk_scored": "SELECT count(*) > 0 FROM policy_decisions WHERE risk_score IS NOT NULL",
    "executions": "SELECT count(*) > 0 FROM executions WHERE kind = 'started'",
    "step_logs": "SELECT count(*) > 0 FROM steps WHERE status IN ('completed', 'failed') AND rc IS NOT NULL",
    "waves": "SELECT count(*) > 0 FROM events WHERE type = 'wave.started'",
    "ephemeral_creds": "SELECT count(*) > 0 FROM events WHERE type = 'credentials.issued'",
    "health_gates": "SELECT count(*) > 0 FROM events WHERE type = 'wave.completed'",
    "self_pause": "SELECT count(*) > 0 FROM executions WHERE kind = 'paused'",
    "verifications": "SELECT count(*) > 0 FROM verifications",
    "readbacks": "SELECT count(*) > 0 FROM checks WHERE kind LIKE 'verification.%'",
    "baselines": "SELECT count(*) > 0 FROM verifications WHERE baseline_hash IS NOT NULL AND current_hash IS NOT NULL",
    "rollback_plans": "SELECT count(*) > 0 FROM rollbacks WHERE kind = 'planned'",
    "drift_reconciled": "SELECT count(*) > 0 FROM drift WHERE action = 'reconcile' OR kind = 'resolved'",
    "auto_rollback": "SELECT count(*) > 0 FROM rollbacks WHERE kind = 'approved' AND lane = 'auto'",
    "audit_log": "SELECT count(*) > 0 FROM events",
    "chains_closed": "SELECT count(*) > 0 FROM changes WHERE chain_head IS NOT NULL",
    "chain_intact": "SELECT count(*) = 0 FROM events WHERE type = 'chain.broken'",
    "signed_heads": "SELECT count(*) > 0 FROM log_heads",
    "evidence_packs": "SELECT count(*) > 0 FROM evidence",
    "exportable_trail": "SELECT count(*) > 0 FROM evidence e JOIN changes c ON c.tenant = e.tenant "
    "AND c.change_id = e.change_id WHERE c.plan_hash IS NOT NULL "
    "AND EXISTS (SELECT 1 FROM approvals a WHERE a.tenant = e.tenant AND a.change_id = e.change_id) "
    "AND EXISTS (SELECT 1 FROM steps s WHERE s.tenant = e.tenant AND s.change_id = e.change_id)",
    "rollback_evidence": "SELECT count(*) > 0 FROM kpi_rollback_success WHERE value = 1.0",
}

PHASES = ("Intent&Plan", "Pre-flight&Approvals", "Safe Exec", "Verify&Drift", "Audit&Rollback")


@dataclass(frozen=True)
class Clause:
    """One acceptance clause: which phase and level it belongs to, what it says, how it is checked."""

    phase: str
    level: int
    text: str
    holds: Callable[[Facts, Kpis], bool]


def fact(name: str) -> Callable[[Facts, Kpis], bool]:
    return lambda f, _: bool(f.get(name))


def band(name: str, level: int) -> Callable[[Facts, Kpis], bool]:
    k = kpi.BY_NAME[name]
    target = k.l3 if level == 3 else k.l4

    def holds(_: Facts, kpis: Kpis) -> bool:
        value = kpis.get(name)
        return value is not None and target.met(value)

    return holds


def _band_text(name: str, level: int) -> str:
    k = kpi.BY_NAME[name]
    return f"{k.column} {k.l3 if level == 3 else k.l4} (L{level} band)"


def _c(phase: int, level: int, text: str, holds: Callable[[Facts, Kpis], bool]) -> Clause:
    return Clause(PHASES[phase], level, text, holds)


def _k(phase: int, level: int, name: str) -> Clause:
    return Clause(PHASES[phase], level, _band_text(name, level), band(name, level))


def _f(phase: int, level: int, name: str, text: str) -> Clause:
    return Clause(PHASES[phase], level, text, fact(name))


CLAUSES: tuple[Clause, ...] = (
    _f(0, 1, "plans", "a compiled plan"),
    _f(0, 2, "explicit_commands", "plans hold explicit, ordered commands"),
    _c(0, 2, "reproducible plans: plan determinism measured at ≥ 95%", band("plan_determinism_pct", 3)),
    _f(0, 3, "annotated_plans", "policy-annotated plans (who / why)"),
    _f(0, 4, "nl_plans", "a natural-language intent compiled to a plan"),
    _f(0, 4, "simulation", "a simulation report with a plan"),
    _f(0, 4, "graph", "a dependency graph with a plan"),
    _f(0, 4, "variants", "a canary / blue-green / waves plan variant"),
    _k(0, 4, "plan_determinism_pct"),
    _f(1, 1, "preflight", "a pre-flight result"),
    _f(1, 2, "preflight_gates_execution", "no change executed without a passed pre-flight"),
    _f(1, 3, "policy", "policy-pack decisions"),
    _f(1, 3, "approvals", "an approval trail"),
    _f(1, 3, "two_person", "a two-person approval"),
    _k(1, 3, "approval_coverage_pct"),
    _k(1, 3, "policy_pass_pct"),
    _f(1, 4, "auto_lane", "auto-approval within guard-rails (low-risk lane)"),
    _f(1, 4, "risk_scored", "risk scoring of plans"),
    _k(1, 4, "approval_coverage_pct"),
    _k(1, 4, "policy_pass_pct"),
    _f(2, 1, "executions", "an executed change"),
    _f(2, 2, "step_logs", "per-step results (exit code, bounded, redacted output)"),
    _f(2, 3, "waves", "a progressive rollout (waves)"),
    _f(2, 3, "ephemeral_creds", "ephemeral credentials issued per change"),
    _k(2, 3, "change_success_pct"),
    _f(2, 4, "health_gates", "health-gated wave progression"),
    _f(2, 4, "self_pause", "a self-pause on an anomaly"),
    _k(2, 4, "change_success_pct"),
    _f(3, 1, "verifications", "a verification"),
    _f(3, 2, "readbacks", "read-back checks of resources"),
    _f(3, 3, "baselines", "baseline / current state hashes"),
    _f(3, 3, "rollback_plans", "an automatically opened rollback plan"),
    _k(3, 3, "drift_coverage_pct"),
    _k(3, 3, "verification_p95_ms"),
    _f(3, 4, "drift_reconciled", "drift reconciled (not only alarmed)"),
    _f(3, 4, "auto_rollback", "an automatic rollback on failure"),
    _k(3, 4, "drift_coverage_pct"),
    _k(3, 4, "verification_p95_ms"),
    _f(4, 1, "audit_log", "an event log"),
    _f(4, 2, "step_logs", "run logs with redaction"),
    _f(4, 3, "chains_closed", "changes closed over a verified hash chain"),
    _f(4, 3, "chain_intact", "no broken hash chain"),
    _f(4, 3, "evidence_packs", "evidence packs"),
    _f(4, 3, "rollback_plans", "a documented rollback plan"),
    _k(4, 3, "evidence_completeness_pct"),
    _f(4, 4, "signed_heads", "signed log heads over every event"),
    _f(4, 4, "rollback_evidence", "an executed rollback recorded with evidence"),
    _k(4, 4, "rollback_success_pct"),
    _k(4, 4, "mttr_failed_change_min"),
    _k(4, 4, "evidence_completeness_pct"),
)


class Gate(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    cap: int
    met: bool
    reason: str


class PhaseScore(msgspec.Struct, frozen=True, kw_only=True):
    phase: str
    level: int
    next_level_missing: list[str]


class Score(msgspec.Struct, frozen=True, kw_only=True):
    """The comparison-template row (``row``) and how it was reached."""

    row: dict[str, object]
    phases: list[PhaseScore]
    gates: list[Gate]
    overall: int
    uncapped: int
    kpis: dict[str, float | None]
    evidence_links: list[str]


def phase_level(phase: str, facts: Facts, kpis: Kpis) -> PhaseScore:
    """The highest level whose clauses (and every lower level's) hold, and what the next one lacks."""
    level = 0
    for candidate in range(1, 5):
        if all(c.holds(facts, kpis) for c in CLAUSES if c.phase == phase and c.level == candidate):
            level = candidate
        else:
            break
    missing = [c.text for c in CLAUSES if c.phase == phase and c.level == level + 1 and not c.holds(facts, kpis)]
    return PhaseScore(phase=phase, level=level, next_level_missing=missing)


def gates(facts: Facts) -> list[Gate]:
    return [
        Gate(name="plan diff + approval trail + execution logs exportable", cap=2,
             met=bool(facts.get("exportable_trail")),
             reason="no published evidence pack holds a plan, its approval trail and its execution log"),
        Gate(name="rollback evidence", cap=3, met=bool(facts.get("rollback_evidence")),
             reason="no executed rollback completed and had its restored state read back and matched "
                    "(a passing rollback-scope verification)"),
    ]


def score(facts: Facts, kpis: Kpis, links: list[str], platform: str = "UPM (this stack)") -> Score:
    """The pure scoring of ``facts`` and ``kpis`` (see the module docstring)."""
    phases = [phase_level(p, facts, kpis) for p in PHASES]
    uncapped = min(p.level for p in phases)
    gate_list = gates(facts)
    overall = min([uncapped, *(g.cap for g in gate_list if not g.met)])
    for i, p in enumerate(phases):
        if p.level >= overall and p.level < 4:
            held = [f"evidence gate: {g.name} (caps at L{g.cap})" for g in gate_list if not g.met and g.cap <= p.level]
            phases[i] = PhaseScore(phase=p.phase, level=p.level, next_level_missing=[*p.next_level_missing, *held])
    row: dict[str, object] = {"Platform": platform}
    row |= {f"{p.phase} (0–4)": p.level for p in phases}
    row["Overall UPM (0–4)"] = overall
    row |= {k.column: kpis.get(k.name) for k in kpi.KPIS}
    row["Evidence Links"] = links
    return Score(row=row, phases=phases, gates=gate_list, overall=overall, uncapped=uncapped, kpis=dict(kpis),
                 evidence_links=links)


FACTS_QUERY = "SELECT\n  " + ",\n  ".join(f"({sql}) AS {name}" for name, sql in FACTS.items())
LINKS_QUERY = (
    "SELECT DISTINCT ON (change_id) permalink FROM evidence WHERE permalink IS NOT NULL "
    "ORDER BY change_id, seq DESC LIMIT 20"
)


def facts_from(columns: list[str], row: list[object]) -> dict[str, bool]:
    """The facts from the one row of :data:`FACTS_QUERY`."""
    return {name: bool(value) for name, value in zip(columns, row, strict=True)}


def compute(con: duckdb.DuckDBPyConnection, period: kpi.Range = kpi.EVER) -> Score:
    """Score the projected log in ``con`` (trusted, server-side)."""
    cur = con.cursor()
    try:
        cur.execute(FACTS_QUERY)
        columns = [d[0] for d in cur.description or []]
        row = cur.fetchone()
        links = sorted(str(r[0]) for r in cur.execute(LINKS_QUERY).fetchall())
    finally:
        cur.close()
    assert row is not None
    return score(facts_from(columns, list(row)), kpi.compute(con, period), links)
