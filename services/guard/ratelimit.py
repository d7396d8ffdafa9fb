"""Token buckets: at most ``rate`` takes a second per key, ``burst`` at once.

Pure core: a :class:`Bucket` is ``tokens`` at time ``at``; :func:`take` refills it, caps it at
``burst``, takes one token and says how long until that token is due. Thin async shell:
:class:`RateLimiter`, one bucket per target in process memory. The executor keeps the same
buckets in a JetStream key-value bucket, shared by its replicas (``services/executor/limits.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

import anyio
import msgspec

from services.guard.errors import PolicyInvalid


class Bucket(msgspec.Struct, frozen=True):
    """``tokens`` left at time ``at`` (seconds on the owner's clock). Negative tokens are takes
    reserved ahead of the refill: their takers are waiting for them."""

    tokens: float
    at: float


def take(
    bucket: Bucket | None, now: float, rate: float, burst: int, *, max_skew: float = math.inf
) -> tuple[Bucket, float]:
    """Take one token at ``now`` from ``bucket`` (``None``: a new, full one): the bucket after,
    and the seconds until the token is due (0: now).

    The bucket refills ``rate`` tokens a second, up to ``burst``. Its time never runs backwards:
    a ``now`` before ``bucket.at`` (a clock a little behind the one that wrote it, or stepped
    back) refills nothing and keeps ``at``, so a negative elapsed time never mints tokens. An
    ``at`` more than ``max_skew`` seconds ahead of ``now`` counts as ``now + max_skew``, so a
    clock far ahead cannot stop the refill for everyone else.
    """
    if bucket is None:
        bucket = Bucket(float(burst), now)
    at = min(bucket.at, now + max_skew)
    tokens = min(float(burst), bucket.tokens + max(0.0, now - at) * rate) - 1.0
    return Bucket(tokens, max(at, now)), (-tokens / rate if tokens < 0 else 0.0)


class RateLimiter:
    """Token buckets keyed by target (``rates`` overrides the default rate per target).

    Each :meth:`acquire` takes one token, waiting for it when the bucket is empty. Tokens are
    reserved before the wait (:meth:`reserve`), so concurrent callers queue fairly without a lock.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: int = 1,
        rates: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for value in (rate, *(rates or {}).values()):
            if value <= 0:
                raise PolicyInvalid(f"a rate must be positive steps per second (got {value}).")
        if burst < 1:
            raise PolicyInvalid(f"burst must be at least 1 (got {burst}).")
        self._rate = rate
        self._rates = dict(rates or {})
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, Bucket] = {}

    def rate_for(self, target: str) -> float:
        """Steps per second allowed against ``target``."""
        return self._rates.get(target, self._rate)

    async def reserve(self, target: str) -> float:
        """Take a token for ``target`` without waiting for it: the seconds until it is due."""
        bucket, wait = take(self._buckets.get(target), self.clock(), self.rate_for(target), self.burst)
        self._buckets[target] = bucket
        return wait

    async def acquire(self, target: str) -> float:
        """Take a token for ``target``; returns the seconds waited for it."""
        wait = await self.reserve(target)
        if wait > 0:
            await anyio.sleep(wait)
        return wait
