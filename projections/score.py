"""`upm score`: the spec's comparison-template row for this stack, judged clause by clause from the log.

The clauses are :mod:`projections.clauses` (the one table the conformance run uses too). Each is
held, not held, or **not exercised** (nothing in the log tested it, or a KPI's sample is too small):
a clause nobody exercised is never counted as held, so one occurrence of a fact is not a capability.
A phase's level is the highest level whose clauses, and every lower level's, all hold (the spec's
gating rule). The overall level is the lowest phase level, then capped by the evidence gates:

* plan diff + approval trail + execution logs not exportable (no published pack of an executed change
  holding its plan, its approval and its step logs) → cap at L2;
* no rollback evidence (no rollback run that undid steps and whose restored state was then read back
  and matched; one never verified, whose read-back failed or could not answer, or that undid
  nothing, is no evidence) → cap at L3.

For each phase the score names the clauses that keep it from the next level, and it lists every
clause it could not judge. :func:`score` is pure; ``excluded`` (a conformance run's deliberately
failing changes) is left out of the KPIs that name changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import duckdb
import msgspec

from projections import clauses, kpi
from projections.clauses import PHASES, Judgement, Sample


class Gate(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    cap: int
    met: bool
    reason: str
    evidence: list[clauses.Exercise] = msgspec.field(default_factory=list)


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
    kpi_samples: dict[str, Sample]
    evidence_links: list[str]
    clauses: list[Judgement]
    not_exercised: list[str]


def _missing(j: Judgement) -> str:
    if j.status == "not exercised":
        return f"{j.text} [not exercised: {j.note}]"
    return f"{j.text} [not held: {j.failed} of {j.exercises} exercises failed]" if not j.id.startswith("kpi.") \
        else f"{j.text} [not held: {j.note}]"


def score(counts: Mapping[str, tuple[int, int, list[clauses.Exercise]]], samples: Mapping[str, Sample],
          links: Sequence[str], platform: str = "UPM (this stack)") -> Score:
    """The pure scoring of the clause exercises ``counts`` and KPI ``samples`` (see the module docstring)."""
    judged = clauses.judge(counts, samples)
    levels = {p: clauses.phase_level(p, judged) for p in PHASES}
    gate_list = []
    for clause, cap, reason in clauses.GATES:
        j = clauses.judge_one(clause, counts, samples)
        gate_list.append(Gate(name=clause.text, cap=cap, met=j.status == "held", reason=reason if j.status != "held"
                              else "", evidence=j.evidence))
    uncapped = min(levels.values())
    overall = min([uncapped, *(g.cap for g in gate_list if not g.met)])
    phases = []
    for p in PHASES:
        level = levels[p]
        missing = [_missing(j) for j in judged if j.phase == p and j.level == level + 1 and j.status != "held"]
        if level >= overall and level < 4:
            missing += [f"evidence gate: {g.name} (caps at L{g.cap})" for g in gate_list if not g.met and g.cap <= level]
        phases.append(PhaseScore(phase=p, level=level, next_level_missing=missing))
    figures = {name: s.value for name, s in samples.items()}
    row: dict[str, object] = {"Platform": platform}
    row |= {f"{p.phase} (0–4)": p.level for p in phases}
    row["Overall UPM (0–4)"] = overall
    row |= {k.column: figures.get(k.name) for k in kpi.KPIS}
    row["Evidence Links"] = list(links)
    return Score(row=row, phases=phases, gates=gate_list, overall=overall, uncapped=uncapped,
                 kpis={k.name: figures.get(k.name) for k in kpi.KPIS}, kpi_samples=dict(samples),
                 evidence_links=list(links), clauses=judged,
                 not_exercised=[j.id for j in judged if j.status == "not exercised"])


LINKS_QUERY = (
    "SELECT DISTINCT ON (change_id) permalink FROM evidence WHERE permalink IS NOT NULL "
    "ORDER BY change_id, seq DESC LIMIT 20"
)


def _records(cur: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, object]]:
    cur.execute(sql)
    columns = [d[0] for d in cur.description or []]
    return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]


def compute(con: duckdb.DuckDBPyConnection, period: kpi.Range = kpi.EVER,
            excluded: clauses.Excluded | None = None) -> Score:
    """Score the projected log in ``con`` (trusted, server-side)."""
    cur = con.cursor()
    try:
        counts = clauses.counts_from(_records(cur, clauses.EXERCISES_QUERY))
        samples = clauses.samples_from(_records(cur, clauses.kpi_sample_query(period, excluded))[0])
        links = sorted(str(r["permalink"]) for r in _records(cur, LINKS_QUERY))
    finally:
        cur.close()
    return score(counts, samples, links)
