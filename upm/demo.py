"""``upm demo``: the whole pipeline on embedded defaults, end to end, in under a minute.

It starts NATS and every service as separate processes (exactly as ``upm up`` does), submits
local changes — two succeed; one halts in pre-flight on a missing prerequisite; one is rejected by
the planner; a prod change waits for two approvers from ``platform-owners`` and runs once both
approved; one fails mid-change and what ran is rolled back automatically and verified — shows
each change's events as they happen, prints the outcomes and where the events are, and stops
everything it started.

It runs secure, as ``upm up --access`` does: an access file for tenant ``demo`` (a requester who
submits, two approvers, another requester ``dave``, an auditor), a certificate per person and per
service, and NATS permissions per identity. Each person acts on their own connection; the demo
shows ``dave`` refused when he tries to approve (by the server: his roles give him no approve
subject), and a private change invisible to him but visible to the auditor.

With ``extras`` (``upm up --with`` names: ``aws``, ``postgres``) it also starts those targets and
tells their stories: an S3 bucket with versioning and encryption created through the real aws CLI
on a moto server, then a change whose IAM policy attachment fails and is rolled back; a database,
a login role and a grant created through the real psql, then a change whose role cannot be created
(a reserved ``pg_`` name) and is rolled back.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import anyio
import msgspec
from nats.aio.client import Client as NATS

from events.store import StoredEvent
from projections.serve import TOKENS_FILE, add_token
from services.common import client, connection
from services.common.errors import CommandRejected
from services.gateway import queries
from services.security.access import load as load_access
from upm import app

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
DEMO_ACCESS = (
    "org: demo\n"
    "tenants:\n"
    f"  {TENANT}: {{{INITIATOR}: [requester], bob: [approver], carol: [approver], dave: [requester],"
    " audrey: [auditor]}\n"
)
OUTSIDER = "dave"  # a requester of the tenant: may not approve, may not see others' private changes
AUDITOR = "audrey"

STORIES: dict[str, list[Scenario]] = {
    "aws": [
        Scenario("an S3 bucket with versioning and encryption (aws CLI, moto server)",
                 {"request": "Create S3 bucket logs-acme with versioning and encryption, tagged team=alpha"},
                 "succeeded"),
        Scenario("an IAM role whose policy attachment fails: rolled back",
                 {"request": "Create iam role demo-role for service ec2.amazonaws.com and attach policy "
                             "arn:aws:iam::aws:policy/UpmNoSuchPolicy "
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
        Scenario("a private change: invisible to another requester, visible to the auditor",
                 {"request": f"Create directory {files / 'private'} with mode 0700", "visibility": "private"},
                 "succeeded"),
    ]


def _progress(out: TextIO, started: float) -> Callable[[StoredEvent], None]:
    def show(stored: StoredEvent) -> None:
        e = client.line(stored)
        out.write(f"  {time.perf_counter() - started:6.2f}s {e.phase:<9} {e.type:<20} {e.summary}\n")
        out.flush()

    return show


class People:
    """One connection per person of the demo's access file, each with its own certificate."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.url = connection.resolve_url(None, str(folder))
        self.open: dict[str, NATS] = {}

    async def __call__(self, who: str) -> NATS:
        if who not in self.open:
            self.open[who] = await connection.connect(self.url, data=str(self.folder), identity=who)
        return self.open[who]

    async def close(self) -> None:
        for conn in self.open.values():
            await conn.close()


async def _approve(people: People, change_id: str, approvers: tuple[str, ...], out: TextIO) -> None:
    """Once pre-flight asks: an outsider tries to approve (and is refused), then each approver
    approves with ``upm approve``'s command, on their own connection."""
    async for stored in queries.follow(await people(approvers[0]), TENANT, principal=approvers[0],
                                       change_id=change_id):
        if stored.event.type == "approval.requested":
            break
    for who in (OUTSIDER, *approvers):
        body = {"change_id": change_id, "reason": "reviewed in the demo"}
        try:
            await client.command(await people(who), TENANT, "approve", body, principal=who)
            answer = "ok"
        except CommandRejected as err:
            answer = f"refused ({err.rule})"
        out.write(f"  {'':>7} upm approve {change_id[:8]}… --as {who}: {answer}\n")


