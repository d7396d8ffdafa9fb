"""Web console benchmark: how long each page takes with many changes in the log (target: < 200 ms).

    python bench/bench_console.py [--changes N] [--repeat K] [--workers W]

1. Fill: N (default 10,000) complete, valid change histories are built with their real hash chains
   (``tests/projections/upm_history.py``: intent → plan → pre-flight → approval → execution → verify
   → closed → evidence; 1 in 20 failed with a verified rollback, 1 in 20 failed with a failed
   rollback, 1 in 20 rejected by pre-flight, 1 in 20 awaiting two approvals, 1 in 20 private to
   someone else, 1 in 20 approved by two people; four environments, five tenants, one change a
   minute) and appended through :class:`events.store.EventStore` (optimistic concurrency per
   change, W changes at a time) to a **bench-only nats-server without ``sync_interval: always``**
   (the embedded one syncs every write, which makes 170,000 appends take ~15 minutes; the pages
   read DuckDB, not the server's disk, so this does not change what is measured).
2. The real projector ingests them into DuckDB (the bench waits until it has caught up), the
   gateway answers a change's events, as ``upm up`` runs them (in this process).
3. The console (open mode) answers real HTTP on loopback. Each page is fetched once cold (the
   first request: a tenant's first query opens its files, the KPI dashboard is computed) and then
   K times warm (default 20), as a browser asks (``Accept: text/html``) or as a program asks for
   the JSON permalink; median and P95 in ms are printed per page.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "projections"))

import anyio
import nats
from common import machine, median, p95
from upm_history import ChangeBuilder, History, make_plan

from events.commands import ENVIRONMENTS
from events.model import IntentSubmitted, decode_event
from events.store import ChangeLog, EventStore
from projections.console import server
from projections.console.app import create_app
from projections.projector import Projector
from services.gateway.service import Gateway
from services.security.access import Access
from upm.natsserver import free_ports, nats_server_binary

TARGET_MS = 200.0
TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")
HTML = "text/html"
JSON = "application/json"


@contextmanager
def bench_server(folder: Path) -> Iterator[str]:
    """A nats-server with JetStream for the bench only: the server's default sync (not every write)."""
    port = free_ports(1)[0]
    conf = folder / "nats.conf"
    conf.write_text(f'listen: "127.0.0.1:{port}"\nmax_payload: 8MB\njetstream {{\n  store_dir: "{folder / "js"}"\n}}\n')
    with open(folder / "nats.log", "ab") as log:
        proc = subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def change(h: History, i: int) -> ChangeBuilder:
    """Change number ``i``: its shape by ``i % 20`` (see the module docstring), ``i`` minutes in."""
    at = i * 60.0
    shape = i % 20
    private = shape == 18
    c = h.change(TENANTS[i % len(TENANTS)], visibility="private" if private else "team")
    initiator = "bob" if private else ("alice", "dave", "erin")[i % 3]
    c.add(IntentSubmitted(request=f"create directory d{i % 500}", initiator=initiator,
                          environment=ENVIRONMENTS[i % len(ENVIRONMENTS)]), at, initiator)
    c.compiled(at + 1, make_plan((f"d{i % 500}",), request=f"create directory d{i % 500}", initiator=initiator,
                                 tenant=c.tenant), ms=5.0 + i % 97)
    if shape == 16:
        return c.preflight(at + 2, ok=False).close(at + 3, "rejected")
    if shape in (17, 19):
        c.policy(at + 2, required=2).preflight(at + 2, approve=False).request_approval(at + 2)
        if shape == 17:
            return c
        c.grant(at + 10, "carol").grant(at + 20, "frank").approve(at + 20, ("carol", "frank"))
    else:
        c.preflight(at + 2)
    c.execute(at + 30)
    if shape in (14, 15):
        c.verify(at + 35, ok=False).close(at + 36, "failed").published(at + 37)
        return c.rollback(at + 60, ok=shape == 14, verified=True if shape == 14 else None)
    return c.verify(at + 35, ms=80.0 + i % 50).close(at + 36, "succeeded").published(at + 37)


async def fill(url: str, changes: int, workers: int) -> tuple[int, dict[str, str]]:
    """Append ``changes`` changes through the event store; the last sequence, and one change id per shape."""
    nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
    store = EventStore(nc, timeout=30.0)
    await store.ensure_stream()
    h = History()
    send, receive = anyio.create_memory_object_stream[list[bytes]](workers * 2)
    last = 0
    picks: dict[str, str] = {}

    async def worker() -> None:
        nonlocal last
        async with receive.clone() as inbox:
            async for records in inbox:
                events = [decode_event(data) for data in records]
                stored = await store.append(ChangeLog(events[0].tenant, events[0].change_id), events)
                last = max(last, stored[-1].seq)

    async with anyio.create_task_group() as tg:
        for _ in range(workers):
            tg.start_soon(worker)
        async with send, receive:
            for i in range(changes):
                c = change(h, i)
                picks.setdefault({16: "rejected", 17: "awaiting", 18: "private", 14: "rolled-back"}.get(i % 20, "closed"),
                                 c.change_id)
                await send.send([data for _, data in h.records])
                h.records.clear()
    await nc.close()
    return last, picks


