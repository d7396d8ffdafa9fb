"""Drift reconciliation: the spec resource that brings a drifted resource back to its baseline.

Given a managed step (its type, name, desired state and stdin) and what a read-back observed,
``reconcile_resource`` returns one resource of a declarative spec — create it again when it is
gone, update the fields that drifted when it is there — or ``None`` when the drift needs a
person (e.g. a directory replaced by a file). The spec goes through the whole pipeline as a
change of source ``drift``. Types without a rule here are alarm-only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from events.plan import Step

Observed = Mapping[str, Any] | None
Rule = Callable[[Step, Observed], "dict[str, Any] | None"]


def _differs(step: Step, observed: Observed, field: str) -> bool:
    return observed is not None and field in step.desired and observed.get(field) != step.desired[field]


def _with_settings(base: dict[str, Any], step: Step, *fields: str) -> dict[str, Any]:
    return base | {f: step.desired[f] for f in fields if f in step.desired}


def _directory(step: Step, observed: Observed) -> dict[str, Any] | None:
    base = {"type": "local_directory", "path": step.resource.name}
    if observed is None:
        return _with_settings(base, step, "mode", "owner")
    if observed.get("kind") != step.desired.get("kind", "directory"):
        return None
    drifted = [f for f in ("mode", "owner") if _differs(step, observed, f)]
    return _with_settings(base | {"action": "update"}, step, *drifted) if drifted else None


def _file(step: Step, observed: Observed) -> dict[str, Any] | None:
    base = {"type": "local_file", "path": step.resource.name}
    if observed is None:
        return _with_settings(base, step, "mode", "owner") | ({"content": step.stdin} if step.stdin is not None else {})
    if observed.get("kind") != step.desired.get("kind", "regular file"):
        return None
    update = _with_settings(base | {"action": "update"}, step,
                            *[f for f in ("mode", "owner") if _differs(step, observed, f)])
    if _differs(step, observed, "size") and step.stdin is not None:
        update["content"] = step.stdin
    return update if len(update) > 3 else None


def _symlink(step: Step, observed: Observed) -> dict[str, Any] | None:
    base = {"type": "local_symlink", "path": step.resource.name, "target": step.desired.get("target")}
    if observed is None:
        return base
    return base | {"action": "update"} if _differs(step, observed, "target") else None


def _setting(field: str) -> Rule:
    """A facet (mode, owner, content) drifted: update that field of its resource."""

    def rule(step: Step, observed: Observed) -> dict[str, Any] | None:
        if observed is None or not _differs(step, observed, "size" if field == "content" else field):
            return None
        if field == "content":
            if step.stdin is None:
                return None
            return {"type": "local_file", "path": step.resource.name, "content": step.stdin, "action": "update"}
        return {"type": "local_directory", "path": step.resource.name, field: step.desired[field], "action": "update"}

    return rule


RULES: Mapping[str, Rule] = {
    "local_directory": _directory,
    "local_file": _file,
    "local_symlink": _symlink,
    "local_mode": _setting("mode"),
    "local_owner": _setting("owner"),
    "local_file_content": _setting("content"),
}


def reconcile_resource(step: Step, observed: Observed) -> dict[str, Any] | None:
    """The spec resource that restores ``step``'s resource, or ``None`` (alarm only)."""
    if step.desired.get("exists", True) is False:
        return None
    rule = RULES.get(step.resource.type)
    return None if rule is None else rule(step, observed)
