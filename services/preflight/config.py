"""The pre-flight configuration: one YAML or JSON file, with embedded defaults.

The path comes from the caller, else ``UPM_PREFLIGHT_CONFIG``, else the defaults apply (no
groups, no budgets, no windows, the built-in policy pack, quota 100 per type per change). Keys
(all optional; ``"*"`` is the entry for every tenant, a tenant's own entry wins)::

    groups:   {TENANT: {GROUP: [USER, ...]}}        approver groups (merged with "*")
    quotas:   {TENANT: {TYPE: N}}                   resources of a type one change may create
    budgets:  {TENANT: USD}                         monthly budget the cost estimate is scored against
    windows:  {ENV: {timezone, weekly: [..], cron: [{schedule, duration}], outside, applies_to}}
    policies: {TENANT: [FOLDER | builtin, ...]}     Rego packs, relative to this file (builtin: policies/)
    limits:   {NAME: VALUE}                         parameters packs read as input.config
    approval_expiry: 72h                            an approval request expires after this
    release_interval: 30s                           how often scheduled changes are re-checked
    slo:      {p95_ms, window, min_samples}         the pre-flight duration target
    risk:     {low_below, high_from}                score thresholds of the risk levels
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import msgspec

from events.commands import ENVIRONMENTS
from services.common.configfile import read_mapping
from services.preflight.errors import PreflightConfigError
from services.preflight.windows import (
    Window,
    WindowSyntaxError,
    parse_cron,
    parse_duration,
    parse_range,
    zone,
)

ENV_VAR = "UPM_PREFLIGHT_CONFIG"
POLICY_DIR_VAR = "UPM_POLICY_DIR"
BUILTIN = "builtin"


def builtin_pack() -> Path:
    """The default pack: ``$UPM_POLICY_DIR``, else ``policies/`` of the source tree, else of the
    working directory (an installed image copies it there)."""
    explicit = os.environ.get(POLICY_DIR_VAR)
    if explicit:
        return Path(explicit).resolve()
    candidates = (Path(__file__).resolve().parents[2] / "policies", Path.cwd() / "policies")
    return next((c for c in candidates if c.is_dir()), candidates[0])


BUILTIN_PACK = builtin_pack()
Outside = Literal["wait", "refuse"]


class _Cron(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    schedule: str
    duration: str | float


class _Window(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    timezone: str = "UTC"
    weekly: list[str] = msgspec.field(default_factory=list)
    cron: list[_Cron] = msgspec.field(default_factory=list)
    outside: Outside = "wait"
    applies_to: Literal["policy", "all"] = "policy"


class Slo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The pre-flight SLO: P95 of the last ``window`` durations ≤ ``p95_ms`` (after ``min_samples``)."""

    p95_ms: float = 2000.0
    window: int = 100
    min_samples: int = 20


