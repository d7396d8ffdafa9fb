"""The AWS catalog's breadth end to end (real aws CLI, moto server, every UPM service): security groups
and ingress rules, SNS topics, SSM parameters (value by secret reference), CloudWatch log groups with
retention, ECR repositories, SQS dead-letter queues — created, verified, drifted and reconciled,
updated, deleted, and rolled back when a later step fails."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from targets_helpers import Eventually, aws_cli, boto, drift_payloads, rolled_back, submit_approved

from events.model import DriftDetected, DriftResolved
from events.store import EventStore
from services.common import client
from upm.emulators import AwsTarget

pytestmark = [pytest.mark.usefixtures("aws_target"), pytest.mark.timeout(900)]

SECRET = "s3cr3t-Value-for-the-db-9f8e7d6c"
SLOW = 420.0  # a change of ten AWS steps: each step is three aws CLI start-ups, on a shared 2-core machine


async def traced(store: EventStore, request: str) -> client.ChangeStatus:
    """Submit and wait until the change closes; on a time-out, say which events did arrive."""
    change_id = await client.submit(store.nc, "acme", {"request": request}, principal="alice")
    seen: list[str] = []
    try:
        return await client.wait_closed(store, "acme", change_id, within=SLOW,
                                        on_event=lambda s: seen.append(s.event.type))
    except TimeoutError:
        raise AssertionError(f"{request!r} did not close within {SLOW}s; its events: {seen}") from None


def ingress(target: AwsTarget, group: str) -> list[tuple[str, int, str]]:
    found = boto(target, "ec2").describe_security_groups(GroupNames=[group])["SecurityGroups"][0]
    return [(p["IpProtocol"], p["FromPort"], r["CidrIp"]) for p in found["IpPermissions"] for r in p["IpRanges"]]


def retention(target: AwsTarget, name: str) -> Any:
    groups = boto(target, "logs").describe_log_groups(logGroupNamePrefix=name)["logGroups"]
    return next((g.get("retentionInDays", "forever") for g in groups if g["logGroupName"] == name), None)


def redrive(target: AwsTarget, queue: str) -> dict[str, Any] | None:
    sqs = boto(target, "sqs")
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    policy = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"]).get("Attributes", {})
    return json.loads(policy["RedrivePolicy"]) if policy.get("RedrivePolicy") else None


def queues(target: AwsTarget) -> list[str]:
    return [u.rsplit("/", 1)[1] for u in boto(target, "sqs").list_queues().get("QueueUrls", [])]


def topics(target: AwsTarget) -> list[str]:
    return [t["TopicArn"].rsplit(":", 1)[1] for t in boto(target, "sns").list_topics()["Topics"]]


def repositories(target: AwsTarget) -> dict[str, dict[str, Any]]:
    return {r["repositoryName"]: r for r in boto(target, "ecr").describe_repositories()["repositories"]}


def parameters(target: AwsTarget) -> list[str]:
    return [p["Name"] for p in boto(target, "ssm").describe_parameters()["Parameters"]]


def groups(target: AwsTarget) -> list[str]:
    return [g["GroupName"] for g in boto(target, "ec2").describe_security_groups()["SecurityGroups"]]


async def test_each_new_type_is_created_verified_updated_and_deleted(
    aws_target: AwsTarget, targets_pipeline: EventStore, eventually: Eventually, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPM_SECRET_DB_PASSWORD", SECRET)  # the executor's env secret source
    created = await traced(
        targets_pipeline,
        "Create security group web-sg and open port 443 on security group web-sg, "
        "and sns topic alerts-acme, and ssm parameter /acme/db/password with value secret:DB_PASSWORD, "
        "and log group /acme/web with retention 30 days, and ecr repository acme/web with scan-on-push, "
        "and sqs queue jobs-dlq, and sqs queue jobs-main with dead letter queue jobs-dlq after 3 receives",
    )
    assert created.outcome == "succeeded", created.reason
    assert "verification.passed" in [e.type for e in created.events]
    assert ("tcp", 443, "0.0.0.0/0") in ingress(aws_target, "web-sg")
    assert "alerts-acme" in topics(aws_target)
    stored = boto(aws_target, "ssm").get_parameter(Name="/acme/db/password", WithDecryption=True)["Parameter"]
    assert stored["Value"] == SECRET and stored["Type"] == "SecureString"
    log = await targets_pipeline.read("acme", created.change_id)
    assert SECRET.encode() not in b"".join(s.data for s in log.events)  # the plan and events hold the reference
    assert retention(aws_target, "/acme/web") == 30
    repo = repositories(aws_target)["acme/web"]
    assert repo["imageScanningConfiguration"]["scanOnPush"] is True and repo["imageTagMutability"] == "MUTABLE"
    policy = redrive(aws_target, "jobs-main")
    assert policy is not None and policy["deadLetterTargetArn"].endswith(":jobs-dlq")
    assert int(policy["maxReceiveCount"]) == 3

    updated = await traced(
        targets_pipeline,
        "Update log group /acme/web with retention 90 days and update ecr repository acme/web immutable "
        "and close port 443 on security group web-sg and open port 8443 on security group web-sg from 10.0.0.0/16",
    )
    assert updated.outcome == "succeeded", updated.reason
    assert retention(aws_target, "/acme/web") == 90
    assert repositories(aws_target)["acme/web"]["imageTagMutability"] == "IMMUTABLE"
    assert ingress(aws_target, "web-sg") == [("tcp", 8443, "10.0.0.0/16")]

    deleted = await submit_approved(
        targets_pipeline,
        "Close port 8443 on security group web-sg from 10.0.0.0/16 and delete security group web-sg and "
        "sns topic alerts-acme and ssm parameter /acme/db/password and log group /acme/web and "
        "ecr repository acme/web and sqs queue jobs-main",
        eventually,
        within=SLOW,
    )
    assert deleted.outcome == "succeeded", deleted.reason
    assert "web-sg" not in groups(aws_target) and "alerts-acme" not in topics(aws_target)
    assert "/acme/db/password" not in parameters(aws_target) and retention(aws_target, "/acme/web") is None
    assert "acme/web" not in repositories(aws_target) and "jobs-main" not in queues(aws_target)


async def test_retention_and_an_ingress_rule_changed_out_of_band_are_detected_and_reconciled(
    aws_target: AwsTarget, targets_pipeline: EventStore, eventually: Eventually
) -> None:
    status = await traced(
        targets_pipeline,
        "Create log group /acme/drift with retention 14 days and security group drift-sg "
        "and open port 22 on security group drift-sg from 10.1.0.0/16",
    )
    assert status.outcome == "succeeded", status.reason
    seen = len(await drift_payloads(targets_pipeline))
    for argv in (
        ("logs", "put-retention-policy", "--log-group-name", "/acme/drift", "--retention-in-days", "1"),
        ("ec2", "revoke-security-group-ingress", "--group-name", "drift-sg", "--protocol", "tcp", "--port", "22",
         "--cidr", "10.1.0.0/16"),
    ):
        done = aws_cli(aws_target, *argv)
        assert done.returncode == 0, done.stderr
    changed_at = time.monotonic()
    wanted = {"aws_cloudwatch_log_group_retention:us-east-1:/acme/drift",
              "aws_security_group_ingress:us-east-1:drift-sg:tcp:22:10.1.0.0/16"}

    async def resolved() -> bool:
        done = {p.resource for p in (await drift_payloads(targets_pipeline))[seen:] if isinstance(p, DriftResolved)}
        return wanted <= done

    await eventually(resolved, SLOW)
    detected = {p.resource: p for p in (await drift_payloads(targets_pipeline))[seen:] if isinstance(p, DriftDetected)}
    assert all(detected[r].action == "reconcile" and detected[r].reconcile_change_id for r in wanted)
    assert time.monotonic() - changed_at < SLOW
    assert retention(aws_target, "/acme/drift") == 14
    assert ("tcp", 22, "10.1.0.0/16") in ingress(aws_target, "drift-sg")


async def test_a_failing_step_rolls_back_every_new_type_the_change_created(
    aws_target: AwsTarget, targets_pipeline: EventStore, eventually: Eventually
) -> None:
    """The SSM parameter's secret reference cannot be resolved (its key sorts last, so it runs last):
    the step fails and everything created before it is undone, newest first."""
    status = await traced(
        targets_pipeline,
        "Create security group rb-sg and open port 80 on security group rb-sg, and sns topic rb-topic, "
        "and log group /rb/web with retention 7 days, and ecr repository rb/web, and sqs queue rb-dlq, "
        "and sqs queue rb-main with dead letter queue rb-dlq, "
        "and ssm parameter /zz/rb/token with value secret:UPM_NO_SUCH_SECRET",
    )
    assert status.outcome in ("failed", "rolled_back"), status.reason
    types = await rolled_back(targets_pipeline, status.change_id, eventually)
    assert types.count("rollback.step.completed") >= 9, types
    assert "rb-sg" not in groups(aws_target) and "rb-topic" not in topics(aws_target)
    assert retention(aws_target, "/rb/web") is None and "rb/web" not in repositories(aws_target)
    assert not {"rb-dlq", "rb-main"} & set(queues(aws_target))
    assert "/zz/rb/token" not in parameters(aws_target)


async def test_a_topic_parameter_repository_and_redrive_removed_out_of_band_are_reconciled(
    aws_target: AwsTarget, targets_pipeline: EventStore, eventually: Eventually, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drift half of create → verify → drift → rollback for the types the tests above do not drift:
    each is removed behind UPM's back, detected, and put back by a reconcile change (the queue with its
    dead-letter redrive). The parameter's reconcile used to be rejected: its `type` field (now
    `parameter_type`) read as the resource type."""
    monkeypatch.setenv("UPM_SECRET_DRIFT_TOKEN", SECRET)  # the reconcile writes the parameter again
    status = await traced(
        targets_pipeline,
        "Create sns topic drift-topic, and ssm parameter /acme/drift/token with value secret:DRIFT_TOKEN, "
        "and ecr repository acme/drift, and sqs queue drift-dlq, and sqs queue drift-main with dead letter "
        "queue drift-dlq after 5 receives",
    )
    assert status.outcome == "succeeded", status.reason
    seen = len(await drift_payloads(targets_pipeline))
    topic = next(t["TopicArn"] for t in boto(aws_target, "sns").list_topics()["Topics"]
                 if t["TopicArn"].endswith(":drift-topic"))
    boto(aws_target, "sns").delete_topic(TopicArn=topic)
    boto(aws_target, "ssm").delete_parameter(Name="/acme/drift/token")
    boto(aws_target, "ecr").delete_repository(repositoryName="acme/drift", force=True)
    sqs = boto(aws_target, "sqs")
    sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName="drift-main")["QueueUrl"])
    removed = (("aws_sns_topic:", ":drift-topic"), ("aws_ssm_parameter:", ":/acme/drift/token"),
               ("aws_ecr_repository:", ":acme/drift"), ("aws_sqs_queue:", ":drift-main"),
               ("aws_sqs_queue_redrive:", ":drift-main"))

    def named(key: str) -> set[tuple[str, str]]:
        return {(kind, name) for kind, name in removed if key.startswith(kind) and key.endswith(name)}

    async def resolved() -> bool:
        done = set().union(*(named(p.resource) for p in (await drift_payloads(targets_pipeline))[seen:] if isinstance(p, DriftResolved)))
        return done == set(removed)

    await eventually(resolved, SLOW)
    detected = [p for p in (await drift_payloads(targets_pipeline))[seen:] if isinstance(p, DriftDetected)]
    assert set().union(*(named(d.resource) for d in detected if d.action == "reconcile")) == set(removed), detected
    assert "drift-topic" in topics(aws_target) and "acme/drift" in repositories(aws_target)
    stored = boto(aws_target, "ssm").get_parameter(Name="/acme/drift/token", WithDecryption=True)["Parameter"]
    assert stored["Value"] == SECRET
    policy = redrive(aws_target, "drift-main")
    assert policy is not None and policy["deadLetterTargetArn"].endswith(":drift-dlq")
