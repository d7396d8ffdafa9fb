"""The executor against a real nats-server and real processes: steps, failures, outputs, cancel."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import msgspec
import pytest
from executor_helpers import (
    append,
    config,
    dirs_plan,
    events,
    make_tool,
    pins,
    running,
    submit,
    tool_plan,
    types,
    wait_for,
)
from nats.aio.client import Client as NATS

from events.ids import new_id
from events.model import (
    ExecutionCancelled,
    ExecutionFailed,
    ExecutionPaused,
    ExecutionResumed,
    StepCompleted,
    StepFailed,
    StepRetried,
)
from events.store import EventStore
from services.common import metrics
from services.guard import worker
from services.guard.steps import already_done
from services.planner import CompileInput, compile_intent
from upm.emulators import free_port


async def test_a_single_wave_change_keeps_the_plain_event_sequence(nc: NATS, store: EventStore, tmp_path: Path) -> None:
    plan = dirs_plan([tmp_path / "one"])
    async with running(nc):
        change = await submit(store, plan)
        await wait_for(store, change, "execution.completed")
    assert (await types(store, change))[3:] == [
        "execution.started", "step.started", "step.completed", "execution.completed"]
    assert (tmp_path / "one").is_dir()


async def test_local_writes_run_on_workers_that_end_when_the_executor_stops(
    nc: NATS, store: EventStore, tmp_path: Path
) -> None:
    await worker.close()  # no idle worker of an earlier test: this one's steps start their own
    before = set(worker.POOL.pids())
    async with running(nc):
        change = await submit(store, dirs_plan([tmp_path / f"d{i}" for i in range(5)]))
        await wait_for(store, change, "execution.completed")
        writers = set(worker.POOL.pids()) - before
        assert len(writers) == 1  # five steps, one after another, on one worker
    assert all((tmp_path / f"d{i}").is_dir() for i in range(5))
    assert not _in_proc(writers)  # ended and reaped
    assert worker.POOL.idle == 0


def _in_proc(pids: set[int]) -> list[int]:
    return [pid for pid in pids if os.path.exists(f"/proc/{pid}")]


async def test_a_failed_step_fails_the_execution_and_later_steps_never_start(
    nc: NATS, store: EventStore, tmp_path: Path
) -> None:
    plan = dirs_plan([tmp_path / "a-missing" / "a", tmp_path / "z"])
    async with running(nc):
        change = await submit(store, plan)
        found = await wait_for(store, change, "execution.failed")
    failed = [e.payload for e in found if isinstance(e.payload, StepFailed)]
    assert len(failed) == 1 and "No such file" in failed[0].output.stderr
    end = next(e.payload for e in found if isinstance(e.payload, ExecutionFailed))
    assert end.step_id == failed[0].step_id and end.rule == ""
    assert not (tmp_path / "z").exists()
    assert [e.type for e in found].count("step.started") == 1


async def test_retries_are_recorded_and_long_output_is_kept_by_reference(
    nc: NATS, store: EventStore, tmp_path: Path
) -> None:
    # A real CLI that fails in a retryable way (connection refused) once, then prints 20 KB.
    tool = make_tool(tmp_path / "bin", "flaky", """
        marker, count = sys.argv[1], sys.argv[2]
        if not os.path.exists(marker + '.tried'):
            open(marker + '.tried', 'w').close()
            print('connection refused', file=sys.stderr)
            sys.exit(7)
        open(marker, 'w').close()
        print('x' * 20000)
    """)
    marker = tmp_path / "flaky.done"
    plan = tool_plan(tool, [(str(marker), "1")], [marker])
    cfg = config(pins=pins(tool), output={"event_bytes": 1000})
    async with running(nc, cfg):
        change = await submit(store, plan)
        found = await wait_for(store, change, "execution.completed")
    retried = [e.payload for e in found if isinstance(e.payload, StepRetried)]
    assert len(retried) == 1 and retried[0].attempt.verdict == "retryable"
    done = next(e.payload for e in found if isinstance(e.payload, StepCompleted))
    assert done.output.attempts == 2 and [t.verdict for t in done.output.tries] == ["retryable", "ok"]
    assert len(done.output.stdout) == 1000 and done.output.stdout_trunc
    assert done.output.stdout_ref.startswith("obs://UPM_OUTPUTS/acme/")
    bucket, _, name = done.output.stdout_ref.removeprefix("obs://").partition("/")
    full = await (await store.js.object_store(bucket)).get(name)
    assert full.data is not None and full.data.decode().strip() == "x" * 20000


async def test_a_cancelled_change_starts_no_further_step(nc: NATS, store: EventStore, tmp_path: Path) -> None:
    tool = make_tool(tmp_path / "bin", "slow", """
        open(sys.argv[1], 'w').close()
        time.sleep(0.3)
    """)
    markers = [tmp_path / f"m{i}" for i in range(6)]
    plan = tool_plan(tool, [(str(m),) for m in markers], markers)
    async with running(nc, config(pins=pins(tool))):
        change = await submit(store, plan)
        await wait_for(store, change, "step.completed")
        await append(store, "acme", change, [ExecutionCancelled(plan_hash=plan.hash, by="carol")])
        await wait_for(store, change, "execution.cancelled")
        # the executor's next append sees the cancel and stops
        for _ in range(40):
            before = await types(store, change)
            await anyio.sleep(0.4)
            if await types(store, change) == before:
                break
    found = await events(store, change)
    started = [e for e in found if e.type == "step.started"]
    assert len(started) < len(markers)
    assert "execution.completed" not in [e.type for e in found]
    assert sum(m.exists() for m in markers) == len(started)


async def test_a_retry_spike_pauses_the_change_before_the_next_step(
    nc: NATS, store: EventStore, tmp_path: Path
) -> None:
    tool = make_tool(tmp_path / "bin", "flaky", """
        if not os.path.exists(sys.argv[1] + '.tried'):
            open(sys.argv[1] + '.tried', 'w').close()
            print('503 Service Unavailable', file=sys.stderr)
            sys.exit(1)
        open(sys.argv[1], 'w').close()
    """)
    markers = [tmp_path / "m0", tmp_path / "m1"]
    plan = tool_plan(tool, [(str(m),) for m in markers], markers)
    async with running(nc, config(pins=pins(tool), anomalies={"max_retries_per_wave": 0})):
        change = await submit(store, plan)
        found = await wait_for(store, change, "execution.paused")
        paused = next(e.payload for e in found if isinstance(e.payload, ExecutionPaused))
        assert paused.anomaly == "retries" and "1 retried attempts" in paused.reason
        assert markers[0].exists() and not markers[1].exists()
        # a resume starts a new count: the next step retries once more, and pauses again
        await append(store, "acme", change, [ExecutionResumed(plan_hash=plan.hash, by="oncall")])
        found = await wait_for(store, change, "execution.resumed")
        with anyio.fail_after(20):
            while [e.type for e in found].count("execution.paused") < 2:
                await anyio.sleep(0.05)
                found = await events(store, change)
        await append(store, "acme", change, [ExecutionResumed(plan_hash=plan.hash, by="oncall")])
        found = await wait_for(store, change, "execution.completed")
    assert all(m.exists() for m in markers)
    assert [e.type for e in found].count("step.completed") == 2


async def test_under_a_pause_policy_a_failed_step_pauses_and_resume_reruns_it(
    nc: NATS, store: EventStore, tmp_path: Path
) -> None:
    parent = tmp_path / "a-later"
    plan = dirs_plan([parent / "x", tmp_path / "z"])
    async with running(nc, config(anomalies={"on_step_failure": "pause"})):
        change = await submit(store, plan)
        found = await wait_for(store, change, "execution.paused")
        paused = next(e.payload for e in found if isinstance(e.payload, ExecutionPaused))
        assert paused.anomaly == "step-failed" and not (tmp_path / "z").exists()
        parent.mkdir()  # the operator fixes the cause, then resumes
        await append(store, "acme", change, [ExecutionResumed(plan_hash=plan.hash, by="oncall")])
        found = await wait_for(store, change, "execution.completed")
    kinds = [(e.type, getattr(e.payload, "step_id", "")) for e in found if e.type.startswith("step.")]
    first, second = (s.id for s in plan.steps)
    assert kinds == [("step.started", first), ("step.failed", first), ("step.started", first),
                     ("step.completed", first), ("step.started", second), ("step.completed", second)]
    assert (parent / "x").is_dir() and (tmp_path / "z").is_dir()


async def test_the_command_service_refuses_what_is_invalid_or_not_allowed(
    nc: NATS, store: EventStore, tmp_path: Path
) -> None:
    async with running(nc, commands=True):
        change = await submit(store, dirs_plan([tmp_path / "one"]))
        await wait_for(store, change, "execution.completed")
        replies = {}
        for name, subject, body in (
            ("json", "upm.cmd.acme.resume.op", b"{not json"),
            ("schema", "upm.cmd.acme.rollback.op", b'{"change_id": "x", "by": "op"}'),
            ("state", "upm.cmd.acme.resume.op", msgspec.json.encode({"change_id": change, "by": "op"})),
            ("unknown", "upm.cmd.acme.cancel.op", msgspec.json.encode({"change_id": new_id(), "by": "op"})),
        ):
            replies[name] = msgspec.json.decode((await nc.request(subject, body, timeout=5)).data)
    assert all(not r["ok"] for r in replies.values())
    assert replies["json"]["error"]["rule"] == "json"
    assert replies["schema"]["error"]["field"] == "change_id"
    assert replies["state"]["error"]["rule"] == "not-paused" and "verifying" in replies["state"]["error"]["message"]
    assert replies["unknown"]["error"]["rule"] == "exists"
    assert (await types(store, change))[-1] == "execution.completed"  # nothing was appended


async def test_a_delete_is_not_skipped_as_done_when_its_guard_cannot_read_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A delete's guard shows it done when the resource is absent; the real psql against a port with
    nothing listening proves nothing, so the delete must run (and fail on its own), never be skipped."""
    monkeypatch.setenv("UPM_PG_HOST", "127.0.0.1")
    monkeypatch.setenv("UPM_PG_PORT", str(free_port()))
    [step] = compile_intent(CompileInput(request="Delete postgres role auditor")).steps
    assert step.desired == {"exists": False} and step.guard is not None
    assert not await already_done(step)


