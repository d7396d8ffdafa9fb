"""``upm conformance``: play the fixed, shared change set and score UPM clause by clause.

It starts everything on embedded defaults (NATS, every service, one moto server, one embedded
PostgreSQL), with the run's own configurations (approvers, a budget, a staging window that opens
every minute, a blast-radius limit, a drift loop of two seconds), then plays every change of
``conformance/changeset-v1/manifest.yaml`` concurrently: the intents, the people (the initiator's
refused self-approval, two approvers, an operator's rollbacks) and the faults (files in the way,
drift behind UPM's back, a path nobody can read). It waits for every change to close — reconcile
changes the drift loop opened and evidence packs included — then judges every clause from the log
(:mod:`projections.clauses`, :mod:`projections.score`) with the manifest's deliberately failing
changes left out of ChangeSuccess / PolicyPass / RollbackSuccess, and writes the report
(:mod:`projections.conformance_report`: ``report.json``, ``report.html``) beside the evidence pack
of every change it cites and the public key that signed them, so the whole claim can be
re-verified offline (``upm evidence verify evidence/ID.evidence.tar --public-key ...``).

On embedded defaults the AWS target sits behind a fault front (:mod:`upm.faultfront`) that plays the
changes' target faults (a transient failure, an error quoting the request). With ``data`` it plays
against an instance ``upm up`` already runs instead — without the fault front, and only if that
instance has the set's configuration, secret and targets (:func:`instance_problems`;
:func:`print_config` writes them and prints the ``upm up`` command).
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import anyio
import msgspec
import yaml

from events.lifecycle import ACTIVE
from projections import conformance_report, reports
from projections.db import ALL_TENANTS
from projections.errors import EvidenceNotFound
from projections.evidence_query import fetch as fetch_pack
from services.common import client
from services.common.configfile import read_mapping
from services.common.connection import SECURITY_ACCESS
from services.common.errors import CommandRejected, ConfigError
from services.common.statefile import read_state
from services.gateway import queries
from upm import app
from upm.demo import People
from upm.faultfront import Answer, FaultFront

CHANGESET = next((c for c in (Path(__file__).resolve().parents[1] / "conformance" / "changeset-v1",
                               Path.cwd() / "conformance" / "changeset-v1") if c.is_dir()),
                 Path("conformance") / "changeset-v1")
"""The change set: in the source tree, else in the working directory (an installed image copies it there)."""
SECRET_NAME = "CONF_TOKEN"
SECRET_VALUE = "AKIACONFORMANCE0TEST"  # shaped like an AWS key id: a leak is what the secret clause looks for
BLAST_LIMIT = 20
WAIT_S = 240.0
CONCURRENT = 16  # changes in flight at once: the whole set in ~3 min on two busy cores
DRIFT_GRACE_S = 10.0
COMMAND_S = 60.0  # a busy machine (CI, two cores) answers a command late rather than never


class Change(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One change of the set (see the manifest's header)."""

    id: str
    title: str
    expect: str
    request: str | None = None
    spec: str | None = None
    iac: str | None = None
    vars: dict[str, str] = msgspec.field(default_factory=dict)
    env: str = "dev"
    variant: str | None = None
    window: str | None = None
    target: str = "local"
    after: str | None = None
    setup: list[dict[str, str]] = msgspec.field(default_factory=list)
    people: list[dict[str, str]] = msgspec.field(default_factory=list)
    faults: list[dict[str, Any]] = msgspec.field(default_factory=list)
    closed_window: bool = False
    exercises: list[str] = msgspec.field(default_factory=list)


class Manifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    version: int
    name: str
    tenant: str
    initiator: str
    folders: list[str]
    people: dict[str, Any]
    changes: list[Change]


def load_manifest(folder: Path = CHANGESET) -> Manifest:
    """The change set; refused if an id repeats or ``after`` names no earlier change."""
    manifest = msgspec.convert(read_mapping(folder / "manifest.yaml", what="the conformance manifest", error=ValueError), Manifest)
    seen: set[str] = set()
    for ch in manifest.changes:
        if ch.id in seen:
            raise ValueError(f"conformance manifest: change id {ch.id} repeats")
        if ch.after is not None and ch.after not in seen:
            raise ValueError(f"conformance manifest: {ch.id} comes after {ch.after}, which is not an earlier change")
        if sum(x is not None for x in (ch.request, ch.spec, ch.iac)) != 1:
            raise ValueError(f"conformance manifest: {ch.id} needs exactly one of request, spec, iac")
        seen.add(ch.id)
    return manifest


