"""What each caller may read: roles and visibility (team / org / private) on SQL and evidence.

The rules are :mod:`services.security.access`'s; the caller is the principal the server authenticated
(the last token of ``upm.sql.<tenant>.<principal>`` / ``upm.qry.<tenant>.evidence.<principal>``).

SQL. :func:`authorize_sql` decides whether the caller may query a tenant at all: ``_all`` (every
tenant, the main file) is for admins; a member of the tenant reads the changes they can see; a
member of another tenant of the org reads the tenant's ``org`` changes only; anyone else is
refused. :class:`VisibleSql` then cuts the rows to the changes the caller can see:

* **fast path** — inside the query's own read-only transaction, one grouped count over
  ``changes`` (tenant, visibility, initiator) says whether any change is hidden from the caller.
  If none is (auditors, approvers, operators and admins always; a requester while the tenant
  holds no one else's private change), the query runs in that same transaction on the tenant's
  file: the check and the query read one snapshot.
* **filtered copy** — otherwise the query runs on a separate in-memory DuckDB instance holding
  only the visible changes' rows (every table with a ``change_id``), copied from that same
  snapshot, with the tenant file's locked configuration (no file access, configuration locked)
  and the same row and time limits. Nothing in that instance can reach the tenant's file, so no
  SQL — ``main.events``, qualified names, ``duckdb_tables()``, table functions — finds a hidden
  row: it is not there. One copy is kept per (tenant, principal) (the newest ``kept``), and
  refreshed (in one transaction) only when the tenant file's position has moved.

Tables without a ``change_id``: :data:`CHANGE_FREE` (the signed log heads — org-wide tamper
evidence —, the projector's position, the migration registry) hold no change's data and are
copied whole; any other such table stays empty in a copy (fail closed) until it is classified
here. Aggregates — ``count(*)``, the KPI views, ``upm kpi`` and ``upm score`` — are computed
over the visible rows only: a requester's figures leave out what is hidden from them, and
nothing (not even how many changes are hidden) leaks. Whole-tenant figures are for the roles
that see everything. A change's visibility and initiator are those of its first event and its
``intent.submitted`` (``changes.visibility`` / ``changes.initiator``); in SQL, a private change
with no ``intent.submitted`` is visible only to the roles that see every private change.

Evidence. :func:`authorize_evidence` checks visibility first and answers a hidden change exactly
like a missing one (the tenant asked, never the one found), then the ``evidence`` action (an
auditor, operator or admin of the tenant, or the change's initiator).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import duckdb

from events.model import Event
from projections import ingest
from projections.db import ALL_TENANTS, LOCKED, ProjectionDB
from projections.errors import AccessDenied
from projections.sqlservice import SqlRequest, SqlResult, check, execute, read_only
from services.security.access import Access, Forbidden, initiator_of

Mode = Literal["append", "upsert", "replace"]
CHANGE_FREE = frozenset({"log_heads", "projector_position", "_migrations"})
COPIES_KEPT = 16
_GROUPS = "SELECT DISTINCT tenant, coalesce(visibility, ''), coalesce(initiator, '') FROM changes"
_VISIBLE = ("change_id IN (SELECT change_id FROM changes WHERE "
            "list_contains($keys, concat_ws('/', tenant, coalesce(visibility, ''), coalesce(initiator, ''))))")
_COLUMNS = """
SELECT c.table_name, c.column_name, c.data_type
FROM duckdb_columns() c JOIN duckdb_tables() t USING (database_name, schema_name, table_name)
WHERE c.database_name = current_database() AND c.schema_name = 'main'
ORDER BY c.table_name, c.column_index
"""
_VIEWS = "SELECT sql FROM duckdb_views() WHERE database_name = current_database() AND NOT internal ORDER BY view_name"


def _refuse(err: Forbidden) -> AccessDenied:
    return AccessDenied(str(err), rule=err.rule)


def authorize_sql(access: Access, principal: str, tenant: str) -> None:
    """Raise :class:`AccessDenied` unless ``principal`` may query ``tenant`` (rows are cut afterwards)."""
    if tenant == ALL_TENANTS:
        if access.enforced and principal not in access.admins:
            raise AccessDenied(f"{principal} may not query every tenant at once ({ALL_TENANTS}): that is for admins "
                               f"(set in {access.source}); query one tenant instead (--tenant T)")
        return
    org_reader = tenant in access.members and not access.roles(principal, tenant) and access.tenants_of(principal)
    if access.enforced and org_reader:
        return  # a member of another tenant of the org: reads this tenant's org changes only
    try:
        access.require(principal, tenant, "sql")
    except Forbidden as err:
        raise _refuse(err) from err


def _key(tenant: str, visibility: str, initiator: str) -> str:
    return f"{tenant}/{visibility}/{initiator}"


def visible_keys(access: Access, principal: str, groups: Iterable[Sequence[object]]) -> tuple[list[str], bool]:
    """The keys of the (tenant, visibility, initiator) groups ``principal`` can see, and whether any is hidden."""
    keys, hidden = [], False
    for tenant, visibility, initiator in groups:
        if access.can_see(principal, str(tenant), str(visibility), str(initiator)):
            keys.append(_key(str(tenant), str(visibility), str(initiator)))
        else:
            hidden = True
    return keys, hidden


def authorize_evidence(access: Access, principal: str, asked: str, change_id: str, events: Sequence[Event]) -> None:
    """Raise :class:`AccessDenied` unless ``principal`` may download this change's evidence.

    ``asked`` is the tenant named in the request (``_any`` to look it up): a missing or hidden
    change gets the same answer, naming only that.
    """
    if not events or not access.can_see(principal, events[0].tenant, events[0].visibility, initiator_of(events)):
        raise AccessDenied(f"no change {change_id} in tenant {asked} that {principal} may see", rule="visibility")
    try:
        access.require(principal, events[0].tenant, "evidence", initiator=initiator_of(events))
    except Forbidden as err:
        raise _refuse(err) from err


@dataclass(frozen=True)
class _Table:
    """A table of the projection, and how a copy follows it (:attr:`mode`)."""

    name: str
    columns: tuple[tuple[str, str], ...]  # (name, DuckDB type)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]

    @property
    def definition(self) -> str:
        """Its columns as in ``CREATE TABLE`` (no constraints: a copy is only ever read)."""
        return ", ".join(f'"{name}" {kind}' for name, kind in self.columns)

    @property
    def mode(self) -> Mode | None:
        """``append``: rows with a ``seq`` are only ever added, a copy takes those above its position;
        ``upsert`` (``changes``): the rows whose ``last_seq`` moved are replaced; ``replace``: the
        whole table, each time; None: never copied (no ``change_id``, not in :data:`CHANGE_FREE`)."""
        if "change_id" not in self.names:
            return "replace" if self.name in CHANGE_FREE else None
        if "seq" in self.names:
            return "append"
        return "upsert" if "last_seq" in self.names else "replace"

    @property
    def newer(self) -> str | None:
        """The column saying a row is newer than a position (None: the table is replaced whole)."""
        return {"append": "seq", "upsert": "last_seq"}.get(self.mode or "")

    def select(self, keys: list[str], since: int) -> tuple[str, dict[str, object]]:
        """The SELECT (and its parameters) of the source rows a copy at position ``since`` lacks:
        only rows of the visible changes (``keys``, see :func:`visible_keys`)."""
        where: list[str] = []
        params: dict[str, object] = {}
        if "change_id" in self.names:
            where.append(_VISIBLE)
            params["keys"] = keys
        if self.newer is not None:
            where.append(f"{self.newer} > $since")
            params["since"] = since
        return f'SELECT * FROM "{self.name}"' + (f" WHERE {' AND '.join(where)}" if where else ""), params


def _layout(cur: duckdb.DuckDBPyConnection) -> list[_Table]:
    tables: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in cur.execute(_COLUMNS).fetchall():
        tables.setdefault(table, []).append((column, kind))
    return [_Table(name, tuple(columns)) for name, columns in tables.items()]


def _instance(cur: duckdb.DuckDBPyConnection, tables: list[_Table]) -> duckdb.DuckDBPyConnection:
    """An empty in-memory instance with the source's tables (no constraints) and views, locked like it."""
    con = duckdb.connect(":memory:", config=dict(LOCKED))
    created = [f'CREATE TABLE "{t.name}" ({t.definition})' for t in tables]
    views = [sql for (sql,) in cur.execute(_VIEWS).fetchall()]
    con.execute(";\n".join(created + views))
    return con


