"""``upm approve``, ``upm deny``, ``upm approvals`` and ``upm policy test``, run in-process through
``upm.cli.main``."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import msgspec
import pytest
from nats.aio.client import Client as NATS
from preflight_helpers import config, plan_of

from events.store import EventStore
from services.common import client
from services.common.runtime import Runner
from services.gateway.service import Gateway
from services.preflight import Host
from upm import app
from upm.cli import main
from upm.natsserver import EmbeddedNats


def upm(*argv: str) -> int:
    return main(argv)


def test_every_preflight_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["approve"], ["deny"], ["approvals"], ["policy", "test"]):
        with pytest.raises(SystemExit) as done:
            upm(*command, "--help")
        assert done.value.code == 0
        assert len(capsys.readouterr().out) > 80


def test_policy_test_evaluates_a_spec_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "change.yaml"
    spec.write_text("resources:\n  - {type: aws_s3_bucket, name: logs-acme}\n")
    assert upm("policy", "test", "--file", str(spec), "--env", "prod") == 1
    out = capsys.readouterr().out
    assert "REFUSED" in out and "violation bucket-encrypted" in out and "needs 2 approver(s)" in out
    plan = tmp_path / "plan.json"
    plan.write_bytes(msgspec.json.encode(plan_of("Create directory /srv/app with mode 0750")))
    assert upm("policy", "test", "--file", str(plan), "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["allowed"], result["lane"], result["auto_rule"]) == (True, "auto", "low-risk-auto")


def test_policy_test_names_a_broken_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.rego").write_text("package upm.preflight\n\ndeny contains x if {\n")
    plan = tmp_path / "plan.json"
    plan.write_bytes(msgspec.json.encode(plan_of("Create directory /srv/app")))
    assert upm("policy", "test", "--file", str(plan), "--pack", str(tmp_path)) == 2
    assert f"{tmp_path / 'bad.rego'}:" in capsys.readouterr().err


async def test_approve_deny_and_the_trail_from_the_command_line(
    nats_server: EmbeddedNats, nc: NATS, store: EventStore, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    host: Callable[..., Awaitable[None]],
) -> None:
    await host(Gateway(nc), Host(nc, config=config(), interval=0.05),
               *(Runner(nc, app.PIPELINE[n]()) for n in ("planner", "executor", "verifier", "auditor")))
    change = await client.submit(nc, "acme", {"environment": "prod",
                                               "request": f"Create directory {tmp_path / 'cli'} with mode 0750"},
                                 principal="alice")
    with anyio.fail_after(20):
        while "approval.requested" not in [  # noqa: ASYNC110 - polling the log
            s.event.type for s in (await store.read("acme", change)).events
        ]:
            await anyio.sleep(0.05)
    url = ("--nats", nats_server.url)

    def cli(*argv: str) -> int:
        return upm(*argv, *url)

    assert await anyio.to_thread.run_sync(cli, "approve", change, "--as", "alice") == 2
    assert "separation of duties" in capsys.readouterr().err
    assert await anyio.to_thread.run_sync(cli, "approve", change, "--as", "bob", "--reason", "ok") == 0
    assert "awaiting-approval" in capsys.readouterr().out
    assert await anyio.to_thread.run_sync(cli, "deny", change, "--as", "carol", "--json") == 0
    assert json.loads(capsys.readouterr().out)["state"] == "denied"
    assert await anyio.to_thread.run_sync(cli, "approvals", change, "--json") == 0
    trail = json.loads(capsys.readouterr().out)
    assert [(t["event"], t["who"]) for t in trail] == [
        ("approval.requested", "policy"), ("approval.granted", "bob"), ("approval.denied", "carol")]
    assert trail[1]["reason"] == "ok" and trail[1]["group"] == "platform-owners"
