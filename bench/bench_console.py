"""Web console benchmark: how long each page takes with many changes in the log (target: < 200 ms).

    python bench/bench_console.py [--changes N] [--repeat K]

N changes (default 10,000; realistic histories from bench_projections.generate: happy, failed with
a verified rollback, rejected; five tenants) are stored on their own subjects in an embedded
nats-server; a projector and the gateway follow them (in this process, as `upm up` runs them);
the console (open mode) answers over real HTTP on loopback. Each page is fetched K times (default
20) after a first one (printed too: a tenant's first query opens its files, and the KPI dashboard is
computed then and kept while no event arrives, at most 15 s), as a browser asks for it (``Accept:
text/html``), and its median and P95 in ms are printed: the change list, a filtered list, a change's page, the approvals queue, the KPI
dashboard (ten charts and the score row) and the drift view.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anyio
import msgspec
import nats
from bench_projections import generate
from common import embedded_server, machine, median, p95

from events.store import EventStore
from projections.console import server
from projections.console.app import create_app
from projections.projector import Projector
from services.gateway.service import Gateway
from services.security.access import Access

TARGET_MS = 200.0


class _Envelope(msgspec.Struct):
    tenant: str
    change_id: str
    payload: dict[str, object]


async def fill(url: str, changes: int) -> tuple[int, str]:
    """Store ``changes`` changes' events, each on its own subject; the last sequence and one change's id."""
    nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
    await EventStore(nc).ensure_stream()
    js = nc.jetstream()
    decode = msgspec.json.Decoder(_Envelope).decode
    seen: set[str] = set()
    first = ""
    last = 0
    for seq, data in generate(changes * 20):
        e = decode(data)
        if e.change_id not in seen:
            if len(seen) == changes:
                break
            seen.add(e.change_id)
            first = first or e.change_id
        await js.publish_async(f"upm.evt.{e.tenant}.{e.change_id}.{e.payload['type']}", data)
        last = seq
    await js.publish_async_completed()
    await nc.close()
    return last, first


async def fetch(port: int, path: str) -> float:
    started = time.perf_counter()
    async with await anyio.connect_tcp("127.0.0.1", port) as conn:
        await conn.send(f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/html\r\nConnection: close\r\n\r\n".encode())
        raw = b""
        try:
            while True:
                raw += await conn.receive()
        except anyio.EndOfStream:
            pass
    status = int(raw.split(b" ", 2)[1])
    if status != 200:
        raise SystemExit(f"{path} answered {status}: {raw[:300]!r}")
    return (time.perf_counter() - started) * 1000


async def main(changes: int, repeat: int) -> None:
    with embedded_server() as nats_server, tempfile.TemporaryDirectory(prefix="upm-bench-console-") as tmp:
        started = time.perf_counter()
        last, change_id = await fill(nats_server.url, changes)
        print(f"stored {changes} changes ({last} events) in {time.perf_counter() - started:.1f}s")
        nc = await nats.connect(nats_server.url)
        projector = Projector(nc, Path(tmp) / "proj", access=Access.open())
        async with anyio.create_task_group() as tg:
            for hosted in (projector, Gateway(nc, Access.open())):
                ready = anyio.Event()
                tg.start_soon(lambda h=hosted, r=ready: h.run(ready=r))
                await ready.wait()
            await projector.wait(last, within=1200)
            print(f"projected in {time.perf_counter() - started:.1f}s")
            app = create_app(nc, Access.open(), {}, default_name="bench")
            sock = server.bind("127.0.0.1", 0)
            up = anyio.Event()
            tg.start_soon(lambda: server.serve(app, sock, ready=lambda _u: up.set()))
            await up.wait()
            port = int(sock.getsockname()[1])
            pages = ["/changes", "/changes?status=closed&environment=dev", f"/changes/{change_id}", "/approvals",
                     "/kpi", "/drift"]
            print(f"\n{machine()}; {changes} changes, {repeat} requests per page")
            print(f"{'page':<45} {'first ms':>10} {'median ms':>10} {'P95 ms':>10}")
            worst = 0.0
            for page in pages:
                first = await fetch(port, page)  # warm-up: a tenant's first query opens its files, /kpi computes
                times = [await fetch(port, page) for _ in range(repeat)]
                worst = max(worst, p95(times))
                print(f"{page[:45]:<45} {first:>10.1f} {median(times):>10.1f} {p95(times):>10.1f}")
            print(f"\nslowest P95 {worst:.1f} ms: {'within' if worst < TARGET_MS else 'ABOVE'} the {TARGET_MS:g} ms target")
            tg.cancel_scope.cancel()
        await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    anyio.run(main, args.changes, args.repeat)
