"""The event log contract against a real nats-server: immutability, dedupe, concurrency, chain."""

from __future__ import annotations

import anyio
import msgspec
import pytest
from nats.js import api
from nats.js.errors import APIError

from events import chain
from events.errors import ChainBroken, ConcurrencyConflict, StreamMisconfigured
from events.ids import new_id
from events.model import Event, IntentSubmitted, PlanRejected
from events.store import ChangeLog, EventStore, new_event
from events.subjects import STREAM


def _event(change_id: str, request: str = "create directory /tmp/x", *, event_id: str | None = None) -> Event:
    return new_event(
        IntentSubmitted(request=request, initiator="alice"),
        event_id=event_id or new_id(),
        change_id=change_id,
        tenant="acme",
        ts="2026-11-26T00:00:00.000Z",
        actor="alice",
        source="api",
    )


async def test_purge_and_delete_are_refused_by_the_server(store: EventStore) -> None:
    cid = new_id()
    await store.append(ChangeLog("acme", cid), [_event(cid)])
    with pytest.raises(APIError, match="purge not permitted"):
        await store.js.purge_stream(STREAM)
    with pytest.raises(APIError, match="delete not permitted"):
        await store.js.delete_msg(STREAM, 1)
    info = await store.js.stream_info(STREAM)
    assert info.state.messages == 1


async def test_a_mutable_stream_is_refused(nc: object) -> None:
    s = EventStore(nc)  # type: ignore[arg-type]
    await s.js.add_stream(api.StreamConfig(name=STREAM, subjects=["upm.evt.>"], storage=api.StorageType.FILE))
    with pytest.raises(StreamMisconfigured, match="deny_delete is off"):
        await s.ensure_stream()


async def test_the_same_event_appended_twice_is_stored_once(store: EventStore) -> None:
    cid = new_id()
    event = _event(cid)
    first = await store.append(ChangeLog("acme", cid), [event])
    # A writer that never saw the first append (crash before ack) re-sends the same id.
    again = await store.append(ChangeLog("acme", cid), [event])
    assert again[0].seq == first[0].seq
    # A writer that has read the change skips ids it already holds.
    log = await store.read("acme", cid)
    assert await store.append(log, [event]) == []
    assert len((await store.read("acme", cid)).events) == 1


async def test_a_stale_expected_sequence_is_rejected(store: EventStore) -> None:
    cid = new_id()
    await store.append(ChangeLog("acme", cid), [_event(cid)])
    stale = ChangeLog("acme", cid)
    with pytest.raises(ConcurrencyConflict, match="moved on since sequence 0"):
        await store.append(stale, [_event(cid, "other")])
    assert len((await store.read("acme", cid)).events) == 1


async def test_two_concurrent_writers_on_one_change_exactly_one_wins(store: EventStore) -> None:
    cid = new_id()
    await store.append(ChangeLog("acme", cid), [_event(cid)])
    base_a = await store.read("acme", cid)
    base_b = await store.read("acme", cid)
    outcomes: list[str] = []

    async def write(log: ChangeLog, who: str) -> None:
        try:
            await store.append(log, [new_event(
                PlanRejected(reason=who, error="x"), event_id=new_id(), change_id=cid, tenant="acme",
                ts="t", actor=who, source="api")])
            outcomes.append("won")
        except ConcurrencyConflict:
            outcomes.append("conflict")

    async with anyio.create_task_group() as tg:
        tg.start_soon(write, base_a, "a")
        tg.start_soon(write, base_b, "b")
    assert sorted(outcomes) == ["conflict", "won"]
    log = await store.read("acme", cid)
    assert len(log.events) == 2
    assert chain.verify(cid, [(s.seq, s.data) for s in log.events]) == log.head


async def test_other_changes_do_not_conflict(store: EventStore) -> None:
    a, b = new_id(), new_id()
    log_a = ChangeLog("acme", a)
    await store.append(log_a, [_event(a)])
    await store.append(ChangeLog("acme", b), [_event(b)])
    await store.append(log_a, [_event(a, "second")])
    assert [len((await store.read("acme", c)).events) for c in (a, b)] == [2, 1]


async def test_a_tampered_event_breaks_the_chain_at_that_event(store: EventStore) -> None:
    cid = new_id()
    log = ChangeLog("acme", cid)
    await store.append(log, [_event(cid, f"step {i}") for i in range(4)])
    stored = [(s.seq, s.data) for s in log.events]
    assert chain.verify(cid, stored) == log.head
    victim = log.events[2]
    forged = msgspec.json.decode(victim.data)
    forged["payload"]["request"] = "delete everything"
    stored[2] = (victim.seq, msgspec.json.encode(forged))
    with pytest.raises(ChainBroken) as info:
        chain.verify(cid, stored)
    assert info.value.event_id == victim.event.id
    assert victim.event.id in str(info.value)


async def test_read_follows_batches_beyond_one_request(store: EventStore) -> None:
    cid = new_id()
    log = ChangeLog("acme", cid)
    await store.append(log, [_event(cid, f"e{i}") for i in range(600)])
    again = await store.read("*", cid)
    assert [s.seq for s in again.events] == [s.seq for s in log.events]
    assert again.tenant == "acme"


async def test_follow_streams_events_as_they_are_stored(store: EventStore) -> None:
    cid = new_id()
    log = ChangeLog("acme", cid)
    seen: list[str] = []

    async def consume() -> None:
        async for stored in store.follow(f"upm.evt.acme.{cid}.>"):
            seen.append(stored.event.id)
            if len(seen) == 3:
                return

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            for i in range(3):
                await store.append(log, [_event(cid, f"e{i}")])
    assert seen == [s.event.id for s in log.events]


async def test_a_writer_keeps_appending_from_the_tail_of_a_long_change(store: EventStore) -> None:
    """A long-lived writer (drift log, log heads) reads one event, trims after each append, and its
    chain stays whole: memory flat, start-up one direct get, however long the change grows."""
    cid = new_id()
    assert (await store.read_tail("acme", cid)).events == []
    full = ChangeLog("acme", cid)
    await store.append(full, [_event(cid, f"create directory /tmp/{i}") for i in range(5)])
    tail = await store.read_tail("acme", cid)
    assert [s.seq for s in tail.events] == [full.last_seq] and tail.head == full.head
    for i in range(3):
        await store.append(tail, [_event(cid, f"create directory /tmp/more-{i}")])
        tail.trim()
        assert len(tail.events) == 1
    other = ChangeLog("acme", cid)  # a stale writer still conflicts, as with a full log
    with pytest.raises(ConcurrencyConflict):
        await store.append(other, [_event(cid)])
    whole = await store.read("acme", cid)
    assert len(whole.events) == 8 and whole.head == tail.head
    assert chain.verify(cid, [(s.seq, s.data) for s in whole.events]) == tail.head


@pytest.mark.parametrize("err_code", [10071, 10164, 10158])
def test_every_form_of_a_write_conflict_is_a_concurrency_conflict(err_code: int) -> None:
    """A cluster answers an expected-sequence miss as 10164 ("wrong last sequence", no number) as
    well as 10071: both, and a duplicate id still being stored (10158), are conflicts to re-read
    and decide again on, never a refusal that kills the writer (the auditor died on 10164)."""
    import nats.js.errors

    from events.errors import ConcurrencyConflict
    from events.store import map_error

    exc = nats.js.errors.BadRequestError(code=400, err_code=err_code, description="wrong last sequence")
    assert isinstance(map_error(exc, subject="upm.evt.x", expected_seq=3), ConcurrencyConflict)
