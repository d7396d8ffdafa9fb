"""Blast-radius limits (pure) and the rate limits the executor holds while it runs.

The blast radius of a change is the number of distinct resources its steps mutate (implied
steps included: they mutate too); each wave is bounded as well. The check runs before the
first step, from the plan alone, so a change appended straight to the log (pre-flight bypassed)
is refused all the same. Rates are token buckets per target and per tenant: a step (or an undo)
takes one of each before its ``step.started`` is recorded, so the events' timestamps show the
rate; retries within a step are spaced by the guard's backoff.

The buckets are shared by every executor replica, so the configured rates are the cluster's:
each is a key of the JetStream key-value bucket ``UPM_RATES`` (``tenant.<name>``,
``target.<name>``; file storage, history 1) holding ``{"tokens", "at"}``, ``at`` in UTC epoch
seconds. A take computes the bucket after it with the guard's pure
:func:`~services.guard.ratelimit.take` and writes it only if the key is still at the revision
this process last wrote (no read while no other replica writes); when the write is refused, it
reads the key and takes again. The token is reserved before the wait, so waiting costs no
further round trip and takers queue fairly across replicas; a step's two takes run at once. An
infinite rate has no bucket. Clocks: a bucket's time never runs backwards, so a host whose clock
is behind refills nothing until it catches up; clocks d seconds apart can lend the one ahead up
to d × rate tokens when the one behind advanced the bucket's time, and a time more than
``MAX_SKEW_S`` ahead is logged and trusted only that far.
"""

from __future__ import annotations

import asyncio
import logging
import math
import string
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

import anyio
import msgspec
import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from events.plan import Plan
from services.common import cluster
from services.executor.config import Limits, Rates
from services.executor.errors import ExecutorError
from services.executor.waves import waves_of
from services.guard import RateLimiter
from services.guard.ratelimit import Bucket, take

log = logging.getLogger("upm.executor.limits")

RATES_BUCKET = "UPM_RATES"
MAX_SKEW_S = 1.0
"""How far ahead of this host's clock a bucket's time is trusted (see ``take``'s ``max_skew``)."""
MAX_CONFLICTS = 50
_PLAIN = frozenset(string.ascii_letters + string.digits + "-")


def blast_radius_violation(plan: Plan, limits: Limits) -> str | None:
    """Why the plan is over a blast-radius limit, or ``None``."""
    resources = {s.resource.key for s in plan.steps}
    if len(resources) > limits.max_resources_per_change:
        return (
            f"the change mutates {len(resources)} resources; the blast-radius limit is "
            f"{limits.max_resources_per_change} per change. Split the change, or raise "
            "limits.max_resources_per_change in the executor policy."
        )
    for wave in waves_of(plan):
        count = len({s.resource.key for s in wave.steps})
        if count > limits.max_resources_per_wave:
            return (
                f"wave {wave.name} mutates {count} resources; the blast-radius limit is "
                f"{limits.max_resources_per_wave} per wave. Use more waves, or raise "
                "limits.max_resources_per_wave."
            )
    return None


def bucket_key(kind: str, name: str) -> str:
    """The key of ``name``'s bucket: ``<kind>.<name>``, every byte of the name but a letter, a
    digit or ``-`` escaped as ``_xx`` (``target.arn_3aaws_3aeks...``)."""
    return kind + "." + "".join(chr(b) if chr(b) in _PLAIN else f"_{b:02x}" for b in name.encode())


class _Seen(NamedTuple):
    """A bucket as stored at ``revision`` (``None``, 0: never written)."""

    bucket: Bucket | None
    revision: int