def subset(manifest: Manifest, ids: Iterable[str]) -> Manifest:
    """The manifest cut to the changes ``ids`` and the earlier changes they come after."""
    by_id = {ch.id: ch for ch in manifest.changes}
    wanted: set[str] = set()
    for cid in ids:
        if cid not in by_id:
            raise ValueError(f"no change {cid} in the conformance manifest {manifest.name}")
        while cid is not None and cid not in wanted:
            wanted.add(cid)
            cid = by_id[cid].after  # type: ignore[assignment]
    return msgspec.structs.replace(manifest, changes=[ch for ch in manifest.changes if ch.id in wanted])


def _fill(text: str, root: Path, variables: Mapping[str, str]) -> str:
    text = text.replace("{root}", str(root))
    for name, value in variables.items():
        text = text.replace("{" + name + "}", value)
    return text


def intent(ch: Change, root: Path, folder: Path = CHANGESET) -> dict[str, Any]:
    """The intent command of a change."""
    body: dict[str, Any] = {"source": "api", "reason": f"conformance {ch.id}: {ch.title}", "environment": ch.env}
    if ch.request is not None:
        body["request"] = _fill(ch.request, root, ch.vars)
    elif ch.spec is not None:
        body["spec"] = yaml.safe_load(_fill((folder / ch.spec).read_text(), root, ch.vars))
    elif ch.iac is not None:
        body["spec"] = {"format": "hcl", "files": {Path(ch.iac).name: (folder / ch.iac).read_text()}}
    if ch.variant:
        body["variant"] = ch.variant
    if ch.window:
        body["window"] = ch.window.replace("{this-hour}", _this_hour())
    return body


def _this_hour() -> str:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return f"{(now - timedelta(minutes=1)):%Y-%m-%dT%H:%MZ}/{(now + timedelta(hours=1)):%Y-%m-%dT%H:%MZ}"


def config_bodies(people: Mapping[str, Any], extras: tuple[str, ...]) -> dict[str, tuple[str, dict[str, Any]]]:
    """The run's configurations: env var → (file name, content)."""
    preflight = {
        # the initiator is an approver too, so only separation of duties keeps them from approving their own change
        "groups": {"*": {"platform-owners": [*people["approvers"], people["initiator"]]}},
        "budgets": {"*": 25},
        # staging opens for 20 s every minute: a change submitted while it is closed waits for it
        "windows": {"staging": {"timezone": "UTC", "cron": [{"schedule": "* * * * *", "duration": 20}],
                                "outside": "wait", "applies_to": "all"}},
        "release_interval": "1s",
        # an SLO no pre-flight meets, reached on purpose: the breach must be recorded (preflight.l4.slo)
        "slo": {"p95_ms": 1, "window": 20, "min_samples": 1},
    }
    verifier = {"verify_slo_ms": 1,  # likewise for the post-change SLO check (verify.l4.slo)
                "drift": {"interval_s": 2.0, "jitter": 0.0, "confirm_backoff_s": 0.05,
                          "modes": {"*drift-alarm*": "alarm"}}}
    brokers = {"local": "none"} | ({"aws": "sts"} if "aws" in extras else {}) | (
        {"postgres": "postgres"} if "postgres" in extras else {})
    executor = {"credentials": {"brokers": brokers},
                "limits": {"max_resources_per_change": BLAST_LIMIT}}
    return {"UPM_PREFLIGHT_CONFIG": ("preflight.json", preflight), "UPM_VERIFIER_CONFIG": ("verifier.json", verifier),
            "UPM_EXECUTOR_CONFIG": ("executor.json", executor),
            "UPM_PLANNER_CONFIG": ("planner.json", {"aws_account_id": "123456789012"})}


