"""Continuous drift reconciliation.

A loop follows the log, folds it into the desired-state inventory (:mod:`events.desired`: what
the log says should exist now, after every update, delete and rollback), and reads back every
managed resource once per interval (but those a change is executing on: they are judged once it
closes) — jittered, rate-limited, bounded in concurrency — and compares it with its baseline.
A drifted or failed read-back is read again (``confirm_retries``) before it counts, so a
transient failure is never reported as drift. Per resource and policy it then only alarms
(``drift.detected``) or also opens a reconcile change of source ``drift`` that goes through the
whole pipeline; when that change succeeds, ``drift.resolved`` is recorded. Each pass appends
``drift.scanned`` (managed, checked, drifted, unknown): coverage is ``checked / managed``, and a
pass that cannot read everything within its interval reports the shortfall honestly.

Drift records live in one change per tenant (``DRIFT_LOG_KEY``); reconcile changes are ordinary
changes. Run one drift loop per deployment (``upm service drift``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import anyio
import msgspec
from nats.aio.client import Client as NATS

from events.codec import digest
from events.commands import idempotent_change_id
from events.desired import Inventory, in_change, resource_key
from events.errors import ConcurrencyConflict, StoreError
from events.ids import new_id
from events.model import (
    ChangeClosed,
    DriftDetected,
    DriftResolved,
    DriftScanned,
    FieldDiff,
    IntentSubmitted,
    Payload,
    StepOutput,
)
from events.plan import Command, Step
from events.store import ChangeLog, EventStore, StoredEvent, new_event
from providers import Known, Observed, Unknown, compare
from providers.reconcile import reconcile_resource
from services.common.inventory import Follower, InventoryBehind
from services.common.runtime import utc_now
from services.guard import RateLimiter
from services.guard.steps import batch_observe, observe_one, run_command
from services.security.secrets import SecretResolver, SecretsConfig, resolved_desired
from services.verifier.config import DriftConfig
from services.verifier.inventory import Managed, managed

log = logging.getLogger("upm.drift")
NAME = "drift"
DRIFT_LOG_KEY = "upm-drift-log"
ACTOR = "verifier"

Status = Literal["ok", "drifted", "unknown"]


class Reading(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of checking one managed resource."""

    key: str
    status: Status
    observed: dict[str, Any] | None = None
    diff: tuple[FieldDiff, ...] = ()
    reads: int = 1
    reason: str = ""


Reader = Callable[[Managed], Awaitable[Observed]]


async def read_resource(item: Managed) -> Observed:
    """Run the resource's read-back (and its supplement, a file's digest) through the guard:
    present, absent (proven), or unknown (refused, timed out, a target that did not answer)."""

    async def run(command: Command) -> StepOutput:
        return await run_command(command, timeout_s=item.step.timeout_s, max_attempts=1)

    _, observed = await observe_one(item.step.resource, item.step.readback, run)
    return observed


async def check(item: Managed, config: DriftConfig, read: Reader = read_resource) -> Reading:
    """Read one resource; a drifted or unanswered read is retried before it counts."""
    reads = 0
    while True:
        reads += 1
        seen = await read(item)
        observed = None if isinstance(seen, Unknown) else seen.fields
        delta = [] if isinstance(seen, Unknown) else compare(item.step.desired, observed)
        if not isinstance(seen, Unknown) and not delta:
            return Reading(key=item.key, status="ok", observed=observed, reads=reads)
        if reads > config.confirm_retries:
            if isinstance(seen, Unknown):
                return Reading(key=item.key, status="unknown", reads=reads, reason=seen.reason)
            diff = tuple(FieldDiff(resource=item.key, field=d.field, desired=d.desired, observed=d.observed)
                         for d in delta)
            return Reading(key=item.key, status="drifted", observed=observed, diff=diff, reads=reads)
        await anyio.sleep(config.confirm_backoff_s * 2 ** (reads - 1))