class RiskLevels(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A score below ``low_below`` is low, from ``high_from`` high, medium in between."""

    low_below: float = 20.0
    high_from: float = 50.0


class _Raw(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    groups: dict[str, dict[str, list[str]]] = msgspec.field(default_factory=dict)
    quotas: dict[str, dict[str, int]] = msgspec.field(default_factory=lambda: {"*": {"*": 100}})
    budgets: dict[str, float] = msgspec.field(default_factory=dict)
    windows: dict[str, _Window] = msgspec.field(default_factory=dict)
    policies: dict[str, list[str]] = msgspec.field(default_factory=lambda: {"*": [BUILTIN]})
    limits: dict[str, Any] = msgspec.field(default_factory=lambda: {"max_resources": 50})
    approval_expiry: str | float = "72h"
    release_interval: str | float = "30s"
    slo: Slo = Slo()
    risk: RiskLevels = RiskLevels()


@dataclass(frozen=True)
class EnvWindow:
    """An environment's maintenance window and what happens to a change outside it."""

    window: Window
    outside: Outside
    applies_to: Literal["policy", "all"]


@dataclass(frozen=True)
class PreflightConfig:
    """The resolved configuration (see the module docstring)."""

    groups: dict[str, dict[str, frozenset[str]]] = field(default_factory=dict)
    quotas: dict[str, dict[str, int]] = field(default_factory=lambda: {"*": {"*": 100}})
    budgets: dict[str, float] = field(default_factory=dict)
    windows: dict[str, EnvWindow] = field(default_factory=dict)
    policies: dict[str, tuple[Path, ...]] = field(default_factory=lambda: {"*": (BUILTIN_PACK,)})
    limits: dict[str, Any] = field(default_factory=lambda: {"max_resources": 50})
    approval_expiry: timedelta = timedelta(hours=72)
    release_interval: float = 30.0
    slo: Slo = field(default_factory=Slo)
    risk: RiskLevels = field(default_factory=RiskLevels)
    source: str = "embedded defaults"

    def group_members(self, tenant: str) -> dict[str, frozenset[str]]:
        """Every approver group of ``tenant`` (its own entry over ``"*"``)."""
        return {**self.groups.get("*", {}), **self.groups.get(tenant, {})}

    def quota(self, tenant: str, rtype: str) -> int | None:
        for scope in (self.quotas.get(tenant, {}), self.quotas.get("*", {})):
            for key in (rtype, "*"):
                if key in scope:
                    return scope[key]
        return None

    def budget(self, tenant: str) -> float | None:
        return self.budgets.get(tenant, self.budgets.get("*"))

    def packs(self, tenant: str) -> tuple[Path, ...]:
        return self.policies.get(tenant, self.policies.get("*", ()))


DEFAULT = PreflightConfig()


def load_config(path: str | Path | None = None) -> PreflightConfig:
    """The configuration at ``path``, else at ``$UPM_PREFLIGHT_CONFIG``, else the defaults."""
    chosen = path if path is not None else os.environ.get(ENV_VAR)
    if not chosen:
        return DEFAULT
    file = Path(chosen)
    data = read_mapping(file, what="the pre-flight configuration", error=PreflightConfigError)
    return parse_config(data, source=str(file), base=file.parent)


def parse_config(data: Any, *, source: str = "<config>", base: Path | None = None) -> PreflightConfig:
    """Validate a decoded configuration document (see the module docstring)."""
    try:
        raw = msgspec.convert(data, _Raw)
    except msgspec.ValidationError as exc:
        raise PreflightConfigError(
            f"{source}: {exc}. Known keys: {', '.join(_Raw.__struct_fields__)} (see services/preflight/README.md)"
        ) from exc
    root = base or Path.cwd()

    def bad(where: str, why: str) -> PreflightConfigError:
        return PreflightConfigError(f"{source}: {where}: {why}")

    windows: dict[str, EnvWindow] = {}
    for env, spec in raw.windows.items():
        if env not in ENVIRONMENTS:
            raise bad(f"windows.{env}", f"unknown environment; use one of {', '.join(ENVIRONMENTS)}")
        try:
            window = Window(
                name=env,
                tz=zone(spec.timezone),
                ranges=tuple(parse_range(r) for r in spec.weekly),
                slots=tuple(parse_cron(c.schedule, parse_duration(c.duration)) for c in spec.cron),
            )
        except WindowSyntaxError as exc:
            raise bad(f"windows.{env}", str(exc)) from exc
        if not window.ranges and not window.slots:
            raise bad(f"windows.{env}", "a window needs at least one weekly range or cron slot")
        windows[env] = EnvWindow(window=window, outside=spec.outside, applies_to=spec.applies_to)
    for scope, types in raw.quotas.items():
        for rtype, limit in types.items():
            if limit < 0:
                raise bad(f"quotas.{scope}.{rtype}", f"{limit} is negative; write 0 or more")
    try:
        expiry = parse_duration(raw.approval_expiry)
        interval = parse_duration(raw.release_interval).total_seconds()
    except WindowSyntaxError as exc:
        raise bad("approval_expiry / release_interval", str(exc)) from exc
    if raw.slo.window < 1 or raw.slo.min_samples < 1 or raw.slo.p95_ms <= 0:
        raise bad("slo", "p95_ms must be positive, window and min_samples at least 1")
    if not raw.risk.low_below <= raw.risk.high_from:
        raise bad("risk", "low_below must not exceed high_from")
    policies = {
        tenant: tuple(BUILTIN_PACK if d == BUILTIN else (root / d).resolve() for d in dirs)
        for tenant, dirs in raw.policies.items()
    }
    return PreflightConfig(
        groups={t: {g: frozenset(m) for g, m in gs.items()} for t, gs in raw.groups.items()},
        quotas=dict(raw.quotas),
        budgets=dict(raw.budgets),
        windows=windows,
        policies=policies,
        limits=dict(raw.limits),
        approval_expiry=expiry,
        release_interval=interval,
        slo=raw.slo,
        risk=raw.risk,
        source=source,
    )
