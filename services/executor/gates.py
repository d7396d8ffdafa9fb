"""Promotion gates and anomaly detection (pure).

After each wave of a progressive plan, the wave's health checks and its attempt record decide
whether it may promote: every check green (``gates.require_healthy``) and the share of failed
attempts at most ``gates.max_error_ratio``. While a wave runs, a spike of retries or a failure
ratio over the policy pauses the change at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from events.model import Check, StepOutput
from services.executor.config import Anomalies, Gates


@dataclass(frozen=True)
class Verdict:
    """``ok`` or the ``anomaly`` kind and the ``reason`` for people."""

    ok: bool
    anomaly: str = ""
    reason: str = ""
    error_ratio: float = 0.0


def error_ratio(outputs: Sequence[StepOutput]) -> tuple[int, int]:
    """(failed attempts, attempts) over ``outputs``."""
    attempts = sum(max(1, o.attempts) for o in outputs)
    failed = sum(sum(1 for t in o.tries if t.verdict != "ok") if o.tries else int(o.rc != 0) for o in outputs)
    return failed, attempts


def anomaly(outputs: Sequence[StepOutput], policy: Anomalies) -> Verdict:
    """Whether the wave so far shows an anomaly that must pause the change now."""
    failed, attempts = error_ratio(outputs)
    retries = sum(max(0, o.attempts - 1) for o in outputs)
    ratio = failed / attempts if attempts else 0.0
    if retries > policy.max_retries_per_wave:
        return Verdict(False, "retries", f"{retries} retried attempts in this wave (the policy allows "
                       f"{policy.max_retries_per_wave}): the targets look unhealthy", ratio)
    if attempts >= policy.min_attempts and ratio > policy.max_failure_ratio:
        return Verdict(False, "failure-ratio", f"{failed} of {attempts} attempts failed in this wave "
                       f"({ratio:.0%} > {policy.max_failure_ratio:.0%})", ratio)
    return Verdict(True, error_ratio=ratio)


def gate(checks: Sequence[Check], outputs: Sequence[StepOutput], policy: Gates) -> Verdict:
    """The promotion gate of a finished wave."""
    failed, attempts = error_ratio(outputs)
    ratio = failed / attempts if attempts else 0.0
    red = [c for c in checks if not c.ok]
    if policy.require_healthy and red:
        detail = "; ".join(f"{c.target}: {c.detail}" for c in red)
        return Verdict(False, "health", f"health check red for {len(red)} of {len(checks)}: {detail}", ratio)
    if ratio > policy.max_error_ratio:
        return Verdict(False, "error-ratio", f"{failed} of {attempts} attempts failed ({ratio:.0%} > "
                       f"{policy.max_error_ratio:.0%} allowed to promote)", ratio)
    return Verdict(True, error_ratio=ratio)
