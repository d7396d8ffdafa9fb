"""A read-back that cannot answer is unknown, never absent: real targets that fail for real.

AWS: the moto server behind a certificate nobody trusts (:class:`UntrustedTls`, made here with
``cryptography``), so the real awscli fails with "SSL validation failed". PostgreSQL: a port with
nothing listening, so the real psql fails with "Connection refused". Each resource is created through
the whole pipeline while its target is healthy; then the target breaks, and:

* re-verifying the change fails with "could not read back KEY: <why>", claiming no diff (the old
  code said ``exists: True → False``);
* an operator's rollback does not skip its delete as "already absent": the inverse runs, fails on the
  same fault, and the rollback fails with both reasons; the resource is still there;
* verifying the restored state fails the same way, so the rollback is no evidence: RollbackSuccess
  counts it as failed (the old code skipped the delete, completed the rollback and verified it);
* the drift loop counts the resource as unknown, and reports no drift for it.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path

import anyio
import pytest
from targets_helpers import (
    Eventually,
    UntrustedTls,
    boto,
    kpis_of,
    operator_command,
    sql,
    submit,
)

from events.commands import idempotent_change_id
from events.model import (
    DriftDetected,
    DriftScanned,
    PlanCompiled,
    RollbackCompleted,
    RollbackFailed,
    RollbackStepFailed,
    RollbackStepSkipped,
    VerificationFailed,
)
from events.store import EventStore
from services.verifier import core
from services.verifier.drift import DRIFT_LOG_KEY
from services.verifier.service import verify
from upm import emulators
from upm.emulators import AwsTarget, PgTarget, Targets

pytestmark = pytest.mark.timeout(240)


SLOW_DRIFT_INTERVAL = 20.0


@pytest.fixture
def drift_reads_once(targets_env: Targets) -> None:
    """A drift pass that fits its interval over a broken endpoint: awscli retries a refused certificate
    on its own (about 11 s before it gives up), so one read a resource and a longer interval."""
    Path(os.environ["UPM_VERIFIER_CONFIG"]).write_text(
        f"drift: {{interval_s: {SLOW_DRIFT_INTERVAL}, jitter: 0.0, confirm_retries: 0}}\n")


async def _unknown_all_the_way(
    store: EventStore, change_id: str, folder: Path, eventually: Eventually, caplog: pytest.LogCaptureFixture,
    *, kind: str, says: str,
) -> None:
    """The checks of the module docstring, for the one resource the change created."""
    events = [s.event for s in (await store.read("acme", change_id)).events]
    plan = next(e.payload.plan for e in events if isinstance(e.payload, PlanCompiled))
    [step] = plan.steps
    key = step.resource.key
    unread = f"could not read back {key}: {kind} (exit "

    canary = await verify(core.change_targets(plan), "change")
    assert isinstance(canary, VerificationFailed), canary
    assert canary.diff == ()  # nothing was observed, so nothing is claimed: not "exists: True → False"
    [check] = canary.checks
    assert not check.ok and check.detail.startswith(unread) and says in check.detail, check.detail

    drift_log = idempotent_change_id("acme", DRIFT_LOG_KEY)

    async def drift_payloads() -> list[object]:
        return [s.event.payload for s in (await store.read("acme", drift_log)).events]

    drift_seen = len(await drift_payloads())
    await operator_command(store, "rollback", change_id)

    async def ended() -> bool:
        log = await store.read("acme", change_id)
        return any(isinstance(s.event.payload, RollbackFailed | RollbackCompleted) for s in log.events)

    await eventually(ended, 90)
    history = [s.event for s in (await store.read("acme", change_id)).events]
    payloads = [e.payload for e in history]
    assert not [p for p in payloads if isinstance(p, RollbackStepSkipped)], "the delete was skipped as done"
    assert not [p for p in payloads if isinstance(p, RollbackCompleted)]
    [undo] = [p for p in payloads if isinstance(p, RollbackStepFailed)]
    assert undo.step_id == step.id and says in undo.error, undo.error
    assert f"could not tell whether it was already undone: {kind} (exit " in undo.error, undo.error
    [failed] = [p for p in payloads if isinstance(p, RollbackFailed)]
    assert failed.step_id == step.id

    restored = await verify(core.rollback_targets(plan, history), "rollback")
    assert isinstance(restored, VerificationFailed) and restored.diff == ()
    assert restored.checks[0].detail.startswith(unread), restored.checks[0].detail

    figures = await kpis_of(store, change_id, folder / "projection")
    assert figures["rollback_success_pct"] == 0.0

    async def scanned_unknown() -> bool:  # the loop's own words for this resource, then its pass recorded
        said = any(unread in r.getMessage() and r.name == "upm.drift" for r in caplog.records)
        return said and any(isinstance(p, DriftScanned) and p.unknown >= 1
                            for p in (await drift_payloads())[drift_seen:])

    await eventually(scanned_unknown, 3 * SLOW_DRIFT_INTERVAL + 30)
    drifted = [p for p in (await drift_payloads())[drift_seen:] if isinstance(p, DriftDetected) and p.resource == key]
    assert drifted == [], drifted


@pytest.mark.usefixtures("drift_reads_once")
async def test_a_queue_behind_an_untrusted_certificate_is_unknown_and_its_rollback_fails_honestly(
    aws_target: AwsTarget, targets_pipeline: EventStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    eventually: Eventually, caplog: pytest.LogCaptureFixture,
) -> None:
    status = await submit(targets_pipeline, "Create sqs queue tls-acme")
    assert status.outcome == "succeeded", status.reason
    assert aws_target.endpoint is not None
    with UntrustedTls(urllib.parse.urlsplit(aws_target.endpoint).port or 0, tmp_path) as proxy:
        assert await anyio.to_thread.run_sync(proxy.status_unverified, "/moto-api/data.json") == 200
        monkeypatch.setenv("UPM_AWS_ENDPOINT", proxy.url)  # read-backs and steps; the STS broker keeps its own
        await _unknown_all_the_way(targets_pipeline, status.change_id, tmp_path, eventually, caplog, kind="tls",
                                   says="SSL validation failed")
    urls = boto(aws_target, "sqs").list_queues().get("QueueUrls", [])
    assert any(url.endswith("/tls-acme") for url in urls), urls  # the failed rollback left it, and said so


@pytest.fixture
def pg_through_env(pg_target: PgTarget, targets_env: Targets, monkeypatch: pytest.MonkeyPatch,
                   tmp_path: Path) -> None:
    """Steps and read-backs reach PostgreSQL through ``UPM_PG_*`` only (no credentials broker, whose
    login would carry its own port), as the superuser: moving ``UPM_PG_PORT`` then moves them all."""
    password = urllib.parse.unquote(urllib.parse.urlsplit(pg_target.dsn).password or "")
    passfile = tmp_path / "superuser.pgpass"
    passfile.write_text(f"{pg_target.host}:*:*:postgres:{password}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("UPM_PG_OBSERVER_USER", "postgres")
    monkeypatch.setenv("UPM_PG_OBSERVER_PASSFILE", str(passfile))
    brokers = {"local": "none", "postgres": "none"}
    Path(os.environ["UPM_EXECUTOR_CONFIG"]).write_text(json.dumps({"credentials": {"brokers": brokers}}))


@pytest.mark.usefixtures("pg_through_env", "drift_reads_once")
async def test_a_role_on_a_port_with_nothing_listening_is_unknown_and_its_rollback_fails_honestly(
    pg_target: PgTarget, pipeline: EventStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    eventually: Eventually, caplog: pytest.LogCaptureFixture,
) -> None:
    status = await submit(pipeline, "Create postgres role tristate_clerk")
    assert status.outcome == "succeeded", status.reason
    monkeypatch.setenv("UPM_PG_PORT", str(emulators.free_port()))  # nothing listens there
    await _unknown_all_the_way(pipeline, status.change_id, tmp_path, eventually, caplog, kind="refused",
                               says="Connection refused")
    assert sql(pg_target, "SELECT count(*) FROM pg_roles WHERE rolname = 'tristate_clerk'") == "1"
