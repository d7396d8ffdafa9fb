"""``upm demo``: the whole pipeline on embedded defaults, end to end, in under a minute.

It starts NATS and every service as separate processes (exactly as ``upm up`` does), submits
local changes — two succeed; one halts in pre-flight on a missing prerequisite; one is rejected by
the planner; a prod change waits for two approvers from ``platform-owners`` and runs once both
approved; one fails mid-change and what ran is rolled back automatically and verified — shows
each change's events as they happen, prints the outcomes and where the events are, and stops
everything it started.

With ``extras`` (``upm up --with`` names: ``aws``, ``postgres``) it also starts those targets and
tells their stories: an S3 bucket with versioning and encryption created through the real aws CLI
on a moto server, then a change whose IAM policy attachment fails and is rolled back; a database,
a login role and a grant created through the real psql, then a change whose role cannot be created
(a reserved ``pg_`` name) and is rolled back.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import anyio
import msgspec

from events.store import EventStore, StoredEvent
from events.subjects import change_filter
from services import app, client
from services.errors import CommandRejected

TENANT = "demo"
INITIATOR = "demo-user"


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    title: str
    change_id: str
    outcome: str
    reason: str
    events: int
    seconds: float


class Scenario(msgspec.Struct, frozen=True):
    """One demo change: what it shows, its intent, the outcome it must end with, and who
    approves it when pre-flight asks (a prod change needs two of ``platform-owners``)."""

    title: str
    intent: dict[str, Any]
    expected: str
    approvers: tuple[str, ...] = ()


DEMO_PREFLIGHT_CONFIG = "groups: {\"*\": {platform-owners: [bob, carol]}}\n"

STORIES: dict[str, list[Scenario]] = {
    "aws": [
        Scenario("an S3 bucket with versioning and encryption (aws CLI, moto server)",
                 {"request": "Create S3 bucket logs-acme with versioning and encryption, tagged team=alpha"},
                 "succeeded"),
        Scenario("an IAM role whose policy attachment fails: rolled back",
                 {"request": "Create iam role demo-role and attach policy arn:aws:iam::aws:policy/UpmNoSuchPolicy "
                             "to role demo-role"}, "rolled_back"),
    ],
    "postgres": [
        Scenario("a database, a login role and a grant (psql, embedded PostgreSQL)",
                 {"request": "Create postgres database orders and postgres role analyst with login "
                             "and grant role analyst read access to database orders"}, "succeeded"),
        Scenario("a database, then a role that cannot be created: rolled back",
                 {"request": "Create postgres database scratch and postgres role pg_blocked"}, "rolled_back"),
    ],
}


def scenarios(files: Path, extras: tuple[str, ...] = ()) -> list[Scenario]:
    """(title, intent, expected outcome) of each demo change; ``extras`` add their targets' stories."""
    app_dir = files / "srv" / "app"
    return [*_local(files, app_dir), *(story for extra in extras for story in STORIES[extra])]


def _local(files: Path, app_dir: Path) -> list[Scenario]:
    return [
        Scenario("create a directory", {"request": f"Create directory {files / 'srv'} with mode 0755"}, "succeeded"),
        Scenario(
            "directory and config file from a spec",
            {"spec": {"resources": [
                {"type": "local_directory", "path": str(app_dir), "mode": "0750"},
                {"type": "local_file", "path": str(app_dir / "app.conf"), "mode": "0640", "content": "port=8080\n"},
            ]}},
            "succeeded",
        ),
        Scenario("a file whose directory does not exist",
                 {"request": f"Create file {files / 'missing' / 'app.conf'} containing 'x'"}, "rejected"),
        Scenario("a request the planner cannot compile", {"request": "Create flux capacitor delorean"}, "rejected"),
        Scenario("a prod change: two approvers from platform-owners, then it runs",
                 {"request": f"Create directory {files / 'prod'} with mode 0750", "environment": "prod"},
                 "succeeded", approvers=("bob", "carol")),
        Scenario("a step fails mid-change (a file is in the way): what ran is rolled back and verified",
                 {"request": f"Create directory {files / 'a-first'} and directory {files / 'z-blocked' / 'sub'}"},
                 "rolled_back"),
    ]