def configs(folder: Path, people: Mapping[str, Any], extras: tuple[str, ...]) -> dict[str, Path]:
    """The run's configurations, written under ``folder``: env var → file."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for env, (name, body) in config_bodies(people, extras).items():
        path = folder / name
        path.write_text(json.dumps(body, indent=2))
        out[env] = path
    return out


class Played(msgspec.Struct, kw_only=True):
    """What happened to one change of the set."""

    id: str
    title: str
    change_id: str | None = None
    expect: str
    outcome: str | None = None
    reason: str = ""
    refused: str = ""
    people: list[str] = msgspec.field(default_factory=list)
    seconds: float = 0.0


class Player:
    """Plays the set against a running UPM (one connection per person)."""

    def __init__(self, manifest: Manifest, people: People, root: Path, out: TextIO, ask: reports.Ask,
                 front: FaultFront | None = None) -> None:
        self.m = manifest
        self.front = front
        self.ask = ask
        self.people = people
        self.root = root
        self.out = out
        self.done = {ch.id: anyio.Event() for ch in manifest.changes}
        self.played = {ch.id: Played(id=ch.id, title=ch.title, expect=ch.expect) for ch in manifest.changes}
        self.slots = anyio.Semaphore(CONCURRENT)

    async def all(self) -> list[Played]:
        async with anyio.create_task_group() as tg:
            for ch in self.m.changes:
                tg.start_soon(self.one, ch)
        return [self.played[ch.id] for ch in self.m.changes]

    async def one(self, ch: Change) -> None:
        try:
            if ch.after:
                await self.done[ch.after].wait()
            async with self.slots:
                await self._play(ch)
        except Exception as err:  # one change's trouble is its row of the report, not the end of the run
            p = self.played[ch.id]
            p.outcome, p.refused = "error", f"{type(err).__name__}: {err}"[:500]
            self.out.write(f"  {ch.id:<5} ERROR        {p.refused}\n")
        finally:
            self.done[ch.id].set()

    async def _play(self, ch: Change) -> None:
        p = self.played[ch.id]
        started = time.perf_counter()
        for item in ch.setup:
            path = self.root / item["file"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("a file where the change wants a directory\n")
        for fault in ch.faults:
            if "answer" in fault:  # the target fails this change's requests first (a transient fault)
                if self.front is None:
                    p.people.append("played without its target fault: no fault front (only on embedded defaults)")
                else:
                    self.front.answer(msgspec.convert(fault["answer"], Answer))
        if ch.closed_window:
            await _window_closed()
        me = await self.people(self.m.initiator)
        try:
            cid = await client.submit(me, self.m.tenant, intent(ch, self.root), principal=self.m.initiator, within=COMMAND_S)
        except CommandRejected as err:
            p.refused, p.outcome = f"{err.rule}: {err}", "refused"
            return
        p.change_id = cid
        approvals = [x for x in ch.people if "approve" in x or "self_approve" in x]
        if approvals:
            await self._approve(cid, approvals, p)
        status = await queries.wait_closed(me, self.m.tenant, cid, principal=self.m.initiator, within=WAIT_S)
        p.outcome, p.reason = status.outcome or status.state, status.reason[:300]
        for fault in ch.faults:
            await self._fault(cid, fault, p)
        for person in ch.people:
            if "rollback" in person:
                p.outcome = await self._rollback(cid, person["rollback"], p)
        p.seconds = round(time.perf_counter() - started, 2)
        self.out.write(f"  {ch.id:<5} {p.outcome or p.refused:<12} {ch.title}\n")
        self.out.flush()

    async def _approve(self, cid: str, actions: list[dict[str, str]], p: Played) -> None:
        me = await self.people(self.m.initiator)
        async for stored in queries.follow(me, self.m.tenant, principal=self.m.initiator, change_id=cid):
            if stored.event.type == "approval.requested":
                break
        for action in actions:
            who = action.get("approve") or action["self_approve"]
            try:
                await client.command(await self.people(who), self.m.tenant, "approve",
                                     {"change_id": cid, "reason": "conformance review"}, principal=who,
                                     within=COMMAND_S)
                answer = "ok"
            except CommandRejected as err:
                answer = f"refused ({err.rule})"
            p.people.append(f"approve as {who}: {answer}")

    async def _fault(self, cid: str, fault: Mapping[str, Any], p: Played) -> None:
        if "chmod" in fault:
            path = self.root / fault["chmod"]["path"]
            os.chmod(path, int(fault["chmod"]["mode"], 8))
            p.people.append(f"drift: chmod {fault['chmod']['mode']} {path}")
            await self._drift_seen(path)
        elif "unreadable" in fault:
            path = self.root / fault["unreadable"]
            path.rename(path.with_name(path.name + ".moved"))
            path.symlink_to(path.name)  # a loop: every read below it fails, and says why
            p.people.append(f"unreadable: {path} is a symlink to itself")

    async def _drift_seen(self, path: Path) -> None:
        """Until the drift loop reported drift on ``path`` (its events are the tenant's drift log, not the change's)."""
        sql = (f"SELECT count(*) AS n FROM events WHERE type = 'drift.detected' "
               f"AND payload->>'$.resource' LIKE '%:{str(path).replace(chr(39), '')}'")
        with anyio.fail_after(WAIT_S):
            while True:
                if reports.records(await self.ask(sql))[0]["n"]:
                    return
                await anyio.sleep(1.0)

    async def _rollback(self, cid: str, operator: str, p: Played) -> str:
        try:
            await client.command(await self.people(operator), self.m.tenant, "rollback",
                                 {"change_id": cid, "reason": "conformance: operator rollback"}, principal=operator,
                                 within=COMMAND_S)
        except CommandRejected as err:
            p.people.append(f"rollback as {operator}: refused ({err.rule})")
            return p.outcome or ""
        p.people.append(f"rollback as {operator}: ok")
        me = await self.people(self.m.initiator)
        with anyio.fail_after(WAIT_S):
            while True:
                events = await queries.read_change(me, self.m.tenant, cid, principal=self.m.initiator)
                types = [e.event.type for e in events]
                after = types[types.index("rollback.approved"):] if "rollback.approved" in types else []
                ended = [i for i, t in enumerate(after) if t in ("rollback.completed", "rollback.failed")]
                if ended and "evidence.published" in after[ended[0]:]:
                    status = await queries.ask_status(me, self.m.tenant, cid, principal=self.m.initiator, within=COMMAND_S)
                    if status.state not in ACTIVE:  # a pack may be out before the rollback's verification ends
                        return status.outcome or status.state
                await anyio.sleep(0.5)


async def _window_closed() -> None:
    """Wait until the staging window (the first 20 s of each minute) is closed for a while yet."""
    second = datetime.now(UTC).second
    if not 25 <= second <= 45:
        await anyio.sleep((25 - second) % 60)


SETTLED_SQL = (
    "SELECT count(*) FILTER (WHERE outcome IS NULL) AS open, "
    "count(*) FILTER (WHERE outcome IS NOT NULL AND permalink IS NULL) AS unpublished, "
    # the drift loop has looked at the tenant since the last execution or rollback ended
    "coalesce((SELECT max(seq) FROM events WHERE type = 'drift.scanned'), 0) > coalesce((SELECT max(seq) "
    "FROM events WHERE type IN ('execution.completed', 'rollback.completed', 'rollback.failed')), 0) AS scanned "
    "FROM changes"
)


async def _settle(ask: reports.Ask, out: TextIO) -> None:
    """Until every change (reconcile changes included) is closed and has its evidence pack."""
    settled_at: float | None = None
    with anyio.fail_after(WAIT_S):
        while True:
            row = reports.records(await ask(SETTLED_SQL))[0]
            settled = not row["open"] and not row["unpublished"]
            settled_at = (settled_at or time.monotonic()) if settled else None
            # a tenant with nothing left to manage gets no drift pass: give the loop a few intervals, no more
            if settled and (row["scanned"] or time.monotonic() - (settled_at or 0.0) > DRIFT_GRACE_S):
                return
            out.write(f"  waiting: {row['open']} open, {row['unpublished']} without an evidence pack"
                      f"{'' if row['scanned'] else ', the drift loop'}\n")
            out.flush()
            await anyio.sleep(2.0)


async def _play(folder: Path, out_dir: Path, manifest: Manifest, root: Path, out: TextIO,
                front: FaultFront | None = None, *, tenant: str = ALL_TENANTS, fresh: str = "") -> dict[str, Any]:
    """Play the set, wait for it to settle, judge the log (of ``tenant``), fetch the packs it cites. With
    ``fresh`` (how to get a fresh instance), refused when the set's tenant already has changes."""
    people = People(folder)
    try:
        started = time.perf_counter()
        me = await people(manifest.initiator)
        ask = reports.bus(me, tenant, principal=manifest.initiator, timeout_s=60.0, max_rows=10_000)
        if fresh:
            before = reports.records(await ask(f"SELECT count(*) AS n FROM changes WHERE tenant = '{manifest.tenant}'"))
            if before[0]["n"]:
                raise ConfigError(f"the tenant {manifest.tenant} of this instance already has {before[0]['n']} changes "
                                  "(an earlier conformance run?): the set's creates would meet what they made and the "
                                  f"clauses would judge them too; play it on a fresh instance: {fresh}")
        played = await Player(manifest, people, root, out, ask, front).all()
        await _settle(ask, out)
        excluded = faults(played)
        result = await reports.scored(ask, excluded=excluded)
        play_s = round(time.perf_counter() - started, 1)
        evidence = out_dir / "evidence"
        evidence.mkdir(parents=True, exist_ok=True)
        packs: dict[str, str] = {}
        for cid in sorted(conformance_report.cited(result, played_ids(played))):
            try:
                pack = await fetch_pack(me, cid, principal=manifest.initiator, tenant=manifest.tenant)
            except EvidenceNotFound:  # the tenant's drift log is not a change with a pack of its own
                continue
            name = f"evidence/{cid}.evidence.tar"
            (out_dir / name).write_bytes(pack.data)
            packs[cid] = name
        return {"score": result, "played": played, "packs": packs, "excluded": excluded, "play_s": play_s}
    finally:
        await people.close()


