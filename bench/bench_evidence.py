"""Evidence keeps up at any log size: close → evidence lag with a 100k-event stream, and completeness
after a burst of closed changes.

    python bench/bench_evidence.py [--prefill 100000] [--steady 200] [--rate 10] [--burst 2000] [--lanes 32]

1. ``--prefill`` valid events (closed changes, each already with its pack event: the happy shape of
   bench_projections' generator) are stored on their changes' subjects with pipelined publishes.
2. The auditor's witness starts in its own process (``Witness.run``, a fresh data folder) and
   follows the whole stream; its catch-up is timed up to the first pack of a change closed then.
3. Steady: ``--steady`` closed changes (intent → … → change.closed, one append of their events
   each through the EventStore), ``--rate`` changes a second.
4. Burst: ``--burst`` closed changes appended from ``--lanes`` concurrent writers as fast as the
   server takes them; then the bench waits (up to 600 s) for their packs.

Lag = the stream's own store time of ``evidence.published`` minus that of the change's
``change.closed`` (both from JetStream message metadata: one clock). Completeness = changes with
a pack / closed changes, at the end of the burst's wait. Results go to bench/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "projections"))

import anyio
import nats
from bench_projections import UUID, templates
from common import embedded_server, machine, median, p95
from nats.js import api
from upm_history import History, happy

from events.model import ChangeClosed, EvidencePublished, decode_event, type_of
from events.store import ChangeLog, EventStore
from events.subjects import EVENT_ROOT, STREAM, event_subject


async def fill_stream(url: str, n: int) -> None:
    """Store ``n`` events (rounded up to whole changes) of closed changes that have their pack already (the happy shape of
    bench_projections, fresh ids), on their changes' subjects, with pipelined publishes."""
    shape = templates()[0]
    template_cid = UUID.search(shape[0]).group(0)  # type: ignore[union-attr]
    types = [type_of(type(decode_event(data).payload)) for data in shape]
    nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
    await EventStore(nc).ensure_stream()
    js = nc.jetstream()
    seq = 1
    for change in range(-(-n // len(shape))):  # whole changes: n rounded up
        cid = f"{change:08x}-0000-7000-8000-{change:012x}"
        for data, kind in zip(shape, types, strict=True):
            doc = UUID.sub(f"{seq:08x}-0001-7000-8000-{seq:012x}".encode(), data.replace(template_cid, cid.encode()))
            await js.publish_async(event_subject("acme", cid, kind), doc)
            seq += 1
    await js.publish_async_completed()
    await nc.close()


async def witness(url: str, data: str) -> None:
    """The witness process: follow the stream and publish packs until killed (``UPM_BENCH_PROFILE``:
    a file to dump a cProfile of it to on SIGTERM)."""
    from services.auditor.service import Witness

    nc = await nats.connect(url)
    await Witness(nc, data).run()


def profiled_witness(url: str, data: str, out: str) -> None:
    import cProfile
    import signal

    profile = cProfile.Profile()

    def stop(*_: object) -> None:
        profile.disable()
        profile.dump_stats(out)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    profile.enable()
    anyio.run(witness, url, data)


async def close_changes(store: EventStore, count: int, lanes: int, first: int, rate: float = 0.0) -> list[str]:
    """Append ``count`` closed changes (each one append of all its events) from ``lanes`` writers,
    at most ``rate`` changes a second (0: as fast as they go)."""
    h = History()
    h.counter = first  # fresh change ids per phase
    changes = [happy(h, "acme", at=i, published=False) for i in range(count)]
    by_change: dict[str, list[bytes]] = {}
    for _, data in h.records:
        by_change.setdefault(decode_event(data).change_id, []).append(data)
    queue = [c.change_id for c in changes]
    started = time.perf_counter()

    async def lane() -> None:
        while queue:
            change_id = queue.pop(0)
            if rate:
                await anyio.sleep(max(0.0, started + (count - len(queue) - 1) / rate - time.perf_counter()))
            events = [decode_event(d) for d in by_change[change_id]]
            await store.append(ChangeLog("acme", change_id), events)

    async with anyio.create_task_group() as tg:
        for _ in range(lanes):
            tg.start_soon(lane)
    return [c.change_id for c in changes]


async def stamps(js: object, start: int, until: float, want: set[str]) -> dict[str, dict[str, float]]:
    """change → {"closed": store time, "evidence": store time} from sequence ``start`` on, read until
    every change in ``want`` has its pack or ``until`` (monotonic) passes."""
    out: dict[str, dict[str, float]] = {}
    sub = await js.subscribe(f"{EVENT_ROOT}.>", ordered_consumer=True,  # type: ignore[attr-defined]
                             deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                             config=api.ConsumerConfig(opt_start_seq=start))
    done: set[str] = set()
    try:
        while time.monotonic() < until and not want <= done:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except nats.errors.TimeoutError:
                continue
            event = decode_event(msg.data)
            kind = "closed" if isinstance(event.payload, ChangeClosed) else (
                "evidence" if isinstance(event.payload, EvidencePublished) else "")
            if kind and event.change_id in want:
                out.setdefault(event.change_id, {}).setdefault(kind, msg.metadata.timestamp.timestamp())
                if kind == "evidence":
                    done.add(event.change_id)
    finally:
        await sub.unsubscribe()
    return out


def lags(times: dict[str, dict[str, float]]) -> list[float]:
    return [(t["evidence"] - t["closed"]) * 1000 for t in times.values() if "closed" in t and "evidence" in t]


async def main(args: argparse.Namespace) -> None:
    print(f"machine: {machine()}, load average {os.getloadavg()[0]:.1f}")
    with embedded_server() as server, tempfile.TemporaryDirectory(prefix="upm-bench-evidence-") as tmp:
        started = time.perf_counter()
        await fill_stream(server.url, args.prefill)
        print(f"prefill: {args.prefill:,} events in {time.perf_counter() - started:.1f} s")
        nc = await nats.connect(server.url)
        store = EventStore(nc)
        js = nc.jetstream()
        start_seq = (await js.stream_info(STREAM)).state.last_seq + 1
        proc = await anyio.open_process([sys.executable, __file__, "--witness", server.url, str(Path(tmp) / "data")],
                                        stdout=None, stderr=None)
        try:
            started = time.perf_counter()
            first = await close_changes(store, 1, 1, 1_000_000)
            await stamps(js, start_seq, time.monotonic() + 600, set(first))
            print(f"witness catch-up over {args.prefill:,} events + first pack: {time.perf_counter() - started:.1f} s")

            steady_seq = (await js.stream_info(STREAM)).state.last_seq + 1
            steady = await close_changes(store, args.steady, 1, 2_000_000, args.rate)
            t = await stamps(js, steady_seq, time.monotonic() + 120, set(steady))
            lag = lags(t)
            print(f"steady: {len(steady)} changes closed at {args.rate:g}/s; {len(lag)} packs; close→evidence "
                  f"median {median(lag):.1f} ms, P95 {p95(lag):.1f} ms, max {max(lag):.1f} ms")

            burst_seq = (await js.stream_info(STREAM)).state.last_seq + 1
            started = time.perf_counter()
            burst = await close_changes(store, args.burst, args.lanes, 3_000_000)
            appended = time.perf_counter() - started
            t = await stamps(js, burst_seq, time.monotonic() + 600, set(burst))
            waited = time.perf_counter() - started
            lag = lags(t)
            closed = sum(1 for v in t.values() if "closed" in v)
            size = (await js.stream_info(STREAM)).state.last_seq
            print(f"burst: {len(burst)} changes appended in {appended:.1f} s ({len(burst) / appended:.0f}/s); "
                  f"{len(lag)}/{closed} with a pack after {waited:.1f} s: completeness {100 * len(lag) / closed:.1f} %; "
                  f"close→evidence median {median(lag):.0f} ms, P95 {p95(lag):.0f} ms; stream now {size:,} events")
        finally:
            proc.terminate()
            await proc.wait()
            await nc.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--witness"]:
        if os.environ.get("UPM_BENCH_PROFILE"):
            profiled_witness(sys.argv[2], sys.argv[3], os.environ["UPM_BENCH_PROFILE"])
        anyio.run(witness, sys.argv[2], sys.argv[3])
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefill", type=int, default=100_000)
    parser.add_argument("--steady", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--lanes", type=int, default=32)
    anyio.run(main, parser.parse_args())
