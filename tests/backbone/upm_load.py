"""What the process-level tests share: run the real ``upm`` CLI, submit a load of changes as a user
would (each until acknowledged, under one idempotency key), and read every change's events back.

Each change is ``Create directory <target>/d<i>``: one ``mkdir -m MODE DIR`` step (no ``-p``), so a
step that ran twice fails the second time, and the change with it."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import nats
from nats.aio.client import Client as NATS

from events.model import ChangeClosed, StepCompleted, StepFailed, StepStarted
from events.store import EventStore
from events.subjects import inbox_prefix
from services.common import client, cluster, statefile
from services.common.errors import CommandRejected, NotRunning

TENANT = "load"
ME = "tester"


def upm(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "upm.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without a NATS or data folder of its own, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "UPM_DATA", "UPM_REPLICAS")}
    return env | extra


def state(data: Path) -> dict[str, Any]:
    found = statefile.read_state(data)
    assert found is not None
    return found


async def connect(url: str) -> NATS:
    return await nats.connect(servers=cluster.servers(url), inbox_prefix=inbox_prefix(ME),
                              max_reconnect_attempts=-1, reconnect_time_wait=0.2)


async def submit(nc: NATS, target: Path, i: int, acknowledged: dict[int, str]) -> None:
    """Submit change ``i`` until UPM acknowledges it (the same idempotency key: never two changes)."""
    command = {"request": f"Create directory {target}/d{i}", "source": "api", "idempotency_key": f"load-{i}"}
    with anyio.fail_after(90):
        while True:
            try:
                acknowledged[i] = await client.submit(nc, TENANT, command, principal=ME, within=5.0)
                return
            except NotRunning:  # NATS is restarting (or a node is gone): the gateway did not answer in time
                await anyio.sleep(0.5)
            except CommandRejected as err:  # the stream was away for longer than the gateway waits
                if err.rule != "unavailable":
                    raise
                await anyio.sleep(0.5)


async def submit_all(url: str, target: Path, count: int, *, every_s: float, parallel: int = 16) -> dict[int, str]:
    """Submit ``count`` changes, one every ``every_s`` seconds, at most ``parallel`` unanswered."""
    acknowledged: dict[int, str] = {}
    nc = await connect(url)
    try:
        async with anyio.create_task_group() as tg:
            slots = anyio.Semaphore(parallel)
            for i in range(count):
                await slots.acquire()

                async def one(i: int = i) -> None:
                    try:
                        await submit(nc, target, i, acknowledged)
                    finally:
                        slots.release()

                tg.start_soon(one)
                await anyio.sleep(every_s)
    finally:
        await nc.close()
    return acknowledged


async def outcomes(url: str, changes: dict[int, str], within: float) -> dict[int, list[Any]]:
    """Each change's event payloads once every one of them is closed (or the time is up)."""
    nc = await connect(url)
    store = EventStore(nc)
    events: dict[int, list[Any]] = {}
    try:
        deadline = time.monotonic() + within
        open_ = set(changes)
        while open_ and time.monotonic() < deadline:
            for i in sorted(open_):
                events[i] = [s.event.payload for s in (await store.read(TENANT, changes[i])).events]
                if any(isinstance(p, ChangeClosed) for p in events[i]):
                    open_.discard(i)
            if open_:
                await anyio.sleep(1.0)
    finally:
        await nc.close()
    return events


def assert_each_closed_once_and_ran_once(count: int, acknowledged: dict[int, str], events: dict[int, list[Any]],
                                         target: Path) -> None:
    """Every acknowledged change closed ``succeeded`` exactly once, each step ran exactly once, and each
    directory exists: nothing lost, nothing stuck, nothing repeated."""
    assert len(acknowledged) == count
    stuck = {i: [type(p).__name__ for p in events.get(i, [])] for i in acknowledged
             if not any(isinstance(p, ChangeClosed) for p in events.get(i, []))}
    assert not stuck, f"{len(stuck)} change(s) never closed, e.g. {list(stuck.items())[:3]}"
    closes = {i: [p for p in ev if isinstance(p, ChangeClosed)] for i, ev in events.items()}
    assert all(len(c) == 1 for c in closes.values()), {i: len(c) for i, c in closes.items() if len(c) != 1}
    failed = {i: (c[0].outcome, c[0].reason) for i, c in closes.items() if c[0].outcome != "succeeded"}
    assert not failed, failed
    for i, ev in events.items():
        completed = collections.Counter(p.step_id for p in ev if isinstance(p, StepCompleted))
        assert completed and set(completed.values()) == {1}, (i, completed)
        assert not [p for p in ev if isinstance(p, StepFailed)], i
        # `upm-localfs mkdir DIR` (no -p): run twice, its second run fails (and the change with it). A step may be
        # *announced* twice (step.started, then SIGKILL before mkdir ran), but never run twice
        assert all(isinstance(p, StepStarted) and p.command.startswith("upm-localfs mkdir -m ") and " -p" not in p.command
                   for p in ev if isinstance(p, StepStarted)), i
    assert sorted(p.name for p in target.iterdir()) == sorted(f"d{i}" for i in range(count))
