"""Limits enforced at execution: blast radius (even with pre-flight bypassed), rates with 10
concurrent changes (measured from the step events' timestamps), and deadlines."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from executor_helpers import config, dirs_plan, events, make_tool, pins, running, submit, tool_plan, wait_for
from nats.aio.client import Client as NATS

from events.model import Event, ExecutionFailed, StepFailed, StepStarted
from events.store import EventStore


def _failure(found: list[Event]) -> ExecutionFailed:
    return next(e.payload for e in found if isinstance(e.payload, ExecutionFailed))


@pytest.mark.parametrize(("limits", "waves", "says"), [
    ({"max_resources_per_change": 3}, [0, 0, 0, 0], "mutates 4 resources; the blast-radius limit is 3 per change"),
    ({"max_resources_per_wave": 2}, [0, 0, 0, 1], "wave wave-1 mutates 3 resources; the blast-radius limit is 2"),
])
async def test_a_change_over_the_blast_radius_is_refused_at_execution(
    nc: NATS, store: EventStore, tmp_path: Path, limits: dict[str, int], waves: list[int], says: str
) -> None:
    paths = [tmp_path / f"d{i}" for i in range(4)]
    # appended straight to the log: no planner, no pre-flight stood in the way
    async with running(nc, config(limits=limits)):
        change = await submit(store, dirs_plan(paths, waves=waves))
        found = await wait_for(store, change, "execution.failed")
    refused = _failure(found)
    assert refused.rule == "blast-radius" and says in refused.reason
    kinds = [e.type for e in found]
    assert "execution.started" not in kinds and "step.started" not in kinds
    assert not any(p.exists() for p in paths)


@pytest.mark.parametrize("rates", [
    {"steps_per_s_per_tenant": 20, "burst": 1},
    {"steps_per_s_per_target": 20, "burst": 1},
], ids=["per-tenant", "per-target"])
async def test_the_rate_limit_holds_across_10_concurrent_changes(
    nc: NATS, store: EventStore, tmp_path: Path, rates: dict[str, float]
) -> None:
    cfg = config(rates=rates, service={"concurrency": 10})
    async with running(nc, cfg):
        for c in range(10):
            (tmp_path / f"c{c}").mkdir()
        changes = [await submit(store, dirs_plan([tmp_path / f"c{c}" / f"t{i}" for i in range(4)]))
                   for c in range(10)]
        for change in changes:
            await wait_for(store, change, "execution.completed", within=60)
    stamps: list[tuple[float, str]] = []
    for change in changes:
        for e in await events(store, change):
            if isinstance(e.payload, StepStarted):
                stamps.append((datetime.fromisoformat(e.ts.replace("Z", "+00:00")).timestamp(), change))
    stamps.sort()
    times = [t for t, _ in stamps]
    assert len(times) == 40
    # at most rate·w + burst steps start in any window of w seconds (1 ms timestamp resolution)
    for i, start in enumerate(times):
        within = [t for t in times[i:] if t - start < 0.5]
        assert len(within) <= 20 * 0.5 + 1 + 2, (start, within)  # + scheduling jitter of the stamps
    assert (len(times) - 1) / (times[-1] - times[0]) <= 20 * 1.05
    # and the changes really ran concurrently: their steps interleave
    order = [c for _, c in stamps]
    assert len({tuple(order[i:i + 2]) for i in range(0, 10, 2)} - {(c, c) for c in changes}) > 0


async def test_deadlines_stop_a_slow_change_and_a_slow_step(nc: NATS, store: EventStore, tmp_path: Path) -> None:
    tool = make_tool(tmp_path / "bin", "slow", """
        open(sys.argv[1], 'w').close()
        time.sleep(float(sys.argv[2]))
    """)
    markers = [tmp_path / f"m{i}" for i in range(6)]
    slow_change = tool_plan(tool, [(str(m), "0.4") for m in markers], markers)
    stuck = tmp_path / "stuck"
    slow_step = tool_plan(tool, [(str(stuck), "30")], [tmp_path / "never"], timeout_s=0.5)
    cfg = config(pins=pins(tool), deadlines={"change_timeout_s": 1.0, "step_timeout_s": 3})
    async with running(nc, cfg):
        first = await submit(store, slow_change)
        second = await submit(store, slow_step)
        over = _failure(await wait_for(store, first, "execution.failed"))
        step = await wait_for(store, second, "execution.failed")
    assert over.rule == "deadline" and "deadline of 1s" in over.reason
    assert 1 <= sum(m.exists() for m in markers) < len(markers)
    failed = next(e.payload for e in step if isinstance(e.payload, StepFailed))
    assert failed.output.tries[-1].timed_out and failed.output.duration_ms < 5000
    assert stuck.exists()  # it started, and was stopped at its 0.5 s timeout