def faults(played: list[Played]) -> dict[str, list[str]]:
    """The changes the set makes fail on purpose, per KPI: ChangeSuccess and PolicyPass leave out every change
    not expected to succeed; RollbackSuccess the rollbacks expected to fail (of changes expected to end failed)."""
    failing = sorted(p.change_id for p in played if p.change_id and p.expect != "succeeded")
    rollbacks = sorted(p.change_id for p in played if p.change_id and p.expect == "failed")
    return {"change_success_pct": failing, "policy_pass_pct": failing, "rollback_success_pct": rollbacks}


def played_ids(played: list[Played]) -> set[str]:
    return {p.change_id for p in played if p.change_id}


def run(out_dir: Path, *, out: TextIO = sys.stderr, extras: tuple[str, ...] = ("aws", "postgres"),
        manifest: Manifest | None = None, data: Path | None = None) -> conformance_report.Report:
    """Play the change set and write the report into ``out_dir``; return it. On embedded defaults in
    ``out_dir/data`` (wiped first), or, with ``data``, against the instance ``upm up --data DATA`` runs
    (refused, saying how to start it, unless it has what the set needs: :func:`instance_problems`)."""
    manifest = manifest or load_manifest()
    for name in ("evidence", "report.json", "report.html"):
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    started = time.perf_counter()
    if data is None:
        folder = out_dir / "data"
        done = _embedded(folder, out_dir, manifest, extras, out)
    else:
        folder = data.resolve()
        done = _on_instance(folder, out_dir, manifest, extras, out)
    key = folder / "keys" / "ed25519.pub"
    if key.exists():
        shutil.copy(key, out_dir / "ed25519.pub")
    shutil.copy(CHANGESET / "manifest.yaml", out_dir / "manifest.yaml")
    report = conformance_report.build(
        manifest=manifest.name, score=done["score"], played=[msgspec.to_builtins(p) for p in done["played"]],
        packs=done["packs"], excluded=done["excluded"], seconds=round(time.perf_counter() - started, 1),
        public_key="ed25519.pub" if key.exists() else "",
    )
    (out_dir / "report.json").write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2))
    (out_dir / "report.html").write_text(conformance_report.html(report))
    return report


