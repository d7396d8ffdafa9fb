"""Benchmark of verification against real targets: S3 buckets on a moto server (the real aws CLI)
and PostgreSQL grants on the embedded server (the real psql).

For 1, 10 and 100 resources of each kind, one verification = reading every resource back:

- **per resource**: one read-back command each (``head-bucket``; the grant's catalog query), in
  parallel under the verifier's bound (16), as ``services/verifier/service.py`` does today;
- **batched**: ``providers.base.batch_readbacks`` — one ``list-buckets`` for every bucket, one
  catalog query per database for every grant.

Reports each verification's P95 against the spec's L4 band (≤ 1,200 ms) and where the time goes:
a CLI's start-up (``aws --version``, ``psql --version`` through the guard) against one API call
made in-process (boto3 ``list_buckets``; the same catalog query, psql already started counts as
start-up + query). Appends its section to bench/RESULTS.md (replacing its own from an earlier run).
Usage: ``python bench/bench_targets.py [--quick]``.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from common import machine, median, p95

from events.plan import Command
from providers import CATALOG
from providers.base import batch_readbacks, command, display
from services.common import targets as target_settings
from services.guard.steps import execute
from upm import emulators
from upm.emulators import AwsTarget, PgTarget, Targets

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## Verification against real targets (bench_targets.py)"
SIZES = (1, 10, 100)
BOUND = 16  # services/verifier/service.py READBACK_CONCURRENCY


def _readback(type_name: str, fields: dict[str, Any], target: str) -> Command:
    rtype = CATALOG[type_name]
    cmd = command(rtype.readback, rtype.variables(rtype.validate(fields), target))
    assert cmd is not None
    return cmd


async def per_resource(commands: list[Command]) -> None:
    limiter = anyio.CapacityLimiter(BOUND)

    async def one(cmd: Command) -> None:
        async with limiter:
            done = await execute(cmd)
            assert done.output.rc == 0, done.output.stderr

    async with anyio.create_task_group() as tg:
        for cmd in commands:
            tg.start_soon(one, cmd)


async def batched(type_name: str, resources: list[tuple[str, str]]) -> None:
    rtype = CATALOG[type_name]
    assert rtype.batch is not None
    for cmd, members in batch_readbacks(rtype, resources):
        done = await execute(cmd)
        seen = rtype.batch.parse(done.output.rc, done.output.stdout, members)
        assert all(seen.get(m) == {} for m in members), (display(cmd.argv), done.output.stderr)


async def timed(rounds: int, fn: Callable[[], Awaitable[None]]) -> list[float]:
    await fn()  # warm-up: pins checked once per process, as in a running verifier
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def seed(aws: AwsTarget, pg: PgTarget, n: int) -> tuple[list[str], list[str]]:
    import boto3  # type: ignore[import-untyped]

    s3 = boto3.client("s3", endpoint_url=aws.endpoint, region_name=aws.region,
                      aws_access_key_id=aws.root_key_id, aws_secret_access_key=aws.root_secret)
    buckets = [f"bench-{i:03d}" for i in range(n)]
    existing = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    for name in buckets:
        if name not in existing:
            s3.create_bucket(Bucket=name)
    roles = [f"bench_r{i:03d}" for i in range(n)]
    statements = ["CREATE TABLE IF NOT EXISTS t (x int)"]
    for role in roles:
        statements += [f"DO $$ BEGIN CREATE ROLE {role}; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
                       f"GRANT CONNECT ON DATABASE benchdb TO {role}", f"GRANT USAGE ON SCHEMA public TO {role}",
                       f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"]
    target_settings.psql_dsn(pg.dsn.rsplit("/", 1)[0] + "/benchdb", tuple(statements), timeout=300)
    return buckets, [f"{role}@benchdb.public:read" for role in roles]


async def startup_vs_api(aws: AwsTarget, pg: PgTarget, rounds: int) -> dict[str, float]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=aws.endpoint, region_name=aws.region,
                      aws_access_key_id=aws.root_key_id, aws_secret_access_key=aws.root_secret)
    aws_start = await timed(rounds, functools.partial(_ok, Command(argv=("aws", "--version"), display="aws --version")))
    psql_start = await timed(rounds, functools.partial(_ok, Command(argv=("psql", "--version"), display="psql --version")))

    async def api() -> None:
        await anyio.to_thread.run_sync(s3.list_buckets)

    aws_api = await timed(rounds, api)
    query = _readback("pg_grant", {"role": "bench_r000", "database": "benchdb", "privilege": "read"}, "default")
    psql_query = await timed(rounds, functools.partial(_ok, query))
    return {"aws_start": median(aws_start), "aws_api": median(aws_api), "psql_start": median(psql_start),
            "psql_query": median(psql_query)}


async def _ok(cmd: Command) -> None:
    done = await execute(cmd)
    assert done.output.rc == 0, done.output.stderr


async def main(quick: bool) -> None:
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="upm-bench-targets-") as tmp:
        folder = Path(tmp)
        (folder / "logs").mkdir()
        targets = emulators.start(folder, ("aws", "postgres"))
        assert targets.aws is not None and targets.postgres is not None
        try:
            os.environ.update(Targets(aws=targets.aws, postgres=targets.postgres).service_env("verifier"))
            target_settings.psql_dsn(targets.postgres.dsn, ("CREATE DATABASE benchdb",))
            rows = []
            for n in SIZES:
                buckets, grants = seed(targets.aws, targets.postgres, n)
                single_rounds = 3 if quick or n == 100 else 10
                batch_rounds = 5 if quick else 20
                head = [_readback("aws_s3_bucket", {"name": b}, "us-east-1") for b in buckets]
                held = [_readback("pg_grant", {"role": g.split("@")[0], "database": "benchdb", "privilege": "read"},
                                  "default") for g in grants]
                on_buckets = [(x, "us-east-1") for x in buckets]
                on_grants = [(x, "default") for x in grants]
                rows.append((f"{n} S3 bucket(s)",
                             p95(await timed(single_rounds, functools.partial(per_resource, head))),
                             p95(await timed(batch_rounds, functools.partial(batched, "aws_s3_bucket", on_buckets)))))
                rows.append((f"{n} PostgreSQL grant(s)",
                             p95(await timed(single_rounds, functools.partial(per_resource, held))),
                             p95(await timed(batch_rounds, functools.partial(batched, "pg_grant", on_grants)))))
                print(rows[-2], rows[-1], flush=True)
            costs = await startup_vs_api(targets.aws, targets.postgres, 5 if quick else 20)
        finally:
            emulators.stop(targets.state())
            if targets.aws.process is not None:
                targets.aws.process.wait()
    lines = [
        SECTION,
        "",
        f"- machine: {machine()}; load average at start {load:.2f}",
        "- method: see the module docstring. Moto server and embedded PostgreSQL 18 on loopback, started by",
        "  `upm/emulators.py` (as `upm up --with aws,postgres`); every read-back through the guarded runner",
        "  (pinned aws 1.46.3 / psql 15, the read-only observer's credentials). P95 of whole verifications;",
        f"  per-resource runs: {3 if quick else 10} rounds (3 at 100), batched: {5 if quick else 20} rounds.",
        "",
        "| verification of | per-resource read-backs P95 ms | batched read-backs P95 ms | L4 band |",
        "|---|---:|---:|---|",
        *(f"| {name} | {single:.0f} | {batch:.0f} | ≤ 1,200 ms |" for name, single, batch in rows),
        "",
        "Where the time goes (medians, ms):",
        "",
        "| cost | ms |",
        "|---|---:|",
        f"| `aws --version` through the guard (CLI start-up: Python + botocore import) | {costs['aws_start']:.0f} |",
        f"| one ListBuckets API call in-process (boto3, moto) | {costs['aws_api']:.1f} |",
        f"| `psql --version` through the guard (CLI start-up) | {costs['psql_start']:.1f} |",
        f"| one grant read-back with psql (start-up + connect + catalog query) | {costs['psql_query']:.1f} |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    write_section(text)


def write_section(text: str) -> None:
    existing = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = existing.find(SECTION)
    if start >= 0:
        end = existing.find("\n## ", start + len(SECTION))
        existing = existing[:start].rstrip("\n") + ("\n" + existing[end:] if end >= 0 else "\n")
    RESULTS.write_text(existing.rstrip("\n") + "\n\n" + text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    anyio.run(main, parser.parse_args().quick)