def _progress(out: TextIO, started: float) -> Callable[[StoredEvent], None]:
    def show(stored: StoredEvent) -> None:
        e = client.line(stored)
        out.write(f"  {time.perf_counter() - started:6.2f}s {e.phase:<9} {e.type:<20} {e.summary}\n")
        out.flush()

    return show


async def _approve(store: EventStore, change_id: str, approvers: tuple[str, ...], out: TextIO) -> None:
    """Act as the approvers: once pre-flight asks, each approves with ``upm approve``'s command."""
    async for stored in store.follow(change_filter(TENANT, change_id)):
        if stored.event.type == "approval.requested":
            break
    for who in approvers:
        body = {"change_id": change_id, "reason": "reviewed in the demo"}
        try:
            await client.command(store.nc, TENANT, "approve", body, principal=who)
            answer = "ok"
        except CommandRejected as err:
            answer = f"refused: {err}"
        out.write(f"  {'':>7} upm approve {change_id[:8]}… --as {who}: {answer}\n")


async def _run(folder: Path, files: Path, out: TextIO, extras: tuple[str, ...]) -> list[Outcome]:
    nc = await app.connect(app.resolve_url(None, str(folder)), data=str(folder), identity=INITIATOR)
    store = EventStore(nc)
    results = []
    try:
        for n, scenario in enumerate(scenarios(files, extras), 1):
            out.write(f"\n[{n}] {scenario.title}\n")
            command = {"source": "chatops", "reason": "upm demo", **scenario.intent}
            started = time.perf_counter()
            change_id = await client.submit(nc, TENANT, command, principal=INITIATOR)
            out.write(f"  change {change_id}\n")
            async with anyio.create_task_group() as tg:
                if scenario.approvers:
                    tg.start_soon(_approve, store, change_id, scenario.approvers, out)
                status = await client.wait_closed(
                    store, TENANT, change_id, within=60, on_event=_progress(out, started)
                )
            results.append(
                Outcome(
                    title=scenario.title,
                    change_id=change_id,
                    outcome=status.outcome or status.state,
                    reason=status.reason,
                    events=len(status.events),
                    seconds=round(time.perf_counter() - started, 2),
                )
            )
    finally:
        await nc.close()
    return results


def run_demo(folder: Path, out: TextIO = sys.stdout, extras: tuple[str, ...] = ()) -> list[Outcome]:
    """Run the demo in ``folder`` (wiped first), with the targets of ``extras``; return each change's outcome."""
    if folder.exists():
        app.down(folder)
        shutil.rmtree(folder)
    files = folder / "files"
    files.mkdir(parents=True)
    (files / "z-blocked").write_text("a file where the last step wants a directory\n")
    config = folder / "preflight.yaml"
    config.write_text(DEMO_PREFLIGHT_CONFIG)
    os.environ["UPM_PREFLIGHT_CONFIG"] = str(config)  # the services `up` starts inherit it
    out.write(f"Starting UPM: embedded NATS JetStream + {', '.join(app.SERVICE_NAMES)} (one process each)\n")
    out.flush()
    started = time.perf_counter()
    state = app.up(folder, extras=extras)
    out.write(f"  up in {time.perf_counter() - started:.1f}s, NATS at {state['url']}, data in {folder}\n")
    for name, where in state.get("targets", {}).items():
        place = where.get("endpoint") or f"{where.get('host')}:{where.get('port')}"
        out.write(f"  {name} at {place}\n")
    try:
        results = anyio.run(_run, folder, files, out, extras)
    finally:
        stopped = app.down(folder)
        out.write(f"\nStopped {', '.join(stopped)}; nothing left running.\n")
    return results


def expected_outcomes(files: Path, extras: tuple[str, ...] = ()) -> list[str]:
    return [scenario.expected for scenario in scenarios(files, extras)]
