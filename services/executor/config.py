"""The executor's policy: promotion gates, anomalies, limits, rates, deadlines, credentials.

One YAML or JSON file, from ``UPM_EXECUTOR_CONFIG`` or a path given to :func:`load_config`;
every section and field is optional, and the embedded defaults below run ``upm demo`` as is::

    gates:      {require_healthy: true, max_error_ratio: 0.5, bake_s: 0}
    anomalies:  {max_retries_per_wave: 10, max_failure_ratio: 0.5, min_attempts: 4,
                 on_step_failure: fail}            # fail | pause
    limits:     {max_resources_per_change: 500, max_resources_per_wave: 250}
    rates:      {steps_per_s_per_target: 50, steps_per_s_per_tenant: 100, burst: 50,
                 targets: {}, tenants: {}}         # per-target / per-tenant overrides
    deadlines:  {change_timeout_s: 3600, step_timeout_s: null}   # null: the plan's own
    retries:    {max_attempts: 3}
    guard:      {allow_tls_fallback: false, max_output_bytes: 65536}
    output:     {event_bytes: 4096, bucket: UPM_OUTPUTS}
    credentials: {ttl_s: 900, brokers: {local: none}, token_store: null}
    service:    {concurrency: 8, ack_wait_s: 30}
    secrets:    {env: true, dir: null}   # UPM_SECRET_<NAME>, then <dir>/<NAME> (0600): services/security/secrets.py
    pins: []    # extra pinned CLIs: {binary, version, version_args, pattern}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import msgspec

from services.common.configfile import read_mapping
from services.executor.errors import ExecutorConfigInvalid
from services.guard import GuardPolicy, Pin, PinTable
from services.guard.steps import pin_table
from services.security.secrets import SecretsConfig

ENV_VAR = "UPM_EXECUTOR_CONFIG"


class Gates(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When a wave may promote: health all green, few failed attempts, after a bake time."""

    require_healthy: bool = True
    max_error_ratio: float = 0.5
    bake_s: float = 0.0


class Anomalies(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What pauses a change in the middle of a wave."""

    max_retries_per_wave: int = 10
    max_failure_ratio: float = 0.5
    min_attempts: int = 4
    on_step_failure: Literal["fail", "pause"] = "fail"


class Limits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Blast radius: distinct resources one change (and one wave) may mutate."""

    max_resources_per_change: int = 500
    max_resources_per_wave: int = 250


class Rates(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    steps_per_s_per_target: float = 50.0
    steps_per_s_per_tenant: float = 100.0
    burst: int = 50
    targets: dict[str, float] = msgspec.field(default_factory=dict)
    tenants: dict[str, float] = msgspec.field(default_factory=dict)


class Deadlines(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    change_timeout_s: float = 3600.0
    step_timeout_s: float | None = None


class Retries(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    max_attempts: int = 3


class Guard(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    allow_tls_fallback: bool = False
    max_output_bytes: int = 64 * 1024


class Output(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``event_bytes`` of stdout / stderr go in the step event; the rest is in ``bucket``."""

    event_bytes: int = 4096
    bucket: str = "UPM_OUTPUTS"


class Credentials(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which broker serves each provider's targets (``none``, ``token``), and for how long."""

    ttl_s: float = 900.0
    brokers: dict[str, str] = msgspec.field(default_factory=lambda: {"local": "none"})
    token_store: str | None = None


class Service(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    concurrency: int = 8
    ack_wait_s: float = 30.0


class ExecutorConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole executor policy (see the module docstring)."""

    gates: Gates = Gates()
    anomalies: Anomalies = Anomalies()
    limits: Limits = Limits()
    rates: Rates = Rates()
    deadlines: Deadlines = Deadlines()
    retries: Retries = Retries()
    guard: Guard = Guard()
    output: Output = Output()
    credentials: Credentials = Credentials()
    service: Service = Service()
    secrets: SecretsConfig = SecretsConfig()
    pins: tuple[Pin, ...] = ()

    def __post_init__(self) -> None:
        problems = [
            why
            for bad, why in (
                (not 0 <= self.gates.max_error_ratio <= 1, "gates.max_error_ratio must be 0..1"),
                (self.gates.bake_s < 0, "gates.bake_s must not be negative"),
                (not 0 <= self.anomalies.max_failure_ratio <= 1, "anomalies.max_failure_ratio must be 0..1"),
                (self.limits.max_resources_per_change < 1, "limits.max_resources_per_change must be ≥ 1"),
                (self.limits.max_resources_per_wave < 1, "limits.max_resources_per_wave must be ≥ 1"),
                (self.rates.steps_per_s_per_target <= 0, "rates.steps_per_s_per_target must be positive"),
                (self.rates.steps_per_s_per_tenant <= 0, "rates.steps_per_s_per_tenant must be positive"),
                (any(r <= 0 for r in (*self.rates.targets.values(), *self.rates.tenants.values())),
                 "every rate override must be positive"),
                (self.rates.burst < 1, "rates.burst must be ≥ 1"),
                (self.deadlines.change_timeout_s <= 0, "deadlines.change_timeout_s must be positive"),
                (not 1 <= self.retries.max_attempts <= 10, "retries.max_attempts must be 1..10"),
                (self.output.event_bytes < 0, "output.event_bytes must not be negative"),
                (self.credentials.ttl_s < 60, "credentials.ttl_s must be at least 60"),
                (self.service.concurrency < 1, "service.concurrency must be ≥ 1"),
                (self.service.ack_wait_s < 1, "service.ack_wait_s must be ≥ 1"),
            )
            if bad
        ]
        if problems:
            raise ExecutorConfigInvalid("invalid executor configuration: " + "; ".join(problems) + ".")

    def guard_policy(self) -> GuardPolicy:
        return GuardPolicy(
            allow_tls_fallback=self.guard.allow_tls_fallback, max_output_bytes=self.guard.max_output_bytes
        )

    def pin_table(self) -> PinTable:
        """The shared pins plus the configured ones."""
        return pin_table().with_pins(*self.pins) if self.pins else pin_table()

    def step_timeout(self, planned: float) -> float:
        """A step's timeout: the plan's, capped by the policy's."""
        cap = self.deadlines.step_timeout_s
        return planned if cap is None else min(planned, cap)


DEFAULT = ExecutorConfig()


def parse_config(data: dict[str, Any], *, source: str = "the configuration") -> ExecutorConfig:
    try:
        return msgspec.convert(data, ExecutorConfig)
    except msgspec.ValidationError as exc:
        raise ExecutorConfigInvalid(f"{source}: {exc}; see services/executor/README.md") from exc


def load_config(path: str | Path | None = None) -> ExecutorConfig:
    """The configuration at ``path``, else at ``$UPM_EXECUTOR_CONFIG``, else the defaults."""
    chosen = path or os.environ.get(ENV_VAR)
    if not chosen:
        return DEFAULT
    data = read_mapping(chosen, what="the executor configuration", error=ExecutorConfigInvalid)
    return parse_config(data, source=str(chosen))
