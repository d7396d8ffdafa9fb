"""A change's pack does not wait for unrelated work: not for a pack that cannot be built yet."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from nats.aio.client import Client as NATS
from upm_history import History, happy, publish

from events.model import EvidencePublished
from events.store import EventStore
from events.subjects import EVENT_ROOT
from services.auditor.service import Witness

Eventually = Callable[[Callable[[], Awaitable[bool]], float], Awaitable[None]]


async def test_a_pack_that_cannot_be_read_back_does_not_hold_up_the_next(
    nc: NATS, store: EventStore, tmp_path: Path, host: Callable[..., Awaitable[None]], eventually: Eventually
) -> None:
    witness = Witness(nc, tmp_path / "data", interval=60)
    await host(witness)
    h = History()
    stuck = happy(h, published=False)
    js = nc.jetstream()
    for _, data in h.records:  # stored off its change's subjects: the witness sees it close, reading it back times out
        await js.publish(f"{EVENT_ROOT}.acme.misfiled.x", data)
    before = len(h.records)
    ok = happy(h, at=100, published=False)
    await publish(store, h.records[before:])

    async def packed() -> bool:
        log = await store.read("acme", ok.change_id)
        return any(isinstance(s.event.payload, EvidencePublished) for s in log.events)

    await eventually(packed, 5)  # reading the stuck change back gives up only after 10 s: it held this one up before
    assert stuck.change_id in witness.pending
