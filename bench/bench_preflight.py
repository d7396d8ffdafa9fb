"""Pre-flight decision time for 1, 10 and 100 resources (median and P95).

Run: ``.venv/bin/python bench/bench_preflight.py [--rounds N]``. What is timed is
:func:`services.preflight.assess` after the read-backs: risk and budget scoring, the policy input,
the default Rego pack evaluated with regopy (interpreter cached, as in the service), the merged
verdict and the lane decision. Read-backs are excluded (their results are given as passing
checks). The goal is P95 ≤ 20 ms at 100 resources. Plans are compiled by the planner from specs
cycling through local, S3, Kubernetes, Postgres and SQS resources, in ``prod`` (the manual lane,
approval rules and windows all evaluate).
"""

from __future__ import annotations

import argparse
import gc
import time
from datetime import UTC, datetime
from typing import Any

from common import machine, median, p95

from events.model import Check
from services.planner import CompileInput, compile_intent
from services.preflight import assess, parse_config
from services.preflight.risk import Subject

NOW = datetime(2025, 10, 6, 12, 0, tzinfo=UTC)
CONFIG = parse_config({
    "groups": {"*": {"platform-owners": ["bob", "carol"]}},
    "budgets": {"*": 100000},
    "limits": {"max_resources": 1000},
    "windows": {"prod": {"weekly": ["sat 22:00-06:00"]}},
})


def resources(n: int) -> list[dict[str, Any]]:
    kinds = [
        lambda i: {"type": "local_directory", "path": f"/srv/b/{i}", "mode": "0750"},
        lambda i: {"type": "aws_s3_bucket", "name": f"bucket-{i}", "encryption": "AES256"},
        lambda i: {"type": "k8s_namespace", "name": f"ns-{i}"},
        lambda i: {"type": "pg_role", "name": f"r{i}"},
        lambda i: {"type": "aws_sqs_queue", "name": f"q{i}"},
    ]
    return [kinds[i % len(kinds)](i) for i in range(n)]


def measure(n: int, rounds: int) -> tuple[float, float, int]:
    plan = compile_intent(CompileInput(spec={"resources": resources(n)}, tenant="acme", initiator="alice"))
    subject = Subject(tenant="acme", change_id="0190a8f6-0000-7000-8000-000000000001", environment="prod",
                      initiator="alice", plan=plan)
    checks = tuple(Check(name="dry-run", target=s.id, ok=True, detail="create") for s in plan.steps)
    out = assess(subject, checks, CONFIG, NOW)  # warm-up: loads and caches the pack
    assert out[0].__struct_config__.tag == "preflight.passed", out
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        assess(subject, checks, CONFIG, NOW)
        samples.append((time.perf_counter() - started) * 1000)
    return median(samples), p95(samples), len(plan.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    gc.collect()
    print(f"machine: {machine()}")
    print("| resources | steps | median ms | P95 ms |")
    print("|---:|---:|---:|---:|")
    for n in (1, 10, 100):
        med, tail, steps = measure(n, args.rounds)
        print(f"| {n} | {steps} | {med:.3f} | {tail:.3f} |")


if __name__ == "__main__":
    main()
