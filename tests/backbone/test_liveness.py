"""No change stops silently: every decision that takes several events is finished after a crash
between them — by a redelivery, or by the stall watchdog's nudge when the input was already
acknowledged — and a change nothing can finish is closed ``stalled``, naming where it stopped.

The faults are real: the real services run on a real nats-server; one service's handler is cut
off right after the first event of a decision is stored (what ``kill -9`` between two appends
leaves), and its input is acknowledged (what a lost in-flight publish leaves: nothing pending,
nothing redelivered).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest
from nats.aio.client import Client as NATS

from events.lifecycle import ChangeState, fold
from events.model import ChangeStalled, Event, Payload, type_of
from events.store import EventStore
from services import executor, preflight, verifier
from services.auditor.watchdog import Deadlines, due
from services.common import client
from services.common.runtime import Context, Runner, ServiceSpec
from services.common.settings import Settings
from upm import app


class Cut(Exception):
    """Raised inside a handler to end it right after the first event of a decision was stored."""


def cut_spec(real: ServiceSpec, after: str) -> ServiceSpec:
    """``real``, but its first decision that emits ``after`` stores the events up to and including
    ``after`` and no more; the handler then ends normally, so the runtime acknowledges its input
    (the decision's tail is lost for good, unless something re-drives it)."""
    state = {"cut": False}

    async def handle(ctx: Context, history: list[Event], event: Event) -> None:
        emit = ctx.emit

        async def lossy(*items: Payload | tuple[Payload, str] | Event) -> None:
            types = [_type(i) for i in items]
            if state["cut"] or after not in types:
                await emit(*items)
                return
            state["cut"] = True
            await emit(*items[: types.index(after) + 1])
            raise Cut

        ctx.emit = lossy  # type: ignore[method-assign]
        with contextlib.suppress(Cut):
            await real.handle(ctx, history, event)

    return ServiceSpec(name=real.name, consumes=real.consumes, handle=handle, concurrency=real.concurrency,
                       ack_wait=real.ack_wait)


def cutting(make: Callable[[], ServiceSpec], after: str) -> Callable[[NATS, Settings], Runner]:
    return lambda nc, _settings: Runner(nc, cut_spec(make(), after))


def cut_preflight(after: str) -> Callable[[NATS, Settings], preflight.Host]:
    """Pre-flight as ``upm up`` hosts it (consumer, approve/deny, release loop), its consumer cut."""

    def build(nc: NATS, _settings: Settings) -> preflight.Host:
        host = preflight.Host(nc)
        real = host.service.spec()
        host.service.spec = lambda: cut_spec(real, after)  # type: ignore[method-assign]
        return host

    return build


def _type(item: Payload | tuple[Payload, str] | Event) -> str:
    if isinstance(item, Event):
        return item.type
    return type_of(item[0] if isinstance(item, tuple) else item)


@pytest.fixture
def fast_watchdog(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("UPM_STALL_AFTER_S", "1.5")
    monkeypatch.setenv("UPM_STALL_CHECK_S", "0.3")
    monkeypatch.setenv("UPM_DATA", str(tmp_path / "upm-data"))


@contextlib.asynccontextmanager
async def pipeline_with(nc: NATS, **replaced: Callable[[NATS, Settings], Runner]) -> AsyncIterator[None]:
    hosted = dict(app.HOSTED)
    hosted.update(replaced)
    started: list[str] = []
    all_up = anyio.Event()

    def ready(name: str) -> None:
        started.append(name)
        if len(started) == len(hosted):
            all_up.set()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(app, "HOSTED", hosted)
        task = asyncio.ensure_future(app.serve(nc, tuple(hosted), Settings.from_env(), ready=ready))
        with anyio.fail_after(15):
            await all_up.wait()
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _closed(store: EventStore, change_id: str) -> client.ChangeStatus:
    return await client.wait_closed(store, "acme", change_id, within=40)


def _types(status: client.ChangeStatus) -> list[str]:
    return [e.type for e in status.events]


@pytest.mark.slow
@pytest.mark.parametrize(("service", "after"), [
    ("preflight", "preflight.passed"),  # pass + auto approval
    ("executor", "execution.started"),  # the run's start, then nothing
    ("executor", "step.started"),  # a step in doubt
])
async def test_a_decision_cut_after_its_first_event_is_finished_by_the_watchdog(
    nc: NATS, store: EventStore, tmp_path: Path, fast_watchdog: None, service: str, after: str
) -> None:
    replaced = {"preflight": cut_preflight(after)} if service == "preflight" else {
        "executor": cutting(executor.spec, after)}
    async with pipeline_with(nc, **replaced):
        target = tmp_path / "app"
        change_id = await client.submit(nc, "acme", {"request": f"Create directory {target}"}, principal="alice")
        status = await _closed(store, change_id)
    types = _types(status)
    assert status.outcome == "succeeded", (status.reason, types)
    assert "change.stalled" in types  # nothing else would have finished it
    assert types.count("change.approved") == 1 and types.count("execution.started") == 1
    assert types.count("step.completed") + types.count("step.skipped") == 1  # the step ran (or was found done) once
    assert target.is_dir()


@pytest.mark.slow
@pytest.mark.parametrize("after", ["verification.failed", "rollback.planned"])
async def test_a_failed_verification_cut_short_is_still_rolled_back(
    nc: NATS, store: EventStore, tmp_path: Path, fast_watchdog: None, monkeypatch: pytest.MonkeyPatch,
    after: str, faulty_writer: Path,
) -> None:
    config = tmp_path / "verifier.yaml"
    config.write_text("auto_rollback: {dev: true}\ndrift: {interval_s: 3600}\n")
    monkeypatch.setenv("UPM_VERIFIER_CONFIG", str(config))
    async with pipeline_with(nc, verifier=cutting(verifier.spec, after)):
        target = tmp_path / "app"
        change_id = await client.submit(nc, "acme", {"request": f"Create directory {target} with mode 0750"},
                                        principal="alice")
        status = await _closed(store, change_id)
    types = _types(status)
    assert status.outcome == "rolled_back", (status.reason, types)
    assert "change.stalled" in types
    assert types.count("verification.failed") == 1 and types.count("rollback.planned") == 1
    assert types.count("rollback.approved") == 1 and not target.exists()


@pytest.mark.slow
async def test_a_change_nothing_finishes_is_closed_stalled_naming_where_it_stopped(
    nc: NATS, store: EventStore, tmp_path: Path, fast_watchdog: None
) -> None:
    async with pipeline_with(nc, executor=lambda nc, _settings: _Idle()):  # no executor at all
        change_id = await client.submit(nc, "acme", {"request": f"Create directory {tmp_path / 'x'}"},
                                        principal="alice")
        status = await _closed(store, change_id)
    assert status.outcome == "stalled"
    assert "approved" in status.reason and "change.approved" in status.reason
    stalls = [e for e in status.events if e.type == "change.stalled"]
    assert len(stalls) == 3  # two nudges, then the close
    assert not (tmp_path / "x").exists()


class _Idle:
    async def run(self, *, ready: anyio.Event | None = None) -> None:
        if ready is not None:
            ready.set()
        await anyio.sleep_forever()


def test_the_watchdog_decides_purely_from_the_lifecycle() -> None:
    from datetime import timedelta

    from lifecycle_cases import T0, change_events

    deadlines = Deadlines(by_status={"approved": 10.0}, max_redrives=1)
    state: ChangeState = fold(change_events("intent.submitted", "plan.compiled", "preflight.passed",
                                            "change.approved", start=0))
    assert state.status == "approved"
    assert due(state, T0 + timedelta(seconds=5), deadlines) is None
    first = due(state, T0 + timedelta(seconds=60), deadlines)
    assert first is not None and (first.action, first.attempt, first.status) == ("redrive", 1, "approved")
    nudged = fold(change_events("change.stalled", stalled=first), state)
    second = due(nudged, T0 + timedelta(seconds=120), deadlines)
    assert second is not None and (second.action, second.attempt) == ("close", 2)
    assert second.last_type == "change.approved" and second.since == state.last_ts
    closed = fold(change_events("change.stalled", stalled=second), nudged)
    assert (closed.status, closed.outcome) == ("ended", "stalled")
    assert due(closed.__class__(), T0, deadlines) is None  # nothing stored: nothing owed
    waiting = fold(change_events("intent.submitted", "plan.compiled", "preflight.passed", "approval.requested"))
    assert waiting.status == "awaiting-approval" and due(waiting, T0 + timedelta(days=9), deadlines) is None
    assert isinstance(first, ChangeStalled)
