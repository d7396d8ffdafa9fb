"""Infrastructure code end to end: a .tf directory (an S3 bucket and an SQS queue it refers to)
through every UPM service against a moto server — created, verified, drifted, rolled back."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from targets_helpers import DRIFT_INTERVAL, Eventually, aws_cli, boto, operator_command

from events.commands import idempotent_change_id
from events.model import DriftDetected, PlanCompiled, RollbackCompleted, RollbackFailed
from events.store import EventStore
from services.auditor import evidence
from services.common import client
from services.planner.iac.load import load_input
from services.verifier.drift import DRIFT_LOG_KEY
from upm.emulators import AwsTarget

pytestmark = pytest.mark.usefixtures("aws_target")

MAIN_TF = """\
variable "env" {
  type = string
}

locals {
  prefix = "iac-${var.env}"
}

resource "aws_sqs_queue" "jobs" {
  name                       = "${local.prefix}-jobs"
  visibility_timeout_seconds = 45
}

resource "aws_s3_bucket" "logs" {
  bucket = "${local.prefix}-logs"
  tags = {
    team  = "alpha"
    queue = aws_sqs_queue.jobs.name
  }
  server_side_encryption_configuration {
    rule {
      apply_server_side_encryption_by_default {
        sse_algorithm = "AES256"
      }
    }
  }
}
"""


async def test_a_tf_directory_creates_verifies_drifts_and_rolls_back(
    aws_target: AwsTarget, targets_pipeline: EventStore, eventually: Eventually, tmp_path: Path
) -> None:
    (tmp_path / "main.tf").write_text(MAIN_TF)
    spec = load_input(tmp_path, ["env=e2e"])
    change_id = await client.submit(targets_pipeline.nc, "acme", {"spec": spec}, principal="alice")
    status = await client.wait_closed(targets_pipeline, "acme", change_id, within=120)
    assert status.outcome == "succeeded", status.reason
    types = [e.type for e in status.events]
    assert "verification.passed" in types

    s3, sqs = boto(aws_target, "s3"), boto(aws_target, "sqs")
    tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket="iac-e2e-logs")["TagSet"]}
    assert tags == {"team": "alpha", "queue": "iac-e2e-jobs"}
    url = sqs.get_queue_url(QueueName="iac-e2e-jobs")["QueueUrl"]
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"] == {
        "VisibilityTimeout": "45"
    }
    events = [s.event for s in (await targets_pipeline.read("acme", change_id)).events]
    [plan] = [e.payload.plan for e in events if isinstance(e.payload, PlanCompiled)]
    assert "from aws_s3_bucket.logs (main.tf:14): create aws_s3_bucket:iac-e2e-logs" in plan.annotations.impact.notes

    # The evidence pack keeps the .tf file as given, and its sha256.
    pack = evidence.sections(events)
    assert pack["source/main.tf"] == MAIN_TF.encode()
    source = json.loads(pack["source.json"])
    assert source["files"] == {"main.tf": "sha256:" + hashlib.sha256(MAIN_TF.encode()).hexdigest()}
    assert source["format"] == "hcl" and source["variables"] == {"env": "e2e"}

    # Drift: the bucket's tags changed out of band are detected.
    drift_log = idempotent_change_id("acme", DRIFT_LOG_KEY)

    async def payloads() -> list[object]:
        return [s.event.payload for s in (await targets_pipeline.read("acme", drift_log)).events]

    seen = len(await payloads())
    done = aws_cli(aws_target, "s3api", "put-bucket-tagging", "--bucket", "iac-e2e-logs",
                   "--tagging", json.dumps({"TagSet": [{"Key": "team", "Value": "beta"}]}))
    assert done.returncode == 0, done.stderr
    changed_at = time.monotonic()
    resource = "aws_s3_bucket_tagging:us-east-1:iac-e2e-logs"

    async def detected() -> bool:
        return any(isinstance(p, DriftDetected) and p.resource == resource for p in (await payloads())[seen:])

    await eventually(detected, 6 * DRIFT_INTERVAL + 30)
    assert time.monotonic() - changed_at < 90

    # Rollback: what the change created is undone, newest first, and verified.
    await operator_command(targets_pipeline, "rollback", change_id)

    async def ended() -> bool:
        log = await targets_pipeline.read("acme", change_id)
        return any(isinstance(s.event.payload, RollbackCompleted | RollbackFailed) for s in log.events)

    await eventually(ended, 90)
    log = [s.event for s in (await targets_pipeline.read("acme", change_id)).events]
    assert any(isinstance(e.payload, RollbackCompleted) for e in log), [e.type for e in log]
    assert "iac-e2e-logs" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert not [u for u in sqs.list_queues().get("QueueUrls", []) if u.endswith("/iac-e2e-jobs")]
