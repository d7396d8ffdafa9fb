"""The ten UPM KPIs: one view each (``kpi/*.sql``, formula in its header), the spec's bands.

Every view yields fact rows ``(tenant, at_utc, value)``; a KPI is one aggregate over its view's
rows in the chosen tenant and time range (``pct`` = 100 × mean of 0/1 values, ``mean``, ``p95`` =
``quantile_cont(value, 0.95)``). No rows → no figure (``None``), never a made-up 0 or 100.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Literal

import duckdb
import msgspec

Aggregate = Literal["pct", "mean", "p95"]
Direction = Literal[">=", "<="]


class Band(msgspec.Struct, frozen=True, kw_only=True):
    """The spec's target for one level: ``value <direction> bound``."""

    direction: Direction
    bound: float

    def met(self, value: float) -> bool:
        return value >= self.bound if self.direction == ">=" else value <= self.bound

    def __str__(self) -> str:
        return f"{'≥' if self.direction == '>=' else '≤'} {self.bound:g}"


@dataclass(frozen=True)
class Kpi:
    """One KPI: its name, the comparison-template column, view, aggregate, unit and L3/L4 bands."""

    name: str
    column: str
    view: str
    aggregate: Aggregate
    unit: str
    l3: Band
    l4: Band

    @property
    def formula(self) -> str:
        return FORMULAS[self.name]


def _b(direction: Direction, bound: float) -> Band:
    return Band(direction=direction, bound=bound)


KPIS: tuple[Kpi, ...] = (
    Kpi("plan_determinism_pct", "PlanDeterminism_%", "kpi_plan_determinism", "pct", "%", _b(">=", 95), _b(">=", 99)),
    Kpi("approval_coverage_pct", "ApprovalsCoverage_%", "kpi_approval_coverage", "pct", "%", _b(">=", 90),
        _b(">=", 100)),
    Kpi("policy_pass_pct", "PolicyPass_%", "kpi_policy_pass", "pct", "%", _b(">=", 85), _b(">=", 95)),
    Kpi("change_success_pct", "ChangeSuccess_%", "kpi_change_success", "pct", "%", _b(">=", 95), _b(">=", 98)),
    Kpi("rollback_success_pct", "RollbackSuccess_%", "kpi_rollback_success", "pct", "%", _b(">=", 90),
        _b(">=", 97)),
    Kpi("mttr_failed_change_min", "MTTR_failed_change_min", "kpi_mttr_failed_change", "mean", "min",
        _b("<=", 30), _b("<=", 15)),
    Kpi("plan_compile_p95_ms", "Plan_P95_ms", "kpi_plan_compile", "p95", "ms", _b("<=", 1500), _b("<=", 800)),
    Kpi("verification_p95_ms", "Verify_P95_ms", "kpi_verification", "p95", "ms", _b("<=", 2000), _b("<=", 1200)),
    Kpi("drift_coverage_pct", "DriftCoverage_%", "kpi_drift_coverage", "pct", "%", _b(">=", 70), _b(">=", 90)),
    Kpi("evidence_completeness_pct", "EvidenceCompleteness_%", "kpi_evidence_completeness", "pct", "%",
        _b(">=", 85), _b(">=", 100)),
)
BY_NAME = {k.name: k for k in KPIS}


def _formulas() -> dict[str, str]:
    out: dict[str, str] = {}
    for f in resources.files("projections").joinpath("kpi").iterdir():
        if not f.name.endswith(".sql"):
            continue
        text = f.read_text()
        name = re.search(r"^-- kpi: (\S+)$", text, re.M)
        body = re.search(r"^-- formula: (.*?)\n(?!--)", text, re.M | re.S)
        if name and body:
            out[name.group(1)] = " ".join(line.lstrip("- ").strip() for line in body.group(1).splitlines())
    return out


FORMULAS = _formulas()

AGGREGATES: dict[Aggregate, str] = {
    "pct": "100 * avg(value)",
    "mean": "avg(value)",
    "p95": "quantile_cont(value, 0.95)",
}


@dataclass(frozen=True)
class Range:
    """A time range over the facts' ``at_utc`` (UTC, ``since`` inclusive, ``until`` exclusive)."""

    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> str:
        parts = ["tenant <> '_system'"]
        if self.since is not None:
            parts.append(f"at_utc >= TIMESTAMP '{_stamp(self.since)}'")
        if self.until is not None:
            parts.append(f"at_utc < TIMESTAMP '{_stamp(self.until)}'")
        return " AND ".join(parts)


def _stamp(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(sep=" ")


EVER = Range()


def query(period: Range = EVER) -> str:
    """One SELECT returning one row: every KPI as a column named after it."""
    where = period.where()
    cols = ",\n  ".join(f"(SELECT {AGGREGATES[k.aggregate]} FROM {k.view} WHERE {where}) AS {k.name}" for k in KPIS)
    return f"SELECT\n  {cols}"


def compute(con: duckdb.DuckDBPyConnection, period: Range = EVER) -> dict[str, float | None]:
    """The KPI figures from a projection database (trusted, server-side)."""
    cur = con.cursor()
    try:
        row = cur.execute(query(period)).fetchone()
    finally:
        cur.close()
    assert row is not None
    return figures(dict(zip([k.name for k in KPIS], row, strict=True)))


def figures(raw: dict[str, Any]) -> dict[str, float | None]:
    """Figures rounded to 3 decimals (stable output), ``None`` where there is no data."""
    return {k.name: None if raw.get(k.name) is None else round(float(raw[k.name]), 3) for k in KPIS}


class KpiRow(msgspec.Struct, frozen=True, kw_only=True):
    """One line of `upm kpi`: the figure, the bands beside it, and whether it meets them."""

    kpi: str
    column: str
    value: float | None
    unit: str
    l3: str
    l4: str
    meets_l3: bool | None
    meets_l4: bool | None
    formula: str


def rows(values: dict[str, float | None]) -> list[KpiRow]:
    """The `upm kpi` table for ``values``."""
    out = []
    for k in KPIS:
        v = values.get(k.name)
        out.append(KpiRow(
            kpi=k.name, column=k.column, value=v, unit=k.unit, l3=str(k.l3), l4=str(k.l4),
            meets_l3=None if v is None else k.l3.met(v), meets_l4=None if v is None else k.l4.met(v),
            formula=k.formula,
        ))
    return out


POSITION_QUERY = "SELECT max(seq) AS seq FROM events"
SPAN_QUERY = ("SELECT epoch(min(at_utc)) AS first, epoch(max(at_utc)) AS last FROM events "
              "WHERE tenant <> '_system'")


def series_query(bucket_s: int, period: Range = EVER) -> str:
    """One SELECT: every KPI per time bucket of ``bucket_s`` seconds, rows ``(kpi, t, value)`` with
    ``t`` the bucket's start (seconds since the epoch); a bucket without facts has no row."""
    where = period.where()
    parts = [f"SELECT '{k.name}' AS kpi, epoch(time_bucket(INTERVAL '{int(bucket_s)} seconds', at_utc)) AS t, "
             f"{AGGREGATES[k.aggregate]} AS value FROM {k.view} WHERE {where} GROUP BY 2" for k in KPIS]
    return "SELECT * FROM (" + "\nUNION ALL ".join(parts) + ") ORDER BY kpi, t"
