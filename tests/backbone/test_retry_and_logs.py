"""The shared retry policy (pure), the transient-error test, and the JSON log lines."""

from __future__ import annotations

import io
import json
import logging

import nats.errors
import nats.js.errors
import pytest

from events.errors import ConcurrencyConflict, ServerRefused, StoreTimeout
from services.common import logs, retry
from services.common.retry import RetryPolicy, is_transient

FAST = RetryPolicy(initial_s=0.001, maximum_s=0.002)


def test_delays_grow_exponentially_up_to_the_maximum_less_their_jitter() -> None:
    policy = RetryPolicy(initial_s=0.25, backoff=2.0, maximum_s=15.0, jitter=0.3)
    assert [policy.delay(n, 0.0) for n in (1, 2, 3, 4)] == [0.25, 0.5, 1.0, 2.0]
    assert policy.delay(20, 0.0) == 15.0
    assert policy.delay(3, 0.999) == pytest.approx(1.0 * (1 - 0.3 * 0.999))  # jitter only shortens
    assert all(0.7 * policy.delay(n, 0.0) <= policy.delay(n, d) <= policy.delay(n, 0.0)
               for n in range(1, 10) for d in (0.0, 0.5, 0.99))


def test_a_run_that_lasted_counts_the_next_failure_from_the_first_attempt() -> None:
    policy = RetryPolicy(stable_after_s=30.0)
    assert policy.next_attempt(5, ran_s=1.0) == 6
    assert policy.next_attempt(5, ran_s=31.0) == 1


def test_a_policy_that_makes_no_sense_is_refused_with_every_reason() -> None:
    with pytest.raises(ValueError, match=r"backoff must be at least 1.*jitter must be in"):
        RetryPolicy(backoff=0.5, jitter=1.5)


async def test_a_conflict_runs_the_body_again_and_the_last_one_propagates() -> None:
    seen: list[int] = []

    async def twice_conflicting(attempt: int) -> str:
        seen.append(attempt)
        if attempt < 3:
            raise ConcurrencyConflict("upm.evt.t.c", 1, "another writer")
        return "stored"

    assert await retry.on_conflict(twice_conflicting, attempts=5, policy=FAST) == "stored"
    assert seen == [1, 2, 3]

    async def always(attempt: int) -> str:
        seen.append(attempt)
        raise ConcurrencyConflict("upm.evt.t.c", 1, "another writer")

    seen.clear()
    with pytest.raises(ConcurrencyConflict):
        await retry.on_conflict(always, attempts=4, policy=FAST)
    assert seen == [1, 2, 3, 4]


def test_nats_being_away_is_transient_and_a_refusal_or_a_conflict_is_not() -> None:
    for exc in (nats.errors.ConnectionClosedError(), nats.errors.NoRespondersError(),
                nats.errors.ConnectionReconnectingError(), nats.js.errors.ServiceUnavailableError(),
                StoreTimeout("no answer")):
        assert is_transient(exc), exc
    wrapped = ServerRefused("NATS error on the stream: nats: connection closed")
    wrapped.__cause__ = nats.errors.ConnectionClosedError()
    assert is_transient(wrapped)
    assert not is_transient(ServerRefused("permissions violation"))
    assert not is_transient(ConcurrencyConflict("upm.evt.t.c.>", 3))
    assert not is_transient(ValueError("a bug"))


def test_a_log_record_is_one_json_line_with_its_service_and_the_change_being_handled() -> None:
    out = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logs.configure("executor", out)
        logger = logging.getLogger("upm.test")
        logger.info("outside")
        with logs.context(change_id="c1", event_id="e1"):
            logger.info("handled %s", "step.completed", extra={"fields": {"delivery": 2}})
            try:
                raise RuntimeError("boom")
            except RuntimeError:
                logger.exception("failed")
    finally:
        root.handlers[:], root.level = saved
        logging.captureWarnings(False)
    first, second, third = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["service"] == "executor" and first["level"] == "info" and first["message"] == "outside"
    assert first["time"].endswith("Z") and "change_id" not in first
    assert second | {"time": "-"} == {"time": "-", "service": "executor", "level": "info", "logger": "upm.test",
                                      "message": "handled step.completed", "change_id": "c1", "event_id": "e1",
                                      "delivery": 2}
    assert third["level"] == "error" and "RuntimeError: boom" in third["exc"]


def test_in_a_process_hosting_several_services_each_record_and_last_error_is_its_own_service_s() -> None:
    out = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    errors = logs.LastError()
    try:
        logs.configure("gateway+planner", out)
        root.addHandler(errors)
        logger = logging.getLogger("upm.test")
        with logs.serving("planner"):
            logger.error("planner broke")
        with logs.serving("gateway"):
            logger.info("gateway fine")
        logger.info("the process itself")
    finally:
        root.handlers[:], root.level = saved
        logging.captureWarnings(False)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["service"], r["message"]) for r in records] == [
        ("planner", "planner broke"), ("gateway", "gateway fine"), ("gateway+planner", "the process itself")]
    planner = errors.of("planner")
    assert planner is not None and planner["message"] == "planner broke"
    assert errors.of("gateway") is None  # another service's error is not the gateway's
