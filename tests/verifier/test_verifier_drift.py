"""Drift detection over real files: scans, confirmation of transient failures, honest coverage."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from providers import Observed, Unknown
from services.guard.steps import run_command
from services.planner import CompileInput, compile_intent
from services.verifier.config import DriftConfig
from services.verifier.drift import check, read_resource, scan
from services.verifier.inventory import Managed


async def _managed(tmp_path: Path, count: int) -> list[Managed]:
    """``count`` directories created for real by their plan's commands, as the inventory holds them."""
    request = " and ".join(f"directory {tmp_path}/d{i:03d} with mode 0750" for i in range(count))
    plan = compile_intent(CompileInput(request=f"Create {request}"))
    items = []
    for step in plan.steps:
        out = await run_command(step.command)
        assert out.rc == 0, out.stderr
        items.append(Managed(tenant="acme", key=step.resource.key, change_id="c", environment="dev", step=step))
    return items


def _tamper(path: Path, change: str) -> None:
    """An out-of-band change, as a person with a shell would make it."""
    if change == "chmod":
        path.chmod(0o777)
    else:
        path.rmdir()


FAST = DriftConfig(interval_s=30, confirm_retries=2, confirm_backoff_s=0.01, rate_per_s=1000, concurrency=8)


async def test_every_resource_in_its_baseline_reads_ok(tmp_path: Path) -> None:
    items = await _managed(tmp_path, 5)
    readings = await scan(items, FAST)
    assert [r.status for r in readings] == ["ok"] * 5


@pytest.mark.parametrize("change", ["chmod", "delete"])
async def test_an_out_of_band_change_is_drift_with_its_diff(tmp_path: Path, change: str) -> None:
    [item] = await _managed(tmp_path, 1)
    _tamper(Path(item.step.resource.name), change)
    reading = await check(item, FAST)
    assert reading.status == "drifted"
    expected = ("mode", "0750", "0777") if change == "chmod" else ("exists", True, False)
    assert [(d.field, d.desired, d.observed) for d in reading.diff] == [expected]
    assert reading.reads == FAST.confirm_retries + 1  # confirmed before it counts


async def test_a_transient_read_failure_among_100_is_retried_not_drift(tmp_path: Path) -> None:
    items = await _managed(tmp_path, 100)
    flaky = {items[37].key: 2, items[80].key: 1}  # these fail their first reads, then answer

    async def read(item: Managed) -> Observed:
        if flaky.get(item.key, 0) > 0:
            flaky[item.key] -= 1
            return Unknown(rc=124, kind="timeout", summary="the step's timeout expired")
        return await read_resource(item)

    readings = await scan(items, FAST, read=read)
    assert len(readings) == 100
    assert {r.status for r in readings} == {"ok"}
    assert {r.key: r.reads for r in readings if r.reads > 1} == {items[37].key: 3, items[80].key: 2}


async def test_a_read_back_that_never_answers_is_unknown_not_drift(tmp_path: Path) -> None:
    [item] = await _managed(tmp_path, 1)

    async def broken(_: Managed) -> Observed:
        return Unknown(rc=126, kind="guard", summary="refused by the guard (unpinned): stat")

    reading = await check(item, FAST, broken)
    assert reading.status == "unknown" and reading.diff == ()
    assert reading.reason == "guard (exit 126): refused by the guard (unpinned): stat"


async def test_coverage_drops_honestly_when_read_backs_are_slow(tmp_path: Path) -> None:
    items = await _managed(tmp_path, 20)

    async def slow(item: Managed) -> Observed:
        await anyio.sleep(0.2)
        return await read_resource(item)

    config = DriftConfig(interval_s=0.5, concurrency=1, rate_per_s=1000, confirm_retries=0)
    readings = await scan(items, config, read=slow)
    assert 0 < len(readings) < len(items)
    assert all(r.status == "ok" for r in readings)
    fast = await scan(items, DriftConfig(interval_s=10, concurrency=4, rate_per_s=1000))
    assert len(fast) == len(items)


def test_modes_are_chosen_per_resource_pattern() -> None:
    config = DriftConfig(mode="reconcile", modes={"local_file:*": "alarm"})
    assert config.mode_for("local_file:local:/etc/x") == "alarm"
    assert config.mode_for("local_directory:local:/srv") == "reconcile"

