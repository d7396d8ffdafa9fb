"""The projector against a real nats-server: exactly-once across a crash, rebuild, read-your-writes."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import anyio
import duckdb
import pytest
from nats.aio.client import Client as NATS
from upm_history import History, failed, happy, publish

from events.codec import canonical_json
from events.store import EventStore
from projections import sqlservice
from projections.db import ProjectionDB
from projections.errors import QueryRejected, QueryTimeout
from projections.projector import Projector
from projections.sqlservice import SqlRequest
from services.security.access import Access
from upm.natsserver import EmbeddedNats

HERE = Path(__file__).parent
ENVELOPE = ("seq", "id", "change_id", "tenant", "type", "phase", "ts", "actor", "source", "visibility",
            "prev_hash", "hash", "payload")


def content_hash(rows: list[tuple[Any, ...]]) -> str:
    return hashlib.sha256(canonical_json([list(r) for r in rows])).hexdigest()


def stream_rows(records: list[tuple[int, bytes]]) -> list[tuple[Any, ...]]:
    out = []
    for seq, data in records:
        doc = json.loads(data)
        out.append((seq, *(doc["payload"]["type"] if k == "type" else doc[k] for k in ENVELOPE[1:])))
    return out


def db_rows(con: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    cols = ", ".join(ENVELOPE)
    return [(*r[:-1], json.loads(r[-1])) for r in con.execute(f"SELECT {cols} FROM events ORDER BY seq").fetchall()]


def all_tables(folder: Path) -> dict[str, list[tuple[Any, ...]]]:
    db = ProjectionDB(folder, read_only=True)
    out: dict[str, list[tuple[Any, ...]]] = {}
    try:
        for label, con in [("main", db.main), *((t, db.tenant(t)) for t in db.tenants())]:
            names = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
            for name in names:
                out[f"{label}.{name}"] = con.execute(f"SELECT * FROM {name} ORDER BY ALL").fetchall()
    finally:
        db.close()
    return out


def history(changes: int = 40) -> History:
    h = History()
    for i in range(changes):
        tenant = "acme" if i % 3 else "other"
        (happy if i % 4 else failed)(h, tenant, at=10.0 * i)
    return h


async def run_projector(nc: NATS, folder: Path, upto: int) -> None:
    p = Projector(nc, folder, batch_max=64)
    ready = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: p.run(ready=ready))
        await ready.wait()
        await p.wait(upto, within=30)
        tg.cancel_scope.cancel()


async def test_killed_mid_batch_then_restarted_every_event_exactly_once(
    nats_server: EmbeddedNats, nc: NATS, store: EventStore, tmp_path: Path
) -> None:
    h = history()
    last = await publish(store, h.records)
    folder = tmp_path / "proj"
    # Kill it inside the 5th file transaction: batch 2, after its first tenant file committed.
    proc = await anyio.run_process(
        [sys.executable, str(HERE / "projector_process.py"), nats_server.url, str(folder), "5", "64"], check=False
    )
    assert proc.returncode == -9, proc.stderr.decode()
    db = ProjectionDB(folder, read_only=True)
    crashed_at = db.position()
    db.close()
    assert 0 < crashed_at < last

    await run_projector(nc, folder, last)

    stream = stream_rows(await store.read_raw("upm.evt.>"))
    db = ProjectionDB(folder, read_only=True)
    try:
        assert db.main.execute("SELECT count(*), count(DISTINCT seq) FROM events").fetchone() == (last, last)
        assert content_hash(db_rows(db.main)) == content_hash(stream)
        for tenant in ("acme", "other"):
            mine = [r for r in stream if r[3] == tenant]
            assert content_hash(db_rows(db.tenant(tenant))) == content_hash(mine)
    finally:
        db.close()

    await run_projector(nc, tmp_path / "rebuilt", last)
    assert all_tables(tmp_path / "rebuilt") == all_tables(folder)


async def test_wait_gives_read_your_writes(projector: Projector, nc: NATS, store: EventStore) -> None:
    h = History()
    happy(h)
    last = await publish(store, h.records)
    result = await sqlservice.query(nc, "acme", SqlRequest(sql="SELECT count(*), max(seq) FROM events", after_seq=last),
                                    principal="alice")
    assert result.rows == [[len(h.records), last]]
    assert result.position >= last
    await projector.wait(last)
    assert projector.position == last


async def test_a_trickle_of_events_is_gathered_into_few_batches(nc: NATS, store: EventStore, tmp_path: Path,
                                                               host: Any) -> None:
    """Each batch costs DuckDB about the same whatever its size, so the writer gathers what arrives for
    ``linger_s`` instead of ingesting each record as it comes (it did: one batch per few records)."""
    p = Projector(nc, tmp_path / "proj", linger_s=0.5, access=Access.open())
    await host(p)
    h = History()
    for i in range(6):
        happy(h, at=10.0 * i)
    by_change: dict[str, list[tuple[int, bytes]]] = {}
    for record in h.records:
        by_change.setdefault(json.loads(record[1])["change_id"], []).append(record)
    changes = list(by_change.values())
    last = 0
    for records in changes:  # a change at a time, 150 ms apart: ~0.9 s in all
        last = await publish(store, records)
        await anyio.sleep(0.15)
    await p.wait(last, within=10)
    assert p.batches <= 4, f"{sum(map(len, changes))} records arrived over ~0.9 s in {p.batches} batches"


async def test_a_read_of_the_latest_sees_everything_logged_before_it(nc: NATS, store: EventStore, tmp_path: Path,
                                                                     host: Any) -> None:
    """``after_seq = LATEST`` (what the CLI, the reports and the console send) waits for every event logged
    before the question, however long the writer would otherwise gather; 0 answers from what is in."""
    p = Projector(nc, tmp_path / "proj", linger_s=30.0, access=Access.open())
    await host(p)
    h = History()
    happy(h)
    last = await publish(store, h.records)
    count = "SELECT count(*), max(seq) FROM events"
    now = await sqlservice.query(nc, "acme", SqlRequest(sql=count), principal="alice")
    assert now.rows == [[0, None]]  # still gathering: a read that does not wait sees none of it
    with anyio.fail_after(5):  # far less than the 30 s gathering
        latest = await sqlservice.query(nc, "acme", SqlRequest(sql=count, after_seq=sqlservice.LATEST),
                                        principal="alice")
    assert latest.rows == [[len(h.records), last]]


async def test_an_after_seq_below_latest_is_refused_saying_what_it_may_be(projector: Projector, nc: NATS) -> None:
    with pytest.raises(QueryRejected, match=r"after_seq must be a stream sequence, 0 .* or -1"):
        await sqlservice.query(nc, "acme", SqlRequest(sql="SELECT 1", after_seq=-2), principal="alice")


async def test_a_read_waiting_for_what_has_not_arrived_ingests_no_empty_batch(projector: Projector) -> None:
    """A read that waits wakes the writer; with nothing buffered it ingests nothing (it ran an empty
    transaction per waiting read)."""
    before = projector.batches
    with pytest.raises(QueryTimeout, match="not yet"):
        await projector.wait(projector.position + 1_000, within=0.5)
    assert projector.batches == before
