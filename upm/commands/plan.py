"""``upm plan``: compile a request or a spec offline; ``upm plan diff A B``.

``--simulate`` dry-runs the plan against ``--state FILE`` (a YAML/JSON mapping of resource key
→ observed fields or null); without ``--state`` the observed state is empty, so every step shows
what it would do on a fresh target. Nothing is executed either way.
"""

from __future__ import annotations

from typing import Any

import click

from upm import cliargs
from upm.cliargs import output_options

VARIANTS = cliargs.LazyChoice("services.planner.model:VARIANTS", "[all-at-once|canary|blue-green|waves]")


def _run(handler: str, params: dict[str, Any]) -> int:
    from upm.commands import planning

    return cliargs.run(getattr(planning, handler), params)


@click.group(cls=cliargs.DefaultGroup, default="compile", subcommand_metavar="[compile] REQUEST... | diff A B",
             help="Compile a natural-language REQUEST or a --file SPEC into a plan, offline: `upm plan REQUEST` "
                  "is `upm plan compile REQUEST` (its flags are below). `upm plan diff A B` "
                  "compares two plans (plan JSON files, or spec files compiled on the fly).")
def plan() -> None:
    """``upm plan``: compile (the default) or diff."""


def _common_options(f: cliargs.F) -> cliargs.F:
    """The planner configuration, tenant and variant: what both compile and diff compile with."""
    for option in reversed((
        click.option("--variant", type=VARIANTS, help="rollout variant (overrides request and config)"),
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
    return _run("run", params)


@plan.command("diff", short_help="compare two plans or specs", help="Compare two plans: A and B are plan JSON files (`upm plan --json`) or spec files "
                           "compiled on the fly.")
@click.argument("a")
@click.argument("b")
@_common_options
@output_options
def diff(**params: Any) -> int:
    return _run("run_diff", params)
