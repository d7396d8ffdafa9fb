"""The projections' ``changes.status`` is the lifecycle's own (events/lifecycle.py), kept across
batches, across a restart of the projector and across a rollback after the close."""

from __future__ import annotations

from pathlib import Path

from upm_history import History, failed, happy

from events.lifecycle import fold
from events.model import decode_event
from projections.db import ProjectionDB


def _expected(records: list[tuple[int, bytes]]) -> dict[str, str]:
    events = [decode_event(data) for _, data in records]
    by_change: dict[str, list] = {}  # type: ignore[type-arg]
    for e in events:
        by_change.setdefault(e.change_id, []).append(e)
    return {cid: fold(evs).status for cid, evs in by_change.items()}


def _statuses(db: ProjectionDB) -> dict[str, str]:
    return dict(db.main.execute("SELECT change_id, status FROM changes").fetchall())


def _history() -> History:
    h = History()
    happy(h, at=0)
    failed(h, at=10)  # closed failed, then a verified rollback after the close
    c = h.change().intent(20).compiled(21).preflight(22, approve=False)
    c.request_approval(23)  # waits for people
    h.change().intent(30).compiled(31).preflight(32).execute(33)  # verifying, not closed yet
    h.change().intent(40).compiled(41).preflight(42, ok=False)  # ended (rejected), the auditor not there yet
    return h


def test_status_is_the_lifecycle_in_one_batch_and_event_by_event(tmp_path: Path) -> None:
    records = _history().records
    for batch_size, folder in ((len(records), "one"), (1, "each")):
        db = ProjectionDB(tmp_path / folder)
        for i in range(0, len(records), batch_size):
            db.ingest(records[i:i + batch_size])
        statuses = _statuses(db)
        db.close()
        assert statuses == _expected(records)
        assert sorted(set(statuses.values())) == ["awaiting-approval", "closed", "ended", "verifying"]


def test_status_survives_a_restart_and_a_rollback_after_the_close(tmp_path: Path) -> None:
    h = History()
    c = happy(h, at=0, published=False)
    first = list(h.records)
    db = ProjectionDB(tmp_path / "p")
    db.ingest(first)
    assert _statuses(db) == {c.change_id: "closed"}
    db.close()
    c.rollback(20, ok=True, verified=True)  # an operator's rollback of the closed change
    pending = h.change().intent(30).compiled(31)
    db = ProjectionDB(tmp_path / "p")  # a restarted projector: nothing in memory
    db.ingest(h.records[len(first):len(first) + 1])
    assert _statuses(db)[c.change_id] == "rollback-planning"  # loaded back from the file, then evolved
    db.ingest(h.records[len(first) + 1:])
    statuses = _statuses(db)
    db.close()
    assert statuses == _expected(h.records)
    assert statuses[c.change_id] == "closed" and statuses[pending.change_id] == "preflight"


def test_a_rollback_after_the_close_in_the_same_batch_as_the_close(tmp_path: Path) -> None:
    h = History()
    failed(h, at=0)  # closed 'failed', then its rollback
    types = [decode_event(data).type for _, data in h.records]
    cut = types.index("change.closed")
    db = ProjectionDB(tmp_path / "p")
    db.ingest(h.records[:cut])  # up to the failed verification
    db.ingest(h.records[cut:])  # the close and the whole rollback after it, in one batch
    statuses = _statuses(db)
    db.close()
    assert statuses == _expected(h.records) and set(statuses.values()) == {"closed"}


def test_the_drift_log_and_the_log_heads_are_no_change(tmp_path: Path) -> None:
    from events import model as m
    from events.commands import idempotent_change_id
    from events.subjects import LOG_HEADS_CHANGE_ID, SYSTEM_TENANT

    h = History()
    happy(h, at=0)
    drift_log = idempotent_change_id("acme", "upm-drift-log")
    h.append("acme", drift_log, m.DriftScanned(managed=1, checked=1, drifted=0, unknown=0, interval_s=1,
                                               duration_ms=1), 10, "verifier", "team")
    h.append(SYSTEM_TENANT, LOG_HEADS_CHANGE_ID, m.LogHeadSigned(size=9, root="r", signed_at="t", key_id="k",
                                                                signature="s"), 11, "auditor", "team")
    db = ProjectionDB(tmp_path / "p")
    db.ingest(h.records)
    ids = [r[0] for r in db.main.execute("SELECT change_id FROM changes").fetchall()]
    stored = db.main.execute("SELECT count(*) FROM events WHERE change_id IN (?, ?)",
                             [drift_log, LOG_HEADS_CHANGE_ID]).fetchone()
    db.close()
    assert drift_log not in ids and LOG_HEADS_CHANGE_ID not in ids and len(ids) == 1
    assert stored == (2,)  # still every event
