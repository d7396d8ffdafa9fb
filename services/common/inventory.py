"""The desired-state inventory (:mod:`events.desired`) kept current from the log.

:class:`Follower` is an ordered follower of the whole event stream that folds each event into
the inventory as it is stored (``events.desired.evolve``: no I/O, one event at a time). The drift
loop scans what it holds; pre-flight asks it who owns a resource and what its desired state is,
once it has folded at least up to the event being decided (:meth:`Follower.at_least`), so a
change that closed before a plan was compiled is always counted.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
import msgspec

from events.desired import EMPTY, Inventory, evolve
from events.model import decode_event
from events.store import EventStore, StoredEvent
from events.subjects import tenant_filter
from services.common import retry

log = logging.getLogger("upm.inventory")
OnEvent = Callable[[StoredEvent], Awaitable[None]]


class InventoryBehind(Exception):
    """The follower has not folded the log up to a sequence within the time allowed."""


class Follower:
    """Folds every stored event, in stream order, into :attr:`inventory`; :attr:`seq` is the last
    stream sequence folded. ``on_event`` runs after each event is folded."""

    def __init__(self, store: EventStore, on_event: OnEvent | None = None) -> None:
        self.store = store
        self.on_event = on_event
        self.inventory: Inventory = EMPTY
        self.seq = 0
        self._moved = anyio.Event()

    async def run(self) -> None:
        """Follow the stream from its start until cancelled, through NATS restarts, leader elections
        and lost consumers (:func:`services.common.retry.keep_running`), resuming after the last event folded."""
        await retry.keep_running("inventory: following the log", self._follow)

    async def _follow(self) -> None:
        async for seq, data in self.store.follow_raw(tenant_filter("*"), self.seq + 1):
            try:
                stored: StoredEvent | None = StoredEvent(seq=seq, event=decode_event(data), data=data)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:  # `upm audit verify` names it
                log.error("inventory: stream sequence %d does not decode, skipped: %s", seq, exc)
                stored = None
            if stored is not None:
                self.inventory = evolve(self.inventory, stored.event)
            self.seq = seq
            if stored is not None and self.on_event is not None:
                await self.on_event(stored)
            moved, self._moved = self._moved, anyio.Event()
            moved.set()

    async def at_least(self, seq: int, within: float) -> Inventory:
        """The inventory once every event up to stream sequence ``seq`` is folded, or
        :class:`InventoryBehind` after ``within`` seconds."""
        with anyio.move_on_after(within):
            while self.seq < seq:
                await self._moved.wait()
            return self.inventory
        raise InventoryBehind(
            f"the desired-state inventory reached stream sequence {self.seq}, not {seq}, within {within:g} s; "
            "is the event stream reachable? the change is refused rather than decided on an old inventory")
