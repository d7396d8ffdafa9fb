"""Limits enforced at execution: blast radius (even with pre-flight bypassed), rates with 10
concurrent changes (measured from the step events' timestamps), rates shared by replicas through
the ``UPM_RATES`` key-value bucket (the token-bucket arithmetic, skewed clocks, CAS conflicts),
and deadlines."""

from __future__ import annotations

import math
import re
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
import nats.js.errors
import pytest
from executor_helpers import config, dirs_plan, events, make_tool, pins, running, submit, tool_plan, wait_for
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from events.model import Event, ExecutionFailed, StepFailed, StepStarted
from events.store import EventStore
from services.executor.config import ExecutorConfig
from services.executor.limits import RateLimits, bucket_key, rate_buckets
from services.guard.ratelimit import Bucket, take
from upm.natsserver import EmbeddedNats


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


def test_a_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    assert take(None, 100.0, 4.0, 3) == (Bucket(2.0, 100.0), 0.0)  # a new bucket is full
    assert take(Bucket(0.0, 100.0), 100.25, 4.0, 3) == (Bucket(0.0, 100.25), 0.0)  # 0.25 s · 4/s = 1 token
    assert take(Bucket(0.0, 100.0), 1000.0, 4.0, 3) == (Bucket(2.0, 1000.0), 0.0)  # capped at the burst
    assert take(Bucket(-1.0, 100.0), 100.0, 4.0, 3) == (Bucket(-2.0, 100.0), 0.5)  # reserved: due in 2 / 4 s


def test_a_clock_behind_the_buckets_time_mints_no_tokens() -> None:
    # written by a host 0.4 s ahead: this host refills nothing until its clock gets there
    assert take(Bucket(0.0, 100.4), 100.0, 10.0, 5) == (Bucket(-1.0, 100.4), 0.1)
    after, _ = take(Bucket(0.0, 100.4), 100.5, 10.0, 5)
    assert after.tokens == pytest.approx(0.0) and after.at == 100.5  # 0.1 s since the bucket's time
    # a clock far ahead of everyone holds back the refill by max_skew at most
    assert take(Bucket(0.0, 5000.0), 100.0, 10.0, 5, max_skew=1.0) == (Bucket(-1.0, 101.0), 0.1)


def test_bucket_keys_are_valid_and_distinct() -> None:
    names = ["acme", "us-east-1", "arn:aws:eks:eu-west-1:1:cluster/a b", "a:", "a_3a", "é"]
    keys = [bucket_key("target", n) for n in names]
    assert keys[:2] == ["target.acme", "target.us-east-1"]
    assert keys[2] == "target.arn_3aaws_3aeks_3aeu-west-1_3a1_3acluster_2fa_20b"
    assert len(set(keys)) == len(keys) and all(re.fullmatch(r"[-_.a-zA-Z0-9]+", k) for k in keys)


@pytest.fixture
async def replicas(nc: NATS, nats_server: EmbeddedNats) -> AsyncIterator[tuple[KeyValue, KeyValue]]:
    """The rates bucket as two executor replicas see it, each through its own connection."""
    other = await nats.connect(nats_server.url)
    try:
        yield await rate_buckets(nc.jetstream()), await rate_buckets(other.jetstream())
    finally:
        await other.close()


RATE_20 = config(rates={"steps_per_s_per_tenant": 20, "steps_per_s_per_target": 20, "burst": 1}).rates


async def test_replicas_share_the_rate(replicas: tuple[KeyValue, KeyValue]) -> None:
    limits = [RateLimits(kv, RATE_20) for kv in replicas]
    start = time.monotonic()
    async with anyio.create_task_group() as tg:
        for each in limits:
            for _ in range(20):  # concurrent takers in each replica, against each other's writes
                tg.start_soon(each.step, "acme", "local")
    elapsed = time.monotonic() - start
    # 40 steps at 20/s, burst 1: the last is due 39/20 s after the first. With a bucket per process
    # each replica would have taken its 20 in 19/20 s.
    assert 39 / 20 - 0.05 <= elapsed < 6, elapsed


async def test_clocks_apart_do_not_raise_the_rate(replicas: tuple[KeyValue, KeyValue]) -> None:
    ahead = RateLimits(replicas[0], RATE_20, clock=lambda: time.time() + 0.05)
    behind = RateLimits(replicas[1], RATE_20, clock=lambda: time.time() - 0.05)
    start = time.monotonic()
    for _ in range(20):  # in turns: each take sees the other clock's last write
        await ahead.step("acme", "local")
        await behind.step("acme", "local")
    elapsed = time.monotonic() - start
    # crediting the 0.1 s between the clocks on each turn would be 2 tokens a turn: done in ~1 s
    assert 39 / 20 - 0.1 <= elapsed < 6, elapsed


async def test_a_stale_deleted_or_garbled_bucket_is_read_again(
    replicas: tuple[KeyValue, KeyValue], monkeypatch: pytest.MonkeyPatch
) -> None:
    first_kv, second_kv = replicas
    conflicts: list[str] = []
    update = first_kv.update

    async def counted(key: str, value: bytes, last: int | None = None, **options: Any) -> int:
        try:
            return await update(key, value, last=last, **options)
        except nats.js.errors.KeyWrongLastSequenceError:
            conflicts.append(key)
            raise

    monkeypatch.setattr(first_kv, "update", counted)
    cfg = config(rates={"steps_per_s_per_tenant": 0.01, "steps_per_s_per_target": 0.01, "burst": 3}).rates
    first, second = RateLimits(first_kv, cfg), RateLimits(second_kv, cfg)

    async def tokens(key: str) -> float:
        return msgspec.json.decode((await second_kv.get(key)).value or b"", type=Bucket).tokens

    assert [await first.step("acme", "local"), await second.step("acme", "local")] == [0.0, 0.0]
    assert conflicts == []
    assert await first.step("acme", "local") == 0.0  # its revision is stale: re-read, take the last token
    assert sorted(conflicts) == ["target.local", "tenant.acme"]
    assert await tokens("tenant.acme") == pytest.approx(0.0, abs=0.01)
    await second_kv.delete("tenant.acme")  # an operator deleted it, or garbled it: it starts full again
    await second_kv.put("target.local", b"not a bucket")
    assert await first.step("acme", "local") == 0.0
    assert await tokens("tenant.acme") == await tokens("target.local") == pytest.approx(2.0, abs=0.01)


async def test_an_unlimited_rate_has_no_bucket(replicas: tuple[KeyValue, KeyValue]) -> None:
    kv = replicas[0]
    cfg = config(rates={"steps_per_s_per_tenant": math.inf, "targets": {"fast": math.inf}}).rates
    limits = RateLimits(kv, cfg)
    for target in ("fast", "local"):
        assert await limits.step("acme", target) == 0.0
    assert await kv.keys() == ["target.local"]


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


async def test_the_default_burst_lets_an_ordinary_change_start_its_steps_back_to_back(
    replicas: tuple[KeyValue, KeyValue]
) -> None:
    """Fifty steps on one target take their tokens without waiting (the burst of 5 paced every step
    of a 20-step change after the fifth at 20 ms); the fifty-first waits for the target's rate."""
    now = time.time()
    limits = RateLimits(replicas[0], ExecutorConfig().rates, clock=lambda: now)  # no refill meanwhile
    waits = [await limits.step("acme", "local") for _ in range(50)]
    assert waits == [0.0] * 50
    assert await limits.step("acme", "local") == pytest.approx(1 / 50)
