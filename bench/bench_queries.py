"""What a person's reads cost (issue 11): the query path (``upm.qry``, checked against roles and
visibility, long polls) beside the stream path (direct gets and a JetStream consumer, for
services and stream readers).

    python bench/bench_queries.py [--changes N] [--statuses N]

Every service runs in this process on an embedded server, with an access file (``UPM_ACCESS``)
so every answer is checked; alice submits, dave (another requester) reads.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path

import anyio
import nats
from common import embedded_server, machine, median, p95

from events.store import EventStore
from events.subjects import inbox_prefix
from services.common import client
from services.common.errors import CommandRejected
from services.gateway import queries
from services.security.access import ENV_VAR as ACCESS_ENV
from upm import app

ACCESS = {"tenants": {"bench": {"alice": ["requester"], "dave": ["requester"]}}}


def line(name: str, values: list[float]) -> str:
    return f"{name:<58} median {median(values):7.2f} ms   P95 {p95(values):7.2f} ms"


async def run(url: str, work: Path, changes: int, statuses: int) -> None:
    services = await nats.connect(url)
    alice = await nats.connect(url, inbox_prefix=inbox_prefix("alice"))
    dave = await nats.connect(url, inbox_prefix=inbox_prefix("dave"))
    store = EventStore(services)
    target = work / "noop"
    target.mkdir(mode=0o750)
    target.chmod(0o750)
    async with anyio.create_task_group() as tg:
        tg.start_soon(app.serve, services, app.SERVICE_NAMES)
        await anyio.sleep(0.5)
        via_stream, via_queries, ids = [], [], []
        for i in range(changes):
            visibility = "private" if i % 2 else "team"
            request = {"request": f"Create directory {target} with mode 0750", "visibility": visibility}
            t = time.perf_counter()
            cid = await client.submit(alice, "bench", request, principal="alice")
            if i % 2:
                status = await client.wait_closed(store, "bench", cid, within=60)
                via_stream.append((time.perf_counter() - t) * 1000)
            else:
                status = await queries.wait_closed(alice, "bench", cid, principal="alice", within=60)
                via_queries.append((time.perf_counter() - t) * 1000)
            assert status.outcome == "succeeded", status
            ids.append((cid, visibility))
        print(line("intent → closed, followed on the stream (JetStream)", via_stream))
        print(line("intent → closed, followed by long-poll queries", via_queries))

        team = next(c for c, v in ids if v == "team")
        private = next(c for c, v in ids if v == "private")
        for name, who, change in (("status query, team change (visible)", "dave", team),
                                  ("status query, private change of another (hidden)", "dave", private),
                                  ("status query, own private change", "alice", private)):
            conn = dave if who == "dave" else alice
            lat = []
            for _ in range(statuses):
                t = time.perf_counter()
                with contextlib.suppress(CommandRejected):  # the hidden change: refused, and timed as such
                    await queries.ask_status(conn, "bench", change, principal=who)
                lat.append((time.perf_counter() - t) * 1000)
            print(line(name, lat))
        lat = []
        for _ in range(statuses):
            t = time.perf_counter()
            await client.status(store, team, "bench")
            lat.append((time.perf_counter() - t) * 1000)
        print(line("status from the stream directly (direct gets, no checks)", lat))

        seen: list[int] = []
        t = time.perf_counter()
        async for _ in queries.follow(dave, "bench", principal="dave", from_start=True, wait_s=0.2):
            seen.append(1)
            if len(seen) >= 10 * (changes // 2):
                break
        elapsed = time.perf_counter() - t
        print(f"tenant feed as dave, from the start: {len(seen)} visible events in {elapsed * 1000:.0f} ms")
        tg.cancel_scope.cancel()
    for conn in (alice, dave, services):
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--changes", type=int, default=40)
    parser.add_argument("--statuses", type=int, default=300)
    args = parser.parse_args()
    print(f"# query bench — {machine()}")
    with embedded_server() as server:
        access = server.data_dir / "access.json"
        access.write_text(json.dumps(ACCESS))
        os.environ[ACCESS_ENV] = str(access)
        os.environ["UPM_DATA"] = str(server.data_dir / "upm")
        anyio.run(run, server.url, server.data_dir, args.changes, args.statuses)


if __name__ == "__main__":
    main()
