"""A small async token bucket per target: at most ``rate`` attempts per second, ``burst`` at once."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import anyio

from services.guard.errors import PolicyInvalid


class RateLimiter:
    """Token buckets keyed by target (``rates`` overrides the default rate per target).

    Each :meth:`acquire` takes one token, waiting for it when the bucket is empty. Tokens are
    reserved before the wait, so concurrent callers queue fairly without a lock.
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
        self._burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def rate_for(self, target: str) -> float:
        """Steps per second allowed against ``target``."""
        return self._rates.get(target, self._rate)

    async def acquire(self, target: str) -> float:
        """Take a token for ``target``; returns the seconds waited for it."""
        rate = self.rate_for(target)
        now = self._clock()
        tokens, last = self._buckets.get(target, (float(self._burst), now))
        tokens = min(float(self._burst), tokens + (now - last) * rate) - 1.0
        self._buckets[target] = (tokens, now)
        wait = -tokens / rate if tokens < 0 else 0.0
        if wait > 0:
            await anyio.sleep(wait)
        return wait
