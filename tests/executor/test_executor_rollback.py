"""Executed rollback: the inverse of what ran, in reverse order, with evidence; a failed rollback
is recorded, and a second approval retries it without undoing anything twice."""

from __future__ import annotations

from pathlib import Path

from executor_helpers import append, dirs_plan, running, submit, wait_for
from nats.aio.client import Client as NATS

from events.model import (
    ExecutionFailed,
    RollbackApproved,
    RollbackCompleted,
    RollbackFailed,
    RollbackStarted,
    RollbackStepCompleted,
    RollbackStepFailed,
    RollbackStepSkipped,
    StepSkipped,
)
from events.store import EventStore


async def test_rollback_of_a_failed_change_undoes_what_ran_and_a_retry_finishes_it(
    nc: NATS, store: EventStore, tmp_path: Path
) -> None:
    before = tmp_path / "a-existed"
    before.mkdir()  # already there: its step is skipped, so the rollback must leave it alone
    paths = [before, tmp_path / "b", tmp_path / "c", tmp_path / "d-missing" / "x"]
    plan = dirs_plan(paths)
    async with running(nc):
        change = await submit(store, plan)
        found = await wait_for(store, change, "execution.failed")
        assert [e.payload.step_id for e in found if isinstance(e.payload, StepSkipped)] == [plan.steps[0].id]
        assert next(e.payload for e in found if isinstance(e.payload, ExecutionFailed)).step_id == plan.steps[3].id
        (tmp_path / "b" / "keep").touch()  # makes `rmdir b` fail
        await append(store, "acme", change, [RollbackApproved(plan_hash=plan.hash, lane="auto", by="policy")])
        found = await wait_for(store, change, "rollback.failed")
        started = next(e.payload for e in found if isinstance(e.payload, RollbackStarted))
        assert started.steps == 2  # c then b: a was skipped, d never ran
        assert [e.payload.step_id for e in found if isinstance(e.payload, RollbackStepCompleted)] == [plan.steps[2].id]
        failed = next(e.payload for e in found if isinstance(e.payload, RollbackStepFailed))
        assert failed.step_id == plan.steps[1].id and "not empty" in failed.output.stderr
        end = next(e.payload for e in found if isinstance(e.payload, RollbackFailed))
        assert end.step_id == plan.steps[1].id and end.failed_at and end.started_at
        (tmp_path / "b" / "keep").unlink()
        await append(store, "acme", change, [RollbackApproved(plan_hash=plan.hash, lane="manual", by="oncall")])
        found = await wait_for(store, change, "rollback.completed")
    undone = [e.payload.step_id for e in found if isinstance(e.payload, RollbackStepCompleted)]
    assert undone == [plan.steps[2].id, plan.steps[1].id]  # c once, b on the retry
    assert not [e for e in found if isinstance(e.payload, RollbackStepSkipped)]
    done = next(e.payload for e in found if isinstance(e.payload, RollbackCompleted))
    failed_at = next(e.ts for e in found if isinstance(e.payload, ExecutionFailed))
    assert done.failed_at == failed_at and done.started_at <= done.finished_at
    assert before.is_dir() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
