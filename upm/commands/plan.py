"""``upm plan``: compile a request or a spec offline; ``upm plan diff A B``.

``--simulate`` dry-runs the plan against ``--state FILE`` (a YAML/JSON mapping of resource key
→ observed fields or null); without ``--state`` the observed state is empty, so every step shows
what it would do on a fresh target. Nothing is executed either way.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import msgspec

from events.errors import InvalidEvent
from events.plan import Plan
from events.secrets import refuse_secrets
from services.planner.compiler import CompileInput, compile_intent
from services.planner.config import PlannerConfig, config_from_environment, load_config
from services.planner.diff import diff_plans
from services.planner.errors import PlanError, SecretRefused, SpecError
from services.planner.export import export_graph
from services.planner.iac.load import load_input
from services.planner.model import VARIANTS
from services.planner.render import render_diff, render_plan, render_simulation
from services.planner.simulate import simulate
from services.planner.spec import read_document
from upm import cliargs, output
from upm.output import add_output_options, emit


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``plan`` subcommand."""
    parser = subparsers.add_parser(
        "plan",
        help="compile a request or spec into a deterministic plan (offline); 'plan diff A B' compares plans",
        description="Compile a natural-language REQUEST or a --file SPEC into a plan, offline. "
        "'upm plan diff A B' compares two plans (plan JSON files, or spec files compiled on the fly).",
    )
    parser.add_argument("request", nargs="*", help="the request in natural language (or: diff A B)")
    parser.add_argument(
        "--file", "-f", metavar="SPEC",
        help="a declarative spec (YAML or JSON), or infrastructure code: a `terraform show -json` plan, "
        "a .tf file or a directory of them, Kubernetes manifests (multi-document YAML)",
    )
    cliargs.add_var_options(parser)
    parser.add_argument("--graph", choices=("dot", "mermaid", "json"), help="print only the dependency graph")
    parser.add_argument(
        "--simulate", action="store_true", help="dry-run report against --state (default: empty)"
    )
    parser.add_argument(
        "--state", metavar="FILE", help="observed state snapshot: {resource key: fields | null}"
    )
    parser.add_argument("--variant", choices=VARIANTS, help="rollout variant (overrides request and config)")
    parser.add_argument("--config", metavar="FILE", help="planner configuration file (YAML or JSON)")
    parser.add_argument("--initiator", default="", help="who asks for the change")
    parser.add_argument("--reason", default="", help="why")
    parser.add_argument("--window", help="requested window START/END (ISO 8601)")
    parser.add_argument("--tenant", type=cliargs.tenant, default="default", help="tenant (default: default)")
    add_output_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``upm plan``: 0 on success, 2 on a planning error (message on stderr)."""
    try:
        config = load_config(args.config) if args.config else config_from_environment()
        if args.request[:1] == ["diff"] and args.file is None:
            return _diff(args, config)
        plan = compile_intent(_input(args), config)
        if args.graph:
            sys.stdout.write(export_graph(plan, args.graph) + "\n")
        elif args.simulate:
            report = simulate(plan, _state(args.state) if args.state else {})
            emit(
                {"plan": plan, "simulation": report} if args.json else report,
                args,
                text=render_simulation(report),
            )
        else:
            emit(plan, args, text=render_plan(plan))
    except PlanError as exc:
        return output.error(exc.message, 2, program="upm plan")
    return 0


def _input(args: argparse.Namespace) -> CompileInput:
    request = " ".join(args.request).strip()
    if bool(request) == bool(args.file):
        raise PlanError(
            'give a REQUEST or --file SPEC (one of them), e.g. upm plan "Create namespace team-alpha"'
        )
    common: dict[str, Any] = {
        "tenant": args.tenant,
        "initiator": args.initiator,
        "reason": args.reason,
        "window": args.window,
        "variant": args.variant,
    }
    try:
        refuse_secrets({"request": request, "reason": args.reason, "window": args.window, "variant": args.variant})
    except InvalidEvent as err:
        raise SecretRefused(str(err)) from None
    if args.file:
        return CompileInput(spec=load_input(args.file, args.var, args.var_file), **common)
    return CompileInput(request=request, **common)


def _diff(args: argparse.Namespace, config: PlannerConfig) -> int:
    if len(args.request) != 3:
        raise PlanError("usage: upm plan diff A B (two plan JSON files or two spec files)")
    a, b = (_plan_from(path, config, args) for path in args.request[1:])
    diff = diff_plans(a, b)
    emit(diff, args, text=render_diff(diff))
    return 0


def _plan_from(path: str, config: PlannerConfig, args: argparse.Namespace) -> Plan:
    doc = load_input(path)
    if "steps" in doc and "hash" in doc:
        try:
            return msgspec.convert(doc, Plan)
        except msgspec.ValidationError as exc:
            raise SpecError(f"{path} looks like a plan but is not one: {exc}") from None
    return compile_intent(CompileInput(spec=doc, tenant=args.tenant, variant=args.variant), config)


def _state(path: str) -> dict[str, dict[str, Any] | None]:
    doc = read_document(Path(path), what="state snapshot", error=SpecError)
    for key, value in doc.items():
        if value is not None and not isinstance(value, dict):
            raise SpecError(
                f"state snapshot {path}: {key!r} must map to observed fields or null, not {value!r}"
            )
    return doc
