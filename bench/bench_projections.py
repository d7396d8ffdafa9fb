"""Projections benchmarks: projector ingest rate and lag over NATS, KPI query latency at 1M events.

    python bench/bench_projections.py [--events N] [--rate R] [--seconds S] [--kpi-events N] [--repeat K]

1. Catch-up ingest: N events are already in the stream; a projector starts and ingests them all
   (events/s from start to position N).
2. Lag under load: a publisher sends R events/s for S seconds while the projector follows; every
   1000th event's publish time is kept and compared with the moment the projector's position
   passed it (median / P95 ms), and the backlog in events is sampled every 50 ms.
3. KPI latency: N (default 1,000,000) events are generated straight into a DuckDB projection
   folder through the same ingest function (``ProjectionDB.ingest``, batches of 10,000), then
   each KPI's aggregate query runs K times (median / P95 ms), plus the one-row all-KPI query.

Events are realistic change histories (intent → plan → pre-flight → approval → steps → verify
→ close → evidence; 5% failed with a verified rollback, 5% rejected) over five tenants; each
change's events are rendered once from a template and stamped with fresh ids, so generation
does not dominate. Results are appended to bench/RESULTS.md (section "Projections").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "projections"))

import anyio
import nats
from common import embedded_server, machine, median, p95
from upm_history import History, failed, happy

from events.store import EventStore
from projections import kpi
from projections.db import ProjectionDB
from projections.projector import Projector

TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")
RESULTS = Path(__file__).parent / "RESULTS.md"
SECTION = "## Projections: projector ingest, lag, KPI queries (`bench/bench_projections.py`)"
UUID = re.compile(rb"0190f0a0-0000-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}")


def templates() -> list[list[bytes]]:
    """Three change shapes (happy, failed + rollback, rejected), each as its stored event bytes."""
    out = []
    for make in ("happy", "failed", "rejected"):
        h = History()
        if make == "happy":
            happy(h, "acme")
        elif make == "failed":
            failed(h, "acme")
        else:
            h.change("acme").intent(0).compiled(1).preflight(2, ok=False).close(3, "rejected")
        out.append([data for _, data in h.records])
    return out


def generate(n: int, start_seq: int = 1) -> Iterator[tuple[int, bytes]]:
    """``n`` events of realistic changes, stamped with fresh change and event ids, tenants, compile times."""
    shapes = [(shape, UUID.search(shape[0]).group(0)) for shape in templates()]  # type: ignore[union-attr]
    seq, change = start_seq, 0
    while True:
        shape, template_cid = shapes[0] if change % 20 not in (7, 13) else shapes[1 if change % 20 == 7 else 2]
        tenant = TENANTS[change % len(TENANTS)].encode()
        cid = f"{change:08x}-0000-7000-8000-{change:012x}".encode()
        ms = f'"compile_ms":{5 + change % 97}.0'.encode()
        for data in shape:
            if seq >= start_seq + n:
                return
            doc = UUID.sub(f"{seq:08x}-0001-7000-8000-{seq:012x}".encode(), data.replace(template_cid, cid))
            yield seq, doc.replace(b'"tenant":"acme"', b'"tenant":"' + tenant + b'"').replace(
                b'"compile_ms":10.0', ms)
            seq += 1
        change += 1


async def fill_stream(url: str, n: int) -> None:
    """Store ``n`` events (pipelined JetStream publishes: acknowledged, with a bounded window)."""
    nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
    await EventStore(nc).ensure_stream()
    js = nc.jetstream()
    for seq, data in generate(n):
        await js.publish_async(f"upm.evt.bench.x{seq % 64}.e", data)
    await js.publish_async_completed()
    await nc.close()


async def catch_up(url: str, folder: Path, n: int) -> float:
    nc = await nats.connect(url)
    p = Projector(nc, folder, serve_sql=False)
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.run)
        await p.wait(n, within=600)
        elapsed = time.perf_counter() - started
        tg.cancel_scope.cancel()
    await nc.close()
    return n / elapsed


async def publish_load(url: str, rate: int, seconds: float, first_seq: int) -> dict[str, object]:
    """The load publisher (its own process): up to ``rate`` events/s, acknowledged, pipelined
    (the server's acks bound it); the wall-clock publish time of every 1000th event."""
    pub = await nats.connect(url, pending_size=64 * 1024 * 1024)
    js = pub.jetstream()
    stamps: dict[int, float] = {}
    tick = 0.02
    started = time.perf_counter()
    batch: list[tuple[int, bytes]] = []
    last = first_seq - 1
    for seq, data in generate(int(rate * seconds), first_seq):
        batch.append((seq, data))
        if len(batch) >= rate * tick:
            for s, d in batch:
                await js.publish_async(f"upm.evt.bench.x{s % 64}.e", d)
                if s % 1000 == 0:
                    stamps[s] = time.time()
            last = batch[-1][0]
            batch.clear()
            ahead = started + (last - first_seq + 1) / rate - time.perf_counter()
            if ahead > 0:
                await anyio.sleep(ahead)
    for s, d in batch:
        await js.publish_async(f"upm.evt.bench.x{s % 64}.e", d)
        last = s
    await js.publish_async_completed()
    achieved = (last - first_seq + 1) / (time.perf_counter() - started)
    await pub.close()
    return {"last": last, "rate": achieved, "stamps": stamps}


async def under_load(url: str, folder: Path, rate: int, seconds: float, first_seq: int) -> dict[str, float]:
    nc = await nats.connect(url)
    p = Projector(nc, folder, serve_sql=False)
    seen: dict[int, float] = {}
    backlog: list[float] = []
    out = folder.parent / "load.json"
    async with anyio.create_task_group() as tg:
        ready = anyio.Event()
        tg.start_soon(lambda: p.run(ready=ready))
        await ready.wait()
        js = nc.jetstream()

        async def watch() -> None:
            while True:
                now = time.time()
                mark = p.position - p.position % 1000
                if mark >= first_seq and mark not in seen:
                    for s in range(max(first_seq + (-first_seq) % 1000, mark - 100_000), mark + 1, 1000):
                        seen.setdefault(s, now)
                stored = (await js.stream_info("UPM_EVENTS")).state.last_seq
                backlog.append(stored - p.position)
                await anyio.sleep(0.05)

        tg.start_soon(watch)
        publisher = await anyio.run_process(
            [sys.executable, __file__, "--publish", url, str(rate), str(seconds), str(first_seq), str(out)],
            check=True,
        )
        assert publisher.returncode == 0
        result = json.loads(await anyio.Path(out).read_text())
        await p.wait(int(result["last"]), within=600)
        await anyio.sleep(0.1)
        tg.cancel_scope.cancel()
    await nc.close()
    stamps = {int(k): v for k, v in result["stamps"].items()}
    lags = [(seen[s] - t) * 1000 for s, t in stamps.items() if s in seen]
    return {"offered": result["rate"], "lag_median_ms": median(lags), "lag_p95_ms": p95(lags),
            "backlog_median": median(backlog), "backlog_p95": p95(backlog), "batches": p.batches}


def kpi_latency(n: int, repeat: int) -> tuple[float, dict[str, tuple[float, float]]]:
    folder = Path(tempfile.mkdtemp(prefix="upm-bench-kpi-"))
    try:
        db = ProjectionDB(folder)
        started = time.perf_counter()
        batch: list[tuple[int, bytes]] = []
        for record in generate(n):
            batch.append(record)
            if len(batch) == 10_000:
                db.ingest(batch)
                batch = []
        if batch:
            db.ingest(batch)
        rate = n / (time.perf_counter() - started)
        where = kpi.EVER.where()
        queries = {k.name: f"SELECT {kpi._AGG[k.aggregate]} FROM {k.view} WHERE {where}" for k in kpi.KPIS}
        queries["all ten KPIs (one row)"] = kpi.query()
        queries["all ten KPIs, one tenant"] = kpi.query().replace("tenant <> '_system'", "tenant = 'acme'")
        out = {}
        cur = db.main.cursor()
        for name, sql in queries.items():
            cur.execute(sql).fetchall()
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                cur.execute(sql).fetchall()
                times.append((time.perf_counter() - t) * 1000)
            out[name] = (median(times), p95(times))
        cur.close()
        db.close()
        return rate, out
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_results(text: str) -> None:
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = current.find(SECTION)
    if start >= 0:
        end = current.find("\n## ", start + len(SECTION))
        current = current[:start].rstrip() + "\n" + (current[end:] if end >= 0 else "")
    RESULTS.write_text(current.rstrip() + "\n\n" + text.strip() + "\n")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--publish":
        url, rate, seconds, first, out = sys.argv[2:7]
        result = anyio.run(publish_load, url, int(rate), float(seconds), int(first))
        Path(out).write_text(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events for the catch-up ingest")
    parser.add_argument("--rate", type=int, default=20_000, help="offered events/s for the lag run")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the lag run")
    parser.add_argument("--kpi-events", type=int, default=1_000_000, help="events for the KPI queries")
    parser.add_argument("--repeat", type=int, default=30, help="runs per KPI query")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = parser.parse_args()
    loadavg = os.getloadavg()

    with embedded_server() as server, tempfile.TemporaryDirectory(prefix="upm-bench-proj-") as tmp:
        anyio.run(fill_stream, server.url, args.events)
        rate = anyio.run(catch_up, server.url, Path(tmp) / "p", args.events)
        print(f"catch-up ingest: {rate:,.0f} events/s over {args.events:,} events")
        load = anyio.run(under_load, server.url, Path(tmp) / "p", args.rate, args.seconds, args.events + 1)
        print(f"under load: offered {load['offered']:,.0f} ev/s; lag median {load['lag_median_ms']:.1f} ms, "
              f"P95 {load['lag_p95_ms']:.1f} ms; backlog median {load['backlog_median']:.0f}, "
              f"P95 {load['backlog_p95']:.0f} events; {load['batches']} batches")
    direct, latency = kpi_latency(args.kpi_events, args.repeat)
    print(f"direct ingest (no NATS): {direct:,.0f} events/s into {args.kpi_events:,} events")
    for name, (med, tail) in latency.items():
        print(f"  {name:<28} median {med:7.2f} ms  P95 {tail:7.2f} ms")
    worst = max(tail for name, (_, tail) in latency.items() if not name.startswith("all"))
    rows = "\n".join(f"| {name} | {med:.2f} | {tail:.2f} |" for name, (med, tail) in latency.items())
    text = f"""{SECTION}

- machine: {machine()}; load average at the start {loadavg[0]:.2f} (shared box: other helpers' tests and benches
  ran at the same time, so tails are noisy)
- method: see the module docstring; one embedded nats-server (sync_interval: always). The lag run's publisher is
  its own process and publishes acknowledged (pipelined) JetStream messages, so the offered rate is what the
  server stores with an fsync per message on this box. KPI queries run on the main DuckDB file (all five tenants)
  after ingest, {args.repeat} runs each after one warm-up.

| measure | figure | goal |
|---|---:|---|
| catch-up ingest over NATS ({args.events:,} events) | {rate:,.0f} events/s | ≥ 20,000 events/s |
| direct ingest, no NATS ({args.kpi_events:,} events, batches of 10,000, tenant files included) | {direct:,.0f} events/s | — |
| lag at {load['offered']:,.0f} events/s offered, {args.seconds:g} s: median / P95 | {load['lag_median_ms']:.1f} / {load['lag_p95_ms']:.1f} ms | — |
| backlog under that load: median / P95 | {load['backlog_median']:.0f} / {load['backlog_p95']:.0f} events | — |
| slowest single KPI query P95 at {args.kpi_events:,} events | {worst:.2f} ms | ≤ 100 ms |

| KPI query at {args.kpi_events:,} events | median ms | P95 ms |
|---|---:|---:|
{rows}
"""
    if not args.no_write:
        write_results(text)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