def _targets_root(folder: Path, manifest: Manifest, sub: str = "") -> Path:
    """The set's local folders, below the instance's ``targets`` (a tenant's default scope)."""
    root = folder / "targets" / sub if sub else folder / "targets"
    for name in manifest.folders:
        (root / name).mkdir(parents=True, exist_ok=True)
    return root


def _embedded(folder: Path, out_dir: Path, manifest: Manifest, extras: tuple[str, ...], out: TextIO) -> dict[str, Any]:
    """Start UPM in ``folder`` (wiped first) with the run's configuration, play the set, stop it."""
    if folder.exists():
        app.down(folder)
        shutil.rmtree(folder)
    root = _targets_root(folder, manifest)
    saved = {k: os.environ.get(k) for k in ("UPM_PREFLIGHT_CONFIG", "UPM_VERIFIER_CONFIG", "UPM_EXECUTOR_CONFIG",
                                             "UPM_PLANNER_CONFIG", f"UPM_SECRET_{SECRET_NAME}")}
    os.environ |= {env: str(path) for env, path in configs(folder / "config", _people(manifest), extras).items()}
    os.environ[f"UPM_SECRET_{SECRET_NAME}"] = SECRET_VALUE  # the executor and the verifier inherit it
    started = time.perf_counter()
    out.write(f"upm conformance: {manifest.name}, {len(manifest.changes)} changes; starting UPM in {folder}\n")
    front = FaultFront() if "aws" in extras else None
    try:
        state = app.up(folder, extras=extras, aws_front=front.start if front else None)
        out.write(f"  up in {time.perf_counter() - started:.1f}s, NATS at {state['url']}\n")
        try:
            done: dict[str, Any] = anyio.run(_play, folder, out_dir, manifest, root, out, front)
            return done
        finally:
            app.down(folder)
    finally:
        if front is not None:
            front.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _people(manifest: Manifest) -> dict[str, Any]:
    return {**manifest.people, "initiator": manifest.initiator}