async def fetch(port: int, path: str, accept: str) -> float:
    return (await get(port, path, accept))[0]


async def get(port: int, path: str, accept: str) -> tuple[float, bytes]:
    """The time in ms a page took (status 200 or the bench stops) and its raw response."""
    started = time.perf_counter()
    async with await anyio.connect_tcp("127.0.0.1", port) as conn:
        await conn.send(f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: {accept}\r\nConnection: close\r\n\r\n".encode())
        raw = b""
        try:
            while True:
                raw += await conn.receive()
        except anyio.EndOfStream:
            pass
    status = int(raw.split(b" ", 2)[1])
    if status != 200:
        body = raw.partition(b"\r\n\r\n")[2]
        message = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body.decode(errors="replace"))).strip()
        raise SystemExit(f"{path} answered {status}: {message[:600]}")
    return (time.perf_counter() - started) * 1000, raw


async def next_link(port: int, path: str) -> str:
    """The list's ``Link: <...>; rel="next"`` (the JSON permalink's pagination)."""
    _, raw = await get(port, path, JSON)
    for line in raw.split(b"\r\n\r\n", 1)[0].decode().split("\r\n"):
        if line.lower().startswith("link:") and 'rel="next"' in line:
            return line.split("<", 1)[1].split(">", 1)[0]
    raise SystemExit(f"{path} has no next page")


async def main(changes: int, repeat: int, workers: int) -> None:
    with tempfile.TemporaryDirectory(prefix="upm-bench-console-") as tmp, bench_server(Path(tmp)) as url:
        await anyio.sleep(0.5)
        started = time.perf_counter()
        last, picks = await fill(url, changes, workers)
        print(f"appended {changes} changes ({last} events, hash-chained, through EventStore.append) in "
              f"{time.perf_counter() - started:.1f}s (bench-only nats-server: default sync, not every write)")
        nc = await nats.connect(url)
        projector = Projector(nc, Path(tmp) / "proj", access=Access.open())
        async with anyio.create_task_group() as tg:
            for hosted in (projector, Gateway(nc, Access.open())):
                ready = anyio.Event()
                tg.start_soon(lambda h=hosted, r=ready: h.run(ready=r))
                await ready.wait()
            projected = time.perf_counter()
            await projector.wait(last, within=1800)
            print(f"projected to sequence {last} in {time.perf_counter() - projected:.1f}s")
            app = create_app(nc, Access.open(), {}, default_name="bench")
            sock = server.bind("127.0.0.1", 0)
            up = anyio.Event()
            tg.start_soon(lambda: server.serve(app, sock, ready=lambda _u: up.set()))
            await up.wait()
            port = int(sock.getsockname()[1])
            closed = picks["closed"]
            second = await next_link(port, "/changes")
            pages = [
                ("/changes", HTML), (second, HTML), (f"/changes?before={last // 2}", HTML),
                ("/changes?status=closed&environment=dev", HTML), ("/changes?tenant=acme&status=awaiting-approval", HTML),
                (f"/changes/{closed}", HTML), (f"/changes/{picks['rolled-back']}", HTML),
                ("/approvals", HTML), ("/kpi", HTML), ("/kpi?tenant=globex", HTML), ("/drift", HTML),
                ("/changes", JSON), (f"/changes/{closed}", JSON), ("/approvals", JSON), ("/kpi", JSON),
                ("/score", JSON), ("/drift", JSON),
            ]
            load = os.getloadavg()
            print(f"\n{machine()}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (a shared box); "
                  f"{changes} changes, 1 cold + {repeat} warm requests per page")
            print(f"{'page':<50} {'cold ms':>9} {'median ms':>10} {'P95 ms':>9}")
            worst = 0.0
            for page, accept in pages:
                cold = await fetch(port, page, accept)
                times = [await fetch(port, page, accept) for _ in range(repeat)]
                worst = max(worst, p95(times), median(times))
                label = f"{page} ({'html' if accept == HTML else 'json'})"
                print(f"{label[:50]:<50} {cold:>9.1f} {median(times):>10.1f} {p95(times):>9.1f}")
            print(f"\nslowest warm median/P95 {worst:.1f} ms: {'within' if worst < TARGET_MS else 'ABOVE'} the "
                  f"{TARGET_MS:g} ms target")
            tg.cancel_scope.cancel()
        await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--workers", type=int, default=32, help="changes appended at a time")
    args = parser.parse_args()
    anyio.run(main, args.changes, args.repeat, args.workers)
