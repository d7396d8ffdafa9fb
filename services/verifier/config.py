"""The verifier's configuration: automatic rollback, SLO, and the drift loop.

Loaded from YAML or JSON (``UPM_VERIFIER_CONFIG`` or a path); every key has a default::

    auto_rollback: {prod: false}        # per environment; default true everywhere else
    verify_slo_ms: 1200                 # verification latency target (the spec's L4 band)
    drift:
      interval_s: 30                    # one pass over every managed resource per interval
      jitter: 0.1                       # ±10 % on each interval
      rate_per_s: 50                    # read-backs per second, per tenant
      concurrency: 8
      confirm_retries: 2                # a drifted or failed read-back is read again before it counts
      confirm_backoff_s: 0.2
      mode: reconcile                   # reconcile | alarm
      modes: {"local_file:*": alarm}    # per resource key (shell-style patterns), first match wins
    secrets: {env: true, dir: null}     # to compare files whose content references a secret (services/security/secrets.py)
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Literal

import msgspec

from services.common.configfile import read_mapping
from services.common.errors import ConfigError
from services.security.secrets import SecretsConfig

DriftMode = Literal["reconcile", "alarm"]


class DriftConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    interval_s: float = 30.0
    jitter: float = 0.1
    rate_per_s: float = 50.0
    concurrency: int = 8
    confirm_retries: int = 2
    confirm_backoff_s: float = 0.2
    mode: DriftMode = "reconcile"
    modes: dict[str, DriftMode] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.rate_per_s <= 0 or self.concurrency < 1 or self.confirm_retries < 0:
            raise ValueError("interval_s and rate_per_s must be positive, concurrency ≥ 1, confirm_retries ≥ 0")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")

    def mode_for(self, key: str) -> DriftMode:
        for pattern, mode in self.modes.items():
            if fnmatch.fnmatchcase(key, pattern):
                return mode
        return self.mode


class VerifierConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    auto_rollback: dict[str, bool] = msgspec.field(default_factory=dict)
    verify_slo_ms: float = 1200.0
    drift: DriftConfig = DriftConfig()
    secrets: SecretsConfig = SecretsConfig()

    def rolls_back_automatically(self, environment: str) -> bool:
        return self.auto_rollback.get(environment, True)


DEFAULT = VerifierConfig()


def load(path: str | Path | None = None) -> VerifierConfig:
    """The configuration at ``path`` (or ``UPM_VERIFIER_CONFIG``), else the defaults."""
    where = path or os.environ.get("UPM_VERIFIER_CONFIG")
    if not where:
        return DEFAULT
    raw = read_mapping(where, what="verifier configuration", error=ConfigError)
    try:
        return msgspec.convert(raw, VerifierConfig)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ConfigError(
            f"verifier configuration {where} is invalid: {exc}. See services/verifier/config.py for the keys."
        ) from exc
