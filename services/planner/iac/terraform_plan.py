"""A Terraform / OpenTofu plan (``terraform show -json plan.out``) → a native spec document.

Each ``resource_changes`` entry of mode ``managed`` becomes its catalog resource
(:mod:`services.planner.iac.tfmap`): ``create`` from ``change.after``, ``update`` from the
attributes that differ between ``before`` and ``after`` (and the naming ones), ``delete`` from
``change.before``; a replace (``["delete","create"]`` or ``["create","delete"]``) is a delete of the
old and a create of the new (refused when both have the same identity: one change cannot delete
and re-create one resource); ``no-op``, ``read`` and ``forget`` change nothing and are skipped. A
value ``after_unknown`` marks is taken from the configuration (``configuration.root_module``'s
``constant_value``) when it is there, and refused otherwise: UPM plans exact commands. Every
translated resource is named in the spec's ``notes`` by its address. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from providers import CATALOG
from services.planner.errors import SpecError
from services.planner.iac.tfmap import (
    TYPES,
    TfType,
    fields_set,
    merge_settings,
    name_of,
    refuse_unsupported,
    with_region,
)

_SKIPPED = (["no-op"], ["read"], ["forget"])
_REPLACE = (["delete", "create"], ["create", "delete"])


def is_plan(doc: Mapping[str, Any]) -> bool:
    """Whether ``doc`` looks like ``terraform show -json`` output of a plan."""
    return "format_version" in doc and ("resource_changes" in doc or "planned_values" in doc)


def plan_to_spec(doc: Mapping[str, Any], source: str = "terraform plan") -> dict[str, Any]:
    """The native spec document for the plan ``doc`` (see the module docstring)."""
    changes = doc.get("resource_changes") or []
    if not isinstance(changes, list):
        raise SpecError(f"{source}: resource_changes must be a list (terraform show -json plan.out gives one)")
    entries = [_entry(i, c, source) for i, c in enumerate(changes)]
    managed = [e for e in entries if e.get("mode", "managed") == "managed"]
    refuse_unsupported(
        sorted({(e["type"], f"{source}: {e['address']}") for e in managed
                if e["type"] not in TYPES and e["change"]["actions"] not in _SKIPPED}),
        "resource types in the plan",
        sorted(TYPES),
    )
    constants = _constants(doc.get("configuration"))
    region = _region(doc.get("configuration"))
    resources: list[dict[str, Any]] = []
    settings: list[tuple[dict[str, Any], str]] = []
    notes: list[str] = []
    for e in sorted(managed, key=lambda e: str(e["address"])):
        actions = e["change"]["actions"]
        if actions in _SKIPPED:
            continue
        made = [with_region(r, region) for r in _translate(e, actions, constants.get(str(e["address"]), {}), source)]
        kind = "replace" if actions in _REPLACE else actions[0]
        if TYPES[e["type"]].setting:
            settings += [(r, f"{source}: {e['address']}") for r in made]
            verbs = ", ".join(f"{'unset' if r.get('action') == 'delete' else 'set'} "
                              f"{fields_set(r)} of {name_of(r['type'], r)}"
                              for r in made)
        else:
            resources += made
            verbs = ", ".join(f"{r.get('action', 'create')} {name_of(r['type'], r)}" for r in made)
        notes.append(f"from {e['address']} ({kind}): {verbs or 'nothing UPM sets changes'}")
    if not resources and not settings:
        raise SpecError(f"{source}: the plan changes nothing UPM would do (every resource change is no-op or read)")
    return {"resources": merge_settings(resources, _settings(settings, resources)), "notes": notes}


def _settings(settings: list[tuple[dict[str, Any], str]], resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The settings to merge: a removed setting of a bucket the plan deletes goes with it; one of a
    bucket that stays is refused (UPM has no "unset" for it that keeps the bucket as it was)."""
    deleted = {name_of(r["type"], r) for r in resources if r.get("action") == "delete"}
    out = []
    for setting, where in settings:
        if setting.get("action") != "delete":
            out.append(setting)
        elif name_of(setting["type"], setting) not in deleted:
            raise SpecError(f"{where} is destroyed while its bucket stays; UPM cannot remove a bucket setting "
                            "as such: set the value you want instead (e.g. versioning Suspended) and plan again")
    return out


