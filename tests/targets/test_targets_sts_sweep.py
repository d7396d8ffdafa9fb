"""The STS broker's sweep: per-change IAM roles no session can use any more are deleted (AWS
accounts hold a limited number of roles), best effort and without cutting off a live session."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from targets_helpers import boto

from services.security.credentials import STS_MAX_S, StsBroker
from upm.emulators import AwsTarget, Targets

KEEP_S = 60


@pytest.fixture
def broker(aws_target: AwsTarget, monkeypatch: pytest.MonkeyPatch) -> StsBroker:
    for name, value in Targets(aws=aws_target).service_env("executor").items():
        monkeypatch.setenv(name, value)
    return StsBroker(endpoint=aws_target.endpoint, region=aws_target.region, keep_s=KEEP_S)


async def issue_role(broker: StsBroker, change_id: str) -> str:
    issued = await broker.issue(tenant="acme", change_id=change_id, target="us-east-1", ttl_s=900)
    return issued.ref.removeprefix("sts:")


def policies(iam: Any, role: str) -> list[str] | None:
    """The role's inline policies, or ``None`` once it is deleted."""
    try:
        return sorted(iam.list_role_policies(RoleName=role)["PolicyNames"])
    except iam.exceptions.NoSuchEntityException:
        return None


async def test_revoked_roles_go_once_past_their_keep_and_live_ones_stay(
    aws_target: AwsTarget, broker: StsBroker
) -> None:
    iam = boto(aws_target, "iam")
    revoked, live = await issue_role(broker, "c1"), await issue_role(broker, "c2")
    await broker.revoke(f"sts:{revoked}")
    tags = {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName=revoked)["Tags"]}
    assert abs(int(tags["upm:revoked-at"]) - time.time()) < 5

    assert await broker.sweep(time.time()) == []  # within the keep: nothing goes
    assert policies(iam, revoked) == ["upm-change", "upm-revoked"]

    deleted = await broker.sweep(time.time() + KEEP_S + 1)
    assert revoked in deleted and live not in deleted
    assert policies(iam, revoked) is None
    assert policies(iam, live) == ["upm-change"]
    await broker.revoke(f"sts:{revoked}")  # the executor revoking a swept role is harmless


async def test_roles_never_revoked_go_once_their_only_session_has_expired(
    aws_target: AwsTarget, broker: StsBroker
) -> None:
    iam = boto(aws_target, "iam")
    orphan = await issue_role(broker, "c3")  # its run crashed and was never resumed
    assert orphan not in await broker.sweep(time.time() + STS_MAX_S)  # its session may still be live
    assert orphan in await broker.sweep(time.time() + STS_MAX_S + KEEP_S + 1)
    assert policies(iam, orphan) is None


async def test_a_role_that_resists_or_vanishes_does_not_stop_the_sweep(
    aws_target: AwsTarget, broker: StsBroker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    iam = boto(aws_target, "iam")
    stuck, gone, swept = [await issue_role(broker, c) for c in ("c4", "c5", "c6")]
    for role in (stuck, gone, swept):
        await broker.revoke(f"sts:{role}")
    arn = iam.create_policy(PolicyName="pinned", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    iam.attach_role_policy(RoleName=stuck, PolicyArn=arn["Policy"]["Arn"])  # IAM refuses to delete it

    listed = broker._old_roles

    def another_sweeper_meanwhile(client: Any, now: float) -> dict[str, float]:
        old = listed(client, now)
        for policy in iam.list_role_policies(RoleName=gone)["PolicyNames"]:
            iam.delete_role_policy(RoleName=gone, PolicyName=policy)
        iam.delete_role(RoleName=gone)
        return old

    monkeypatch.setattr(broker, "_old_roles", another_sweeper_meanwhile)
    caplog.set_level(logging.INFO, logger="services.security.credentials")
    deleted = await broker.sweep(time.time() + KEEP_S + 1)
    assert swept in deleted and stuck not in deleted and gone not in deleted
    assert policies(iam, swept) is None and policies(iam, stuck) is not None
    assert f"could not delete its old role {stuck}: DeleteConflict" in caplog.text
    assert f"the sts role {gone} was deleted meanwhile" in caplog.text


async def test_issue_sweeps_at_most_once_per_interval_and_a_failing_sweep_does_not_fail_it(
    broker: StsBroker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[float] = []

    def endpoint_down(client: Any, now: float) -> dict[str, float]:
        calls.append(now)
        raise ConnectionError("Could not connect to the endpoint URL")

    monkeypatch.setattr(broker, "_old_roles", endpoint_down)
    caplog.set_level(logging.WARNING, logger="services.security.credentials")
    first = await broker.issue(tenant="acme", change_id="c7", target="us-east-1", ttl_s=900)
    second = await broker.issue(tenant="acme", change_id="c8", target="us-east-1", ttl_s=900)
    assert first.ref != second.ref and len(calls) == 1
    assert "skipped sweeping its old roles (issuing goes on)" in caplog.text
    assert "Could not connect to the endpoint URL" in caplog.text
    for value in (*first.secrets, *second.secrets):
        assert value not in caplog.text
