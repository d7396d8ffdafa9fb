"""Back-pressure at the gateway: intents wait in a bounded queue and their callers are told so (they
keep waiting past their silence limit); beyond the bound an intent is refused at once, saying why and
what to do, and the client sends it again with backoff."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from events.store import EventStore
from events.subjects import STREAM, command_subject
from services.common import client
from services.common.errors import CommandRejected, ConfigError
from services.gateway.service import QUEUE_BOUND, QUEUE_BOUND_ENV, Gateway, Intake, queue_bound

STORE_S = 0.25  # the deliberately slow gateway spends this long on each intent before storing it


class SlowGateway(Gateway):
    """A gateway on a slow store: each intent takes STORE_S (a disk, a leader election)."""

    async def on_intent(self, msg: Msg) -> bytes | None:
        await anyio.sleep(STORE_S)
        return await super().on_intent(msg)


async def _stored(store: EventStore) -> int:
    return int((await store.js.stream_info(STREAM)).state.messages)


@pytest.fixture
async def slow_gateway(nc: NATS) -> AsyncIterator[Callable[..., Any]]:
    tasks: list[asyncio.Future[None]] = []

    async def start(**kwargs: Any) -> Gateway:
        gw = SlowGateway(nc, workers=1, progress_s=0.2, **kwargs)
        ready = anyio.Event()
        tasks.append(asyncio.ensure_future(gw.run(ready=ready)))
        await ready.wait()
        return gw

    yield start
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_queued_intents_outlast_the_silence_limit_and_the_rest_are_refused_saying_so(
    nc: NATS, store: EventStore, slow_gateway: Callable[..., Any]
) -> None:
    await slow_gateway(bound=5)
    ids: list[str] = []
    refusals: list[CommandRejected] = []
    notes: list[dict[str, Any]] = []

    async def one(i: int) -> None:
        try:
            ids.append(await client.submit(nc, "acme", {"request": f"create directory /tmp/bp/{i}"}, principal="alice",
                                           within=1.0, busy_within=0, on_progress=notes.append))
        except CommandRejected as err:
            refusals.append(err)

    async with anyio.create_task_group() as tg:
        for i in range(12):
            tg.start_soon(one, i)
            await anyio.sleep(0.01)  # in this order: the first is taken, five wait, six find the queue full
    # 1 in hand + 5 queued; the last of them is stored ~1.5 s after it was sent, beyond the 1 s silence limit
    assert len(ids) == 6 and len(set(ids)) == 6
    assert await _stored(store) == 6
    assert len(refusals) == 6
    for err in refusals:
        assert err.rule == "busy" and err.field == "gateway"
        assert "5 intents are waiting" in str(err) and "bound is 5" in str(err)
        assert "nothing was stored" in str(err) and "send it again" in str(err)
    assert notes and all(n["bound"] == 5 and n["state"] in ("queued", "storing") for n in notes)
    assert {n["ahead"] for n in notes if n["state"] == "queued"} >= {0, 1}


async def test_many_concurrent_submits_all_get_in_with_backoff(
    nc: NATS, store: EventStore, slow_gateway: Callable[..., Any]
) -> None:
    await slow_gateway(bound=3)
    ids: list[str] = []

    async def one(i: int) -> None:
        ids.append(await client.submit(nc, "acme", {"request": f"create directory /tmp/bp2/{i}"}, principal="alice",
                                       within=2.0, busy_within=60))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, i)
    assert len(set(ids)) == 20
    assert await _stored(store) == 20


async def test_a_plain_request_that_waits_gets_only_its_reply(
    nc: NATS, store: EventStore, slow_gateway: Callable[..., Any]
) -> None:
    await slow_gateway(bound=10)  # notes every 0.2 s; the third waits ~0.5 s in the queue
    replies: list[dict[str, Any]] = []

    async def plain(i: int) -> None:
        reply = await nc.request(command_subject("acme", "intent", "alice"),
                                 msgspec.json.encode({"request": f"create directory /tmp/bp3/{i}"}), timeout=10)
        replies.append(msgspec.json.decode(reply.data))

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(plain, i)
    assert [r["ok"] for r in replies] == [True, True, True]
    assert await _stored(store) == 3


async def test_the_intake_is_bounded_and_owes_notes_in_queue_order() -> None:
    intake = Intake(bound=2)
    a, b, c = (Msg(_client=None, subject=f"s{i}", reply=f"r{i}") for i in range(3))  # type: ignore[arg-type]
    assert intake.offer(a, 0.0) and intake.offer(b, 0.5)
    assert not intake.offer(c, 0.6)
    assert intake.due(0.9, 1.0) == []
    assert [(m.reply, n.state, n.ahead) for m, n in intake.due(1.2, 1.0)] == [("r0", "queued", 0)]
    assert [(m.reply, n.state, n.ahead) for m, n in intake.due(1.6, 1.0)] == [("r1", "queued", 1)]
    assert intake.due(1.7, 1.0) == []  # each told once per interval
    async with intake.take() as first:
        assert first is a and intake.offer(c, 1.8)  # taken: room for one more
        assert [(m.reply, n.state, n.ahead) for m, n in intake.due(2.3, 1.0)] == [("r0", "storing", 0)]
    assert not intake.storing


def test_the_queue_bound_comes_from_the_environment_and_a_wrong_one_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(QUEUE_BOUND_ENV, raising=False)
    assert queue_bound() == QUEUE_BOUND
    monkeypatch.setenv(QUEUE_BOUND_ENV, "7")
    assert queue_bound() == 7
    for wrong in ("0", "-3", "many"):
        monkeypatch.setenv(QUEUE_BOUND_ENV, wrong)
        with pytest.raises(ConfigError, match="is not a positive integer: set it to how many intents"):
            queue_bound()
