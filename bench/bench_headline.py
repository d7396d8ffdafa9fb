"""The headline benchmark, against a real ``upm up`` (supervisor, nats-server, one process per service):

1. A 20-step local change end to end — ``upm submit --file spec20.json --wait`` (all five phases:
   plan, pre-flight, execution, verification, audit) and then its signed evidence pack published —
   against the same 20 directories made by an ansible-core playbook (``connection: local``, one
   ``file`` task each) and by a bash script (``mkdir -m``), paired: every round runs the three, one
   after another, in a rotating order, on fresh directories. ansible-core is the ``bench`` extra
   (``pip install -e '.[bench]'``); when it is missing the script installs it with pip.
2. Throughput of no-op local changes (a directory that is already as asked: all five phases, the
   step skipped after its read-back) at 1, 10, 50, 100, 200 changes in flight: changes/min,
   intent → closed and close → evidence published (median, P95).
3. Memory: the resident set of every process ``upm up`` started (nats-server included), summed,
   after ``--rss-changes`` no-op changes at 100 in flight, and half-way (flat between the two?).

At each level it also prints the CPU time per change of every process (``/proc/<pid>/stat``).

    python bench/bench_headline.py [--rounds 10] [--levels 1,10,50,100,200] [--per-level 300]
                                   [--rss-changes 2000] [--quick]

Prints medians, P95s and ratios; records nothing (copy the output to bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import nats
from common import machine, median, p95

from events.model import ChangeClosed, EvidencePublished
from events.store import EventStore
from services.common import client

STEPS = 20
TENANT = "bench"
ANSIBLE = "ansible-core>=2.17,<3"  # the `bench` extra of pyproject.toml


def upm_cli() -> list[str]:
    return [sys.executable, "-m", "upm.cli"]


def ansible_playbook() -> str:
    """The ansible-playbook of this interpreter's environment, installed (the `bench` extra) when missing."""
    if importlib.util.find_spec("ansible") is None:
        print(f"# installing {ANSIBLE} (the bench extra) with pip", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", ANSIBLE], check=True)
    found = Path(sys.executable).with_name("ansible-playbook")
    if not found.exists():
        raise SystemExit(f"no ansible-playbook beside {sys.executable} after installing {ANSIBLE}")
    return str(found)


def dirs(base: Path) -> list[Path]:
    return [base / f"d{i:02d}" for i in range(STEPS)]


def spec20(base: Path, folder: Path) -> Path:
    path = folder / f"{base.name}.json"
    path.write_text(json.dumps({"resources": [
        {"type": "local_directory", "path": str(d), "mode": "0750"} for d in dirs(base)]}))
    return path


def playbook(base: Path, folder: Path) -> Path:
    tasks = "".join(f"    - file: {{path: '{d}', state: directory, mode: '0750'}}\n" for d in dirs(base))
    path = folder / f"{base.name}.yml"
    path.write_text(f"- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n{tasks}")
    return path


def bash_script(base: Path, folder: Path) -> Path:
    path = folder / f"{base.name}.sh"
    path.write_text("set -e\n" + "".join(f"mkdir -p -m 0750 '{d}'\n" for d in dirs(base)))
    return path


def run_upm(base: Path, work: Path, data: Path, env: dict[str, str]) -> tuple[float, float, float]:
    """Seconds to `submit --wait` returning (closed), to its evidence pack published, and the pipeline's
    own share: from the intent's event to the close's, by their timestamps (the rest is the CLI)."""
    spec = spec20(base, work)
    started = time.perf_counter()
    out = subprocess.run([*upm_cli(), "submit", "--file", str(spec), "--tenant", TENANT, "--wait", "--json",
                          "--data", str(data)], env=env, capture_output=True, text=True, check=False)
    closed = time.perf_counter() - started
    status = json.loads(out.stdout) if out.stdout.strip().startswith("{") else {}
    if out.returncode != 0 or status.get("outcome") != "succeeded":
        raise SystemExit(f"upm submit failed ({out.returncode}): {out.stdout[-2000:]} {out.stderr[-2000:]}")
    anyio.run(wait_evidence, resolve_url(data), str(status["change_id"]))
    stamps = {e["type"]: datetime.fromisoformat(e["ts"].replace("Z", "+00:00")) for e in status["events"]}
    pipeline = (stamps["change.closed"] - stamps["intent.submitted"]).total_seconds()
    return closed, time.perf_counter() - started, pipeline


async def wait_evidence(url: str, change_id: str) -> None:
    nc = await nats.connect(url)
    try:
        with anyio.fail_after(60):
            async with contextlib.aclosing(EventStore(nc).follow(f"upm.evt.{TENANT}.{change_id}.>")) as events:
                async for stored in events:
                    if isinstance(stored.event.payload, EvidencePublished):
                        return
    finally:
        await nc.close()


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")
    return elapsed


def resolve_url(data: Path) -> str:
    return str(json.loads((data / "state.json").read_text())["url"])


def processes(data: Path) -> dict[str, int]:
    """Every process the state file names (a process hosting several services once, under its own name) → pid."""
    state = json.loads((data / "state.json").read_text())
    hosting = {service: process for process, services in (state.get("processes") or {}).items()
               for service in services}
    return {**{hosting.get(k, k): int(v) for k, v in state.get("pids", {}).items()},
            "supervisor": int(state["supervisor"])}


def rss_mib(data: Path) -> dict[str, float]:
    """The resident set (MiB) of every process ``upm up`` started, from /proc."""
    out = {}
    for name, pid in processes(data).items():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[name] = int(line.split()[1]) / 1024
        except OSError:
            continue
    return out


def cpu_s(data: Path) -> dict[str, float]:
    """The CPU seconds (user + system) every process ``upm up`` started has used, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, pid in processes(data).items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = (int(fields[11]) + int(fields[12])) / tick
    return out


def summary(label: str, seconds: list[float]) -> str:
    return f"{label:<34} median {median(seconds) * 1000:8.1f} ms   P95 {p95(seconds) * 1000:8.1f} ms   (n={len(seconds)})"


def headline(rounds: int, work: Path, data: Path, env: dict[str, str]) -> None:
    tools: dict[str, Callable[[Path], Any]] = {
        "upm": lambda base: run_upm(base, work, data, env),
        "ansible": lambda base: timed([ansible_playbook(), "-i", "localhost,", "-e",
                                        f"ansible_python_interpreter={sys.executable}", str(playbook(base, work))], env),
        "bash": lambda base: timed(["bash", str(bash_script(base, work))], env),
    }
    ansible_playbook()
    times: dict[str, list[float]] = {"upm closed": [], "upm evidence": [], "upm pipeline only": [], "ansible": [],
                                     "bash": []}
    order = list(tools)
    for r in range(rounds + 1):  # round 0 warms every tool up and is not counted
        for name in order[r % 3:] + order[:r % 3]:
            base = Path(tempfile.mkdtemp(prefix=f"upm-headline-{name}-{r}-"))
            result = tools[name](base)
            if r == 0:
                continue
            if name == "upm":
                times["upm closed"].append(result[0])
                times["upm evidence"].append(result[1])
                times["upm pipeline only"].append(result[2])
            else:
                times[name].append(result)
    print(f"## 20-step local change, {rounds} paired rounds")
    for label, values in times.items():
        print(summary(label, values))
    ansible, bash = median(times["ansible"]), median(times["bash"])
    print(f"ansible-core / upm (closed):   {ansible / median(times['upm closed']):5.1f}x   "
          f"(P95 {p95(times['ansible']) / p95(times['upm closed']):.1f}x)")
    print(f"ansible-core / upm (evidence): {ansible / median(times['upm evidence']):5.1f}x")
    print(f"upm (closed) / bash:           {median(times['upm closed']) / bash:5.1f}x")


async def throughput(url: str, noop: Path, in_flight: int, count: int) -> dict[str, float]:
    """``count`` no-op changes, ``in_flight`` at a time: changes/min, intent → closed, close → evidence."""
    nc = await nats.connect(url)
    submitted: dict[str, float] = {}
    closed_at: dict[str, float] = {}
    latency: list[float] = []
    lag: list[float] = []
    done: dict[str, anyio.Event] = {}
    request = {"request": f"Create directory {noop} with mode 0750"}

    async def follow(ready: anyio.Event) -> None:
        events = EventStore(nc).follow(f"upm.evt.{TENANT}.>", from_start=False)
        ready.set()
        async for stored in events:
            cid, now = stored.event.change_id, time.perf_counter()
            if isinstance(stored.event.payload, ChangeClosed) and cid in submitted:
                closed_at[cid] = now
                latency.append(now - submitted[cid])
            elif isinstance(stored.event.payload, EvidencePublished) and cid in closed_at:
                lag.append(now - closed_at[cid])
                done.setdefault(cid, anyio.Event()).set()

    async with anyio.create_task_group() as tg:
        ready = anyio.Event()
        tg.start_soon(follow, ready)
        await ready.wait()
        await anyio.sleep(0.2)  # the follower's consumer is in place
        slots = anyio.Semaphore(in_flight)
        started = time.perf_counter()
        async with anyio.create_task_group() as work:
            for _ in range(count):
                await slots.acquire()

                async def one() -> None:
                    try:
                        t = time.perf_counter()
                        cid = await client.submit(nc, TENANT, request, principal="bench")
                        submitted[cid] = t
                        with anyio.fail_after(300):
                            await done.setdefault(cid, anyio.Event()).wait()
                    finally:
                        slots.release()

                work.start_soon(one)
        elapsed = max(closed_at.values()) - started
        tg.cancel_scope.cancel()
    await nc.close()
    return {"per_min": count / elapsed * 60, "closed_med": median(latency), "closed_p95": p95(latency),
            "lag_med": median(lag), "lag_p95": p95(lag)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10, help="paired rounds of the 20-step change (0: skip)")
    parser.add_argument("--levels", default="1,10,50,100,200", help="changes in flight, comma-separated (\"\": skip)")
    parser.add_argument("--per-level", type=int, default=300, help="changes per in-flight level (at least 3x it)")
    parser.add_argument("--rss-changes", type=int, default=2000, help="no-op changes for the memory reading (0: skip)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script works")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.levels, args.per_level, args.rss_changes = 1, "1,10", 10, 20
    print(f"# headline bench — {machine()}")
    work = Path(tempfile.mkdtemp(prefix="upm-headline-"))
    data = work / "data"
    env = {**os.environ, "UPM_DATA": str(data)}
    env.pop("NATS_URL", None)
    subprocess.run([*upm_cli(), "up", "--data", str(data)], env=env, check=True, capture_output=True)
    try:
        if args.rounds:
            headline(args.rounds, work, data, env)
        url = resolve_url(data)
        noop = work / "noop"
        noop.mkdir(mode=0o750)
        noop.chmod(0o750)
        print("## no-op changes by changes in flight")
        for level in (int(x) for x in args.levels.split(",") if x):
            count = max(args.per_level, 3 * level)
            before = cpu_s(data)
            r = anyio.run(throughput, url, noop, level, count)
            used = {name: (cpu - before.get(name, 0.0)) * 1000 / count for name, cpu in cpu_s(data).items()}
            print(f"{level:>4} in flight: {r['per_min']:8.0f} changes/min   intent→closed median "
                  f"{r['closed_med'] * 1000:7.1f} ms P95 {r['closed_p95'] * 1000:7.1f} ms   close→evidence median "
                  f"{r['lag_med'] * 1000:7.1f} ms P95 {r['lag_p95'] * 1000:7.1f} ms")
            print(f"       CPU per change {sum(used.values()):5.1f} ms: "
                  + ", ".join(f"{name} {ms:.1f}" for name, ms in sorted(used.items(), key=lambda kv: -kv[1])))
        if not args.rss_changes:
            return
        half = args.rss_changes // 2
        anyio.run(throughput, url, noop, 100, half)
        at_half = rss_mib(data)
        anyio.run(throughput, url, noop, 100, args.rss_changes - half)
        at_end = rss_mib(data)
        print(f"## resident memory of `upm up` (MiB) after {half} and {args.rss_changes} more no-op changes")
        for name in sorted(at_end, key=lambda n: -at_end[n]):
            print(f"  {name:<14} {at_half.get(name, 0):7.0f} → {at_end[name]:7.0f}")
        print(f"  {'total':<14} {sum(at_half.values()):7.0f} → {sum(at_end.values()):7.0f}")
    finally:
        subprocess.run([*upm_cli(), "down", "--data", str(data)], env=env, check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
