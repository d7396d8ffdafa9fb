"""Plain-text renderings of plans, simulation reports and plan diffs, for people."""

from __future__ import annotations

from events.codec import json_dumps
from events.plan import Plan
from services.planner.diff import PlanDiff
from services.planner.simulate import SimulationReport


def render_plan(plan: Plan) -> str:
    """The plan as a numbered list of commands with waves, prerequisites, rollback and annotations."""
    a = plan.annotations
    lines = [
        f"plan {plan.hash}  variant={plan.variant}"
        + (f"  targets={','.join(plan.targets)}" if plan.targets else "")
    ]
    if plan.request:
        lines.append(f"request: {plan.request}")
    if a.initiator or a.reason or a.window:
        lines.append(
            f"by {a.initiator or '?'}: {a.reason or '(no reason given)'}"
            + (f"  window {a.window}" if a.window else "")
        )
    wave_names = {w.index: w.name for w in plan.waves}
    for step in plan.steps:
        flags = (" [implied]" if step.implied else "") + (" [destructive]" if step.destructive else "")
        wave = f" (wave {wave_names.get(step.wave, step.wave)})" if len(plan.waves) > 1 else ""
        wave += (
            f" [on {step.target}]" if len(plan.targets) > 1 and step.target not in step.command.argv else ""
        )
        lines.append(f"{step.index + 1:>3}. {step.command.display}{wave}{flags}")
        if step.stdin is not None:
            lines.append(f"     stdin: {len(step.stdin.encode())} bytes")
    lines.append("resources needed: " + (", ".join(p.resource.key for p in plan.resources_needed) or "none"))
    for prereq in plan.resources_needed:
        lines.append(f"  - {prereq.check.display}   # {prereq.hint}")
    lines.append("rollback:" + ("" if plan.rollback else " none"))
    lines += [f"  {c.display}" for c in plan.rollback]
    impact = a.impact
    lines.append(
        f"impact: {len(impact.created)} created, {len(impact.changed)} changed, {len(impact.destroyed)} destroyed"
        + ("  DESTRUCTIVE" if impact.destructive else "")
    )
    lines += [f"  note: {n}" for n in impact.notes]
    lines.append(f"cost: {a.cost.monthly:+.2f} {a.cost.currency}/month (estimate)")
    return "\n".join(lines)


def render_simulation(report: SimulationReport) -> str:
    """One line per step: outcome, command, and the field differences behind it."""
    lines = [f"simulation of {report.plan_hash}: {report.changes} change(s), nothing executed"]
    for step in report.steps:
        lines.append(f"{step.index + 1:>3}. {step.outcome:<7} {step.command}")
        lines += [f"       {d.field}: {json_dumps(d.observed)} → {json_dumps(d.desired)}" for d in step.diffs]
        if step.note:
            lines.append(f"       ({step.note})")
    lines.append("  ".join(f"{k}={v}" for k, v in report.counts.items()))
    return "\n".join(lines)


def render_diff(diff: PlanDiff) -> str:
    """``+`` added, ``-`` removed and ``~`` changed steps."""
    if diff.identical:
        return f"plans are identical ({diff.a})"
    lines = [f"--- {diff.a}", f"+++ {diff.b}"]
    if diff.variant is not None:
        lines.append(f"~ variant: {diff.variant[0]} → {diff.variant[1]}")
    lines += [f"- {s.id}: {s.command.display}" for s in diff.removed]
    lines += [f"+ {s.id}: {s.command.display}" for s in diff.added]
    for change in diff.changed:
        lines.append(f"~ {change.step}")
        lines += [f"    {c.field}: {json_dumps(c.before)} → {json_dumps(c.after)}" for c in change.changes]
    if len(lines) == 2:
        lines.append("(same steps; other plan fields differ)")
    return "\n".join(lines)
