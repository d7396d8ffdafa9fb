"""Benchmark of the guarded runner (services/guard).

1. Guard + exec overhead per step: ``run("sleep 0.005")`` and ``run("true")`` through the
   guard (check, cached pin, process group, captured and redacted output) against a bare
   ``subprocess.run`` of the same argv, interleaved. Goal: median ratio <= 1.1 for ~5 ms.
2. Guard checks per second (pure ``check`` with the default pins) over a mix of commands.
   Goal: >= 100k/s.

Prints medians and P95s and appends a section to bench/RESULTS.md (replacing its own section
from an earlier run, keeping the others). Usage: ``python bench/bench_guard.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

import anyio
from common import machine, median, p95

from services.guard import DEFAULT_PINS, RunSpec, check, run

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## Guarded command runner (bench_guard.py)"

MIX = (
    "mkdir -p /tmp/upm/demo",
    "chmod 0750 /tmp/upm/demo",
    "stat -c %a:%U:%G /tmp/upm/demo",
    "cat /etc/hosts | grep -i local | wc -l",
    "cat /tmp/x.json | jq -r '.items[].name' | sort | uniq -c | head -n 5",
    "ls -la /tmp/upm | tail -n +2 | cut -d ' ' -f 1",
    "rm -rf /tmp/upm/demo",
    "touch /tmp/upm/demo/file",
)


async def exec_overhead(argv: list[str], command: str, rounds: int) -> dict[str, float]:
    spec = RunSpec(cwd="/tmp", max_attempts=1)
    await run(command, spec)  # warm: the pin's version report runs once per process
    bare: list[float] = []
    guarded: list[float] = []
    for _ in range(rounds):
        start = time.perf_counter()
        # the baseline is a plain blocking run, on purpose
        subprocess.run(argv, check=True, capture_output=True, env={"PATH": spec.path}, cwd="/tmp")  # noqa: ASYNC221
        bare.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = await run(command, spec)
        guarded.append(time.perf_counter() - start)
        assert result.ok
    return {
        "bare_median_ms": median(bare) * 1000,
        "bare_p95_ms": p95(bare) * 1000,
        "guard_median_ms": median(guarded) * 1000,
        "guard_p95_ms": p95(guarded) * 1000,
        "ratio_median": median(guarded) / median(bare),
        "ratio_p95": p95(guarded) / p95(bare),
    }


def checks_per_second(batches: int, per_batch: int) -> dict[str, float]:
    per_check: list[float] = []
    for _ in range(batches):
        start = time.perf_counter()
        for _ in range(per_batch // len(MIX)):
            for command in MIX:
                check(command, pins=DEFAULT_PINS)
        per_check.append((time.perf_counter() - start) / (per_batch // len(MIX) * len(MIX)))
    return {
        "checks_per_s": 1 / median(per_check),
        "check_median_us": median(per_check) * 1e6,
        "check_p95_us": p95(per_check) * 1e6,
    }


def write_section(text: str) -> None:
    existing = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = existing.find(SECTION)
    if start >= 0:
        end = existing.find("\n## ", start + len(SECTION))
        existing = existing[:start].rstrip("\n") + ("\n" + existing[end:] if end >= 0 else "\n")
    RESULTS.write_text(existing.rstrip("\n") + "\n\n" + text)


async def main(quick: bool) -> None:
    load = os.getloadavg()[0]
    rounds = 40 if quick else 300
    sleep = await exec_overhead(["/usr/bin/sleep", "0.005"], "sleep 0.005", rounds)
    true = await exec_overhead(["/usr/bin/true"], "true", rounds)
    checks = checks_per_second(batches=10 if quick else 50, per_batch=2000)
    rows = [
        ("`sleep 0.005` bare subprocess.run", sleep["bare_median_ms"], sleep["bare_p95_ms"]),
        ("`sleep 0.005` guard run()", sleep["guard_median_ms"], sleep["guard_p95_ms"]),
        ("`true` bare subprocess.run", true["bare_median_ms"], true["bare_p95_ms"]),
        ("`true` guard run()", true["guard_median_ms"], true["guard_p95_ms"]),
    ]
    lines = [
        SECTION,
        "",
        f"- machine: {machine()}; load average before the run {load:.2f} (the box is shared)",
        f"- rounds: {rounds} interleaved runs per command; check mix of {len(MIX)} commands",
        "",
        "| step | median ms | P95 ms |",
        "|---|---:|---:|",
        *(f"| {name} | {median:.2f} | {p95:.2f} |" for name, median, p95 in rows),
        "",
        f"- guard/bare ratio, `sleep 0.005`: median **{sleep['ratio_median']:.2f}x**, "
        f"P95 {sleep['ratio_p95']:.2f}x (goal <= 1.1x)",
        f"- guard/bare ratio, `true`: median {true['ratio_median']:.2f}x, P95 {true['ratio_p95']:.2f}x",
        f"- guard checks: **{checks['checks_per_s'] / 1000:.0f}k/s** "
        f"(median {checks['check_median_us']:.1f} us, P95 {checks['check_p95_us']:.1f} us per check; goal >= 100k/s)",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    write_section(text)


if __name__ == "__main__":
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    anyio.run(main, options.parse_args().quick)
