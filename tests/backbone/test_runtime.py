"""The service runtime against a real nats-server: redelivery after a crash, shared consumers."""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import msgspec
from nats.aio.client import Client as NATS

from events.store import EventStore
from services.common.runtime import Runner, ServiceSpec
from services.gateway.service import Gateway
from services.planner import service as planner
from upm.natsserver import EmbeddedNats

HERE = Path(__file__).parent


async def _intent(nc: NATS, request: str, tenant: str = "acme") -> str:
    reply = await nc.request(
        f"upm.cmd.{tenant}.intent.alice", msgspec.json.encode({"request": request}), timeout=5
    )
    body = msgspec.json.decode(reply.data)
    assert body["ok"], body
    return str(body["change_id"])


async def _types(store: EventStore, change_id: str) -> list[str]:
    return [s.event.type for s in (await store.read("acme", change_id)).events]


Eventually = Callable[[Callable[[], Awaitable[bool]], float], Awaitable[None]]


async def test_a_service_killed_after_append_before_ack_leaves_one_copy(
    nats_server: EmbeddedNats, nc: NATS, store: EventStore, tmp_path: Path, eventually: Eventually
) -> None:
    async with anyio.create_task_group() as tg:
        ready = anyio.Event()
        tg.start_soon(lambda: Gateway(nc).run(ready=ready))
        await ready.wait()
        change_id = await _intent(nc, f"Create directory {tmp_path}/crash with mode 0750")
        # A real OS process runs the planner and SIGKILLs itself after appending, before acking.
        env = {**os.environ, "PYTHONPATH": str(HERE.parent.parent)}
        with anyio.fail_after(60):
            child = await anyio.run_process(
                [sys.executable, str(HERE / "crashing_service.py"), nats_server.url], env=env, check=False
            )
        assert child.returncode == -9
        assert await _types(store, change_id) == ["intent.submitted", "plan.compiled"]
        # Restarted: the intent is redelivered (never acked), re-decided, and nothing is stored twice.
        real = planner.spec()
        runner = Runner(nc, ServiceSpec(name=real.name, consumes=real.consumes, handle=real.handle, ack_wait=1.0))
        tg.start_soon(runner.run)

        async def redelivered_and_acked() -> bool:
            info = await store.js.consumer_info("UPM_EVENTS", "planner")
            return runner.handled == 1 and info.num_ack_pending == 0 and info.num_pending == 0

        await eventually(redelivered_and_acked, 20.0)
        assert await _types(store, change_id) == ["intent.submitted", "plan.compiled"]
        tg.cancel_scope.cancel()


async def test_two_planner_replicas_share_one_durable_consumer(
    nc: NATS, store: EventStore, tmp_path: Path, eventually: Eventually
) -> None:
    replicas = [Runner(nc, planner.spec()), Runner(nc, planner.spec())]
    async with anyio.create_task_group() as tg:
        ready = anyio.Event()
        tg.start_soon(lambda: Gateway(nc).run(ready=ready))
        await ready.wait()
        for r in replicas:
            tg.start_soon(r.run)
        changes = [await _intent(nc, f"Create directory {tmp_path}/r{i} with mode 0750") for i in range(50)]

        async def all_planned() -> bool:
            return sum(r.handled for r in replicas) >= 50

        await eventually(all_planned, 60.0)
        await anyio.sleep(0.5)  # a double delivery would show up here
        tg.cancel_scope.cancel()
    counts: Counter[str] = Counter()
    for change_id in changes:
        counts.update(await _types(store, change_id))
    assert counts == Counter({"intent.submitted": 50, "plan.compiled": 50})
    assert sum(r.handled for r in replicas) == 50
    assert all(r.handled > 0 for r in replicas), [r.handled for r in replicas]
