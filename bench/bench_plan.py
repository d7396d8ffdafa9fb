"""Plan compile time for 1, 10, 100 and 1,000 resources (median and P95), plus the spec example.

Run: ``.venv/bin/python bench/bench_plan.py [--rounds N]``. The spec's L4 band is P95 ≤ 800 ms;
the project's goal is P95 ≤ 10 ms at 100 resources. Resources cycle through every provider
(namespaces and deployments, Postgres roles/databases/grants, directories and files, S3 buckets
with facets, SQS queues, AKS clusters with implied resource groups), with real dependencies.
Also the natural-language corpus (tests/planner/nl_corpus.yaml): how many phrasings compile to
their expected resource types, which catalog types they cover, and the compile P95 per phrasing.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from providers import CATALOG
from services.planner import CompileInput, PlanError, PlannerConfig, compile_intent
from services.planner.nl import parse_request

EXAMPLE = "Create AKS cluster aks-demo in eastus and namespace team-alpha"
CONFIG = PlannerConfig(
    ssh_public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIbench bench@example", aws_account_id="123456789012"
)
CORPUS = Path(__file__).parents[1] / "tests" / "planner" / "nl_corpus.yaml"


def resources(n: int) -> list[dict[str, Any]]:
    """``n`` resources across the providers, with dependencies between them."""
    kinds: list[Callable[[int], dict[str, Any]]] = [
        lambda i: {"type": "k8s_namespace", "name": f"ns-{i}"},
        lambda i: {
            "type": "k8s_deployment",
            "name": "web",
            "namespace": f"ns-{i - 1}",
            "image": "nginx:1.27",
        },
        lambda i: {"type": "pg_role", "name": f"r{i}"},
        lambda i: {"type": "pg_database", "name": f"d{i}"},
        lambda i: {"type": "pg_grant", "role": f"r{i - 2}", "database": f"d{i - 1}"},
        lambda i: {"type": "local_directory", "path": f"/srv/b/{i}", "mode": "0750"},
        lambda i: {"type": "local_file", "path": f"/srv/b/{i - 1}/f", "content": "x\n"},
        lambda i: {"type": "aws_s3_bucket", "name": f"bucket-{i}", "versioning": True, "tags": {"n": str(i)}},
        lambda i: {"type": "aws_sqs_queue", "name": f"q{i}"},
        lambda i: {"type": "az_aks", "name": f"aks-{i}", "location": "eastus"},
    ]
    return [kinds[i % len(kinds)](i) for i in range(n)]


def measure(inp: CompileInput, rounds: int) -> tuple[float, float, int]:
    """(median ms, P95 ms, steps) over ``rounds`` compiles after one warm-up."""
    steps = len(compile_intent(inp, CONFIG).steps)
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        compile_intent(inp, CONFIG)
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[max(0, int(len(samples) * 0.95) - 1)], steps


def corpus() -> tuple[int, int, int, int, float]:
    """(phrasings, compiled to their expected types, catalog types covered, public types, P95 ms)."""
    entries = yaml.safe_load(CORPUS.read_text(encoding="utf-8"))
    ok, covered, samples = 0, set(), []
    for entry in entries:
        start = time.perf_counter()
        try:
            compile_intent(CompileInput(request=entry["request"]), CONFIG)
        except PlanError:
            continue
        samples.append((time.perf_counter() - start) * 1000)
        types = [r.type for r in parse_request(entry["request"]).resources]
        if sorted(types) == sorted(i["type"] for i in entry["expect"]):
            ok += 1
            covered.update(types)
    public = sum(1 for t in CATALOG.values() if t.nouns and not t.facet_of)
    samples.sort()
    p95 = samples[max(0, int(len(samples) * 0.95) - 1)] if samples else 0.0
    return len(entries), ok, len(covered), public, p95


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=0, help="compiles per size (default: 200/200/300/20)")
    args = parser.parse_args()
    print(f"machine: nproc={os.cpu_count()} cpu={_cpu()} python={platform.python_version()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| input | resources | steps | median ms | P95 ms |")
    print("|---|---:|---:|---:|---:|")
    med, p95, steps = measure(CompileInput(request=EXAMPLE), args.rounds or 500)
    print(f"| spec example (NL) | 3 | {steps} | {med:.3f} | {p95:.3f} |")
    for n, rounds in ((1, 200), (10, 200), (100, 300), (1000, 20)):
        med, p95, steps = measure(CompileInput(spec={"resources": resources(n)}), args.rounds or rounds)
        print(f"| spec | {n} | {steps} | {med:.3f} | {p95:.3f} |")
    total, ok, covered, public, p95 = corpus()
    print(
        f"NL corpus: {ok}/{total} phrasings compile to their expected types; "
        f"{covered}/{public} catalog types covered; compile P95 per phrasing {p95:.3f} ms"
    )


if __name__ == "__main__":
    main()
