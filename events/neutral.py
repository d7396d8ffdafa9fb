"""The change rendered as the spec's neutral provisioning event, and its JSON Schema check.

:func:`render` is pure: the same events give the same document (field names and nesting as the
spec's example; values from the log, times from the events). :func:`validate` checks a document
against ``neutral_event.schema.json`` with a small validator for the subset of JSON Schema that
file uses (``type``, ``properties``, ``required``, ``additionalProperties``, ``items``, ``enum``,
``const``, ``minLength``, ``pattern``); it returns every violation with its JSON pointer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from events.model import (
    AGENT,
    ApprovalRequested,
    ChangeApproved,
    DriftDetected,
    Event,
    IntentSubmitted,
    PlanCompiled,
    PolicyEvaluated,
    RollbackPlanned,
    StepCompleted,
    StepFailed,
    StepSkipped,
    TlsFallbackUsed,
    VerificationFailed,
    VerificationPassed,
)
from events.plan import Plan
from events.secrets import references

PIPE_ALLOW_LIST = ["grep", "jq", "wc", "head", "tail", "cut", "sort", "uniq"]
MASKED = re.compile(r"(?:(?:Authorization|Proxy-Authorization): (?:Bearer |Basic )?|Bearer )?[^\s\"'=:]*[=:]?\*\*\*")
STDOUT_INLINE = 200


def _plan(events: Sequence[Event]) -> Plan | None:
    plans = [e.payload.plan for e in events if isinstance(e.payload, PlanCompiled)]
    return plans[-1] if plans else None


def _trace_message(event: Event) -> str:
    p = event.payload
    match p:
        case StepCompleted(index=i, output=out):
            return f"execute step {i + 1} {'OK' if out.rc == 0 else f'rc {out.rc}'}"
        case StepFailed(index=i, error=error):
            return f"execute step {i + 1} failed: {error}"
        case StepSkipped(index=i, reason=reason):
            return f"execute step {i + 1} skipped: {reason}"
        case VerificationPassed(scope=scope):
            return "verify OK" if scope == "change" else "rollback verify OK"
        case VerificationFailed(scope=scope, diff=diff):
            return f"{'verify' if scope == 'change' else 'rollback verify'} failed ({len(diff)} differences)"
        case _:
            return event.type.replace(".", " ")


def _step(event: Event) -> dict[str, Any] | None:
    p = event.payload
    if not isinstance(p, StepCompleted | StepFailed):
        return None
    step: dict[str, Any] = {"cmd": p.command, "rc": p.output.rc}
    if len(p.output.stdout) <= STDOUT_INLINE and not p.output.stdout_trunc:
        step["stdout"] = p.output.stdout
    else:
        step["stdout_ref"] = f"upm://events/{event.tenant}/{event.change_id}/{event.id}#stdout"
    step["stderr_trunc"] = p.output.stderr_trunc
    return step


def render(events: Sequence[Event]) -> dict[str, Any]:
    """The neutral provisioning event of one change (its events in stream order)."""
    if not events:
        raise ValueError("a change without events has no provisioning event")
    first, last = events[0], events[-1]
    intent = next((e.payload for e in events if isinstance(e.payload, IntentSubmitted)), None)
    plan = _plan(events)
    steps = plan.steps if plan else ()
    resources_ = [dict(r) for r in plan.resources] if plan else []
    groups: list[str] = []
    for e in events:
        match e.payload:
            case ApprovalRequested(groups=g) | PolicyEvaluated(approver_groups=g):
                groups += [x for x in g if x not in groups]
            case ChangeApproved(lane="auto", rule=rule) if not groups:
                groups.append(f"auto:{rule}" if rule else "auto")
    verifications = [e.payload for e in events if isinstance(e.payload, VerificationPassed | VerificationFailed)]
    change_checks = [v for v in verifications if v.scope == "change"]
    latest = change_checks[-1] if change_checks else None
    diff: list[dict[str, Any]] = []
    if isinstance(latest, VerificationFailed):
        diff = [{"resource": d.resource, "field": d.field, "desired": d.desired, "observed": d.observed}
                for d in latest.diff]
    diff += [{"resource": e.payload.resource, "field": d.field, "desired": d.desired, "observed": d.observed}
             for e in events if isinstance(e.payload, DriftDetected) for d in e.payload.diff]
    planned = [e.payload for e in events if isinstance(e.payload, RollbackPlanned)]
    rollback_cmds = [c.display for c in planned[-1].commands] if planned else [
        c.display for c in (plan.rollback if plan else ())]
    exec_steps = [s for s in (_step(e) for e in events) if s is not None]
    redactions = sorted({m.group(0) for s in exec_steps for m in MASKED.finditer(f"{s['cmd']}\n{s.get('stdout', '')}")}
                        | {f"secret:{name}" for s in steps for name in references(s.stdin or "")})
    return {
        "provisioning_event": {
            "id": first.id,
            "timestamp": last.ts,
            "phase": last.phase,
            "intent": {
                "request": (intent.request or "") if intent else "",
                "source": first.source,
                "initiator": intent.initiator if intent else first.actor,
                "tenant": first.tenant,
            },
            "target": {
                "cloud": steps[0].resource.provider if steps else "",
                "cluster_endpoint_id": steps[0].target if steps else "",
                "resources": resources_,
            },
            "plan": {
                "commands": [s.command.display for s in steps],
                "resources_needed": [p.resource.key for p in plan.resources_needed] if plan else [],
                "approvals": groups,
            },
            "execution": {
                "agent": AGENT,
                "mTLS": not any(isinstance(e.payload, TlsFallbackUsed) for e in events),
                "pipe_allow_list": PIPE_ALLOW_LIST,
                "steps": exec_steps,
            },
            "verification": {
                "checks": [{"type": c.name, "target": c.target, "ok": c.ok} for v in change_checks for c in v.checks],
                "drift": {
                    "baseline_hash": latest.baseline_hash if latest else "",
                    "current_hash": latest.current_hash if latest else "",
                    "diff": diff,
                },
            },
            "governance": {
                "visibility": first.visibility,
                "owner": (plan.annotations.initiator if plan and plan.annotations.initiator else first.actor),
                "redactions": redactions,
            },
            "audit_trace": [{"ts": e.ts, "msg": _trace_message(e)} for e in events],
            "rollback": {"available": bool(rollback_cmds), "plan": rollback_cmds},
        }
    }


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema written from the spec's example."""
    loaded: dict[str, Any] = json.loads(
        resources.files("events").joinpath("neutral_event.schema.json").read_text()
    )
    return loaded


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,), "null": (type(None),),
    "integer": (int,), "number": (int, float),
}


