"""AWS end to end: the real aws CLI against a moto server, through every UPM service."""

from __future__ import annotations

import logging
import time

import pytest
from targets_helpers import (
    DRIFT_INTERVAL,
    Eventually,
    aws_cli,
    boto,
    moto_sessions,
    rolled_back,
    submit,
    submit_approved,
)

from events.commands import idempotent_change_id
from events.model import CredentialsIssued, DriftDetected, DriftResolved
from events.store import EventStore
from services.verifier.drift import DRIFT_LOG_KEY
from upm.emulators import AwsTarget

pytestmark = pytest.mark.usefixtures("aws_target")


async def test_s3_bucket_with_versioning_and_encryption_goes_intent_to_closed_with_ephemeral_credentials(
    aws_target: AwsTarget, targets_pipeline: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    status = await submit(targets_pipeline, "Create S3 bucket logs-acme with versioning and encryption")
    assert status.outcome == "succeeded", status.reason
    types = [e.type for e in status.events]
    assert types[0] == "intent.submitted" and types[-1] == "change.closed"
    assert "verification.passed" in types and "credentials.revoked" in types

    s3 = boto(aws_target, "s3")
    assert "logs-acme" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.get_bucket_versioning(Bucket="logs-acme")["Status"] == "Enabled"
    rules = s3.get_bucket_encryption(Bucket="logs-acme")["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"

    # The change ran under its own short-lived STS session, now revoked, whose values are nowhere.
    log = await targets_pipeline.read("acme", status.change_id)
    issued = [s.event.payload for s in log.events if isinstance(s.event.payload, CredentialsIssued)]
    assert [i.kind for i in issued] == ["sts"]
    role = issued[0].ref.removeprefix("sts:")
    session = next(s for s in moto_sessions(aws_target) if s["role_arn"].endswith(f"/{role}"))
    values = (session["access_key_id"], session["secret_access_key"], session["session_token"])
    creds = dict(zip(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"), values, strict=True))
    refused = aws_cli(aws_target, "s3api", "list-buckets", creds=creds)
    assert refused.returncode != 0 and "AccessDenied" in refused.stderr
    stored = b"".join(s.data for s in log.events)
    for value in values:
        assert value.encode() not in stored
        assert value not in caplog.text
    assert root_secret_absent(aws_target, stored, caplog.text)


def root_secret_absent(target: AwsTarget, stored: bytes, logs: str) -> bool:
    return target.root_secret.encode() not in stored and target.root_secret not in logs


async def test_versioning_suspended_out_of_band_is_detected_and_reconciled(
    aws_target: AwsTarget, targets_pipeline: EventStore, eventually: Eventually
) -> None:
    status = await submit(targets_pipeline, "Create S3 bucket logs-drift with versioning and encryption")
    assert status.outcome == "succeeded", status.reason
    drift_log = idempotent_change_id("acme", DRIFT_LOG_KEY)

    async def payloads() -> list[object]:
        return [s.event.payload for s in (await targets_pipeline.read("acme", drift_log)).events]

    seen = len(await payloads())
    done = aws_cli(aws_target, "s3api", "put-bucket-versioning", "--bucket", "logs-drift",
                   "--versioning-configuration", "Status=Suspended")
    assert done.returncode == 0, done.stderr
    changed_at = time.monotonic()
    resource = "aws_s3_bucket_versioning:us-east-1:logs-drift"

    async def resolved() -> bool:
        return any(isinstance(p, DriftResolved) and p.resource == resource for p in (await payloads())[seen:])

    await eventually(resolved, 6 * DRIFT_INTERVAL + 30)
    detected = next(p for p in (await payloads())[seen:] if isinstance(p, DriftDetected) and p.resource == resource)
    assert detected.action == "reconcile" and detected.reconcile_change_id
    assert time.monotonic() - changed_at < 90
    assert boto(aws_target, "s3").get_bucket_versioning(Bucket="logs-drift")["Status"] == "Enabled"


async def test_a_failing_step_rolls_back_what_the_change_created(
    aws_target: AwsTarget, targets_pipeline: EventStore, eventually: Eventually
) -> None:
    status = await submit(
        targets_pipeline,
        "Create S3 bucket rb-bucket with encryption and iam role rb-role for service ec2.amazonaws.com and "
        "attach policy arn:aws:iam::aws:policy/UpmNoSuchPolicy to role rb-role",
    )
    assert status.outcome in ("failed", "rolled_back")
    await rolled_back(targets_pipeline, status.change_id, eventually)
    assert "rb-bucket" not in [b["Name"] for b in boto(aws_target, "s3").list_buckets()["Buckets"]]
    assert "rb-role" not in [r["RoleName"] for r in boto(aws_target, "iam").list_roles()["Roles"]]


async def test_table_and_role_are_created_updated_and_deleted(
    aws_target: AwsTarget, targets_pipeline: EventStore, eventually: Eventually
) -> None:
    iam, dynamodb = boto(aws_target, "iam"), boto(aws_target, "dynamodb")
    created = await submit(
        targets_pipeline, "Create dynamodb table orders-acme and iam role app-role for service ec2.amazonaws.com"
    )
    assert created.outcome == "succeeded", created.reason
    assert dynamodb.describe_table(TableName="orders-acme")["Table"]["KeySchema"][0]["AttributeName"] == "id"
    trust = iam.get_role(RoleName="app-role")["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}

    updated = await submit(targets_pipeline, "Update iam role app-role for service lambda.amazonaws.com")
    assert updated.outcome == "succeeded", updated.reason
    trust = iam.get_role(RoleName="app-role")["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}

    deleted = await submit_approved(targets_pipeline, "Delete dynamodb table orders-acme and iam role app-role",
                                    eventually)
    assert deleted.outcome == "succeeded", deleted.reason
    assert "orders-acme" not in dynamodb.list_tables()["TableNames"]
    assert "app-role" not in [r["RoleName"] for r in iam.list_roles()["Roles"]]


async def test_an_sqs_queue_goes_intent_to_closed_against_the_emulator(
    aws_target: AwsTarget, targets_pipeline: EventStore
) -> None:
    """awscli v1 ignores AWS_ENDPOINT_URL for SQS (aws/aws-cli#8737): the runner adds
    --endpoint-url to aws argv at run time, so the queue lands on the emulator, not on AWS."""
    created = await submit(targets_pipeline, "Create sqs queue jobs-acme")
    assert created.outcome == "succeeded", created.reason
    urls = boto(aws_target, "sqs").list_queues().get("QueueUrls", [])
    assert any(url.endswith("/jobs-acme") for url in urls), urls
