"""A change whose verification fails is rolled back (automatically, or by an operator) and the
restored state is verified, through the whole pipeline with real processes and files.

The target misbehaves for real: a local writer (``upm-localfs``) on the step path whose mkdir
reports success but ignores the requested mode (it passes its pin: it answers ``--version`` with
the real writer's report); the ``faulty_writer`` fixture of tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from events.model import RollbackApproved, RollbackPlanned
from events.store import EventStore
from services.common import client
from upm.cli import main

Eventually = Callable[[Callable[[], Awaitable[bool]], float], Awaitable[None]]

@pytest.fixture(autouse=True)
def faulty_target(faulty_writer: Path) -> None:
    """Every test here writes through the faulty writer (tests/conftest.py)."""


def _verifier_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, auto: bool) -> None:
    config = tmp_path / "verifier.yaml"
    config.write_text(f"auto_rollback: {{dev: {str(auto).lower()}}}\ndrift: {{interval_s: 3600}}\n")
    monkeypatch.setenv("UPM_VERIFIER_CONFIG", str(config))


@pytest.fixture
def auto_rollback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Policy allows automatic rollback (set before the services start)."""
    _verifier_config(tmp_path, monkeypatch, auto=True)


@pytest.fixture
def manual_rollback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Policy leaves rollback to an operator (set before the services start)."""
    _verifier_config(tmp_path, monkeypatch, auto=False)


async def _submit(store: EventStore, target: Path) -> str:
    return await client.submit(store.nc, "acme", {"request": f"Create directory {target} with mode 0750"},
                               principal="alice")


async def test_a_failed_verification_is_rolled_back_automatically_and_the_restore_verified(
    tmp_path: Path, auto_rollback: None, pipeline: EventStore
) -> None:
    target = tmp_path / "app"
    status = await client.wait_closed(pipeline, "acme", await _submit(pipeline, target), within=30)
    assert status.outcome == "rolled_back", status.reason
    assert "mode" in status.reason
    types = [e.type for e in status.events]
    for expected in ("verification.failed", "rollback.planned", "rollback.approved", "rollback.started",
                     "rollback.step.completed", "rollback.completed", "verification.passed", "change.closed"):
        assert expected in types, types
    assert types.index("verification.failed") < types.index("rollback.completed") < types.index("change.closed")
    assert not target.exists()


async def test_with_automatic_rollback_off_nothing_runs_until_an_operator_approves(
    tmp_path: Path, manual_rollback: None, pipeline: EventStore, nats_server: object, eventually: Eventually
) -> None:
    target = tmp_path / "app"
    change_id = await _submit(pipeline, target)

    async def planned() -> bool:
        log = await pipeline.read("acme", change_id)
        return any(isinstance(s.event.payload, RollbackPlanned) for s in log.events)

    await eventually(planned, 30.0)
    await anyio.sleep(1.0)  # time for anything that would (wrongly) run on its own
    log = await pipeline.read("acme", change_id)
    payloads = [s.event.payload for s in log.events]
    rollback = next(p for p in payloads if isinstance(p, RollbackPlanned))
    assert rollback.automatic is False
    assert [c.display for c in rollback.commands] == [f"upm-localfs rmdir {target}"]
    assert not any(isinstance(p, RollbackApproved) for p in payloads)
    assert (await client.status(pipeline, change_id)).state == "awaiting-rollback"
    assert target.exists()  # nothing ran

    url = nats_server.url  # type: ignore[attr-defined]
    code = await anyio.to_thread.run_sync(
        lambda: main(["rollback", change_id, "--as", "oncall", "--reason", "verify failed", "--nats", url]))
    assert code == 0
    status = await client.wait_closed(pipeline, "acme", change_id, within=30)
    assert status.outcome == "rolled_back"
    approved = next(e for e in (await pipeline.read("acme", change_id)).events
                    if isinstance(e.event.payload, RollbackApproved))
    assert approved.event.payload.lane == "manual"  # type: ignore[union-attr]
    assert not target.exists()
