"""What the console reads and sends over the bus, always *as the signed-in person*.

Reads go where the CLI's go: SQL to the projector on ``upm.sql.<tenant>.<principal>`` (rows cut
to what that person may see, :mod:`projections.visibility`), a change's events to the gateway on
``upm.qry.<tenant>.events.<principal>`` (a hidden change is answered like a missing one), an
evidence pack on ``upm.qry.<tenant>.evidence.<principal>``. Approve and deny are the same request
as `upm approve` / `upm deny`: ``upm.cmd.<tenant>.approve|deny.<principal>``, decided by
pre-flight. The process connects as ``upm-serve``, which the server lets ask these subjects for any
identity: the console's sign-in is the authentication.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import anyio
from nats.aio.client import Client as NATS

from events.commands import ENVIRONMENTS
from events.lifecycle import Status
from events.store import StoredEvent
from events.subjects import ANY_TENANT, CHANGE_ID_RE, is_principal, is_tenant
from projections import evidence_query, kpi, reports, score
from projections.console import views
from projections.db import ALL_TENANTS
from projections.errors import AccessDenied
from projections.limits import MAX_TIMEOUT_S
from projections.serve import Grant, pinned
from services.auditor import evidence
from services.auditor.errors import EvidenceInvalid, EvidenceUntrusted
from services.common import client
from services.common.errors import CommandRejected
from services.gateway import queries
from services.security.access import Access

LIST_LIMIT = 200  # rows of the approvals queue
log = logging.getLogger("upm.console")
PAGE_SIZE = 50  # rows of one page of the change list
KPI_FRESH_S = 15.0
PACKS_KEPT = 4096
STATUSES: frozenset[str] = frozenset(Status.__args__)  # type: ignore[attr-defined]
_COLUMNS = ("tenant, change_id, status, outcome, initiator, environment, visibility, request, submitted_at, "
            "first_at, last_seq")
DRIFT_QUERY = """
WITH managed AS (
    SELECT p.tenant, p.resource_key AS resource, arg_max(c.change_id, c.execution_ended_at) AS change_id
    FROM changes c
    JOIN plan_steps p ON p.tenant = c.tenant AND p.change_id = c.change_id AND p.plan_hash = c.plan_hash
    WHERE c.execution = 'completed' AND p.action <> 'delete'
    GROUP BY 1, 2
), verified AS (
    SELECT DISTINCT tenant, target AS resource FROM checks WHERE kind = 'verification.passed' AND ok
), last_drift AS (
    SELECT tenant, resource, arg_max(kind, seq) AS last_kind, arg_max(CAST(diff AS VARCHAR), seq) AS diff
    FROM drift GROUP BY 1, 2
)
SELECT m.tenant, m.resource, m.change_id, d.last_kind, d.diff, v.resource IS NOT NULL AS verified
FROM managed m LEFT JOIN last_drift d USING (tenant, resource) LEFT JOIN verified v USING (tenant, resource)
ORDER BY 1, 2 LIMIT 1000
"""


@dataclass(frozen=True)
class Filters:
    """The change list's filters, each checked against its rule (so it is safe inside SQL), and the page:
    ``before`` (keyset pagination) lists only changes whose first event is older than that stream
    sequence; 0 is the first page (the newest changes, the only one updated live)."""

    tenant: str = ""
    status: str = ""
    initiator: str = ""
    environment: str = ""
    before: int = 0

    @classmethod
    def of(cls, args: dict[str, str]) -> Filters:
        before = args.get("before", "").strip()
        if before and (not before.isdigit() or len(before) > 18 or int(before) < 1):
            raise ValueError(f"before {before[:64]!r} is not a stream sequence (a positive whole number): follow "
                             "the list's 'next' link")
        f = cls(**{k: args.get(k, "").strip() for k in ("tenant", "status", "initiator", "environment")},
                before=int(before or 0))
        if f.tenant and not is_tenant(f.tenant):
            raise ValueError(f"tenant {f.tenant[:64]!r} is not a tenant name (a-z, 0-9, '-')")
        if f.status and f.status not in STATUSES:
            raise ValueError(f"status {f.status[:64]!r} is not one of {', '.join(sorted(STATUSES))}")
        if f.initiator and not is_principal(f.initiator):
            raise ValueError(f"initiator {f.initiator[:64]!r} is not an identity")
        if f.environment and f.environment not in ENVIRONMENTS:
            raise ValueError(f"environment {f.environment[:64]!r} is not one of {', '.join(ENVIRONMENTS)}")
        return f

    def where(self) -> str:
        parts = ["tenant <> '_system'"]
        for column, value in (("tenant", self.tenant), ("status", self.status), ("initiator", self.initiator),
                              ("environment", self.environment)):
            if value:
                parts.append(f"{column} = '{value}'")
        if self.before:
            parts.append(f"first_seq < {self.before}")
        return " AND ".join(parts)

    def query(self) -> dict[str, str]:
        """The filters as query parameters (without the page)."""
        return {k: v for k, v in vars(self).items() if v and k != "before"}

    def first_page(self) -> Filters:
        return replace(self, before=0)


@dataclass(frozen=True)
class Page:
    """One page of the change list, and where the next one starts (0: this is the last)."""

    rows: list[views.Row]
    next_before: int


def list_tenants(grant: Grant, rules: Access, asked: str = "") -> list[str]:
    """The projection files a list is read from: the token's tenant (open mode), every tenant at once
    for open mode and admins, else the person's own tenants (each answered as they may see it)."""
    tenant = pinned(grant, asked or None)
    if tenant is not None:
        return [tenant]
    if not rules.enforced or grant.principal in rules.admins:
        return [ALL_TENANTS]
    return list(rules.tenants_of(grant.principal))