async def scan(
    items: Sequence[Managed], config: DriftConfig, *, read: Reader = read_resource, within: float | None = None
) -> list[Reading]:
    """Check ``items`` within ``within`` seconds (default: the interval); unchecked ones are left out."""
    results: list[Reading] = []
    limiter = anyio.CapacityLimiter(config.concurrency)
    pacing = RateLimiter(config.rate_per_s, burst=max(1, config.concurrency))

    async def one(item: Managed, prefetched: Known | None) -> None:
        if prefetched is not None and not compare(item.step.desired, prefetched.fields):
            results.append(Reading(key=item.key, status="ok", observed=prefetched.fields))
            return
        async with limiter:  # not batchable, or drifted in the batch: read it on its own, confirmed
            await pacing.acquire(item.tenant)
            results.append(await check(item, config, read))

    with anyio.move_on_after(config.interval_s if within is None else within):
        answered = await batch_observe([m.step for m in items]) if read is read_resource else {}
        async with anyio.create_task_group() as tg:
            for i, item in enumerate(items):
                tg.start_soon(one, item, answered.get(i))
    return sorted(results, key=lambda r: r.key)


def baseline_hash(item: Managed) -> str:
    return digest({item.key: item.step.desired})


def current_hash(item: Managed, observed: dict[str, Any] | None) -> str:
    return digest({item.key: None if observed is None else {f: observed.get(f) for f in item.step.desired}})


