"""`upm sql` over the bus: tenant A never sees tenant B's rows, whatever SQL it sends."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from nats.aio.client import Client as NATS
from upm_history import History, happy, publish

from events.store import EventStore
from projections import sqlservice
from projections.db import ALL_TENANTS, ProjectionDB
from projections.errors import AccessDenied, QueryFailed, QueryRejected, QueryTimeout
from projections.projector import Projector
from projections.sqlservice import SqlRequest
from projections.visibility import VisibleSql
from services.security.access import parse


@pytest.fixture
async def two_tenants(projector: Projector, store: EventStore) -> Projector:
    h = History()
    happy(h, "acme")
    for i in range(3):
        happy(h, "other", at=10.0 * i)
    await projector.wait(await publish(store, h.records))
    return projector


async def ask(nc: NATS, sql: str, tenant: str = "acme", **kw: float) -> list[list[object]]:
    return (await sqlservice.query(nc, tenant, SqlRequest(sql=sql, **kw), principal="alice")).rows  # type: ignore[arg-type]


async def test_a_tenant_sees_only_its_rows_through_every_name(two_tenants: Projector, nc: NATS) -> None:
    assert await ask(nc, "SELECT DISTINCT tenant FROM events") == [["acme"]]
    assert await ask(nc, "SELECT count(*) FROM main.events WHERE tenant = 'other'") == [[0]]
    assert await ask(nc, "SELECT count(*) FROM changes WHERE tenant <> 'acme'") == [[0]]
    assert await ask(nc, "SELECT DISTINCT database_name FROM duckdb_tables()") == [["acme"]]
    assert await ask(nc, "SELECT DISTINCT table_catalog FROM information_schema.tables") == [["acme"]]
    dbs = await ask(nc, "SELECT database_name FROM duckdb_databases() WHERE NOT internal")
    assert dbs == [["acme"]]
    assert await ask(nc, "SELECT count(*) FROM events", tenant="other") == [[33]]
    assert await ask(nc, "SELECT count(DISTINCT tenant) FROM events", tenant="_all") == [[2]]


@pytest.mark.parametrize(
    ("sql", "rule"),
    [
        ("ATTACH 'proj/upm.duckdb' AS everything", "select-only"),
        ("COPY events TO 'out.csv'", "select-only"),
        ("PRAGMA database_list", "select-only"),
        ("SET enable_external_access = true", "select-only"),
        ("INSERT INTO events SELECT * FROM events", "select-only"),
        ("DROP TABLE events", "select-only"),
        ("SELECT 1; ATTACH 'proj/upm.duckdb' AS x", "one-statement"),
        ("/* hide */ ATTACH 'x.duckdb' -- SELECT", "select-only"),
        ("SELECT * FROM events WHERE", "parse"),
    ],
)
async def test_anything_but_one_select_is_refused(two_tenants: Projector, nc: NATS, sql: str, rule: str) -> None:
    with pytest.raises(QueryRejected) as err:
        await ask(nc, sql)
    assert err.value.rule == rule


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('{main}')",
        "SELECT * FROM read_text('{main}')",
        "SELECT * FROM read_parquet('{main}')",
        "SELECT * FROM '{other}'",
    ],
)
async def test_file_functions_cannot_reach_the_other_files(
    two_tenants: Projector, nc: NATS, tmp_path: Path, sql: str
) -> None:
    main = tmp_path / "proj" / "upm.duckdb"
    other = tmp_path / "proj" / "tenants" / "other.duckdb"
    with pytest.raises(QueryFailed, match=r"disabled by configuration|Permission"):
        await ask(nc, sql.format(main=main, other=other))


async def test_comments_do_not_smuggle_a_second_statement(two_tenants: Projector, nc: NATS) -> None:
    assert await ask(nc, "SELECT 1 AS one -- ; ATTACH 'x' AS y") == [[1]]
    assert await ask(nc, "/* ; DROP TABLE events; */ SELECT count(*) FROM events") == [[11]]


async def test_row_and_time_limits(two_tenants: Projector, nc: NATS) -> None:
    result = await sqlservice.query(nc, "acme", SqlRequest(sql="SELECT * FROM range(5000)", max_rows=100),
                                    principal="alice")
    assert (len(result.rows), result.truncated) == (100, True)
    with pytest.raises(QueryTimeout, match="longer than"):
        await ask(nc, "SELECT count(*) FROM range(100000000000) a, range(10) b WHERE a.range % 7 = b.range",
                  timeout_s=0.3)


async def test_a_result_too_large_for_one_message_is_refused_with_the_reason(two_tenants: Projector, nc: NATS) -> None:
    """A reply over the server's message limit could not be sent: the asker used to wait out its time-out
    (the KPI dashboard's clause query at 10,000 changes, 503 on /kpi) for an answer that never came."""
    started = anyio.current_time()
    with pytest.raises(QueryFailed, match=r"over the bus's .*message limit") as refused:
        await ask(nc, f"SELECT repeat('x', {nc.max_payload}) AS big", timeout_s=20)
    assert not isinstance(refused.value, QueryTimeout) and anyio.current_time() - started < 10
    assert await ask(nc, "SELECT 1") == [[1]]  # and the projector answers on


def test_offline_read_only_open_has_the_same_isolation(tmp_path: Path) -> None:
    h = History()
    happy(h, "acme")
    happy(h, "other")
    hidden = h.change("acme", visibility="private").intent(50, initiator="alice")
    writer = ProjectionDB(tmp_path / "p")
    writer.ingest(h.records)
    writer.close()  # flushes the tenant files
    db = ProjectionDB(tmp_path / "p", read_only=True)
    con = db.tenant("acme")
    assert sqlservice.run_query(con, "SELECT DISTINCT tenant FROM events").rows == [["acme"]]
    with pytest.raises(QueryFailed, match=r"disabled by configuration|Permission"):
        sqlservice.run_query(con, f"SELECT * FROM read_csv('{tmp_path / 'p' / 'upm.duckdb'}')")
    rules = parse({"tenants": {"acme": {"alice": ["requester"], "dave": ["requester"]}}}, "test")
    sql = VisibleSql(db, rules)  # what `upm sql --offline` answers with: the same roles and visibility
    count = SqlRequest(sql=f"SELECT count(*) FROM changes WHERE change_id = '{hidden.change_id}'")
    assert [sql.answer("acme", who, count).rows for who in ("alice", "dave")] == [[[1]], [[0]]]
    with pytest.raises(AccessDenied, match="for admins"):
        sql.answer(ALL_TENANTS, "dave", count)
    db.close()
