"""Backbone benchmarks: append throughput vs raw JetStream publish, end-to-end latency, changes/min.

    python bench/bench_backbone.py [--events N] [--changes N]

Appends carry the full contract (Nats-Msg-Id, expected last subject sequence on the change's
wildcard subject, hash chain, sync_interval: always on the server); the raw figure publishes the
same bytes with no headers to the same server in the same run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anyio
import nats
from common import embedded_server, machine, median, p95

from events.ids import new_id
from events.model import Event, IntentSubmitted, encode_event
from events.store import ChangeLog, EventStore, new_event
from services.common import client
from upm import app


def _event(change_id: str, i: int) -> Event:
    return new_event(
        IntentSubmitted(request=f"create directory /nonexistent/bench/{i}", initiator="bench"),
        event_id=new_id(), change_id=change_id, tenant="bench", ts="2026-11-26T00:00:00.000Z",
        actor="bench", source="api",
    )


async def appends(url: str, n: int) -> None:
    nc = await nats.connect(url)
    store = EventStore(nc)
    await store.ensure_stream()
    logs = [ChangeLog("bench", new_id()) for _ in range(64)]
    events = [_event(logs[i % 64].change_id, i) for i in range(n)]
    payload = encode_event(events[0])

    t = time.perf_counter()
    for i, e in enumerate(events):
        await store.append(logs[i % 64], [e])
    one = n / (time.perf_counter() - t)

    t = time.perf_counter()
    for i in range(n):
        await store.js.publish(f"upm.evt.raw.{i % 64}.x", payload)
    raw_one = n / (time.perf_counter() - t)

    logs2 = [ChangeLog("bench", new_id()) for _ in range(64)]
    t = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for lane in range(64):
            async def run(lane: int = lane) -> None:
                for i in range(lane, n, 64):
                    await store.append(logs2[lane], [_event(logs2[lane].change_id, i)])
            tg.start_soon(run)
    piped = n / (time.perf_counter() - t)

    t = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for lane in range(64):
            async def raw(lane: int = lane) -> None:
                for _ in range(lane, n, 64):
                    await store.js.publish(f"upm.evt.raw2.{lane}.x", payload)
            tg.start_soon(raw)
    raw_piped = n / (time.perf_counter() - t)
    await nc.close()
    print(f"append one-at-a-time: {one:8.0f} events/s   raw publish: {raw_one:8.0f}/s   ratio {one / raw_one:.2f}")
    print(f"append pipelined x64: {piped:8.0f} events/s   raw publish: {raw_piped:8.0f}/s   ratio {piped / raw_piped:.2f}")


async def end_to_end(url: str, n: int, in_flight: int, work: Path) -> None:
    nc = await nats.connect(url)
    store = EventStore(nc)
    target = work / "noop"
    target.mkdir(mode=0o750)
    target.chmod(0o750)
    request = {"request": f"Create directory {target} with mode 0750"}
    async with anyio.create_task_group() as tg:
        tg.start_soon(app.serve, nc, app.SERVICE_NAMES)
        await anyio.sleep(0.5)
        lat = []
        for _ in range(n):
            t = time.perf_counter()
            cid = await client.submit(nc, "bench", request, principal="bench")
            status = await client.wait_closed(store, "bench", cid, within=60)
            assert status.outcome == "succeeded", status
            lat.append((time.perf_counter() - t) * 1000)
        print(f"intent → closed (no-op local change, sequential, n={n}): median {median(lat):.1f} ms, "
              f"P95 {p95(lat):.1f} ms")

        t = time.perf_counter()
        async with anyio.create_task_group() as inner:
            for _ in range(in_flight):
                async def one() -> None:
                    cid = await client.submit(nc, "bench", request, principal="bench")
                    status = await client.wait_closed(store, "bench", cid, within=120)
                    assert status.outcome == "succeeded", status
                inner.start_soon(one)
        elapsed = time.perf_counter() - t
        print(f"{in_flight} changes in flight: all closed in {elapsed:.2f} s = {in_flight / elapsed * 60:.0f} changes/min")
        tg.cancel_scope.cancel()
    await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--in-flight", type=int, default=50)
    args = parser.parse_args()
    print(f"# backbone bench — {machine()}")
    with embedded_server() as server:
        anyio.run(appends, server.url, args.events)
    with embedded_server() as server:  # a fresh log: the append bench's intents are not to be planned
        anyio.run(end_to_end, server.url, args.changes, args.in_flight, server.data_dir)


if __name__ == "__main__":
    main()
