"""One retry policy for everything that must outlive a passing fault: the supervisor's restarts
of a dead process, a service's loops that talk to NATS while its server restarts.

:class:`RetryPolicy` is modeled on Temporal's: an initial interval, a backoff coefficient, a
maximum interval, plus jitter (a random fraction of the delay taken off, so many waiters do not
wake at once). :meth:`RetryPolicy.delay` is pure (the random draw is a parameter);
:func:`is_transient` says which errors are worth waiting out (a closed, reconnecting or refused
connection, JetStream not answering yet, the stream or a consumer not found while the server
recovers its store); :func:`keep_running` runs a loop body for ever, waiting out transient
errors with the policy and re-raising anything else; :func:`on_conflict` runs a read-decide-append
body again while another writer appended to the same change first.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio

from events.errors import ConcurrencyConflict, ServerRefused, StoreTimeout, StreamNotFound

log = logging.getLogger("upm.retry")
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Attempt ``n`` (1, 2, …) waits ``min(maximum_s, initial_s * backoff**(n-1))``, less up to
    ``jitter`` of itself at random. ``stable_after_s``: a run that lasted this long was a success,
    and the next failure counts from attempt 1 again."""

    initial_s: float = 0.2
    backoff: float = 2.0
    maximum_s: float = 10.0
    jitter: float = 0.3
    stable_after_s: float = 30.0

    def __post_init__(self) -> None:
        problems = [
            (self.initial_s < 0, "initial_s must not be negative"),
            (self.backoff < 1, "backoff must be at least 1"),
            (self.maximum_s < self.initial_s, "maximum_s must be at least initial_s"),
            (not 0 <= self.jitter <= 1, "jitter must be in [0, 1]"),
        ]
        wrong = [text for bad, text in problems if bad]
        if wrong:
            raise ValueError(f"invalid RetryPolicy: {'; '.join(wrong)}")

    def delay(self, attempt: int, draw: float) -> float:
        """The wait before attempt ``attempt`` (from 1), ``draw`` a uniform number in [0, 1)."""
        base = min(self.maximum_s, self.initial_s * self.backoff ** max(0, attempt - 1))
        return base * (1 - self.jitter * draw)

    def next_attempt(self, attempt: int, ran_s: float) -> int:
        """The attempt number after a run of ``ran_s`` seconds that ended in failure."""
        return 1 if ran_s >= self.stable_after_s else attempt + 1


DEFAULT = RetryPolicy()
CONFLICTS = RetryPolicy(initial_s=0.01, backoff=2.0, maximum_s=0.2, jitter=0.5)
"""Between attempts to append to a change another writer appended to (re-read, then append or decide again)."""

@functools.cache
def _transient() -> tuple[type[BaseException], ...]:
    """The errors of NATS being away for a while (nats-py imported on first use: the supervisor, which only
    needs :class:`RetryPolicy`, never loads it)."""
    import nats.errors
    import nats.js.errors

    return (
        nats.errors.ConnectionClosedError,
        nats.errors.ConnectionReconnectingError,
        nats.errors.NoRespondersError,
        nats.errors.NoServersError,
        nats.errors.OutboundBufferLimitError,
        nats.errors.StaleConnectionError,
        nats.errors.TimeoutError,
        nats.js.errors.ServiceUnavailableError,
        nats.js.errors.ServerError,
        nats.js.errors.NotFoundError,
        nats.js.errors.NoStreamResponseError,
        StoreTimeout,
        StreamNotFound,
        TimeoutError,
        ConnectionError,
    )


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is NATS or JetStream being away for a while (worth waiting out), also when
    the event store wrapped it (:func:`events.store.map_error`) or a task group raised it (an
    exception group of nothing but such errors: a pull request answered 503 while a cluster elects
    a consumer leader surfaces that way from the runtime's fetch loop)."""
    if isinstance(exc, _transient()):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(is_transient(e) for e in exc.exceptions)
    return isinstance(exc, ServerRefused) and exc.__cause__ is not None and is_transient(exc.__cause__)


async def keep_running(what: str, body: Callable[[], Awaitable[None]], policy: RetryPolicy = DEFAULT) -> None:
    """Run ``body`` until cancelled: when it fails transiently, log one line and run it again after
    the policy's delay; any other error propagates (the process's supervisor restarts it)."""
    attempt = 0
    while True:
        started = time.monotonic()
        try:
            await body()
            return
        except Exception as exc:
            if not is_transient(exc):
                raise
            attempt = policy.next_attempt(attempt, time.monotonic() - started)
            wait = policy.delay(attempt, random.random())
            log.warning("%s: %s (%s); retrying in %.1fs (attempt %d)", what, exc or type(exc).__name__,
                        type(exc).__name__, wait, attempt)
            await anyio.sleep(wait)


async def within(seconds: float, body: Callable[[], Awaitable[T]], policy: RetryPolicy = DEFAULT) -> T:
    """``body()``, run again after the policy's delay while it fails transiently (a cluster electing a
    stream leader answers nothing for a few seconds), for at most ``seconds``; then its error propagates."""
    deadline = time.monotonic() + seconds
    attempt = 0
    while True:
        try:
            return await body()
        except Exception as exc:
            attempt += 1
            wait = policy.delay(attempt, random.random())
            if not is_transient(exc) or time.monotonic() + wait > deadline:
                raise
            await anyio.sleep(wait)


async def on_conflict(body: Callable[[int], Awaitable[T]], *, attempts: int, policy: RetryPolicy = CONFLICTS) -> T:
    """``body(attempt)`` (attempt from 1; it reads the change, decides and appends), run again after the
    policy's delay while another writer appended to the same change first; the last attempt's
    :class:`~events.errors.ConcurrencyConflict` propagates."""
    for attempt in range(1, attempts):
        try:
            return await body(attempt)
        except ConcurrencyConflict:
            await anyio.sleep(policy.delay(attempt, random.random()))
    return await body(attempts)
