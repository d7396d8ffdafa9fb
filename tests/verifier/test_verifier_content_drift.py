"""A same-size edit of a managed file is drift: file content is read back as a sha256 digest.

Real files, real ``stat`` and ``sha256sum`` through the guarded runner; batched (several files)
and single read-backs both.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import anyio
import anyio.abc
import pytest

from events.commands import idempotent_change_id
from events.ids import new_id
from events.model import (
    ChangeClosed,
    DriftDetected,
    ExecutionCompleted,
    ExecutionStarted,
    IntentSubmitted,
    Payload,
    PlanCompiled,
    RollbackStarted,
    StepCompleted,
    StepOutput,
    VerificationFailed,
    VerificationPassed,
)
from events.plan import Plan
from events.store import ChangeLog, EventStore, new_event
from providers import CATALOG, Observed
from services.common.runtime import utc_now
from services.guard.steps import run_command
from services.planner import CompileInput, compile_intent
from services.verifier import core
from services.verifier.config import DriftConfig
from services.verifier.drift import DRIFT_LOG_KEY, DriftLoop, check, read_resource, scan
from services.verifier.inventory import Managed, managed
from services.verifier.service import verify
from upm.commands.verify import _drift

FAST = DriftConfig(interval_s=30, confirm_retries=1, confirm_backoff_s=0.01, rate_per_s=1000, concurrency=8,
                   mode="alarm")
AAAA, BBBB = (hashlib.sha256(text.encode()).hexdigest() for text in ("aaaa", "bbbb"))


async def _created(tmp_path: Path, *names: str) -> Plan:
    """Files ``names`` under ``tmp_path`` containing 'aaaa', created by their plan's own commands."""
    plan = compile_intent(CompileInput(request="Create " + " and ".join(
        f"file {tmp_path / name} containing 'aaaa'" for name in names)))
    for step in plan.steps:
        out = await run_command(step.command, stdin=step.stdin)
        assert out.rc == 0, out.stderr
    return plan


def _managed(plan: Plan) -> list[Managed]:
    return [Managed(tenant="acme", key=s.resource.key, change_id="c", environment="dev", step=s) for s in plan.steps]


def _edit_in_place(path: Path) -> None:
    """Same size, same mode and owner, new bytes: what ``stat`` alone cannot tell apart."""
    before = path.stat()
    path.write_text("bbbb")
    after = path.stat()
    assert (after.st_size, after.st_mode, after.st_uid) == (before.st_size, before.st_mode, before.st_uid)


def test_the_desired_digest_is_of_the_bytes_the_step_writes_and_an_empty_file_has_none() -> None:
    spec = {"resources": [
        {"type": "local_file", "path": "/srv/a/new.conf", "content": "héllo\n"},
        {"type": "local_file", "path": "/srv/a/empty"},
        {"type": "local_file", "path": "/srv/a/old.conf", "content": "x = 1\n", "action": "update"},
    ]}
    steps = {s.resource.key: s for s in compile_intent(CompileInput(spec=spec)).steps}
    new, empty, edit = (steps[k] for k in ("local_file:local:/srv/a/new.conf", "local_file:local:/srv/a/empty",
                                           "local_file_content:local:/srv/a/old.conf"))
    assert new.stdin is not None and edit.stdin is not None
    assert new.desired["sha256"] == hashlib.sha256(new.stdin.encode()).hexdigest() and new.desired["size"] == 7
    assert edit.desired == {"exists": True, "size": 6, "sha256": hashlib.sha256(b"x = 1\n").hexdigest()}
    assert "sha256" not in empty.desired and empty.desired["size"] == 0


def test_the_digest_read_back_reads_only_clean_lines_for_the_paths_it_asked_about() -> None:
    supplement = CATALOG["local_file"].supplement
    assert supplement is not None
    assert supplement.read.command("local", ("/a", "/b c")) == ("sha256sum", "--", "/a", "/b c")
    stdout = f"{AAAA}  /a\n{BBBB}  /b c\n\\{AAAA}  /odd\\\\name\n{AAAA}  /not-asked\n"
    assert supplement.read.parse(1, stdout, ("/a", "/b c", "/gone")) == {"/a": {"sha256": AAAA},
                                                                         "/b c": {"sha256": BBBB}}


@pytest.mark.parametrize("count", [1, 3], ids=["single read-back", "batched read-back"])
async def test_verification_sees_a_same_size_edit(tmp_path: Path, count: int) -> None:
    plan = await _created(tmp_path, *(f"f{i}.conf" for i in range(count)))
    targets = core.change_targets(plan)
    assert isinstance(await verify(targets, "change"), VerificationPassed)
    _edit_in_place(tmp_path / "f0.conf")
    result = await verify(targets, "change")
    assert isinstance(result, VerificationFailed)
    assert [(d.resource, d.field, d.desired, d.observed) for d in result.diff] == [
        (f"local_file:local:{tmp_path / 'f0.conf'}", "sha256", AAAA, BBBB)]
    assert [c.ok for c in result.checks] == [False] + [True] * (count - 1)