class DriftLoop:
    """Keeps the inventory from the log and scans it every interval (see the module docstring)."""

    def __init__(self, nc: NATS, config: DriftConfig, *, read: Reader = read_resource,
                 secrets: SecretResolver | None = None) -> None:
        self.store = EventStore(nc)
        self.config = config
        self.read = read
        self.secrets = secrets or SecretsConfig().resolver()
        self.follower = Follower(self.store, self._folded)
        self.tenants: set[str] = set()
        self.logs: dict[str, ChangeLog] = {}
        self.reported: dict[tuple[str, str], str] = {}
        self.reconciling: dict[str, tuple[str, str]] = {}
        self.scans = 0

    async def run(self, *, ready: anyio.Event | None = None) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.follower.run)
            if ready is not None:
                ready.set()
            while True:
                await anyio.sleep(self.config.interval_s * (1 + random.uniform(-1, 1) * self.config.jitter))
                for tenant in sorted(self.tenants):
                    await self.scan_tenant(tenant)

    @property
    def inventory(self) -> Inventory:
        """The desired-state inventory as the follower has folded it so far."""
        return self.follower.inventory

    @inventory.setter
    def inventory(self, inventory: Inventory) -> None:
        self.follower.inventory = inventory

    async def _folded(self, stored: StoredEvent) -> None:
        """After each event is folded: resolve reconciles as they close."""
        if isinstance(stored.event.payload, ChangeClosed):
            self.tenants |= {r.owner for r in self.inventory.resources.values()}
            await self._resolve(stored.event.tenant, stored.event.change_id, stored.event.payload)

    async def _resolve(self, tenant: str, change_id: str, closed: Any) -> None:
        for key, (t, reconcile_id) in list(self.reconciling.items()):
            if (t, reconcile_id) == (tenant, change_id) and isinstance(closed, ChangeClosed):
                del self.reconciling[key]
                if closed.outcome == "succeeded":
                    self.reported.pop((tenant, key), None)
                    await self._record(tenant, DriftResolved(resource=key, by_change_id=change_id))

    async def scan_tenant(self, tenant: str) -> DriftScanned:
        """One pass over ``tenant``'s managed resources; appends what it found."""
        acting = in_change(self.inventory)  # a change is on it: judged once it closes
        candidates = [m for m in managed(self.inventory, tenant) if resource_key(m.step) not in acting]
        read = {m.key: m.step for m in candidates}  # what each is read against (before secrets are resolved)
        items = [self._resolved(m) for m in candidates]
        started = time.perf_counter()
        readings = await scan(items, self.config, read=self.read)
        by_key = {m.key: m for m in items}
        readings = await self._still_desired(tenant, readings, read)
        for reading in readings:
            if reading.status == "drifted":
                await self._drifted(by_key[reading.key], reading)
            elif reading.status == "unknown":
                log.warning("drift: could not read back %s: %s (tenant %s)", reading.key, reading.reason, tenant)
        summary = DriftScanned(
            managed=len(items),
            checked=sum(r.status != "unknown" for r in readings),
            drifted=sum(r.status == "drifted" for r in readings),
            unknown=sum(r.status == "unknown" for r in readings),
            interval_s=self.config.interval_s,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        self.scans += 1
        await self._record(tenant, summary)
        return summary

    async def _still_desired(self, tenant: str, readings: list[Reading], read: dict[str, Step]) -> list[Reading]:
        """The readings that still judge what the log wants. A read takes time: a rollback, an update or
        a delete may have started on a resource while it was read (the read then sees the change at work,
        not drift). So each reading is judged against the inventory folded up to a log position taken
        after every read: one whose resource is now in a change, or no longer desired as it was when
        read, is dropped (the next pass reads it again). When the inventory cannot catch up in time,
        no drift is judged in this pass."""
        try:
            now = await self.follower.at_least(await self.store.position(), within=max(5.0, self.config.interval_s))
        except (InventoryBehind, StoreError) as exc:
            log.warning("drift: not judging %d reading(s) of tenant %s this pass: %s", len(readings), tenant, exc)
            return []
        acting = in_change(now)
        desired = {m.key: m.step for m in managed(now, tenant) if resource_key(m.step) not in acting}
        return [r for r in readings if desired.get(r.key) == read[r.key]]

    def _resolved(self, item: Managed) -> Managed:
        """``item`` with the desired fields its plan left to run time (a file whose content
        references a secret) computed from the resolved references (:mod:`services.security.secrets`)."""
        desired = resolved_desired(item.step, self.secrets)
        if desired == item.step.desired:
            return item
        return msgspec.structs.replace(item, step=msgspec.structs.replace(item.step, desired=desired))

    async def _drifted(self, item: Managed, reading: Reading) -> None:
        now_hash = current_hash(item, reading.observed)
        if self.reported.get((item.tenant, item.key)) == now_hash or item.key in self.reconciling:
            return
        self.reported[(item.tenant, item.key)] = now_hash
        mode = self.config.mode_for(item.key)
        resource = reconcile_resource(item.step, reading.observed) if mode == "reconcile" else None
        reconcile_id = await self._open_reconcile(item, resource, reading) if resource is not None else None
        await self._record(
            item.tenant,
            DriftDetected(
                resource=item.key,
                diff=reading.diff,
                baseline_hash=baseline_hash(item),
                current_hash=now_hash,
                action="reconcile" if reconcile_id else "alarm",
                reconcile_change_id=reconcile_id,
            ),
        )

    async def _open_reconcile(self, item: Managed, resource: dict[str, Any], reading: Reading) -> str:
        change_id = new_id()
        what = "; ".join(f"{d.field}: {d.desired!r} → {d.observed!r}" for d in reading.diff)
        intent = IntentSubmitted(
            spec={"resources": [resource]},
            initiator="upm-drift",
            reason=f"reconcile drift on {item.key} ({what})",
            environment=item.environment,
        )
        event = new_event(intent, event_id=new_id(), change_id=change_id, tenant=item.tenant, ts=utc_now(),
                          actor=ACTOR, source="drift")
        await self.store.append(ChangeLog(item.tenant, change_id), [event])
        self.reconciling[item.key] = (item.tenant, change_id)
        return change_id

    async def _record(self, tenant: str, payload: Payload) -> None:
        """Append to the tenant's drift log (re-reading it once on a concurrent write)."""
        change_id = idempotent_change_id(tenant, DRIFT_LOG_KEY)
        for _ in range(3):
            log_ = self.logs.get(tenant) or await self.store.read_tail(tenant, change_id)
            self.logs[tenant] = log_
            event = new_event(payload, event_id=new_id(), change_id=change_id, tenant=tenant, ts=utc_now(),
                              actor=ACTOR, source="drift")
            try:
                await self.store.append(log_, [event])
                log_.trim()  # the drift log only grows: keep where to append, not its history
                return
            except ConcurrencyConflict:
                self.logs.pop(tenant, None)
        raise ConcurrencyConflict(change_id, -1, "the drift log kept moving; is a second drift loop running?")
