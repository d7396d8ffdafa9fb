"""Pre-flight in the running pipeline (real nats-server, every service in-process): halts,
approvals over the bus, denials, revisions, windows on an injected clock, custom packs, SLO."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from nats.aio.client import Client as NATS
from preflight_helpers import MONDAY_NOON, PROD_WINDOW, FakeClock, config

from events.ids import new_id
from events.model import IntentSubmitted
from events.store import EventStore, new_event
from events.subjects import command_subject
from services.common import client
from services.common.runtime import Runner
from services.gateway.service import Gateway
from services.preflight import Host
from services.preflight.config import PreflightConfig
from upm import app

Start = Callable[..., Awaitable[FakeClock]]


@pytest.fixture
def upm(nc: NATS, store: EventStore, host: Callable[..., Awaitable[None]]) -> Start:
    """``await upm(config)``: the pipeline with pre-flight on ``config`` and an injected clock."""

    async def start(cfg: PreflightConfig | None = None, clock: FakeClock | None = None) -> FakeClock:
        clock = clock or FakeClock()
        await host(Gateway(nc), Host(nc, config=cfg or config(), clock=clock, interval=0.05),
                   *(Runner(nc, app.PIPELINE[name]()) for name in ("planner", "executor", "verifier", "auditor")))
        return clock

    return start


async def _submit(store: EventStore, request: str, environment: str = "dev", initiator: str = "alice") -> str:
    return await client.submit(store.nc, "acme", {"request": request, "environment": environment},
                               principal=initiator)


async def _types(store: EventStore, change_id: str) -> list[str]:
    return [s.event.type for s in (await store.read("acme", change_id)).events]


async def _until(store: EventStore, change_id: str, event_type: str, within: float = 20.0) -> list[str]:
    with anyio.fail_after(within):
        while event_type not in (types := await _types(store, change_id)):  # noqa: ASYNC110 - polling the log
            await anyio.sleep(0.05)
    return types


async def _cmd(nc: NATS, verb: str, change_id: str, by: str, **extra: Any) -> dict[str, Any]:
    body = {"change_id": change_id, **extra}
    reply = await nc.request(command_subject("acme", verb, by), msgspec.json.encode(body), timeout=10)
    decoded: dict[str, Any] = msgspec.json.decode(reply.data)
    return decoded


async def test_a_missing_prerequisite_halts_and_never_reaches_the_executor(
    upm: Start, store: EventStore, tmp_path: Path
) -> None:
    await upm()
    change = await _submit(store, f"Create file {tmp_path / 'absent' / 'app.conf'} containing 'x'")
    status = await client.wait_closed(store, "acme", change, within=30)
    assert status.outcome == "rejected"
    assert f"missing prerequisite local_directory {tmp_path / 'absent'}" in status.reason
    assert "create it first or add it to this request" in status.reason
    types = [e.type for e in status.events]
    assert "change.approved" not in types and "execution.started" not in types


async def test_a_conflicting_resource_fails_the_dry_run(upm: Start, store: EventStore, tmp_path: Path) -> None:
    await upm()
    (tmp_path / "taken").mkdir(mode=0o700)
    change = await _submit(store, f"Create directory {tmp_path / 'taken'} with mode 0750")
    status = await client.wait_closed(store, "acme", change, within=30)
    assert status.outcome == "rejected"
    assert "conflict" in status.reason and "mode" in status.reason


async def test_two_distinct_approvers_release_a_prod_change_and_it_runs(
    upm: Start, store: EventStore, nc: NATS, tmp_path: Path
) -> None:
    await upm()
    target = tmp_path / "prod-app"
    change = await _submit(store, f"Create directory {target} with mode 0750", environment="prod")
    await _until(store, change, "approval.requested")
    own = await _cmd(nc, "approve", change, "alice")
    assert own["ok"] is False and own["error"]["rule"] == "separation-of-duties"
    outsider = await _cmd(nc, "approve", change, "erin")
    assert outsider["ok"] is False and outsider["error"]["rule"] == "group-membership"
    first = await _cmd(nc, "approve", change, "bob", reason="reviewed")
    assert first["ok"] is True and first["state"] == "awaiting-approval"
    again = await _cmd(nc, "approve", change, "bob")
    assert again["ok"] is False and again["error"]["rule"] == "duplicate-approver"
    assert not target.exists()
    second = await _cmd(nc, "approve", change, "carol")
    assert second["ok"] is True and second["state"] == "approved" and second["approvers"] == ["bob", "carol"]
    status = await client.wait_closed(store, "acme", change, within=30)
    assert status.outcome == "succeeded" and target.is_dir()
    types = [e.type for e in status.events]
    assert types.count("approval.granted") == 2 and types.count("change.approved") == 1
    assert types.index("change.approved") < types.index("execution.started")


async def test_a_deny_wins_and_an_old_plan_hash_does_not_count(
    upm: Start, store: EventStore, nc: NATS, tmp_path: Path
) -> None:
    await upm()
    change = await _submit(store, f"Create directory {tmp_path / 'v1'} with mode 0750", environment="prod")
    await _until(store, change, "approval.requested")
    log = await store.read("acme", change)
    old_hash = next(s.event.payload.plan.hash for s in log.events if s.event.type == "plan.compiled")  # type: ignore[union-attr]
    assert (await _cmd(nc, "approve", change, "bob", plan_hash=old_hash))["ok"] is True
    # a new revision of the same change: the planner compiles revision 2, pre-flight asks again
    revision = new_event(IntentSubmitted(request=f"Create directory {tmp_path / 'v2'} with mode 0750",
                                         initiator="alice", environment="prod"),
                         event_id=new_id(), change_id=change, tenant="acme", ts="2025-10-06T12:00:00.000Z",
                         actor="alice", source="api")
    await store.append(await store.read("acme", change), [revision])
    with anyio.fail_after(20):
        while (await _types(store, change)).count("approval.requested") < 2:  # noqa: ASYNC110 - polling the log
            await anyio.sleep(0.05)
    stale = await _cmd(nc, "approve", change, "carol", plan_hash=old_hash)
    assert stale["ok"] is False and stale["error"]["rule"] == "stale-plan"
    one = await _cmd(nc, "approve", change, "carol")
    assert one["ok"] is True and one["state"] == "awaiting-approval"  # bob's approval was for revision 1
    denied = await _cmd(nc, "deny", change, "dave", reason="wrong quarter")
    assert denied["ok"] is True and denied["state"] == "denied"
    late = await _cmd(nc, "approve", change, "bob")
    assert late["ok"] is False and late["error"]["rule"] == "denied"
    await anyio.sleep(0.3)
    types = await _types(store, change)
    assert "change.approved" not in types and "execution.started" not in types
    assert not (tmp_path / "v1").exists() and not (tmp_path / "v2").exists()


async def test_a_change_outside_its_window_waits_and_runs_when_it_opens(
    upm: Start, store: EventStore, nc: NATS, tmp_path: Path
) -> None:
    cfg = config(windows={"dev": {"timezone": "UTC", "weekly": ["sat 22:00-06:00"], "applies_to": "all"}})
    clock = await upm(cfg, FakeClock(MONDAY_NOON))
    target = tmp_path / "windowed"
    change = await _submit(store, f"Create directory {target} with mode 0750")
    types = await _until(store, change, "change.scheduled")
    log = await store.read("acme", change)
    scheduled = log.events[-1].event.payload
    assert scheduled.release_at == "2025-10-11T22:00:00.000Z"  # type: ignore[union-attr]
    clock.advance(timedelta(days=2))  # Wednesday: still closed
    await anyio.sleep(0.3)
    assert "change.approved" not in await _types(store, change) and not target.exists()
    clock.now = MONDAY_NOON + timedelta(days=5, hours=10, minutes=5)  # Saturday 22:05
    status = await client.wait_closed(store, "acme", change, within=30)
    assert status.outcome == "succeeded" and target.is_dir()
    types = [e.type for e in status.events]
    assert types.index("change.scheduled") < types.index("change.approved") < types.index("execution.started")
    assert types.count("change.approved") == 1


async def test_a_destructive_prod_change_needs_two_approvals_and_the_window(
    upm: Start, store: EventStore, nc: NATS, tmp_path: Path
) -> None:
    clock = await upm(config(windows=PROD_WINDOW), FakeClock(MONDAY_NOON))
    doomed = tmp_path / "doomed"
    doomed.mkdir()
    change = await _submit(store, f"Delete directory {doomed}", environment="prod")
    await _until(store, change, "approval.requested")
    assert (await _cmd(nc, "approve", change, "bob"))["state"] == "awaiting-approval"
    second = await _cmd(nc, "approve", change, "carol")
    assert second["state"] == "scheduled" and second["release_at"] == "2025-10-11T22:00:00.000Z"
    await anyio.sleep(0.2)
    assert doomed.exists()
    clock.now = MONDAY_NOON + timedelta(days=5, hours=11)
    status = await client.wait_closed(store, "acme", change, within=30)
    assert status.outcome == "succeeded" and not doomed.exists()


async def test_a_custom_pack_in_the_tenant_folder_refuses_what_the_default_allows(
    upm: Start, store: EventStore, tmp_path: Path
) -> None:
    pack = tmp_path / "acme-pack"
    pack.mkdir()
    (pack / "dirs.rego").write_text(
        'package upm.preflight\n\nimport rego.v1\n\n'
        'deny contains {"rule": "no-private-dirs", "message": sprintf("%s: mode 0700 is not allowed here", [r.name])} if {\n'
        '\tsome r in input.resources\n\tr.fields.mode == "0700"\n}\n'
    )
    await upm(config(policies={"acme": ["builtin", str(pack)]}))
    change = await _submit(store, f"Create directory {tmp_path / 'private'} with mode 0700")
    status = await client.wait_closed(store, "acme", change, within=30)
    assert status.outcome == "rejected" and "policy no-private-dirs" in status.reason
    log = await store.read("acme", change)
    failed = log.events[-2].event.payload
    assert [p.pack for p in failed.policy] == ["policies", "acme-pack"]  # type: ignore[union-attr]


async def test_a_preflight_slo_breach_is_an_event(upm: Start, store: EventStore, tmp_path: Path) -> None:
    await upm(config(slo={"p95_ms": 0.001, "window": 10, "min_samples": 1}))
    change = await _submit(store, f"Create directory {tmp_path / 'slo'} with mode 0750")
    status = await client.wait_closed(store, "acme", change, within=30)
    log = await store.read("acme", change)
    breach = next(s.event.payload for s in log.events if s.event.type == "slo.breached")
    assert breach.phase == "preflight" and breach.target_ms == 0.001  # type: ignore[union-attr]
    passed = next(s.event.payload for s in log.events if s.event.type == "preflight.passed")
    assert passed.duration_ms > 0  # type: ignore[union-attr]
    assert status.outcome == "succeeded"


async def test_malformed_and_unknown_commands_are_refused_and_nothing_is_appended(
    upm: Start, store: EventStore, nc: NATS
) -> None:
    await upm()
    reply = await nc.request(command_subject("acme", "approve", "bob"), b"{not json", timeout=10)
    assert msgspec.json.decode(reply.data)["error"]["rule"] == "json"
    missing = await _cmd(nc, "approve", new_id(), "bob")
    assert missing["ok"] is False and missing["error"]["rule"] == "exists"
