"""Verifier benchmarks: verification latency for 1, 10 and 100 local resources (read-backs through
the guarded runner, batched), and drift-loop throughput (resources checked per second) — for
directories (one ``stat``) and for files (``stat``, then ``sha256sum`` of their content).

    python bench/bench_verifier.py [--rounds N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import anyio
from common import machine, median, p95

from services.guard.steps import run_command
from services.planner import CompileInput, compile_intent
from services.verifier import core
from services.verifier.config import DriftConfig
from services.verifier.drift import scan
from services.verifier.inventory import Managed
from services.verifier.service import verify

KINDS = {
    "directories": "directory {root}/d{i:04d} with mode 0750",
    "files": "file {root}/f{i:04d} containing 'line {i}'",
}


async def created(root: Path, count: int, kind: str) -> list[Managed]:
    await anyio.Path(root).mkdir()
    request = " and ".join(KINDS[kind].format(root=root, i=i) for i in range(count))
    plan = compile_intent(CompileInput(request=f"Create {request}"))
    for step in plan.steps:
        out = await run_command(step.command, stdin=step.stdin)
        assert out.rc == 0, out.stderr
    return [Managed(tenant="bench", key=s.resource.key, change_id="c", environment="dev", step=s) for s in plan.steps]


async def main(rounds: int) -> None:
    print(f"# verifier bench — {machine()}")
    for kind in KINDS:
        with tempfile.TemporaryDirectory(prefix="upm-bench-verify-") as tmp:
            for count in (1, 10, 100):
                items = await created(Path(tmp) / f"n{count}", count, kind)
                targets = [(m.step, m.step.desired) for m in items]
                await verify(targets, "change")  # warm the pin cache
                times = []
                for _ in range(rounds):
                    started = time.perf_counter()
                    result = await verify(targets, "change")
                    times.append((time.perf_counter() - started) * 1000)
                    assert isinstance(result, core.VerificationPassed)
                print(f"verify {count:>3} {kind:<11}: median {median(times):7.1f} ms   P95 {p95(times):7.1f} ms")
            items = await created(Path(tmp) / "drift", 500, kind)
            config = DriftConfig(interval_s=120, concurrency=16, rate_per_s=100_000, confirm_retries=0)
            for _ in range(2):
                started = time.perf_counter()
                readings = await scan(items, config)
                elapsed = time.perf_counter() - started
                assert len(readings) == 500 and {r.status for r in readings} == {"ok"}
            print(f"drift scan: 500 {kind} in {elapsed:.2f} s = {500 / elapsed:.0f} resources/s (concurrency 16)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    anyio.run(main, parser.parse_args().rounds)
