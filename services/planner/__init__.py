"""The planner: natural language or a spec → a deterministic, dependency-ordered plan.

Pure library (no I/O, no clock in the compile path): :func:`compile_intent` returns a sealed
:class:`~events.plan.Plan` or raises a :class:`~services.planner.errors.PlanError`. See
``services/planner/README.md`` for input forms, variants, simulation, diff and errors.
"""

from __future__ import annotations

from services.planner.compiler import CompileInput, compile_intent
from services.planner.config import DEFAULT_CONFIG, PlannerConfig, load_config
from services.planner.diff import PlanDiff, diff_plans
from services.planner.errors import PlanError
from services.planner.export import export_graph
from services.planner.model import VARIANTS, Intent, ResourceIntent
from services.planner.nl import parse_request
from services.planner.render import render_diff, render_plan, render_simulation
from services.planner.simulate import SimulationReport, simulate
from services.planner.spec import load_spec, spec_to_intent

__all__ = [
    "DEFAULT_CONFIG",
    "VARIANTS",
    "CompileInput",
    "Intent",
    "PlanDiff",
    "PlanError",
    "PlannerConfig",
    "ResourceIntent",
    "SimulationReport",
    "compile_intent",
    "diff_plans",
    "export_graph",
    "load_config",
    "load_spec",
    "parse_request",
    "render_diff",
    "render_plan",
    "render_simulation",
    "simulate",
    "spec_to_intent",
]
