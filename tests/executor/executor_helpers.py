"""Helpers for the executor tests: plans with waves, changes appended straight to the log,
pinned helper CLIs (real executables), and the executor run in-process or as a process."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import textwrap
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec
from nats.aio.client import Client as NATS

from events.errors import ConcurrencyConflict
from events.ids import new_id
from events.model import ChangeApproved, Event, IntentSubmitted, Payload, PlanCompiled
from events.plan import Command, Plan, ResourceRef, Step, Wave, seal
from events.store import ChangeLog, EventStore, new_event
from services import executor
from services.common.runtime import Runner, utc_now
from services.executor.config import ExecutorConfig, parse_config
from services.planner import CompileInput, compile_intent

REPO = Path(__file__).resolve().parents[2]
TENANT = "acme"


def dirs_plan(paths: Sequence[Path], waves: Sequence[int] | None = None,
              health: dict[int, Command] | None = None) -> Plan:
    """A real compiled plan creating ``paths`` (mode 0755); step i in wave ``waves[i]``."""
    plan = compile_intent(CompileInput(spec={"resources": [
        {"type": "local_directory", "path": str(p), "mode": "0755"} for p in paths
    ]}))
    return with_waves(plan, waves or [0] * len(plan.steps), health or {})


def with_waves(plan: Plan, waves: Sequence[int], health: dict[int, Command]) -> Plan:
    by_path = {s.resource.name: s for s in plan.steps}
    steps = tuple(
        msgspec.structs.replace(s, wave=w, health=health.get(i, s.health))
        for i, (s, w) in enumerate(zip(sorted(by_path.values(), key=lambda s: s.index), waves, strict=True))
    )
    count = max(waves) + 1
    wave_list = tuple(
        Wave(index=i, name=f"wave-{i + 1}", targets=("local",), steps=tuple(s.id for s in steps if s.wave == i))
        for i in range(count)
    )
    return seal(msgspec.structs.replace(plan, steps=steps, waves=wave_list if count > 1 else plan.waves,
                                        resources_needed=()))


def tool_plan(tool: Path, argvs: Sequence[tuple[str, ...]], markers: Sequence[Path], timeout_s: float = 20.0) -> Plan:
    """A plan of steps running the pinned helper ``tool`` (guarded by a stat of a marker file)."""
    steps = []
    for i, (args, marker) in enumerate(zip(argvs, markers, strict=True)):
        ref = ResourceRef(provider="local", type="local_file", name=str(marker), target="local",
                          key=f"local_file:local:{marker}")
        argv = (str(tool), *args)
        readback = Command(argv=("stat", "-c", "%F:%a:%U:%s", str(marker)),
                           display=f"stat -c %F:%a:%U:%s {marker}")
        steps.append(Step(
            id=ref.key, index=i, resource=ref, action="create",
            command=Command(argv=argv, display=" ".join(argv)), guard=readback, readback=readback,
            health=None, rollback=None, desired={"exists": True}, depends_on=(), target="local",
            cli="helper", timeout_s=timeout_s, destructive=False,
        ))
    base = compile_intent(CompileInput(spec={"resources": [{"type": "local_directory", "path": "/tmp"}]}))
    return seal(msgspec.structs.replace(base, steps=tuple(steps), resources_needed=(), waves=(), rollback=()))


def make_tool(folder: Path, name: str, body: str) -> Path:
    """An executable helper CLI (``--version`` → ``NAME 1.0``), pinned by its absolute path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(
        f"#!{sys.executable}\n"
        f"import os, sys, time\nsys.path.insert(0, {str(REPO)!r})\n"
        "if sys.argv[1:] == ['--version']:\n"
        f"    print('{name} 1.0')\n"
        "    sys.exit(0)\n" + textwrap.dedent(body)
    )
    path.chmod(0o755)
    return path


def config(**sections: Any) -> ExecutorConfig:
    return parse_config(sections)


def pins(*tools: Path) -> list[dict[str, str]]:
    return [{"binary": str(t), "version": "1.0"} for t in tools]


async def submit(store: EventStore, plan: Plan, *, tenant: str = TENANT, change_id: str | None = None) -> str:
    """Intent, compiled plan and approval appended straight to the log (no planner, no pre-flight)."""
    change_id = change_id or new_id()
    await append(store, tenant, change_id, [
        IntentSubmitted(spec={"resources": []}, initiator="alice"),
        PlanCompiled(plan=plan, compile_ms=0.1),
        ChangeApproved(plan_hash=plan.hash, lane="manual", approvers=("bob",)),
    ])
    return change_id


async def append(store: EventStore, tenant: str, change_id: str, payloads: Sequence[Payload]) -> None:
    """Append as an operator would, re-reading when the executor appended in between."""
    events = [new_event(p, event_id=new_id(), change_id=change_id, tenant=tenant, ts=utc_now(), actor="test",
                        source="api") for p in payloads]
    for _ in range(50):
        log = await store.read(tenant, change_id)
        try:
            await store.append(log if log.events else ChangeLog(tenant, change_id), events)
            return
        except ConcurrencyConflict:
            await anyio.sleep(0.01)
    raise AssertionError(f"could not append to {change_id}: it kept changing")


async def events(store: EventStore, change_id: str, tenant: str = TENANT) -> list[Event]:
    return [s.event for s in (await store.read(tenant, change_id)).events]


async def types(store: EventStore, change_id: str, tenant: str = TENANT) -> list[str]:
    return [e.type for e in await events(store, change_id, tenant)]


async def wait_for(store: EventStore, change_id: str, event_type: str, within: float = 30.0,
                   tenant: str = TENANT) -> list[Event]:
    """Poll the change until an event of ``event_type`` is stored; its events."""
    with anyio.fail_after(within):
        while True:
            found = await events(store, change_id, tenant)
            if any(e.type == event_type for e in found):
                return found
            await anyio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(nc: NATS, cfg: ExecutorConfig | None = None, *, commands: bool = False) -> AsyncIterator[Runner]:
    """The executor service (and its command service) as tasks of this process."""
    runner = Runner(nc, executor.spec(cfg or config()))
    tasks = []
    ready = anyio.Event()
    tasks.append(asyncio.ensure_future(runner.run(ready=ready)))
    await ready.wait()
    if commands:
        served = anyio.Event()
        tasks.append(asyncio.ensure_future(executor.run(nc, ready=served)))
        await served.wait()
    try:
        yield runner
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
