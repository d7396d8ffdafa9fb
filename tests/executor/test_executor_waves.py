"""Must-show: a 3-wave change pauses itself on wave 2's red health check and never starts wave
3; `upm resume` continues it; `upm rollback` restores the state from before the change, and the
verifier confirms it. The executor, its command service, the verifier and the auditor run on a
real nats-server; the commands go through the real `upm` subcommands."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from executor_helpers import dirs_plan, events, running, submit, types, wait_for
from nats.aio.client import Client as NATS

from events.model import (
    ExecutionPaused,
    RollbackCompleted,
    RollbackStepCompleted,
    VerificationPassed,
    WaveCompleted,
)
from events.plan import Command
from events.store import EventStore
from services import verifier
from services.auditor import service as auditor
from services.common.runtime import Runner
from upm.cli import main
from upm.natsserver import EmbeddedNats


@contextlib.asynccontextmanager
async def verifier_and_auditor(nc: NATS) -> AsyncIterator[None]:
    tasks = []
    for spec in (verifier.spec(), auditor.spec()):
        ready = anyio.Event()
        tasks.append(asyncio.ensure_future(Runner(nc, spec).run(ready=ready)))
        await ready.wait()
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def upm(server: EmbeddedNats, *argv: str) -> int:
    """Run an executor `upm` subcommand (as the CLI does: its own connection, in a thread) with ``--json``:
    its errors are JSON on stdout, as `upm` prints them."""
    code: int = await anyio.to_thread.run_sync(main, [*argv, "--nats", server.url, "--json"])
    return code


async def test_three_waves_pause_on_red_health_resume_then_rollback_verified(
    nats_server: EmbeddedNats, nc: NATS, store: EventStore, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    paths = [tmp_path / "w1", tmp_path / "w2", tmp_path / "w3"]
    ready = tmp_path / "w2-ready"
    # wave 2's health check: a real command that fails until its readiness marker exists
    health = {1: Command(argv=("stat", str(ready)), display=f"stat {ready}")}
    plan = dirs_plan(paths, waves=[0, 1, 2], health=health)
    async with running(nc, commands=True), verifier_and_auditor(nc):
        change = await submit(store, plan)
        found = await wait_for(store, change, "execution.paused")
        await anyio.sleep(0.3)  # nothing more may happen while paused
        assert (await types(store, change))[-1] == "execution.paused"
        paused = next(e.payload for e in found if isinstance(e.payload, ExecutionPaused))
        assert paused.wave == 1 and paused.anomaly == "health" and str(ready) in paused.reason
        gates = [e.payload for e in found if isinstance(e.payload, WaveCompleted)]
        assert [(g.wave, g.healthy) for g in gates] == [(0, True), (1, False)]
        assert paths[0].is_dir() and paths[1].is_dir() and not paths[2].exists()
        assert "wave.started" in [e.type for e in found]
        assert [e.payload.wave for e in found if e.type == "wave.started"] == [0, 1]
        ready.touch()  # the operator fixes what the health check found, then resumes
        capfd.readouterr()
        code = await upm(nats_server, "resume", change, "--tenant", "acme", "--as", "oncall", "--reason", "marker fixed")
        assert code == 0, capfd.readouterr().err
        assert json.loads(capfd.readouterr().out)["command"] == "resume"
        found = await wait_for(store, change, "change.closed")
        assert paths[2].is_dir()
        kinds = [e.type for e in found]
        assert kinds.index("execution.resumed") < kinds.index("execution.completed")
        assert [e.payload.wave for e in found if e.type == "wave.started"] == [0, 1, 2]
        assert [e.type for e in found].count("step.started") == 3  # nothing ran twice
        assert "verification.passed" in kinds
        code = await upm(nats_server, "resume", change, "--tenant", "acme", "--as", "oncall")
        assert code == 2 and "not paused" in json.loads(capfd.readouterr().out)["error"]["message"]  # --json: JSON
        # the operator rolls the change back; the verifier checks the pre-change state
        code = await upm(nats_server, "rollback", change, "--tenant", "acme", "--as", "oncall", "--reason", "bad release")
        assert code == 0, capfd.readouterr().err

        async def rollback_verified() -> list[object]:
            return [e.payload for e in await events(store, change)
                    if isinstance(e.payload, VerificationPassed) and e.payload.scope == "rollback"]

        with anyio.fail_after(30):
            while not await rollback_verified():  # noqa: ASYNC110 - polling state held by the server
                await anyio.sleep(0.05)
        code = await upm(nats_server, "rollback", change, "--tenant", "acme", "--as", "oncall")
        assert code == 2 and "already rolled back" in json.loads(capfd.readouterr().out.splitlines()[-1])["error"]["message"]
    found = await events(store, change)
    assert not any(p.exists() for p in paths)
    undone = [e.payload.step_id for e in found if isinstance(e.payload, RollbackStepCompleted)]
    assert undone == [s.id for s in reversed(plan.steps)]
    done = next(e.payload for e in found if isinstance(e.payload, RollbackCompleted))
    assert done.steps == 3 and done.failed_at and done.started_at <= done.finished_at
    approved = next(e for e in found if e.type == "rollback.approved")
    assert approved.actor == "oncall" and approved.payload.lane == "manual"  # type: ignore[union-attr]
    verified = [e.payload for e in found if isinstance(e.payload, VerificationPassed) and e.payload.scope == "rollback"]
    assert len(verified) == 1 and all(c.ok for c in verified[0].checks) and len(verified[0].checks) == 3
