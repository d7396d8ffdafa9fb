"""The policy input document, and the verdict of every pack a tenant's changes are held to. Pure
but for loading packs (cached: see :mod:`services.preflight.policy`).

Every pack sees the same input (documented in ``services/preflight/README.md``); their answers
merge: every violation of every pack, every approval requirement, the auto lane only when no
pack requires an approval and one allows it, and the strictest window rule.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import msgspec

from events.model import PolicyEvaluated, RiskAssessment, Violation
from events.plan import Plan
from providers import CATALOG
from services.preflight.config import PreflightConfig
from services.preflight.policy import ApprovalRule, LaneRule, PackOutput, PolicyPack, WindowRule, load_pack
from services.preflight.risk import Subject, is_destructive, targets_of, window_open

FALLBACK_RULE = ApprovalRule(
    rule="no-lane-rule",
    message="no policy rule auto-approves this change, so one approver from any group must",
)
_json = msgspec.json.Encoder(order="deterministic")


@dataclass(frozen=True)
class Verdict:
    """All packs' answers merged."""

    violations: tuple[Violation, ...] = ()
    approvals: tuple[ApprovalRule, ...] = ()
    auto: tuple[LaneRule, ...] = ()
    windows: tuple[WindowRule, ...] = ()

    @property
    def allowed(self) -> bool:
        return not self.violations

    @property
    def lane(self) -> Literal["auto", "manual"]:
        return "auto" if self.auto and not self.approvals else "manual"

    def requirements(self) -> tuple[ApprovalRule, ...]:
        """The approvals the change needs (none in the auto lane)."""
        if self.lane == "auto":
            return ()
        return self.approvals or (FALLBACK_RULE,)

    def window_rule(self) -> WindowRule | None:
        """The window rule that applies: a refusing one first."""
        return next((w for w in self.windows if w.outside == "refuse"), self.windows[0] if self.windows else None)


def policy_input(subject: Subject, risk: RiskAssessment, config: PreflightConfig, now: datetime) -> dict[str, Any]:
    """The document every pack evaluates (see the README for its fields)."""
    plan = subject.plan
    opened = window_open(config, subject.environment, now)
    resources = summarize(plan)
    by_type: dict[str, list[int]] = {}
    for i, r in enumerate(resources):
        by_type.setdefault(r["type"], []).append(i)
    return {
        "tenant": subject.tenant,
        "change_id": subject.change_id,
        "environment": subject.environment,
        "initiator": subject.initiator,
        "now": now.isoformat(),
        "plan": {
            "hash": plan.hash,
            "revision": subject.revision,
            "variant": plan.variant,
            "steps": len(plan.steps),
            "destructive": is_destructive(plan),
            "targets": list(targets_of(plan)),
            "window": plan.annotations.window,
            "reason": plan.annotations.reason,
        },
        "resources": resources,
        "by_type": by_type,
        "cost": {"monthly": plan.annotations.cost.monthly, "currency": plan.annotations.cost.currency},
        "budget": {"monthly": config.budget(subject.tenant)},
        "risk": {"score": risk.score, "level": risk.level, "factors": [f.name for f in risk.factors]},
        "window": {"configured": opened is not None, "open": opened is not False},
        "config": dict(config.limits),
    }


def summarize(plan: Plan) -> list[dict[str, Any]]:
    """One entry per resource the plan touches, its facet steps (S3 encryption, a file's mode...)
    folded into ``fields``: what a policy reasons about, and far fewer nodes than the steps."""
    out: dict[str, dict[str, Any]] = {}
    for step in plan.steps:
        ref = step.resource
        rtype = CATALOG.get(ref.type)
        parents = rtype.facet_of if rtype is not None else ()
        key = next((k for k in (f"{p}:{ref.target}:{ref.name}" for p in parents) if k in out),
                   f"{parents[0]}:{ref.target}:{ref.name}" if parents else ref.key)
        entry = out.setdefault(key, {
            "key": key, "type": key.split(":", 1)[0], "name": ref.name, "target": ref.target,
            "action": "update" if parents else step.action, "destructive": False, "fields": {},
        })
        if not parents:
            entry["action"] = step.action
        entry["destructive"] = entry["destructive"] or step.destructive or step.action == "delete"
        entry["fields"].update((k, v) for k, v in step.desired.items() if k != "exists")
    return list(out.values())


