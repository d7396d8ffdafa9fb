"""Per-change credentials: they work for the change, and are refused once revoked or expired."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from targets_helpers import aws_cli

from services.security.credentials import PostgresBroker, StsBroker, broker_for
from upm.emulators import AwsTarget, PgTarget, Targets


def psql_as(env: dict[str, str], statement: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["psql", "-X", "-A", "-t", "-c", statement], env={"PATH": os.environ["PATH"], **env},
                          capture_output=True, text=True, timeout=30, check=False)


async def test_sts_credentials_are_short_lived_work_for_the_change_and_are_refused_once_revoked(
    aws_target: AwsTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in Targets(aws=aws_target).service_env("executor").items():
        monkeypatch.setenv(name, value)
    broker = broker_for("sts", token_store=None)
    assert isinstance(broker, StsBroker)
    issued = await broker.issue(tenant="acme", change_id="c1", target="us-east-1", ttl_s=60)
    lifetime = datetime.fromisoformat(issued.expires_at).timestamp() - time.time()
    assert 800 < lifetime <= 900  # STS's shortest session: the ttl, clamped to 900 s
    assert set(issued.env) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
    assert aws_target.root_secret not in issued.env.values()
    assert repr(issued).count("AWS_") == 0  # values never in a repr, hence never in a log line by accident

    assert aws_cli(aws_target, "s3api", "create-bucket", "--bucket", "creds-ok", creds=dict(issued.env)).returncode == 0
    await broker.revoke(issued.ref)
    refused = aws_cli(aws_target, "s3api", "list-buckets", creds=dict(issued.env))
    assert refused.returncode != 0 and "AccessDenied" in refused.stderr


async def test_postgres_login_roles_work_until_valid_until_and_are_refused_after_expiry_or_revocation(
    pg_target: PgTarget,
) -> None:
    broker = PostgresBroker(pg_target.dsn)
    short = await broker.issue(tenant="acme", change_id="c1", target="default", ttl_s=2)
    assert datetime.fromisoformat(short.expires_at) <= datetime.now(UTC) + timedelta(seconds=3)
    works = psql_as(dict(short.env), "SELECT current_user")
    assert works.returncode == 0 and works.stdout.strip() == "upm_operator", works.stderr
    await anyio.sleep(3)
    expired = psql_as(dict(short.env), "SELECT 1")
    assert expired.returncode != 0 and "password authentication failed" in expired.stderr

    revoked = await broker.issue(tenant="acme", change_id="c2", target="default", ttl_s=600)
    assert psql_as(dict(revoked.env), "SELECT 1").returncode == 0
    await broker.revoke(revoked.ref)
    refused = psql_as(dict(revoked.env), "SELECT 1")
    assert refused.returncode != 0 and "password authentication failed" in refused.stderr
    await broker.revoke(revoked.ref)  # revoking twice is harmless
