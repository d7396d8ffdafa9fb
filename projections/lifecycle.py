"""Each change's lifecycle status in the projections, evolved by :mod:`events.lifecycle` itself.

The ``status`` column of ``changes`` is not derived in SQL: :class:`Lifecycles` keeps the lifecycle state of every open change of one
projection file, evolves it with each batch's events, and :func:`write` stores the statuses of
the changes the batch touched, in the batch's transaction. A change that closes is forgotten; an
event that may change a change it does not hold (after a restart, or a rollback after the close)
loads that change's events back from the file's ``events`` table first. Status-neutral events
(:data:`events.lifecycle.NEUTRAL`) of changes it does not hold are skipped without a read.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import msgspec

from events.lifecycle import NEUTRAL, ChangeState, evolve, fold
from events.model import Event, IntentSubmitted, decode_event

Key = tuple[str, str]
Row = tuple[str, str, str]  # tenant, change_id, status

_ENVELOPE_JSON = (
    "json_object('id', id, 'change_id', change_id, 'tenant', tenant, 'phase', phase, 'ts', ts, 'actor', actor, "
    "'source', source, 'visibility', visibility, 'prev_hash', prev_hash, 'hash', hash, 'payload', payload)"
)
_UPDATE = """
UPDATE changes SET status = u.status
FROM (SELECT unnest($tenants::VARCHAR[]) AS tenant, unnest($ids::VARCHAR[]) AS change_id,
             unnest($statuses::VARCHAR[]) AS status) u
WHERE changes.tenant = u.tenant AND changes.change_id = u.change_id
"""
_DONE = ("closed", "chain-broken")


class Lifecycles:
    """The open changes' lifecycle states of one projection file (see the module docstring)."""

    def __init__(self) -> None:
        self.states: dict[Key, ChangeState] = {}
        self.not_changes: set[Key] = set()  # logs that are no change (a tenant's drift log, the log heads)

    def evolve(self, con: duckdb.DuckDBPyConnection, records: Sequence[tuple[int, bytes]], lo: int) -> list[Row]:
        """Evolve the states with the records above ``lo``; the rows of every change they touched."""
        touched: dict[Key, ChangeState] = {}
        for seq, data in records:
            if seq <= lo:
                continue
            try:
                event = decode_event(data)
            except (msgspec.ValidationError, msgspec.DecodeError):
                continue  # the events table keeps it; the audit names it
            key = (event.tenant, event.change_id)
            state = self.states.get(key)
            if state is None:
                state = self._load(con, key, event, lo)
                if state is None:
                    continue
            touched[key] = self.states[key] = evolve(state, event)
        for key, state in touched.items():  # forgotten once the batch is over, never within it
            if state.status in _DONE:
                del self.states[key]
        return [(t, c, s.status) for (t, c), s in touched.items()]

    def _load(self, con: duckdb.DuckDBPyConnection, key: Key, event: Event, lo: int) -> ChangeState | None:
        if key in self.not_changes:
            return None
        if isinstance(event.payload, IntentSubmitted):
            return ChangeState()
        if event.type in NEUTRAL:
            return None
        rows = con.execute(
            f"SELECT {_ENVELOPE_JSON} FROM events WHERE tenant = ? AND change_id = ? AND seq <= ? ORDER BY seq",
            [key[0], key[1], lo],
        ).fetchall()
        earlier = [decode_event(row[0].encode()) for row in rows]
        if not earlier or not isinstance(earlier[0].payload, IntentSubmitted):
            self.not_changes.add(key)  # every change starts with its intent
            return None
        return fold(earlier)


def write(con: duckdb.DuckDBPyConnection, rows: Sequence[Row]) -> None:
    """Store the statuses of ``rows`` (the outcome stays the auditor's ``change.closed``)."""
    if rows:
        con.execute(_UPDATE, {"tenants": [r[0] for r in rows], "ids": [r[1] for r in rows],
                              "statuses": [r[2] for r in rows]})
