"""Helpers of the real-target tests: submitting, and checks that bypass UPM's own read-backs."""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from events.store import EventStore
from events.subjects import command_subject
from services import client, emulators
from services.emulators import AwsTarget, PgTarget

Eventually = Callable[[Callable[[], Awaitable[bool]], float], Awaitable[None]]
DRIFT_INTERVAL = 6.0  # a pass must fit every read-back (an aws CLI start-up is ~0.8 s of CPU)


async def submit(store: EventStore, request: str, *, within: float = 90) -> client.ChangeStatus:
    change_id = await client.submit(store.nc, "acme", {"request": request}, principal="alice")
    return await client.wait_closed(store, "acme", change_id, within=within)


async def submit_approved(store: EventStore, request: str, eventually: Eventually) -> client.ChangeStatus:
    """Submit a change that needs an approver (a delete), approve it as bob, wait until it closes."""
    change_id = await client.submit(store.nc, "acme", {"request": request}, principal="alice")

    async def asked() -> bool:
        return any(s.event.type == "approval.requested" for s in (await store.read("acme", change_id)).events)

    await eventually(asked, 30)
    body = json.dumps({"change_id": change_id, "reason": "reviewed"}).encode()
    reply = json.loads((await store.nc.request(command_subject("acme", "approve", "bob"), body, timeout=10)).data)
    assert reply.get("ok"), reply
    return await client.wait_closed(store, "acme", change_id, within=90)


async def rolled_back(store: EventStore, change_id: str, eventually: Eventually) -> list[str]:
    """Wait for the change's rollback (a step failed, then every step that ran undone, newest first);
    return the change's event types."""

    async def types() -> list[str]:
        return [s.event.type for s in (await store.read("acme", change_id)).events]

    async def done() -> bool:
        return "rollback.completed" in await types()

    await eventually(done, 60)
    seen = await types()
    assert "step.failed" in seen and "rollback.failed" not in seen, seen
    return seen


def boto(target: AwsTarget, service: str) -> Any:
    """A boto3 client as the moto server's root user: checks that bypass UPM's own read-backs."""
    import boto3  # type: ignore[import-untyped]

    return boto3.client(service, endpoint_url=target.endpoint, region_name=target.region,
                        aws_access_key_id=target.root_key_id, aws_secret_access_key=target.root_secret)


def aws_cli(target: AwsTarget, *args: str, creds: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real ``aws`` CLI against the moto server (root credentials unless ``creds``)."""
    env = {"PATH": os.environ["PATH"], "AWS_ENDPOINT_URL": target.endpoint or "", "AWS_DEFAULT_REGION": target.region,
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
           **(creds or {"AWS_ACCESS_KEY_ID": target.root_key_id, "AWS_SECRET_ACCESS_KEY": target.root_secret})}
    aws = str(Path(sysconfig.get_path("scripts")) / "aws")
    return subprocess.run([aws, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def sql(target: PgTarget, statement: str, *, database: str = "postgres") -> str:
    """A direct query as the superuser (real psql), bypassing UPM's read-backs."""
    dsn = target.dsn.rsplit("/", 1)[0] + "/" + database
    return emulators.psql_dsn(dsn, (statement,)).strip()


def moto_sessions(target: AwsTarget) -> list[dict[str, Any]]:
    """Every STS session the moto server issued, with its secret values (moto's own state API)."""
    with urllib.request.urlopen(f"{target.endpoint}/moto-api/data.json", timeout=10) as reply:
        data = json.load(reply)
    sessions: list[dict[str, Any]] = data.get("sts", {}).get("AssumedRole", [])
    return sessions
