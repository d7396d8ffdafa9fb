"""The handlers of ``upm plan`` (:mod:`upm.commands.plan` holds its flags): compile, simulate, diff.

Imported only when one of them runs, so ``upm plan --help`` loads no planner."""

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
from services.planner.render import render_diff, render_plan, render_simulation
from services.planner.simulate import simulate
from services.planner.spec import read_document
from upm import output
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