class SharedRateLimiter(RateLimiter):
    """A :class:`RateLimiter` whose buckets are the keys ``<kind>.<name>`` of a JetStream KV
    bucket, so every process using it shares them. ``clock``: UTC epoch seconds."""

    def __init__(
        self,
        kv: KeyValue,
        kind: str,
        rate: float,
        *,
        burst: int,
        rates: Mapping[str, float],
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(rate, burst=burst, rates=rates, clock=clock)
        self.kv = kv
        self.kind = kind
        self._seen: dict[str, _Seen] = {}  # what this process wrote last: no read while it holds
        self._locks: dict[str, anyio.Lock] = {}  # this process's takers queue here, not on the CAS
        self._skew_logged = False

    async def reserve(self, name: str) -> float:
        """Take a token from ``name``'s shared bucket (compare-and-set on its revision, re-read
        on a conflict); the seconds until it is due. An infinite rate has no bucket."""
        rate = self.rate_for(name)
        if rate == math.inf:
            return 0.0
        key = bucket_key(self.kind, name)
        if key not in self._locks:
            self._locks[key] = anyio.Lock()
        async with self._locks[key]:
            seen = self._seen.get(key)
            for _ in range(MAX_CONFLICTS):
                if seen is None:
                    seen = await self._read(key)
                bucket, wait = take(seen.bucket, self.clock(), rate, self.burst, max_skew=MAX_SKEW_S)
                try:
                    revision = await self.kv.update(key, msgspec.json.encode(bucket), last=seen.revision)
                except nats.js.errors.KeyWrongLastSequenceError:
                    seen = None  # another replica took a token in between
                    continue
                self._seen[key] = _Seen(bucket, revision)
                return wait
        raise ExecutorError(
            f"the rate bucket {key} in the key-value bucket {RATES_BUCKET} changed under each of "
            f"{MAX_CONFLICTS} attempts to take a token; the step was not started and will run when its "
            "event is redelivered. Check that only executors write to the bucket."
        )

    async def _read(self, key: str) -> _Seen:
        try:
            entry = await self.kv.get(key)
        except nats.js.errors.KeyNotFoundError as missing:  # never written, or deleted: start it full
            return _Seen(None, missing.entry.revision if missing.entry else 0)
        value, revision = entry.value or b"", entry.revision or 0
        try:
            bucket = msgspec.json.decode(value, type=Bucket)
        except msgspec.DecodeError:
            log.warning("%s in the key-value bucket %s holds %r, not a token bucket; starting it full again",
                        key, RATES_BUCKET, value[:100])
            return _Seen(None, revision)
        ahead = bucket.at - self.clock()
        if ahead > MAX_SKEW_S and not self._skew_logged:
            self._skew_logged = True
            log.warning("the rate bucket %s was written by a host whose clock is %.1f s ahead of this one; "
                        "rates hold only within %.0f s of clock skew: synchronise the executors' clocks (NTP)",
                        key, ahead, MAX_SKEW_S)
        return _Seen(bucket, revision)


class RateLimits:
    """The executor's token buckets, per target and per tenant, shared by its replicas via ``kv``."""

    def __init__(self, kv: KeyValue, rates: Rates, *, clock: Callable[[], float] = time.time) -> None:
        self.per_target = SharedRateLimiter(kv, "target", rates.steps_per_s_per_target, burst=rates.burst,
                                            rates=rates.targets, clock=clock)
        self.per_tenant = SharedRateLimiter(kv, "tenant", rates.steps_per_s_per_tenant, burst=rates.burst,
                                            rates=rates.tenants, clock=clock)

    async def step(self, tenant: str, target: str) -> float:
        """Take the tenant's and the target's tokens for one step (both at once: one round trip)
        and wait until both are due; the seconds waited."""
        wait = max(await asyncio.gather(self.per_tenant.reserve(tenant), self.per_target.reserve(target)))
        await anyio.sleep(wait)
        return wait


async def rate_buckets(js: JetStreamContext) -> KeyValue:
    """The key-value bucket of the shared rate buckets, created (file storage, history 1, the replicas of
    :func:`services.common.cluster.replicas`) if missing."""
    return await cluster.key_value(js, api.KeyValueConfig(
        bucket=RATES_BUCKET, history=1, storage=api.StorageType.FILE, direct=True,
        description="UPM executor rate buckets, per tenant and per target"))
