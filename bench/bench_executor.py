"""Benchmark of the executor (services/executor) on a real embedded nats-server.

1. Overhead per step: 20-step local changes (``mkdir -m 0755 DIR``, each guarded by a ``stat``
   read-back) run by the executor service; a change's cost per step is the time from its first
   ``step.started`` to its last ``step.completed`` (event timestamps) over 20 (guard read-back +
   ``step.started`` append + guarded exec + ``step.completed`` append). Baseline: the same
   ``mkdir`` commands run bare with ``subprocess.run``. Reported: medians, P95s, median ratio.
2. Throughput: 20 concurrent 10-step local changes (executor concurrency 20, rate limits out of
   the way), from the first approval appended to the last ``execution.completed``: changes/min.

Appends its section to bench/RESULTS.md (replacing its own from an earlier run, keeping the
others). Usage: ``python bench/bench_executor.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import anyio
import nats
from common import embedded_server, machine, median, p95

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "executor"))
from executor_helpers import config, dirs_plan, events, running, submit, wait_for

from events.model import StepCompleted, StepStarted
from events.store import EventStore

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## Executor (bench_executor.py)"
FAST = {"rates": {"steps_per_s_per_target": 100000, "steps_per_s_per_tenant": 100000, "burst": 1000},
        "service": {"concurrency": 20}}


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def bare_steps(folder: Path, count: int) -> list[float]:
    times = []
    for i in range(count):
        start = time.perf_counter()
        # the baseline is a plain blocking run, on purpose
        subprocess.run(["/usr/bin/mkdir", "-m", "0755", str(folder / f"bare{i}")], check=True,
                       capture_output=True, env={"PATH": "/usr/bin:/bin"})
        times.append(time.perf_counter() - start)
    return times


async def step_costs(store: EventStore, folder: Path, changes: int, steps: int) -> list[float]:
    costs: list[float] = []
    for c in range(changes):
        base = folder / f"o{c}"
        base.mkdir()
        change = await submit(store, dirs_plan([base / f"s{i:02d}" for i in range(steps)]))
        found = await wait_for(store, change, "execution.completed", within=120)
        first = next(_ts(e.ts) for e in found if isinstance(e.payload, StepStarted))
        last = [_ts(e.ts) for e in found if isinstance(e.payload, StepCompleted)][-1]
        costs.append((last - first) / steps)
    return costs


async def throughput(store: EventStore, folder: Path, changes: int, steps: int) -> float:
    bases = [folder / f"t{c}" for c in range(changes)]
    for base in bases:
        base.mkdir()
    plans = [dirs_plan([base / f"s{i}" for i in range(steps)]) for base in bases]
    start = time.perf_counter()
    ids = [await submit(store, plan) for plan in plans]
    for change in ids:
        await wait_for(store, change, "execution.completed", within=300)
    elapsed = time.perf_counter() - start
    for change in ids:
        assert sum(e.type == "step.completed" for e in await events(store, change)) == steps
    return changes / elapsed * 60


async def main(quick: bool) -> None:
    load = os.getloadavg()[0]
    changes, rounds = (3, 1) if quick else (10, 3)
    with embedded_server() as server, tempfile.TemporaryDirectory(prefix="upm-bench-exec-") as tmp:
        folder = Path(tmp)
        nc = await nats.connect(server.url)
        store = EventStore(nc)
        await store.ensure_stream()
        async with running(nc, config(**FAST)):
            (folder / "warm").mkdir()
            await step_costs(store, folder / "warm", 1, 3)
            costs = await step_costs(store, folder, changes, 20)
            bare = bare_steps(folder, 20 * changes)
            rates = []
            for r in range(rounds):
                (folder / f"r{r}").mkdir()
                rates.append(await throughput(store, folder / f"r{r}", 20, 10))
        await nc.close()
    ratio = median(costs) / median(bare)
    lines = [
        SECTION,
        "",
        f"- machine: {machine()} (nproc {os.cpu_count()}); load average before the run {load:.2f} (shared box)",
        "- embedded nats-server (JetStream file storage, `sync_interval: always`), executor in-process, "
        "local provider; rate limits raised out of the way",
        "",
        "| per step | median ms | P95 ms |",
        "|---|---:|---:|",
        f"| bare `subprocess.run(mkdir)` | {median(bare) * 1000:.2f} | {p95(bare) * 1000:.2f} |",
        f"| executor step (guard read-back + 2 appends + guarded exec) | {median(costs) * 1000:.2f} | "
        f"{p95(costs) * 1000:.2f} |",
        "",
        f"- executor/bare median ratio: **{ratio:.1f}x** over {changes} 20-step changes "
        "(each step is two processes, the `stat` guard and the `mkdir`, plus two fsynced appends)",
        f"- throughput, 20 concurrent 10-step changes: **{median(rates):.0f} changes/min** "
        f"(rounds: {', '.join(f'{r:.0f}' for r in rates)}; {median(rates) * 10 / 60:.0f} steps/s)",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    existing = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = existing.find(SECTION)
    if start >= 0:
        end = existing.find("\n## ", start + len(SECTION))
        existing = existing[:start].rstrip("\n") + ("\n" + existing[end:] if end >= 0 else "\n")
    RESULTS.write_text(existing.rstrip("\n") + "\n\n" + text)


if __name__ == "__main__":
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    anyio.run(main, options.parse_args().quick)
