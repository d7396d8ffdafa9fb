"""KPI, score and change reports over any SQL source: the projector over the bus, or a file.

An :data:`Ask` runs one read-only SELECT as one principal and returns a :class:`SqlResult`;
:func:`bus` asks the projector on ``upm.sql.<tenant>.<principal>`` and :func:`local` answers from
a projection folder opened here (``upm sql --offline``), with the same rules
(:mod:`projections.visibility`). The reports only send SELECTs, so the same isolation holds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from nats.aio.client import Client as NATS

from events.subjects import CHANGE_ID_RE
from projections import clauses, kpi, score, sqlservice
from projections.limits import DEFAULT_ROWS, DEFAULT_TIMEOUT_S
from projections.sqlservice import SqlRequest, SqlResult
from projections.visibility import VisibleSql

Ask = Callable[[str], Awaitable[SqlResult]]


def bus(nc: NATS, tenant: str, *, principal: str, timeout_s: float = DEFAULT_TIMEOUT_S,
        max_rows: int = DEFAULT_ROWS) -> Ask:
    """Ask the projector; each answer includes every event logged before the question (read your writes)."""

    async def ask(sql: str) -> SqlResult:
        request = SqlRequest(sql=sql, timeout_s=timeout_s, max_rows=max_rows, after_seq=sqlservice.LATEST)
        return await sqlservice.query(nc, tenant, request, principal=principal)

    return ask


def local(source: VisibleSql, tenant: str, *, principal: str, timeout_s: float = DEFAULT_TIMEOUT_S,
          max_rows: int = DEFAULT_ROWS) -> Ask:
    async def ask(sql: str) -> SqlResult:
        request = SqlRequest(sql=sql, timeout_s=timeout_s, max_rows=max_rows)
        return await anyio.to_thread.run_sync(source.answer, tenant, principal, request)

    return ask


def records(result: SqlResult) -> list[dict[str, Any]]:
    """Rows as column → value mappings."""
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


async def kpis(ask: Ask, period: kpi.Range = kpi.EVER) -> dict[str, float | None]:
    result = await ask(kpi.query(period))
    return kpi.figures(records(result)[0])


async def scored(ask: Ask, period: kpi.Range = kpi.EVER, excluded: clauses.Excluded | None = None) -> score.Score:
    """The clause-by-clause score (:mod:`projections.score`) of what ``ask`` can see."""
    counts = clauses.counts_from(records(await ask(clauses.EXERCISES_QUERY)))
    samples = clauses.samples_from(records(await ask(clauses.kpi_sample_query(period, excluded)))[0])
    links = await ask(score.LINKS_QUERY)
    return score.score(counts, samples, sorted(str(r[0]) for r in links.rows))


async def change(ask: Ask, change_id: str) -> dict[str, Any] | None:
    """A change's row and its events (sequence, time, type, actor), or None if not visible."""
    if not CHANGE_ID_RE.match(change_id):
        return None
    rows = records(await ask(f"SELECT * FROM changes WHERE change_id = '{change_id}'"))
    if not rows:
        return None
    events = records(await ask(
        f"SELECT seq, ts, type, phase, actor FROM events WHERE change_id = '{change_id}' ORDER BY seq"
    ))
    return {"change": rows[0], "events": events}