async def test_a_content_facet_sees_a_same_size_edit_too(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("old!")
    spec = {"resources": [{"type": "local_file", "path": str(tmp_path / "f"), "content": "aaaa", "action": "update"}]}
    plan = compile_intent(CompileInput(spec=spec))
    (step,) = plan.steps
    assert (await run_command(step.command, stdin=step.stdin)).rc == 0
    assert isinstance(await verify(core.change_targets(plan), "change"), VerificationPassed)
    _edit_in_place(tmp_path / "f")
    result = await verify(core.change_targets(plan), "change")
    assert isinstance(result, VerificationFailed) and [d.field for d in result.diff] == ["sha256"]


async def test_the_drift_scan_reports_the_edited_file_and_keeps_the_untouched_ones_ok(tmp_path: Path) -> None:
    items = _managed(await _created(tmp_path, "a.conf", "b.conf", "c.conf"))
    assert {r.status for r in await scan(items, FAST)} == {"ok"}
    _edit_in_place(tmp_path / "b.conf")
    readings = {r.key: r for r in await scan(items, FAST)}
    edited = readings.pop(f"local_file:local:{tmp_path / 'b.conf'}")
    assert edited.status == "drifted" and edited.reads == FAST.confirm_retries + 1  # confirmed on its own
    assert [(d.field, d.desired, d.observed) for d in edited.diff] == [("sha256", AAAA, BBBB)]
    assert {r.status for r in readings.values()} == {"ok"}


async def test_a_file_replaced_by_a_named_pipe_is_drift_and_its_digest_is_never_waited_for(tmp_path: Path) -> None:
    (item,) = _managed(await _created(tmp_path, "f"))
    (tmp_path / "f").unlink()
    os.mkfifo(tmp_path / "f")
    started = time.perf_counter()
    reading = await check(item, FAST)
    assert time.perf_counter() - started < 5  # sha256sum on a FIFO would block until its time-out
    assert reading.status == "drifted"
    assert [(d.field, d.observed) for d in reading.diff] == [("kind", "fifo"), ("sha256", None), ("size", 0)]


async def _closed_change(store: EventStore, plan: Plan) -> str:
    """A change that ran ``plan`` and closed succeeded, as the log holds it; its change id."""
    change_id = new_id()
    payloads: list[Payload] = [
        IntentSubmitted(request=plan.request, initiator="alice"),
        PlanCompiled(plan=plan, compile_ms=1.0),
        ExecutionStarted(plan_hash=plan.hash, steps=len(plan.steps)),
        *(StepCompleted(step_id=s.id, index=i, command=s.command.display, output=StepOutput(rc=0))
          for i, s in enumerate(plan.steps)),
        ExecutionCompleted(plan_hash=plan.hash, duration_ms=1.0),
        ChangeClosed(outcome="succeeded", events=4, chain_head=""),
    ]
    events = [new_event(p, event_id=new_id(), change_id=change_id, tenant="acme", ts=utc_now(), actor="test",
                        source="api") for p in payloads]
    await store.append(ChangeLog("acme", change_id), events)
    return change_id


async def _following(loop: DriftLoop, tg: anyio.abc.TaskGroup) -> None:
    """``loop``'s inventory follows the log, caught up with it now."""
    tg.start_soon(loop.follower.run)
    await loop.follower.at_least(await loop.store.position(), within=10)


async def test_upm_drift_and_the_drift_loop_report_the_edited_file(
    store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "verifier.yaml"
    config.write_text("drift: {confirm_retries: 1, confirm_backoff_s: 0.01, mode: alarm}\n")
    monkeypatch.setenv("UPM_VERIFIER_CONFIG", str(config))
    files = tmp_path / "files"
    files.mkdir()
    plan = await _created(files, "a.conf", "b.conf")
    await _closed_change(store, plan)
    edited, untouched = (f"local_file:local:{files / name}" for name in ("a.conf", "b.conf"))
    _edit_in_place(files / "a.conf")

    rows = {r["resource"]: r for r in await _drift(store, "acme")}
    assert (rows[edited]["status"], rows[untouched]["status"]) == ("drifted", "ok")
    assert rows[edited]["diff"] == f"sha256: {AAAA!r} → {BBBB!r}"

    loop = DriftLoop(store.nc, FAST)
    async with anyio.create_task_group() as tg:
        await _following(loop, tg)
        summary = await loop.scan_tenant("acme")
        tg.cancel_scope.cancel()
    assert (summary.checked, summary.drifted) == (2, 1)
    log = await store.read("acme", idempotent_change_id("acme", DRIFT_LOG_KEY))
    (detected,) = [s.event.payload for s in log.events if isinstance(s.event.payload, DriftDetected)]
    assert detected.resource == edited and [(d.field, d.observed) for d in detected.diff] == [("sha256", BBBB)]
    assert detected.baseline_hash != detected.current_hash


async def test_a_rollback_that_starts_while_the_file_is_read_is_not_drift(store: EventStore, tmp_path: Path) -> None:
    """The read took time and a rollback of the change that created the file started meanwhile and
    deleted it: the read saw the rollback at work, not drift (the conformance run caught the loop
    reporting the deleted file as drift after ``rollback.completed``)."""
    plan = await _created(tmp_path, "a.conf")
    change_id = await _closed_change(store, plan)
    (step,) = plan.steps

    async def read_while_rolling_back(item: Managed) -> Observed:
        if not (tmp_path / "a.conf").exists():  # read again to confirm: the rollback has deleted it
            return await read_resource(item)
        rollback = new_event(RollbackStarted(plan_hash=plan.hash, steps=1), event_id=new_id(), change_id=change_id,
                             tenant="acme", ts=utc_now(), actor="test", source="api")
        await store.append(await store.read_tail("acme", change_id), [rollback])
        (tmp_path / "a.conf").unlink()
        return await read_resource(item)

    loop = DriftLoop(store.nc, FAST, read=read_while_rolling_back)
    async with anyio.create_task_group() as tg:
        await _following(loop, tg)
        assert [m.key for m in managed(loop.inventory, "acme")] == [step.resource.key]
        summary = await loop.scan_tenant("acme")
        tg.cancel_scope.cancel()
    assert (summary.managed, summary.drifted) == (1, 0)
    log = await store.read("acme", idempotent_change_id("acme", DRIFT_LOG_KEY))
    assert not [s for s in log.events if isinstance(s.event.payload, DriftDetected)]