def _runs(program: str) -> float:
    return metrics.GUARD_RUNS.labels(program)._value.get()


async def test_a_wave_is_probed_with_one_batch_read_back_and_each_step_judged_as_alone(
    nc: NATS, store: EventStore, tmp_path: Path
) -> None:
    """Ten directories, four already as asked: one ``stat`` over the ten paths says which to skip (it
    names the six it cannot find only on stderr: they are absent, as a read-back of each alone would
    say), instead of ten ``stat`` processes; the six run."""
    paths = [tmp_path / f"d{i}" for i in range(10)]
    for p in paths[::3]:
        p.mkdir()
        p.chmod(0o755)
    plan = dirs_plan(paths)
    before = _runs("stat")
    async with running(nc):
        change = await submit(store, plan)
        found = await wait_for(store, change, "execution.completed")
    probes = _runs("stat") - before
    by_path = {s.id: s.resource.name for s in plan.steps}
    done = {t: sorted(by_path[e.payload.step_id] for e in found if e.type == t)  # type: ignore[union-attr]
            for t in ("step.skipped", "step.completed")}
    assert done == {"step.skipped": sorted(map(str, paths[::3])),
                    "step.completed": sorted(str(p) for i, p in enumerate(paths) if i % 3)}
    assert all(p.is_dir() for p in paths)
    assert probes == 1, f"{probes} stat processes probed the wave"