def _is(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[kind])


def validate(instance: Any, schema_: dict[str, Any] | None = None, path: str = "") -> list[str]:
    """Every violation of ``schema_`` (default: the neutral event schema) as ``pointer: problem``."""
    s = schema() if schema_ is None else schema_
    where = path or "/"
    errors: list[str] = []
    kinds = s.get("type")
    if kinds is not None:
        allowed = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is(instance, k) for k in allowed):
            return [f"{where}: expected {' or '.join(allowed)}, got {type(instance).__name__}"]
    if "const" in s and instance != s["const"]:
        errors.append(f"{where}: must be {s['const']!r}")
    if "enum" in s and instance not in s["enum"]:
        errors.append(f"{where}: {instance!r} is not one of {s['enum']}")
    if isinstance(instance, str):
        if len(instance) < s.get("minLength", 0):
            errors.append(f"{where}: shorter than {s['minLength']} characters")
        if "pattern" in s and not re.search(s["pattern"], instance):
            errors.append(f"{where}: {instance!r} does not match {s['pattern']}")
    if isinstance(instance, dict):
        errors += [f"{where}: missing required field {name!r}" for name in s.get("required", []) if name not in instance]
        props: dict[str, Any] = s.get("properties", {})
        for key, value in instance.items():
            if key in props:
                errors += validate(value, props[key], f"{path}/{key}")
            elif s.get("additionalProperties") is False:
                errors.append(f"{where}: unexpected field {key!r}")
    if isinstance(instance, list) and "items" in s:
        for i, item in enumerate(instance):
            errors += validate(item, s["items"], f"{path}/{i}")
    return errors
