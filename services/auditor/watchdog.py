"""The stall watchdog (run by the auditor): nothing stays open silently.

A change whose lifecycle status says a service owes the next event (:data:`events.lifecycle.ACTIVE`)
and that made no progress for longer than that status's deadline gets ``change.stalled``:

* ``action: redrive`` first (up to ``max_redrives`` times): every service consumes it and, from
  the change's state, finishes its own step again — the planner compiles, pre-flight decides or
  releases, the executor resumes its run, the verifier verifies or plans the rollback, the
  auditor closes;
* ``action: close`` when the nudges did not help: the change's lifecycle ends with outcome
  ``stalled`` and the auditor closes it, naming where it stopped.

:func:`due` is the pure decision; :class:`Watchdog` keeps the state of every open change (evolved
event by event from the auditor's follower of the whole stream) and appends what :func:`due`
says. Event ids derive from the change's last event, so several auditors append each nudge once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from events.errors import ConcurrencyConflict
from events.ids import derive_id
from events.lifecycle import ChangeState, Status, evolve, fold, parse_ts
from events.model import ChangeStalled, Event, IntentSubmitted, RollbackApproved
from events.store import EventStore, new_event

log = logging.getLogger("upm.watchdog")
ACTOR = "auditor"

DEFAULT_DEADLINES: Mapping[Status, float] = {
    "planning": 120.0,
    "preflight": 300.0,
    "approving": 60.0,
    "approved": 120.0,
    "executing": 3900.0,  # the executor's default change deadline (3600 s) and a margin
    "verifying": 600.0,
    "rollback-planning": 120.0,
    "rolling-back": 3900.0,
    "verifying-rollback": 600.0,
    "ended": 120.0,
}


@dataclass(frozen=True)
class Deadlines:
    """How long each active status may go without an event, how often to look, how many nudges."""

    by_status: Mapping[Status, float] = field(default_factory=lambda: dict(DEFAULT_DEADLINES))
    check_every_s: float = 5.0
    max_redrives: int = 2

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Deadlines:
        """``UPM_STALL_AFTER_S`` (one deadline for every status: for tests and small setups) and
        ``UPM_STALL_CHECK_S`` (how often to look) override the defaults."""
        env = os.environ if env is None else env
        after, every = env.get("UPM_STALL_AFTER_S"), env.get("UPM_STALL_CHECK_S")
        by_status = {status: float(after) for status in DEFAULT_DEADLINES} if after else dict(DEFAULT_DEADLINES)
        return cls(by_status=by_status, check_every_s=float(every) if every else 5.0)


def due(state: ChangeState, now: datetime, deadlines: Deadlines) -> ChangeStalled | None:
    """The nudge (or the end) a change is due, if it has stalled; pure."""
    if not state.active or not state.last_ts:
        return None
    deadline = deadlines.by_status.get(state.status)
    waited = (now - parse_ts(state.last_ts)).total_seconds()
    if deadline is None or waited < deadline:
        return None
    previous = state.stalls[-1] if state.last_type == "change.stalled" and state.stalls else None
    attempt = previous.attempt + 1 if previous is not None else 1
    return ChangeStalled(
        status=state.status,
        since=previous.since if previous is not None else state.last_ts,
        last_event_id=previous.last_event_id if previous is not None else state.last_event_id,
        last_type=previous.last_type if previous is not None else state.last_type,
        waited_s=round(waited + (previous.waited_s if previous is not None else 0.0), 3),
        action="close" if attempt > deadlines.max_redrives else "redrive",
        attempt=attempt,
    )


class Watchdog:
    """Keeps the lifecycle state of every open change and appends ``change.stalled`` when due."""

    def __init__(self, store: EventStore, deadlines: Deadlines | None = None) -> None:
        self.store = store
        self.deadlines = deadlines or Deadlines.from_env()
        self.states: dict[str, ChangeState] = {}
        self.reopened: set[tuple[str, str]] = set()
        self.nudged = 0

    def observe(self, event: Event) -> None:
        """Evolve the change's state (pure bookkeeping); forget it once closed."""
        state = self.states.get(event.change_id)
        if state is None:
            if isinstance(event.payload, RollbackApproved):
                self.reopened.add((event.tenant, event.change_id))  # a rollback after the close
            if not isinstance(event.payload, IntentSubmitted):
                return  # not a change (drift log, log heads), or one closed before
            state = ChangeState()
        state = evolve(state, event)
        if state.status in ("closed", "chain-broken", "unknown"):
            self.states.pop(event.change_id, None)
        else:
            self.states[event.change_id] = state

    async def check(self, now: datetime | None = None) -> list[ChangeStalled]:
        """Append ``change.stalled`` to every change that is due; what was appended."""
        now = now or datetime.now(UTC)
        for tenant, change_id in sorted(self.reopened):
            change = await self.store.read(tenant, change_id)
            state = fold(s.event for s in change.events)
            if state.status not in ("closed", "chain-broken", "unknown"):
                self.states[change_id] = state
        self.reopened.clear()
        appended: list[ChangeStalled] = []
        for state in list(self.states.values()):
            stalled = due(state, now, self.deadlines)
            if stalled is None:
                continue
            change = await self.store.read(state.tenant, state.change_id)
            if not change.events or change.events[-1].event.id != state.last_event_id:
                continue  # it moved meanwhile: the follower will tell
            origin = change.events[0].event
            event = new_event(stalled, event_id=derive_id(state.last_event_id, "change.stalled"),
                              change_id=state.change_id, tenant=state.tenant,
                              ts=now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                              actor=ACTOR, source=origin.source, visibility=origin.visibility)
            try:
                await self.store.append(change, [event])
            except ConcurrencyConflict:
                continue
            log.warning("change %s/%s stalled while %s since %s (last event %s): %s, attempt %d",
                        state.tenant, state.change_id, stalled.status, stalled.since, stalled.last_type,
                        stalled.action, stalled.attempt)
            self.nudged += 1
            appended.append(stalled)
        return appended