def _insert(con: duckdb.DuckDBPyConnection, table: _Table, rows: list[tuple[object, ...]]) -> None:
    """Insert ``rows`` column by column (one list parameter per column, no row-by-row inserts)."""
    picks = ", ".join(f'unnest($c{i}) AS "{name}"' for i, name in enumerate(table.names))
    values = {f"c{i}": list(column) for i, column in enumerate(zip(*rows, strict=True))}
    con.execute(f'INSERT INTO "{table.name}" BY NAME SELECT {picks}', values)


@dataclass
class _Copy:
    """One caller's filtered in-memory instance and the tenant-file position it holds."""

    con: duckdb.DuckDBPyConnection | None = None
    tables: list[_Table] = field(default_factory=list)
    position: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def follow(self, cur: duckdb.DuckDBPyConnection, keys: list[str]) -> bool:
        """Bring the copy up to ``cur``'s snapshot (one transaction); whether anything was copied."""
        position = ingest.position(cur)
        if self.con is None:
            self.tables = _layout(cur)
            self.con = _instance(cur, self.tables)
        elif position <= self.position:
            return False
        con = self.con.cursor()  # its own connection: queries run on other cursors meanwhile
        try:
            con.execute("BEGIN TRANSACTION")
            try:
                for table in self._moved(cur):
                    rows = cur.execute(*table.select(keys, self.position)).fetchall()
                    if table.mode == "replace":
                        con.execute(f'DELETE FROM "{table.name}"')
                    elif table.mode == "upsert" and rows:
                        con.execute(f'DELETE FROM "{table.name}" WHERE list_contains($ids, change_id)',
                                    {"ids": [row[table.names.index("change_id")] for row in rows]})
                    if rows:
                        _insert(con, table, rows)
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()
        self.position = position
        return True

    def _moved(self, cur: duckdb.DuckDBPyConnection) -> list[_Table]:
        """The copied tables with rows newer than the copy (one query), and those replaced whole."""
        copied = [t for t in self.tables if t.mode is not None]
        followed = [t for t in copied if t.newer is not None]
        counts = ", ".join(f'(SELECT count(*) FROM "{t.name}" WHERE {t.newer} > $since)' for t in followed)
        row = cur.execute(f"SELECT [{counts}]", {"since": self.position}).fetchone()
        assert row is not None
        grown = {t.name for t, n in zip(followed, row[0], strict=True) if n}
        return [t for t in copied if t.newer is None or t.name in grown]


