"""The drift loop judges every resource by the desired state the log holds now (events/desired.py):
after an update, a rollback, a delete — through the whole pipeline, on real directories."""

from __future__ import annotations

import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from events.commands import idempotent_change_id
from events.model import (
    ApprovalRequested,
    ChangeApproved,
    ChangeClosed,
    DriftDetected,
    DriftScanned,
    Payload,
    VerificationPassed,
    decode_event,
)
from events.store import EventStore
from events.subjects import type_filter
from services.common import client
from services.verifier.drift import DRIFT_LOG_KEY

Eventually = Callable[[Callable[[], Awaitable[bool]], float], Awaitable[None]]
INTERVAL = 0.4
PASSES = 5


@pytest.fixture(autouse=True)
def fast_drift_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "verifier.yaml"
    config.write_text(f"drift: {{interval_s: {INTERVAL}, jitter: 0.0, confirm_backoff_s: 0.01}}\n")
    monkeypatch.setenv("UPM_VERIFIER_CONFIG", str(config))
    approvers = tmp_path / "preflight.yaml"
    approvers.write_text('groups: {"*": {platform-owners: [bob, carol]}}\n')
    monkeypatch.setenv("UPM_PREFLIGHT_CONFIG", str(approvers))


async def _run(store: EventStore, request: str, environment: str = "dev") -> str:
    """Submit, approve when policy asks for approvers (prod: two; a delete: one), wait for success."""
    change_id = await client.submit(store.nc, "acme", {"request": request, "environment": environment},
                                    principal="alice")
    required = await _approvers_required(store, change_id)
    for who in ("bob", "carol")[:required]:
        await client.command(store.nc, "acme", "approve", {"change_id": change_id}, principal=who)
    status = await client.wait_closed(store, "acme", change_id, within=30)
    assert status.outcome == "succeeded", status.reason
    return change_id


async def _approvers_required(store: EventStore, change_id: str) -> int:
    with anyio.fail_after(30):
        while True:
            payloads = [s.event.payload for s in (await store.read("acme", change_id)).events]
            asked = [p.required for p in payloads if isinstance(p, ApprovalRequested)]
            if asked or any(isinstance(p, ChangeApproved | ChangeClosed) for p in payloads):
                return asked[0] if asked else 0
            await anyio.sleep(0.05)


async def _rollback(store: EventStore, change_id: str, eventually: Eventually) -> None:
    """``upm rollback ID`` on a change that closed ``succeeded``; waits until the restore is verified."""
    await client.command(store.nc, "acme", "rollback", {"change_id": change_id, "reason": "not wanted"},
                         principal="oncall")

    async def verified() -> bool:
        return any(isinstance(s.event.payload, VerificationPassed) and s.event.payload.scope == "rollback"
                   for s in (await store.read("acme", change_id)).events)

    await eventually(verified, 30)


async def _drift_log(store: EventStore) -> list[Payload]:
    log = await store.read("acme", idempotent_change_id("acme", DRIFT_LOG_KEY))
    return [s.event.payload for s in log.events]


async def _passes(store: EventStore, eventually: Eventually, count: int = PASSES) -> list[Payload]:
    """Wait for ``count`` more drift passes over acme; what the drift log recorded meanwhile."""
    seen = len(await _drift_log(store))

    async def done() -> bool:
        return sum(isinstance(p, DriftScanned) for p in (await _drift_log(store))[seen:]) >= count

    await eventually(done, count * INTERVAL + 30)
    return (await _drift_log(store))[seen:]


async def _reconcile_changes(store: EventStore) -> int:
    intents = [decode_event(data) for _, data in await store.read_raw(type_filter("intent.submitted", "acme"))]
    return sum(e.source == "drift" for e in intents)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_an_updated_mode_is_the_baseline_not_the_created_one(
    pipeline: EventStore, tmp_path: Path, eventually: Eventually
) -> None:
    target = tmp_path / "d"
    await _run(pipeline, f"Create directory {target} with mode 0750")
    await _run(pipeline, f"Change mode of directory {target} to 0700")
    recorded = await _passes(pipeline, eventually)
    assert _mode(target) == 0o700
    assert not [p for p in recorded if isinstance(p, DriftDetected)]
    assert await _reconcile_changes(pipeline) == 0
    scans = [p for p in recorded if isinstance(p, DriftScanned)]
    assert scans[-1].managed == 1 and scans[-1].drifted == 0  # one resource, one baseline


async def test_two_changes_in_sequence_the_second_is_the_baseline_drift_goes_back_to_it(
    pipeline: EventStore, tmp_path: Path, eventually: Eventually
) -> None:
    target = tmp_path / "d"
    await _run(pipeline, f"Create directory {target} with mode 0750")
    await _run(pipeline, f"Change mode of directory {target} to 0700")
    await _run(pipeline, f"Change mode of directory {target} to 0705")
    await _passes(pipeline, eventually, 2)
    target.chmod(0o777)  # out of band

    async def restored() -> bool:
        return _mode(target) == 0o705

    await eventually(restored, 30)
    recorded = await _passes(pipeline, eventually)
    assert _mode(target) == 0o705
    assert not [p for p in recorded if isinstance(p, DriftDetected)]


@pytest.mark.parametrize("environment", ["dev", "prod"])
async def test_a_rolled_back_create_is_not_re_created(
    pipeline: EventStore, tmp_path: Path, eventually: Eventually, environment: str
) -> None:
    target = tmp_path / "d"
    change_id = await _run(pipeline, f"Create directory {target} with mode 0750", environment)
    await _passes(pipeline, eventually, 1)
    await _rollback(pipeline, change_id, eventually)
    assert not target.exists()
    recorded = await _passes(pipeline, eventually)
    assert not target.exists()
    assert not [p for p in recorded if isinstance(p, DriftDetected)]
    assert await _reconcile_changes(pipeline) == 0  # in prod: no re-create change awaiting approval
    assert [p.managed for p in recorded if isinstance(p, DriftScanned)][-1] == 0


async def test_a_deleted_directory_is_not_re_created_nor_any_setting_of_it_watched(
    pipeline: EventStore, tmp_path: Path, eventually: Eventually
) -> None:
    target = tmp_path / "d"
    await _run(pipeline, f"Create directory {target} with mode 0750")
    await _run(pipeline, f"Change mode of directory {target} to 0700")
    await _run(pipeline, f"Delete directory {target}")
    recorded = await _passes(pipeline, eventually)
    assert not target.exists()
    assert not [p for p in recorded if isinstance(p, DriftDetected)]
    assert await _reconcile_changes(pipeline) == 0
    assert [p.managed for p in recorded if isinstance(p, DriftScanned)][-1] == 0
