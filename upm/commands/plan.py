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

import click
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
from upm.cliargs import output_options
from upm.output import emit


def run(args: argparse.Namespace) -> int:
    """Handler of ``upm plan [compile]``: 0 on success, 2 on a planning error (message on stderr)."""
    try:
        plan = compile_intent(_input(args), _config(args))
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


def run_diff(args: argparse.Namespace) -> int:
    """Handler of ``upm plan diff A B``: 0 on success, 2 on a planning error (message on stderr)."""
    try:
        config = _config(args)
        a, b = (_plan_from(path, config, args) for path in (args.a, args.b))
    except PlanError as exc:
        return output.error(exc.message, 2, program="upm plan")
    diff = diff_plans(a, b)
    emit(diff, args, text=render_diff(diff))
    return 0


def _config(args: argparse.Namespace) -> PlannerConfig:
    return load_config(args.config) if args.config else config_from_environment()


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


# -- the click commands (registered in upm/cli.py's COMMANDS) --------------------------------------


@click.group(cls=cliargs.DefaultGroup, default="compile", subcommand_metavar="[compile] REQUEST... | diff A B",
             help="Compile a natural-language REQUEST or a --file SPEC into a plan, offline: `upm plan REQUEST` "
                  "is `upm plan compile REQUEST` (its flags are below). `upm plan diff A B` "
                  "compares two plans (plan JSON files, or spec files compiled on the fly).")
def plan() -> None:
    """``upm plan``: compile (the default) or diff."""


def _common_options(f: cliargs.F) -> cliargs.F:
    """The planner configuration, tenant and variant: what both compile and diff compile with."""
    for option in reversed((
        click.option("--variant", type=click.Choice(VARIANTS), help="rollout variant (overrides request and config)"),
        click.option("--config", metavar="FILE", help="planner configuration file (YAML or JSON)"),
        click.option("--tenant", type=cliargs.TENANT, default="default", help="tenant (default: default)"),
    )):
        f = option(f)
    return f


@plan.command("compile", short_help="compile REQUEST or --file SPEC into a plan (the default)", help="Compile a natural-language REQUEST or a --file SPEC into a plan, offline.")
@click.argument("request", nargs=-1)
@click.option("--file", "-f", metavar="SPEC",
              help="a declarative spec (YAML or JSON), or infrastructure code: a `terraform show -json` plan, "
                   "a .tf file or a directory of them, Kubernetes manifests (multi-document YAML)")
@cliargs.var_options
@click.option("--graph", type=click.Choice(("dot", "mermaid", "json")), help="print only the dependency graph")
@click.option("--simulate", is_flag=True, help="dry-run report against --state (default: empty)")
@click.option("--state", metavar="FILE", help="observed state snapshot: {resource key: fields | null}")
@_common_options
@click.option("--initiator", default="", help="who asks for the change")
@click.option("--reason", default="", help="why")
@click.option("--window", help="requested window START/END (ISO 8601)")
@output_options
def compile_(**params: Any) -> int:
    return cliargs.run(run, params)


@plan.command("diff", short_help="compare two plans or specs", help="Compare two plans: A and B are plan JSON files (`upm plan --json`) or spec files "
                           "compiled on the fly.")
@click.argument("a")
@click.argument("b")
@_common_options
@output_options
def diff(**params: Any) -> int:
    return cliargs.run(run_diff, params)