def digest(document: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(_json.encode(document)).hexdigest()


def packs_for(config: PreflightConfig, tenant: str) -> list[PolicyPack]:
    """The tenant's packs, loaded (and smoke-evaluated) on first use, then cached."""
    return [load_pack(folder, samples=SAMPLES) for folder in config.packs(tenant)]


def evaluate(
    packs: list[PolicyPack], document: dict[str, Any], plan_hash: str, risk: RiskAssessment
) -> tuple[Verdict, tuple[PolicyEvaluated, ...]]:
    """Evaluate every pack on ``document``; the merged verdict and one decision record per pack."""
    input_digest = digest(document)
    merged = Verdict()
    records = []
    for pack in packs:
        out, raw = pack.evaluate(document)
        merged = _merge(merged, out)
        records.append(
            PolicyEvaluated(
                plan_hash=plan_hash,
                pack=pack.name,
                pack_hash=pack.hash,
                input_digest=input_digest,
                allowed=not out.deny,
                violations=out.deny,
                risk_score=risk.score,
                lane="auto" if out.auto_approve and not out.approval else "manual",
                required_approvals=max((a.count for a in out.approval), default=0),
                approver_groups=tuple(sorted({g for a in out.approval for g in a.groups})),
                output=raw,
                input=document,
            )
        )
    return merged, tuple(records)


def _merge(verdict: Verdict, out: PackOutput) -> Verdict:
    return Verdict(violations=verdict.violations + out.deny, approvals=verdict.approvals + out.approval,
                   auto=verdict.auto + out.auto_approve, windows=verdict.windows + out.window)


def verdict_of(records: Sequence[PolicyEvaluated]) -> Verdict:
    """The merged verdict again, from the decision records stored on ``preflight.passed`` (what
    pre-flight uses to finish a decision a crash cut short, without evaluating anything again)."""
    merged = Verdict()
    for record in records:
        merged = _merge(merged, msgspec.convert(record.output, PackOutput))
    return merged


def _sample(environment: str, level: str, resources: list[dict[str, Any]]) -> dict[str, Any]:
    by_type: dict[str, list[int]] = {}
    for i, r in enumerate(resources):
        by_type.setdefault(r["type"], []).append(i)
    return {
        "tenant": "sample", "change_id": "00000000-0000-7000-8000-000000000000", "environment": environment,
        "initiator": "sample-user", "now": "2025-01-01T00:00:00+00:00",
        "plan": {"hash": "sha256:" + "0" * 64, "revision": 1, "variant": "all-at-once", "steps": len(resources),
                 "destructive": any(r["destructive"] for r in resources), "targets": ["local"], "window": None,
                 "reason": ""},
        "resources": resources,
        "by_type": by_type,
        "cost": {"monthly": 10.0, "currency": "USD"},
        "budget": {"monthly": 5.0},
        "risk": {"score": 0.0 if level == "low" else 80.0, "level": level, "factors": []},
        "window": {"configured": True, "open": False},
        "config": {"max_resources": 1},
    }


def _resource(rtype: str, name: str, action: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {"key": f"{rtype}:local:{name}", "type": rtype, "name": name, "target": "local", "action": action,
            "destructive": action == "delete", "fields": fields}


SAMPLES: tuple[dict[str, Any], ...] = (
    _sample("dev", "low", [_resource("local_directory", "/srv/app", "create", {"mode": "0750"})]),
    _sample("prod", "high", [
        _resource("aws_s3_bucket", "Bad_Name", "create", {"public_access_block": False}),
        _resource("k8s_namespace", "team_alpha", "create", {}),
        _resource("k8s_namespace", "team-beta", "delete", {}),
    ]),
)