class VisibleSql:
    """Answers SQL over a projection folder as each caller may see it (see the module docstring)."""

    def __init__(self, db: ProjectionDB, access: Access, *, kept: int = COPIES_KEPT) -> None:
        self.db = db
        self.access = access
        self.kept = kept
        self.copies_refreshed = 0
        self._copies: OrderedDict[tuple[str, str], _Copy] = OrderedDict()
        self._lock = threading.Lock()

    def answer(self, tenant: str, principal: str, request: SqlRequest) -> SqlResult:
        """Authorize, bring the tenant file up to date, and run the query on what the caller may see."""
        authorize_sql(self.access, principal, tenant)
        check(request.sql)
        if tenant != ALL_TENANTS and not self.db.read_only:
            self.db.flush(tenant)

        def run(cur: duckdb.DuckDBPyConnection) -> SqlResult:
            return execute(cur, request.sql, max_rows=request.max_rows, timeout_s=request.timeout_s)

        with read_only(self.db.tenant(tenant)) as cur:
            if self.access.sees_everything(principal, tenant):
                return run(cur)
            keys, hidden = visible_keys(self.access, principal, cur.execute(_GROUPS).fetchall())
            if not hidden:
                return run(cur)
            copy = self._filtered(tenant, principal, cur, keys)
        with read_only(copy) as cur:
            return run(cur)

    def _filtered(self, tenant: str, principal: str, cur: duckdb.DuckDBPyConnection,
                  keys: list[str]) -> duckdb.DuckDBPyConnection:
        """The caller's copy, brought up to ``cur``'s snapshot if the tenant file moved since."""
        with self._lock:
            copy = self._copies.setdefault((tenant, principal), _Copy())
            self._copies.move_to_end((tenant, principal))
            while len(self._copies) > self.kept:
                self._copies.popitem(last=False)  # freed once the queries running on it end
        with copy.lock:
            if copy.follow(cur, keys):
                self.copies_refreshed += 1
            assert copy.con is not None
            return copy.con