async def _private_checks(people: People, change_id: str, out: TextIO) -> None:
    """Who sees a private change: not another requester, yes the auditor."""
    for who in (OUTSIDER, AUDITOR):
        try:
            status = await queries.ask_status(await people(who), TENANT, change_id, principal=who)
            answer = f"sees it ({status.outcome})"
        except CommandRejected as err:
            answer = f"refused ({err.rule}): {err}"
        out.write(f"  {'':>7} upm status {change_id[:8]}… --as {who}: {answer}\n")


async def _run(folder: Path, files: Path, out: TextIO, extras: tuple[str, ...]) -> list[Outcome]:
    people = People(folder)
    results = []
    try:
        me = await people(INITIATOR)
        for n, scenario in enumerate(scenarios(files, extras), 1):
            out.write(f"\n[{n}] {scenario.title}\n")
            command = {"source": "chatops", "reason": "upm demo", **scenario.intent}
            started = time.perf_counter()
            change_id = await client.submit(me, TENANT, command, principal=INITIATOR)
            out.write(f"  change {change_id}\n")
            async with anyio.create_task_group() as tg:
                if scenario.approvers:
                    tg.start_soon(_approve, people, change_id, scenario.approvers, out)
                status = await queries.wait_closed(me, TENANT, change_id, principal=INITIATOR, within=60,
                                                   on_event=_progress(out, started))
            if command.get("visibility") == "private":
                await _private_checks(people, change_id, out)
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
        await people.close()
    return results


def run_demo(folder: Path, out: TextIO = sys.stdout, extras: tuple[str, ...] = ()) -> list[Outcome]:
    """Run the demo in ``folder`` (wiped first), with the targets of ``extras``; return each change's outcome."""
    if folder.exists():
        app.down(folder)
        shutil.rmtree(folder)
    files = files_of(folder)
    files.mkdir(parents=True)
    (files / "z-blocked").write_text("a file where the last step wants a directory\n")
    config = folder / "preflight.yaml"
    config.write_text(DEMO_PREFLIGHT_CONFIG)
    access = folder / "demo-access.yaml"
    access.write_text(DEMO_ACCESS)
    tokens = console_tokens(folder, access)
    out.write(f"Starting UPM: embedded NATS JetStream + {', '.join(app.SERVICE_NAMES)} (one process each) and the "
              "web console\n")
    out.flush()
    started = time.perf_counter()
    state = app.up(folder, extras=extras, access=access, preflight_config=config, console=True)
    out.write(f"  up in {time.perf_counter() - started:.1f}s, NATS at {state['url']}, data in {folder}\n"
              f"  security: {app.security_summary(state)}\n"
              f"  console: {state['console']} while the demo runs (sign in as bob with {tokens['bob']}; every "
              f"person's token is in {folder / TOKENS_FILE})\n")
    for name, where in state.get("targets", {}).items():
        place = where.get("endpoint") or f"{where.get('host')}:{where.get('port')}"
        out.write(f"  {name} at {place}\n")
    try:
        results = anyio.run(_run, folder, files, out, extras)
    finally:
        stopped = app.down(folder)
        out.write(f"\nStopped {', '.join(stopped)}; nothing left running.\n")
    return results


def console_tokens(folder: Path, access: Path) -> dict[str, str]:
    """A console sign-in token for every person of the demo's access file (person → token)."""
    rules = load_access(access)
    return {who: add_token(folder / TOKENS_FILE, who, rules) for who in rules.principals()}


def files_of(folder: Path) -> Path:
    """Where the demo's local resources go: ``targets/`` of its data folder, one of the default
    roots every tenant may write below (:mod:`services.security.scope`)."""
    return folder / "targets"


def expected_outcomes(files: Path, extras: tuple[str, ...] = ()) -> list[str]:
    return [scenario.expected for scenario in scenarios(files, extras)]
