"""Intent → closed through the five services: once as tasks in one process, once as OS processes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from events import chain
from events.model import PlanCompiled, PlanRecompiled
from events.store import EventStore
from services.common import client
from upm import app, processes

Eventually = Callable[[Callable[[], Awaitable[bool]], float], Awaitable[None]]

HAPPY = [
    "intent.submitted",
    "plan.compiled",
    "preflight.passed",
    "change.approved",
    "execution.started",
    "step.started",
    "step.completed",
    "execution.completed",
    "verification.passed",
    "change.closed",
]


def _until_closed(types: list[str]) -> list[str]:
    """The change's own events: what the auditor adds after the close (the determinism witness,
    the evidence pack) may or may not be stored yet when the client reads the close."""
    return types[: types.index("change.closed") + 1]


async def _run(store: EventStore, intent: dict[str, object]) -> client.ChangeStatus:
    change_id = await client.submit(store.nc, "acme", intent, principal="alice")
    return await client.wait_closed(store, "acme", change_id, within=30)


async def test_a_local_change_goes_from_intent_to_closed_in_one_process(
    pipeline: EventStore, tmp_path: Path
) -> None:
    target = tmp_path / "app"
    status = await _run(pipeline, {"request": f"Create directory {target} with mode 0750"})
    assert (status.outcome, status.reason) == ("succeeded", "")
    assert _until_closed([e.type for e in status.events]) == HAPPY
    assert stat.S_IMODE(target.stat().st_mode) == 0o750
    log = await pipeline.read("acme", status.change_id)
    assert chain.verify(status.change_id, [(s.seq, s.data) for s in log.events]) == log.head
    assert [e.phase for e in status.events][-1] == "audit"


async def test_a_rerun_of_a_done_change_skips_its_steps(pipeline: EventStore, tmp_path: Path) -> None:
    target = tmp_path / "again"
    await _run(pipeline, {"request": f"Create directory {target} with mode 0750"})
    status = await _run(pipeline, {"request": f"Create directory {target} with mode 0750"})
    assert status.outcome == "succeeded"
    assert "step.skipped" in [e.type for e in status.events]
    assert "step.started" not in [e.type for e in status.events]


async def test_a_missing_prerequisite_halts_in_preflight_and_nothing_runs(
    pipeline: EventStore, tmp_path: Path
) -> None:
    target = tmp_path / "absent" / "app.conf"
    status = await _run(pipeline, {"request": f"Create file {target} containing 'x'"})
    assert status.outcome == "rejected"
    assert str(tmp_path / "absent") in status.reason
    types = [e.type for e in status.events]
    assert _until_closed(types) == ["intent.submitted", "plan.compiled", "preflight.failed", "change.closed"]
    assert not target.parent.exists()


async def test_the_auditor_recompiles_a_closed_changes_intent_in_a_fresh_process(
    pipeline: EventStore, tmp_path: Path, eventually: Eventually
) -> None:
    status = await _run(pipeline, {"request": f"Create directory {tmp_path}/det with mode 0750"})

    async def witnessed() -> bool:
        log = await pipeline.read("acme", status.change_id)
        return any(isinstance(s.event.payload, PlanRecompiled) for s in log.events)

    await eventually(witnessed, 30.0)
    log = await pipeline.read("acme", status.change_id)
    [witness] = [s.event.payload for s in log.events if isinstance(s.event.payload, PlanRecompiled)]
    compiled = next(s.event.payload for s in log.events if isinstance(s.event.payload, PlanCompiled))
    assert witness.matches and witness.recompiled_hash == compiled.plan.hash == witness.plan_hash
    assert witness.error == ""


async def test_an_uncompilable_request_is_rejected_with_the_planners_reason(pipeline: EventStore) -> None:
    status = await _run(pipeline, {"request": "Create flux capacitor delorean"})
    assert status.outcome == "rejected"
    assert [e.type for e in status.events] == ["intent.submitted", "plan.rejected", "change.closed"]
    assert status.reason


def _upm(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "upm.cli", *args], capture_output=True, text=True, env=env, timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_end_to_end_as_separate_os_processes(tmp_path: Path) -> None:
    data = tmp_path / "upm"
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    up = _upm("up", "--data", str(data), "--json", env=env)
    assert up.returncode == 0, up.stderr
    state = json.loads(up.stdout)
    try:
        assert set(state["pids"]) == {"nats-server", *app.SERVICE_NAMES}
        hosting = dict(app.layout())  # every service in exactly one process; one process per entry
        assert {p: tuple(names) for p, names in state["processes"].items()} == hosting
        assert all(len({state["pids"][n] for n in names}) == 1 for names in hosting.values())
        assert len({state["pids"][n] for n in app.SERVICE_NAMES}) == len(hosting)
        target = tmp_path / "procs"
        sub = _upm("submit", f"Create directory {target} with mode 0700", "--wait", "--json",
                   "--tenant", "acme", "--data", str(data), env=env)
        assert sub.returncode == 0, sub.stderr
        result = json.loads(sub.stdout)
        assert result["outcome"] == "succeeded"
        assert _until_closed([e["type"] for e in result["events"]]) == HAPPY
        assert stat.S_IMODE(target.stat().st_mode) == 0o700
        writers = _local_writers(state["pids"]["executor"])  # the step ran on a worker the executor keeps
        assert writers
        workers = [pid for service in app.SERVICE_NAMES for pid in _serve_workers(state["pids"][service])]
        shown = _upm("status", result["change_id"], "--json", "--data", str(data), env=env)
        assert json.loads(shown.stdout)["state"] == "closed"
    finally:
        down = _upm("down", "--data", str(data), "--json", env=env)
    assert down.returncode == 0, down.stderr
    assert sorted(json.loads(down.stdout)["stopped"]) == sorted(["supervisor", *state["pids"]])
    assert not any(processes.alive(pid) for pid in [state["supervisor"], *state["pids"].values()])  # gone (or a zombie: exited)
    assert not any(processes.alive(pid) for pid in writers)  # the executor's local writers went with it
    assert not any(processes.alive(pid) for pid in workers)  # and every service's guard workers (aws too)


def _local_writers(parent: int) -> list[int]:
    """The ``upm-localfs serve`` workers that ``parent`` started."""
    return _serve_workers(parent, (b"/upm-localfs",))


def _serve_workers(parent: int, scripts: tuple[bytes, ...] = (b"/upm-localfs", b"/upm-aws-serve")) -> list[int]:
    """The guard's serve workers (of ``scripts``) that ``parent`` started."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[1])
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if ppid == parent and any(a.endswith(scripts) for a in argv) and b"serve" in argv:
            found.append(int(entry))
    return found
