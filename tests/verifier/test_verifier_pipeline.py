"""Verification and drift reconciliation through the whole pipeline, on real files."""

from __future__ import annotations

import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from events.commands import idempotent_change_id
from events.model import DriftDetected, DriftResolved, DriftScanned
from events.store import EventStore
from services.common import client
from services.verifier.drift import DRIFT_LOG_KEY

Eventually = Callable[[Callable[[], Awaitable[bool]], float], Awaitable[None]]
INTERVAL = 1.0


@pytest.fixture(autouse=True)
def fast_drift_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "verifier.yaml"
    config.write_text(f"drift: {{interval_s: {INTERVAL}, jitter: 0.0, confirm_backoff_s: 0.01}}\n")
    monkeypatch.setenv("UPM_VERIFIER_CONFIG", str(config))


async def _submit(store: EventStore, request: str) -> client.ChangeStatus:
    change_id = await client.submit(store.nc, "acme", {"request": request}, principal="alice")
    return await client.wait_closed(store, "acme", change_id, within=30)


async def _drift_log(store: EventStore) -> list[object]:
    log = await store.read("acme", idempotent_change_id("acme", DRIFT_LOG_KEY))
    return [s.event.payload for s in log.events]


async def test_out_of_band_changes_are_detected_and_reconciled_through_the_pipeline(
    pipeline: EventStore, tmp_path: Path, eventually: Eventually
) -> None:
    app_dir, conf = tmp_path / "app", tmp_path / "app" / "app.conf"
    status = await _submit(pipeline, f"Create directory {app_dir} with mode 0750 and file {conf} containing 'port=8080'")
    assert status.outcome == "succeeded", status.reason

    async def reconciled(resource: str, since: int) -> None:
        async def resolved() -> bool:
            return any(isinstance(p, DriftResolved) and p.resource == resource
                       for p in (await _drift_log(pipeline))[since:])
        await eventually(resolved, 6 * INTERVAL + 20)

    # chmod: detected within one interval, reconciled by a change of source drift.
    seen = len(await _drift_log(pipeline))
    app_dir.chmod(0o777)
    changed_at = time.monotonic()

    async def detected() -> bool:
        return any(isinstance(p, DriftDetected) for p in (await _drift_log(pipeline))[seen:])

    await eventually(detected, 2 * INTERVAL + 5)
    assert time.monotonic() - changed_at <= 2 * INTERVAL + 5
    await reconciled(f"local_directory:local:{app_dir}", seen)
    assert stat.S_IMODE(app_dir.stat().st_mode) == 0o750
    drift = next(p for p in (await _drift_log(pipeline))[seen:] if isinstance(p, DriftDetected))
    assert drift.action == "reconcile" and drift.reconcile_change_id
    reconcile = await client.status(pipeline, drift.reconcile_change_id, "acme")
    assert reconcile.outcome == "succeeded"
    types = [e.type for e in reconcile.events]
    assert types[:2] == ["intent.submitted", "plan.compiled"] and "verification.passed" in types
    assert (await pipeline.read("acme", drift.reconcile_change_id)).events[0].event.source == "drift"

    # delete, then edit: each restored the same way.
    seen = len(await _drift_log(pipeline))
    conf.unlink()
    await reconciled(f"local_file:local:{conf}", seen)
    assert conf.read_text() == "port=8080"
    seen = len(await _drift_log(pipeline))
    conf.write_text("port=9999999\n")
    await reconciled(f"local_file:local:{conf}", seen)
    assert conf.read_text() == "port=8080"

    scans = [p for p in await _drift_log(pipeline) if isinstance(p, DriftScanned)]
    # The reconcile of the mode set the directory's mode: still one baseline per resource, 2 managed.
    assert scans and scans[-1].managed == 2 and scans[-1].checked == scans[-1].managed
