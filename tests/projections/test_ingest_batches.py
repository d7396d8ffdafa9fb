"""Batch ingest: however the log is cut into batches, the tables are the same; a batch that fails
midway leaves nothing and is applied whole when it comes again; a batch runs only the statements
of the event types it holds."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import duckdb
import pytest
from upm_history import History, failed, happy

from projections import db as db_module
from projections import ingest
from projections.db import open_file
from projections.lifecycle import Lifecycles

Tables = dict[str, list[tuple[Any, ...]]]


def history() -> list[tuple[int, bytes]]:
    h = History()
    for i in range(12):
        (happy if i % 3 else failed)(h, "acme" if i % 2 else "other", at=10.0 * i)
    h.change("acme").intent(200).compiled(201).preflight(202, ok=False).close(203, "rejected")
    return h.records


def tables(con: duckdb.DuckDBPyConnection) -> Tables:
    names = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
    return {name: con.execute(f"SELECT * FROM {name} ORDER BY ALL").fetchall() for name in names}


def ingested(path: Path, batches: list[list[tuple[int, bytes]]]) -> Tables:
    con = open_file(path, read_only=False)
    lifecycles = Lifecycles()
    try:
        for batch in batches:
            ingest.ingest(con, batch, lifecycles)
        return tables(con)
    finally:
        con.close()


def cut(records: list[tuple[int, bytes]], sizes: list[int]) -> list[list[tuple[int, bytes]]]:
    out, i = [], 0
    for size in sizes:
        out.append(records[i:i + size])
        i += size
    return [b for b in out if b]


def test_every_way_of_batching_gives_the_same_tables(tmp_path: Path) -> None:
    records = history()
    whole = ingested(tmp_path / "whole.duckdb", [records])
    assert len(whole["events"]) == len(records)
    assert {r[1] for r in whole["changes"]}  # the fact tables are filled, not just events
    assert whole["steps"] and whole["plans"] and whole["verifications"] and whole["rollbacks"]
    one_by_one = ingested(tmp_path / "ones.duckdb", [[r] for r in records])
    draw = random.Random(21)
    sizes = [draw.randint(1, 9) for _ in records]
    ragged = ingested(tmp_path / "ragged.duckdb", cut(records, sizes))
    # overlapping re-deliveries (a batch re-sent after a crash) are skipped, not doubled
    again = ingested(tmp_path / "again.duckdb", [records[:30], records[10:50], records[:], records[40:]])
    assert one_by_one == whole
    assert ragged == whole
    assert again == whole


def test_a_batch_failing_midway_leaves_nothing_and_is_applied_whole_next_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = history()
    reference = ingested(tmp_path / "reference.duckdb", [records])
    con = open_file(tmp_path / "crash.duckdb", read_only=False)
    lifecycles = Lifecycles()
    try:
        ingest.ingest(con, records[:20], lifecycles)
        before = tables(con)
        statements = list(ingest.DERIVED)
        failing = (None, "SELECT error('the disk went away') FROM events WHERE seq > $lo AND seq <= $hi")
        monkeypatch.setattr(ingest, "DERIVED", (*statements[:5], failing, *statements[5:]))
        with pytest.raises(duckdb.Error, match="the disk went away"):
            ingest.ingest(con, records[20:], lifecycles)
        assert tables(con) == before  # rows, derived rows and position: all rolled back
        assert ingest.position(con) == records[19][0]
        monkeypatch.setattr(ingest, "DERIVED", tuple(statements))
        ingest.ingest(con, records[20:], Lifecycles())  # a restarted projector: no states in memory
        assert tables(con) == reference
    finally:
        con.close()


def test_a_batch_runs_only_the_statements_of_its_event_types() -> None:
    records = history()
    by_type = {ingest.batch_types([d]): d for _, d in records}
    step = next(d for types, d in by_type.items() if types == frozenset({"step.completed"}))
    run = [sql for reads, sql in ingest.DERIVED if ingest.wanted(ingest.batch_types([step]), reads)]
    assert run == [ingest._STEPS, ingest._CHANGES]
    everything = ingest.batch_types([d for _, d in records])
    assert everything is not None and {"intent.submitted", "change.closed", "step.completed"} <= everything
    assert ingest.batch_types([b"{not json"]) is None  # undecodable: every statement runs
    assert all(ingest.wanted(None, reads) for reads, _ in ingest.DERIVED)
    head = b'{"payload": {"type": "log.head"}}'
    assert [sql for reads, sql in ingest.DERIVED if ingest.wanted(ingest.batch_types([head]), reads)] == [
        ingest._LOG_HEADS]


def unsaved_bytes(con: duckdb.DuckDBPyConnection) -> int:
    """What DuckDB holds in memory for rows not yet checkpointed: new rows and their key indexes."""
    row = con.execute("SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() "
                      "WHERE tag IN ('IN_MEMORY_TABLE', 'ART_INDEX')").fetchone()
    return int(row[0]) if row else 0


def test_the_projection_files_memory_stays_flat_as_the_log_grows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db_module, "CHECKPOINT_EVERY", 200, raising=False)
    records = History()
    for i in range(120):
        happy(records, "acme", at=10.0 * i)
    db = db_module.ProjectionDB(tmp_path / "proj")
    seen = []
    try:
        for i in range(0, len(records.records), 50):
            db.ingest(records.records[i:i + 50])
            db.flush("acme")
            seen.append((unsaved_bytes(db.main), unsaved_bytes(db.tenant("acme"))))
    finally:
        db.close()
    assert len(records.records) > 5 * 200
    # without checkpoints both grow with every batch; with them they fall back
    # each CHECKPOINT_EVERY records, and never hold more than that many records' worth
    half = len(seen) // 2
    for column in (0, 1):
        values = [s[column] for s in seen]
        assert max(values[half:]) <= max(values[:half]) * 1.25, values
        assert values.count(min(values)) >= 3 or min(values) < max(values) / 4, values
