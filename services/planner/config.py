"""Planner configuration: defaults the compiler fills in, loadable from a YAML or JSON file.

Example (every key optional)::

    ssh_public_key: "ssh-ed25519 AAAA…"   # az aks create --ssh-key-value (a public key, not a secret);
                                          # no default: an AKS create is refused until it is set
    variant: all-at-once                  # default rollout variant
    waves: ["1", "25%", "100%"]           # cumulative wave sizes for the waves variant
    aws_region: us-east-1
    aws_account_id: "123456789012"        # for SQS queue URLs; no default: SQS is refused until set
    azure_location: eastus
    k8s_targets: [default]                # clusters when a request names none
    postgres_target: default
    costs: {az_aks: 70.08}                # monthly USD per resource (per node for AKS)
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import msgspec

from services.planner.errors import ConfigError
from services.planner.model import VARIANTS
from services.planner.spec import read_document

_WAVE = re.compile(r"(\d+)(%?)")


class PlannerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Defaults and tables the compiler uses; see the module docstring for the file form."""

    ssh_public_key: str = ""
    variant: str = "all-at-once"
    waves: tuple[str, ...] = ("1", "25%", "100%")
    aws_region: str = "us-east-1"
    aws_account_id: str = ""
    azure_location: str = "eastus"
    k8s_targets: tuple[str, ...] = ("default",)
    postgres_target: str = "default"
    costs: dict[str, float] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ConfigError(f"config variant {self.variant!r} is unknown; use one of {', '.join(VARIANTS)}")
        if not self.waves or any(_WAVE.fullmatch(w) is None for w in self.waves):
            raise ConfigError(
                f"config waves {list(self.waves)} must be counts or percentages like ['1', '25%', '100%']"
            )
        if not self.k8s_targets:
            raise ConfigError("config k8s_targets must name at least one cluster context (e.g. [default])")
        if self.aws_account_id and not re.fullmatch(r"\d{12}", self.aws_account_id):
            raise ConfigError(f"config aws_account_id {self.aws_account_id!r} must be 12 digits")

    def provider_defaults(self, provider: str) -> dict[str, Any]:
        """Field defaults that come from configuration for ``provider``'s types."""
        return {"location": self.azure_location} if provider == "azure" else {}

    def context(self) -> dict[str, Any]:
        """Template variables every provider may use (public values only, never secrets)."""
        return {"ssh_public_key": self.ssh_public_key, "account_id": self.aws_account_id}

    def unset(self) -> tuple[tuple[str, str], ...]:
        """(template variable, configuration key) of each context value with no default, still unset."""
        keys = (("ssh_public_key", "ssh_public_key"), ("account_id", "aws_account_id"))
        return tuple((var, key) for var, key in keys if not getattr(self, key))

    def default_target(self, provider: str) -> tuple[str, ...]:
        """The targets a resource of ``provider`` gets when the request names none."""
        return {
            "local": ("local",),
            "aws": (self.aws_region,),
            "postgres": (self.postgres_target,),
            "azure": ("default",),
            "k8s": self.k8s_targets,
        }[provider]

    def wave_sizes(self, total: int) -> list[int]:
        """Cumulative target counts per wave for ``total`` targets (empty waves dropped)."""
        out: list[int] = []
        for wave in self.waves:
            match = _WAVE.fullmatch(wave)
            assert match is not None
            number = int(match.group(1))
            count = -(-number * total // 100) if match.group(2) else number
            count = min(max(count, 1), total)
            if not out or count > out[-1]:
                out.append(count)
        if not out or out[-1] < total:
            out.append(total)
        return out


DEFAULT_CONFIG = PlannerConfig()
ENV_VAR = "UPM_PLANNER_CONFIG"


def config_from_environment() -> PlannerConfig:
    """The configuration in the file ``$UPM_PLANNER_CONFIG`` names (for ``upm up``), else the default."""
    path = os.environ.get(ENV_VAR)
    return load_config(path) if path else DEFAULT_CONFIG


def load_config(path: str | Path) -> PlannerConfig:
    """A :class:`PlannerConfig` from a YAML or JSON file, with errors that name the problem."""
    doc = read_document(path, what="planner config", error=ConfigError)
    try:
        return msgspec.convert(doc, PlannerConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(
            f"planner config {path}: {exc}; see services/planner/README.md for the keys"
        ) from None