# -- against a running instance -------------------------------------------------------------------


def print_config(folder: Path, manifest: Manifest, extras: tuple[str, ...], data: Path | None = None) -> str:
    """Write the set's configuration files into ``folder``; the ``upm up`` command that starts an
    instance ``upm conformance --data`` can play the set against."""
    files = configs(folder.resolve(), _people(manifest), extras)
    env = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in files.items() if k != "UPM_PREFLIGHT_CONFIG")
    where = shlex.quote(str(data)) if data is not None else "DATA"
    return (f"UPM_SECRET_{SECRET_NAME}={SECRET_VALUE} {env} upm up --data {where}"
            f" --with {shlex.quote(','.join(extras))} --preflight-config {shlex.quote(str(files['UPM_PREFLIGHT_CONFIG']))}")


def instance_problems(state: Mapping[str, Any], manifest: Manifest, extras: tuple[str, ...]) -> list[str]:
    """What the instance (its ``upm up`` state) lacks that the set needs; empty when it can play it."""
    problems = []
    config = state.get("config") or {}
    for env, (name, want) in config_bodies(_people(manifest), extras).items():
        path = config.get(env)
        if path is None:
            problems.append(f"its services were started without {env} (the set's {name})")
            continue
        try:
            got = read_mapping(Path(path), what=env, error=ValueError)
        except (OSError, ValueError) as err:
            problems.append(f"{env} {path} cannot be read: {err}")
            continue
        problems += [f"{env} {path}: {key} is {_short(got.get(key))}, the set needs {_short(value)}"
                     for key, value in want.items() if got.get(key) != value]
    if SECRET_NAME not in (state.get("secret_names") or []):
        problems.append(f"its services have no secret {SECRET_NAME} (UPM_SECRET_{SECRET_NAME} in `upm up`'s environment)")
    problems += [f"it has no {name} target (`upm up --with {name}`)" for name in extras
                 if name not in (state.get("targets") or {})]
    if state.get("security") == SECURITY_ACCESS:
        problems.append("it was started with --access: the set's people have no roles there (start it without --access)")
    return problems


def _short(value: Any) -> str:
    text = json.dumps(value) if value is not None else "missing"
    return text if len(text) <= 120 else text[:117] + "..."


def _on_instance(folder: Path, out_dir: Path, manifest: Manifest, extras: tuple[str, ...],
                 out: TextIO) -> dict[str, Any]:
    """Play the set against the instance ``upm up --data folder`` runs, without its fault front."""
    state = read_state(folder)
    d, w = shlex.quote(str(folder)), shlex.quote(",".join(extras))
    how = (f"`upm down --data {d}`, then `upm conformance --print-config {d}-config --data {d} --with {w}` writes the "
           "set's configuration and prints the `upm up` command that starts an instance with it; run that command, "
           "then this one again (a data folder that played the set before needs a fresh one)")
    if state is None or not app.is_running(folder):
        raise ConfigError(f"no UPM instance runs for {folder} (no live `upm up --data {folder}`); to start one: {how}")
    problems = instance_problems(state, manifest, extras)
    if problems:
        raise ConfigError(f"the instance of {folder} cannot play {manifest.name}: " + "; ".join(problems) + f". To fix: {how}")
    out.write(f"upm conformance: {manifest.name}, {len(manifest.changes)} changes, against the instance of {folder} "
              f"(NATS {state.get('url')}; no fault front: target faults are not played)\n")
    done: dict[str, Any] = anyio.run(functools.partial(
        _play, folder, out_dir, manifest, _targets_root(folder, manifest, "conformance"), out, tenant=manifest.tenant,
        fresh=how))
    return done