@dataclass(frozen=True)
class Dashboard:
    charts: list[views.KpiChart]
    score: score.Score
    position: object  # the projection's last sequence it was computed at
    made: float  # time.monotonic()
    at: str  # for people


class Reader:
    """The console's reads and commands over one connection (see the module docstring)."""

    def __init__(self, nc: NATS, rules: Access, trusted: dict[str, str]) -> None:
        self.nc = nc
        self.rules = rules
        self.trusted = trusted
        self._dashboards: dict[tuple[Grant, str], Dashboard] = {}
        self._computing: dict[tuple[Grant, str], asyncio.Task[Dashboard]] = {}
        self._packs: dict[str, dict[str, Any]] = {}  # object name → its report (insertion order: oldest first)

    def ask(self, grant: Grant, tenant: str) -> reports.Ask:
        return reports.bus(self.nc, tenant, principal=grant.principal)

    async def _records(self, grant: Grant, tenants: list[str], sql: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for tenant in tenants:
            try:
                out += reports.records(await self.ask(grant, tenant)(sql))
            except AccessDenied:
                continue  # a tenant this person may not read at all
        return out

    async def changes(self, grant: Grant, filters: Filters) -> Page:
        """One page of the list (newest first, by the stream sequence of each change's first event): a
        top-N per tenant file read, merged; one row more than a page says whether a next one exists."""
        sql = (f"SELECT {_COLUMNS}, first_seq FROM changes WHERE {filters.where()} ORDER BY first_seq DESC "
               f"LIMIT {PAGE_SIZE + 1}")
        records = await self._records(grant, list_tenants(grant, self.rules, filters.tenant), sql)
        records.sort(key=lambda r: int(r["first_seq"]), reverse=True)
        shown = records[:PAGE_SIZE]
        more = len(records) > PAGE_SIZE
        return Page(rows=views.rows(shown, datetime.now(UTC)), next_before=int(shown[-1]["first_seq"]) if more else 0)

    async def fingerprint(self, grant: Grant, filters: Filters) -> list[Any]:
        """What changes when any listed change moves: the newest sequence and the count."""
        sql = f"SELECT max(last_seq) AS s, count(*) AS n FROM changes WHERE {filters.where()}"
        return [tuple(r.values()) for r in await self._records(grant, list_tenants(grant, self.rules, filters.tenant),
                                                               sql)]

    async def awaiting(self, grant: Grant) -> list[views.Row]:
        """The changes waiting for this person's approval: awaiting approval, in a tenant where they may
        approve, not initiated by them."""
        tenants = [t for t in list_tenants(grant, self.rules)
                   if t == ALL_TENANTS or self.rules.allows(grant.principal, t, "approve")]
        sql = (f"SELECT {_COLUMNS} FROM changes WHERE status = 'awaiting-approval' AND tenant <> '_system' "
               f"AND coalesce(initiator, '') <> '{grant.principal}' ORDER BY first_seq LIMIT {LIST_LIMIT}")
        return views.rows(await self._records(grant, tenants, sql), datetime.now(UTC))

    async def events(self, grant: Grant, change_id: str, asked: str | None = None) -> list[StoredEvent]:
        """A change's events as this person may see them; :class:`AccessDenied` (rule visibility) when
        there is no such change they may see — a hidden one is answered exactly like a missing one."""
        if not CHANGE_ID_RE.match(change_id):
            raise AccessDenied(f"{change_id[:64]!r} is not a change id", rule="visibility")
        tenant = pinned(grant, asked) or ANY_TENANT
        try:
            found = await queries.read_change(self.nc, ANY_TENANT if tenant == ALL_TENANTS else tenant, change_id,
                                              principal=grant.principal)
        except CommandRejected as err:
            raise AccessDenied(f"no change {change_id} that {grant.principal} may see", rule="visibility") from err
        if not found:
            raise AccessDenied(f"no change {change_id} that {grant.principal} may see", rule="visibility")
        return found

    async def pack(self, grant: Grant, change_id: str, asked: str | None = None) -> evidence_query.Pack:
        tenant = pinned(grant, asked)
        return await evidence_query.fetch(self.nc, change_id, principal=grant.principal,
                                          tenant=ANY_TENANT if tenant in (None, ALL_TENANTS) else tenant)

    async def pack_report(self, grant: Grant, change_id: str, object_name: str, asked: str | None = None
                          ) -> dict[str, Any]:
        """The size and verification of the pack stored as ``object_name`` (downloaded as this person). A
        stored pack never changes (a later one has another name), so its report is kept per name: the
        caller shows it only to a person who may download it (:func:`views.change_view`'s ``can_evidence``)."""
        report = self._packs.get(object_name)
        if report is None:
            pack = await self.pack(grant, change_id, asked)
            report = {"bytes": len(pack.data), "permalink": pack.permalink, **self.verify(pack.data)}
            if pack.object_name == object_name:
                self._packs[object_name] = report
                while len(self._packs) > PACKS_KEPT:
                    self._packs.pop(next(iter(self._packs)))
        return report

    def verify(self, data: bytes) -> dict[str, Any]:
        """The pack's verification, for the page: ``ok`` and what was checked, or why it failed."""
        try:
            report = evidence.verify_pack(data, self.trusted)
        except EvidenceUntrusted as err:
            return {"ok": False, "untrusted": True, "message": f"intact but UNTRUSTED: {err}"}
        except EvidenceInvalid as err:
            return {"ok": False, "message": f"does not verify: {err}"}
        return {"ok": True, "message": f"verified: {report.files} files, {report.events} events, signed by "
                                       f"{report.key_id} (trusted), in the log head of size {report.log_head_size}"}

    async def kpis(self, grant: Grant, tenant: str) -> Dashboard:
        """The ten charts and the score, as this person may see them. The KPI views and the clauses
        aggregate the whole log (seconds at 10,000 changes), so a dashboard is kept per (person, tenant):
        reused while no event was projected since, or for :data:`KPI_FRESH_S` while events keep coming;
        once stale it is still shown (with the time it was made) while one refresh runs behind it. Only
        the first request of a (person, tenant) waits for the computation; concurrent ones share it."""
        ask = self.ask(grant, tenant)
        position = reports.records(await ask(kpi.POSITION_QUERY))[0].get("seq")
        key = (grant, tenant)
        kept = self._dashboards.get(key)
        if kept is not None and (kept.position == position or time.monotonic() - kept.made < KPI_FRESH_S):
            return kept
        running = self._computing.get(key)
        if running is None:
            running = self._computing[key] = asyncio.create_task(self._dashboard(grant, tenant, position))
            running.add_done_callback(lambda done: self._computed(key, done))
        if kept is not None:
            return kept
        return await asyncio.shield(running)

    def _computed(self, key: tuple[Grant, str], done: asyncio.Task[Dashboard]) -> None:
        del self._computing[key]
        if not done.cancelled() and done.exception() is not None:  # the next request tries again
            log.warning("console: the KPI dashboard of %s could not be computed: %s", key[1], done.exception())

    async def _dashboard(self, grant: Grant, tenant: str, position: object) -> Dashboard:
        ask = reports.bus(self.nc, tenant, principal=grant.principal, timeout_s=MAX_TIMEOUT_S)
        async with anyio.create_task_group() as tg:
            answers: dict[str, Any] = {}

            async def run(name: str, job: Callable[[], Awaitable[Any]]) -> None:
                answers[name] = await job()

            async def series() -> tuple[int, list[dict[str, Any]]]:
                span = reports.records(await ask(kpi.SPAN_QUERY))[0]
                width = views.bucket_seconds(span.get("first"), span.get("last"))
                return width, reports.records(await ask(kpi.series_query(width)))

            tg.start_soon(run, "series", series)
            tg.start_soon(run, "current", lambda: reports.kpis(ask))
        width, rows = answers["series"]
        made = Dashboard(charts=views.kpi_charts(rows, answers["current"], width),
                         score=await reports.scored(ask), position=position,
                         made=time.monotonic(), at=datetime.now(UTC).strftime("%H:%M:%S UTC"))
        self._dashboards[(grant, tenant)] = made
        return made

    async def drift(self, grant: Grant) -> list[views.DriftRow]:
        return views.drift_rows(await self._records(grant, list_tenants(grant, self.rules), DRIFT_QUERY))

    async def resource_drift(self, grant: Grant, tenant: str, keys: list[str]) -> dict[str, str]:
        """The drift loop's latest word on each of ``keys`` (``detected`` / ``resolved``), as this person
        may read the tenant; keys it never named are absent."""
        if not keys:
            return {}
        listed = ", ".join("'" + k.replace("'", "''") + "'" for k in keys)
        sql = (f"SELECT resource, arg_max(kind, seq) AS kind FROM drift WHERE tenant = '{tenant}' "
               f"AND resource IN ({listed}) GROUP BY 1")
        try:
            return {str(r["resource"]): str(r["kind"]) for r in reports.records(await self.ask(grant, tenant)(sql))}
        except AccessDenied:
            return {}

    async def command(self, grant: Grant, tenant: str, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        """``approve`` / ``deny`` as this person: exactly `upm approve|deny`'s request (refusals are
        :class:`CommandRejected` with pre-flight's rule and message)."""
        return await client.command(self.nc, tenant, verb, body, principal=grant.principal)
