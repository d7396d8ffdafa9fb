"""Scale-out benchmark: changes/min and intent → closed P95 with 1, 2 and 3 copies of every service,
on one embedded nats-server and on a three-node embedded JetStream cluster (R3), in one run.

    python bench/bench_cluster.py [--changes N] [--in-flight N] [--copies 1,2,3]

Each configuration is a real ``upm up [--cluster 3] --replicas K`` (OS processes, supervised), then
N no-op local changes (``Create directory``) with at most ``--in-flight`` open at once; a change's
latency runs from its submit to its ``change.closed`` (seen on a plain subscription). All servers
and services share this machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import nats
from common import machine, p95
from nats.aio.msg import Msg

from events.subjects import inbox_prefix
from services.common import client, cluster

TENANT = "bench"
ME = "bench"


def _upm(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "upm.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False)


async def _load(url: str, target: Path, changes: int, in_flight: int) -> tuple[float, list[float]]:
    nc = await nats.connect(servers=cluster.servers(url), inbox_prefix=inbox_prefix(ME))
    submitted: dict[str, float] = {}
    latencies: list[float] = []
    done = anyio.Event()
    slots = anyio.Semaphore(in_flight)

    async def on_closed(msg: Msg) -> None:
        change_id = msg.subject.split(".")[3]
        if change_id in submitted:
            latencies.append(time.perf_counter() - submitted.pop(change_id))
            slots.release()
            if len(latencies) == changes:
                done.set()

    sub = await nc.subscribe(f"upm.evt.{TENANT}.*.change.closed", cb=on_closed)
    started = time.perf_counter()
    try:
        for i in range(changes):
            await slots.acquire()
            at = time.perf_counter()
            change_id = await client.submit(nc, TENANT, {"request": f"Create directory {target}/d{i}",
                                                        "source": "api"}, principal=ME, within=30.0)
            submitted[change_id] = at
        with anyio.fail_after(300):
            await done.wait()
        return time.perf_counter() - started, latencies
    finally:
        await sub.unsubscribe()
        await nc.close()


def run(servers: int, copies: int, changes: int, in_flight: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="upm-bench-cluster-") as tmp:
        data, warm, target = Path(tmp) / "upm", Path(tmp) / "warm", Path(tmp) / "made"
        warm.mkdir()
        target.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "UPM_DATA", "UPM_REPLICAS")}
        flags = ["--cluster", str(servers)] if servers > 1 else []
        up = _upm("up", "--data", str(data), *flags, "--replicas", str(copies), "--json", env=env)
        if up.returncode != 0:
            raise SystemExit(f"upm up failed: {up.stderr}")
        try:
            url = json.loads(up.stdout)["url"]
            anyio.run(_load, url, warm, min(10, changes), in_flight)  # warm-up: first compiles, consumers bound
            elapsed, latencies = anyio.run(_load, url, target, changes, in_flight)
        finally:
            _upm("down", "--data", str(data), env=env)
    return {"per_min": changes / elapsed * 60, "p95_ms": p95(latencies) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--in-flight", type=int, default=25)
    parser.add_argument("--copies", default="1,2,3")
    args = parser.parse_args()
    copies = [int(c) for c in args.copies.split(",")]
    print(f"machine: {machine()}; {args.changes} changes per configuration, {args.in_flight} in flight")
    print("| servers | copies of each service | changes/min | intent → closed P95 |")
    print("|---|---|---|---|")
    for servers in (1, 3):
        for k in copies:
            result = run(servers, k, args.changes, args.in_flight)
            where = "1 (R1)" if servers == 1 else "3-node cluster (R3)"
            print(f"| {where} | {k} | {result['per_min']:,.0f} | {result['p95_ms']:,.0f} ms |", flush=True)


if __name__ == "__main__":
    main()