def _entry(index: int, raw: Any, source: str) -> dict[str, Any]:
    where = f"{source}: resource_changes[{index}]"
    change = raw.get("change") if isinstance(raw, Mapping) else None
    actions = change.get("actions") if isinstance(change, Mapping) else None
    if not isinstance(raw.get("address") if isinstance(raw, Mapping) else None, str) or not isinstance(
        raw.get("type"), str
    ) or not isinstance(actions, list):
        raise SpecError(
            f"{where} needs address, type and change.actions, as terraform show -json writes them; "
            "give the output of `terraform show -json PLANFILE`"
        )
    return dict(raw)


def _translate(e: Mapping[str, Any], actions: list[str], config: Mapping[str, Any], source: str) -> list[dict[str, Any]]:
    tf: TfType = TYPES[e["type"]]
    change = e["change"]
    where = f"{source}: {e['address']}"
    before = change.get("before") or {}
    after = _known_after(tf, change, config, where)
    if actions == ["create"]:
        return [{"type": tf.upm, **tf.translate(after, where)}]
    if actions == ["delete"]:
        return [{"type": tf.upm, "action": "delete", **tf.translate(before, where)}]
    if actions == ["update"]:
        old, new = tf.translate(before, where), tf.translate(after, where)
        changed = {k: v for k, v in new.items() if old.get(k) != v}
        ident = {k: v for k, v in new.items() if k in CATALOG[tf.upm].ident_fields}
        return [{"type": tf.upm, "action": "update", **ident, **changed}] if changed else []
    if actions in _REPLACE:
        gone = {"type": tf.upm, "action": "delete", **tf.translate(before, where)}
        made = {"type": tf.upm, **tf.translate(after, where)}
        if name_of(tf.upm, gone) == name_of(tf.upm, made):
            raise SpecError(
                f"{where} is replaced under the same identity ({name_of(tf.upm, made)}); UPM cannot delete "
                "and re-create one resource in one change: submit the delete, then the create, as two changes"
            )
        return [gone, made]
    raise SpecError(f"{where}: change.actions {actions} is not one terraform writes; regenerate the plan JSON")


def _known_after(tf: TfType, change: Mapping[str, Any], config: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``change.after`` with every value ``after_unknown`` marks either taken from the configuration
    or, when it is an attribute UPM does not set (a computed arn, id…), dropped; an unknown value
    UPM needs is refused."""
    after = dict(change.get("after") or {})
    unknown = change.get("after_unknown") or {}
    marked = sorted(k for k, v in unknown.items() if _has_true(v)) if isinstance(unknown, Mapping) else []
    refused = []
    for key in marked:
        if key in config:
            after[key] = config[key]
        elif key in tf.consumes:
            refused.append(key)
        else:
            after.pop(key, None)
    if refused:
        raise SpecError(
            f"{where}: {', '.join(refused)} {'is' if len(refused) == 1 else 'are'} known only after apply "
            "(after_unknown), and UPM plans exact commands; give a literal value in the configuration "
            "(not a random_id, a computed attribute or a data source) and plan again"
        )
    return after


def _has_true(value: Any) -> bool:
    if value is True:
        return True
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, list) else ()
    return any(_has_true(v) for v in items)


def _constants(configuration: Any) -> dict[str, dict[str, Any]]:
    """address → {attribute: constant value} from the plan's ``configuration.root_module``."""
    module = configuration.get("root_module") if isinstance(configuration, Mapping) else None
    out: dict[str, dict[str, Any]] = {}
    for r in (module.get("resources") or []) if isinstance(module, Mapping) else ():
        if not isinstance(r, Mapping) or not isinstance(r.get("address"), str):
            continue
        exprs = r.get("expressions") or {}
        out[r["address"]] = {
            k: v["constant_value"] for k, v in exprs.items() if isinstance(v, Mapping) and "constant_value" in v
        }
    return out


def _region(configuration: Any) -> Any:
    """The AWS provider's ``region`` when the plan's configuration gives it as a constant."""
    aws = configuration.get("provider_config", {}).get("aws") if isinstance(configuration, Mapping) else None
    region = aws.get("expressions", {}).get("region") if isinstance(aws, Mapping) else None
    return region.get("constant_value") if isinstance(region, Mapping) else None
