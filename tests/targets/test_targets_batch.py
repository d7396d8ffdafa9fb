"""Batch read-backs: one list call for many buckets, one catalog query for many grants, agreeing
with the one-resource read-backs."""

from __future__ import annotations

import pytest
from targets_helpers import boto, sql

from events.plan import Command, ResourceRef
from providers import CATALOG, Absent, Present
from providers.base import batch_readbacks, command
from services.guard.steps import execute, read_back
from upm.emulators import AwsTarget, PgTarget, Targets


@pytest.fixture(autouse=True)
def observer_env(aws_target: AwsTarget, pg_target: PgTarget, monkeypatch: pytest.MonkeyPatch) -> None:
    """What every service sees: the endpoints and the read-only observer (no broker credentials)."""
    for name, value in Targets(aws=aws_target, postgres=pg_target).service_env("verifier").items():
        monkeypatch.setenv(name, value)


async def test_one_list_buckets_reads_back_many_buckets_as_head_bucket_does(aws_target: AwsTarget) -> None:
    s3 = boto(aws_target, "s3")
    for i in range(5):
        s3.create_bucket(Bucket=f"batch-{i}")
    bucket = CATALOG["aws_s3_bucket"]
    idents = [f"batch-{i}" for i in range(5)] + ["batch-missing"]
    batches = batch_readbacks(bucket, [(ident, "us-east-1") for ident in idents])
    assert len(batches) == 1
    cmd, members = batches[0]
    done = await execute(cmd)
    assert done.output.rc == 0, done.output.stderr
    seen = bucket.batch.parse(0, done.output.stdout, members) if bucket.batch else {}
    assert seen == {**{f"batch-{i}": {} for i in range(5)}, "batch-missing": None}
    assert await read_back(*single("aws_s3_bucket", {"name": "batch-3"}, "us-east-1")) == Present({"exists": True})
    missing = await read_back(*single("aws_s3_bucket", {"name": "batch-missing"}, "us-east-1"))
    assert missing == Absent("An error occurred (404) when calling")  # head-bucket's not-found, not any failure


async def test_one_catalog_query_reads_back_many_grants_per_database(pg_target: PgTarget) -> None:
    sql(pg_target, "CREATE DATABASE batchdb")
    sql(pg_target, "CREATE TABLE t (x int)", database="batchdb")
    for i in range(4):
        sql(pg_target, f"CREATE ROLE batch_r{i}")
    for i in range(3):
        sql(pg_target, f"GRANT CONNECT ON DATABASE batchdb TO batch_r{i}; GRANT USAGE ON SCHEMA public TO batch_r{i}; "
                       f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO batch_r{i}", database="batchdb")
    grant = CATALOG["pg_grant"]
    idents = [f"batch_r{i}@batchdb.public:read" for i in range(4)] + ["batch_r0@batchdb.public:write",
                                                                       "nobody@batchdb.public:read"]
    batches = batch_readbacks(grant, [(ident, "default") for ident in idents])
    assert len(batches) == 1
    cmd, members = batches[0]
    done = await execute(cmd)
    assert done.output.rc == 0, done.output.stderr
    seen = grant.batch.parse(0, done.output.stdout, members) if grant.batch else {}
    held = {f"batch_r{i}@batchdb.public:read" for i in range(3)}
    assert seen == {ident: ({} if ident in held else None) for ident in idents}
    for role in ("batch_r1", "batch_r3"):
        fields = {"role": role, "database": "batchdb", "privilege": "read"}
        observed = await read_back(*single("pg_grant", fields, "default"))
        assert isinstance(observed, Present if role == "batch_r1" else Absent), observed


def single(type_name: str, fields: dict[str, str], target: str) -> tuple[ResourceRef, Command]:
    """A resource's own read-back, as the planner renders it."""
    rtype = CATALOG[type_name]
    variables = rtype.variables(rtype.validate(fields), target)
    readback = command(rtype.readback, variables)
    assert readback is not None
    name = rtype.identity(variables)
    ref = ResourceRef(provider=rtype.provider, type=type_name, name=name, target=target,
                      key=f"{type_name}:{target}:{name}")
    return ref, readback
