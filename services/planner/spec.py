"""The declarative input form: a spec file (YAML or JSON) and its translation to an :class:`Intent`.

::

    variant: canary                 # optional: all-at-once | canary | blue-green | waves
    targets: [prod-east, prod-west] # optional: clusters for k8s resources that name none
    initiator: user-123             # optional annotations (the compile input wins)
    reason: new team
    window: 2025-10-09T22:00Z/2025-10-10T02:00Z
    notes: [from aws_s3_bucket.logs]  # optional: added to the plan's impact notes (translations name their source)
    resources:
      - type: az_aks                # a catalog type
        name: aks-demo              # then the type's fields
        location: eastus
      - type: k8s_namespace
        name: team-alpha
        action: create              # create (default) | update | delete
        targets: [prod-east]        # or target: prod-east (else the defaults; for a type
                                    # with a field called target, e.g. local_symlink, that field)
        depends_on: [az_aks:aks-demo]   # explicit edges: type:name or type:target:name
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from events.plan import Action
from events.secrets import Finding, find_secret, refusal
from providers import CATALOG
from services.common.configfile import read_mapping
from services.planner.errors import PlanError, SecretRefused, SpecError
from services.planner.iac import to_native
from services.planner.model import Intent, ResourceIntent
from services.planner.nodes import rename_refusal

_TOP = ("resources", "variant", "targets", "initiator", "reason", "window", "request", "notes")
_ACTIONS: tuple[Action, ...] = ("create", "update", "delete")
_RESERVED = ("type", "action", "target", "targets", "depends_on")
_RESERVED_BUT_TARGET = ("type", "action", "targets", "depends_on")


def read_document(path: str | Path, *, what: str, error: type[PlanError]) -> dict[str, Any]:
    """The mapping in a YAML or JSON file (by suffix; YAML otherwise), or ``error`` saying why not."""
    return read_mapping(path, what=what, error=error)


def load_spec(path: str | Path) -> dict[str, Any]:
    """A spec document from a YAML or JSON file (see the module docstring for the format): a
    regular UTF-8 text file of at most 1 MiB, holding no secret (scanned line by line before
    it is parsed; :class:`SecretRefused` names the line and the kind, never the value)."""

    return read_mapping(path, what="spec file", error=SpecError, check_text=lambda text: no_secrets(text, path))


def no_secrets(text: str, path: str | Path) -> None:
    """:class:`SecretRefused` naming the first line of ``text`` (from ``path``) that holds a secret."""
    for number, line in enumerate(text.splitlines(), start=1):
        kind = find_secret(line)
        if kind:
            raise SecretRefused(refusal(Finding(f"spec file {path} line {number}", kind)))


def spec_to_intent(spec: Mapping[str, Any]) -> Intent:
    """The :class:`Intent` a spec document describes; :class:`SpecError` when it is malformed.
    Infrastructure code (a Terraform plan JSON, ``.tf`` files, Kubernetes manifests) is translated
    to the native spec first (:mod:`services.planner.iac`)."""
    spec = to_native(spec)
    unknown = sorted(set(spec) - set(_TOP))
    if unknown:
        raise SpecError(f"spec has unknown top-level keys {unknown}; allowed: {', '.join(_TOP)}")
    resources = spec.get("resources")
    if not isinstance(resources, list) or not resources:
        raise SpecError("spec needs 'resources': a non-empty list of {type: ..., name: ..., ...} mappings")
    variant = spec.get("variant")
    window = spec.get("window")
    return Intent(
        resources=tuple(_resource(i, r) for i, r in enumerate(resources)),
        targets=_names(spec.get("targets"), "targets"),
        variant=None if variant is None else str(variant),
        initiator=str(spec.get("initiator", "")),
        reason=str(spec.get("reason", "")),
        window=None if window is None else str(window),
        notes=_names(spec.get("notes"), "notes"),
    )


def _resource(index: int, raw: Any) -> ResourceIntent:
    where = f"spec resources[{index}]"
    if not isinstance(raw, Mapping) or not isinstance(raw.get("type"), str):
        raise SpecError(f"{where} must be a mapping with a 'type' (e.g. type: k8s_namespace)")
    action = raw.get("action", "create")
    if action == "rename" and raw["type"] in CATALOG:
        renamed = CATALOG[raw["type"]]
        name = raw.get(renamed.ident_fields[0], "?")
        raise rename_refusal(renamed, str(name), str(raw.get("new_name", "NEW")))
    if action not in _ACTIONS:
        raise SpecError(f"{where} action {action!r} is unknown; use one of {', '.join(_ACTIONS)}")
    rtype = CATALOG.get(raw["type"])
    reserved = _RESERVED if rtype is None or "target" not in rtype.field_names else _RESERVED_BUT_TARGET
    if "target" in reserved and "target" in raw and "targets" in raw:
        raise SpecError(f"{where} has both 'target' and 'targets'; keep one")
    single = [raw["target"]] if "target" in reserved and "target" in raw else None
    targets = _names(single or raw.get("targets"), f"{where}.targets")
    return ResourceIntent(
        type=raw["type"],
        action=action,
        fields={str(k): v for k, v in raw.items() if k not in reserved},
        targets=targets,
        depends_on=_names(raw.get("depends_on"), f"{where}.depends_on"),
    )


def _names(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SpecError(f"{where} must be a list of non-empty strings, not {value!r}")
    return tuple(value)
