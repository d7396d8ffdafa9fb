"""``upm verify ID`` (re-run a change's verification now) and ``upm drift`` (drift per resource).

Both fold the log into the desired-state inventory (:mod:`events.desired`) for what should be
now, read the resources back from where the command runs (through the same guarded runner as the
services), print a report, and record nothing.
Exit 0 when everything matches, 1 when something does not.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import click

from upm import cliargs
from upm.cliargs import connection_options, identity_option, output_options
from upm.commands.core import guarded, with_store
from upm.output import emit, render_table

if TYPE_CHECKING:
    from events.store import EventStore


async def _verify(store: EventStore, change_id: str, tenant: str) -> Any:
    from events.model import ExecutionCompleted
    from services.common.errors import CommandRejected
    from services.verifier import core
    from services.verifier.inventory import from_log
    from services.verifier.service import verify

    log = await store.read(tenant, change_id)
    events = [s.event for s in log.events]
    executed = next((e.payload for e in reversed(events) if isinstance(e.payload, ExecutionCompleted)), None)
    plan = core.plan_named(events, executed.plan_hash) if executed else None
    if plan is None:
        raise CommandRejected(f"change {change_id} has not executed a plan: nothing to verify", field="change_id",
                              rule="executed")
    return await verify(core.current_targets(plan, (await from_log(store, tenant)).resources), "change")


def cmd_verify(args: argparse.Namespace) -> int:
    from events.codec import to_builtins
    from events.model import VerificationPassed

    report = with_store(args, lambda store: _verify(store, args.change_id, args.tenant))
    rows = to_builtins(list(report.checks))
    verdict = "passed" if isinstance(report, VerificationPassed) else "FAILED"
    text = (f"verification {verdict} in {report.duration_ms:.1f} ms\n"
            f"baseline {report.baseline_hash}\ncurrent  {report.current_hash}\n\n{render_table(rows)}")
    emit(report, args, text=text)
    return 0 if isinstance(report, VerificationPassed) else 1


async def _drift(store: EventStore, tenant: str) -> list[dict[str, Any]]:
    from services.verifier.config import load
    from services.verifier.drift import scan
    from services.verifier.inventory import from_log, managed

    items = managed(await from_log(store, tenant), tenant)
    readings = {r.key: r for r in await scan(items, load().drift)}
    rows = []
    for item in sorted(items, key=lambda m: (m.tenant, m.key)):
        reading = readings.get(item.key)
        rows.append({
            "tenant": item.tenant,
            "resource": item.key,
            "status": reading.status if reading else "not checked",
            "diff": (reading.reason or "; ".join(f"{d.field}: {d.desired!r} → {d.observed!r}" for d in reading.diff))
            if reading else "",
            "baseline_change": item.change_id,
        })
    return rows


def cmd_drift(args: argparse.Namespace) -> int:
    rows = with_store(args, lambda store: _drift(store, args.tenant))
    emit(rows, args)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


# -- the click commands (registered in upm/cli.py's COMMANDS) --------------------------------------


@click.command(help="Re-run a change's verification now (read-backs vs the desired state the log holds now).")
@click.argument("change_id", type=cliargs.CHANGE_ID)
@click.option("--tenant", type=cliargs.TENANT_OR_ANY, default="*", help="tenant (default: any)")
@identity_option
@connection_options
@output_options
def verify_command(**params: Any) -> int:
    return cliargs.run(guarded(cmd_verify), params)


@click.command(help="Read every managed resource back now and show drift per resource.")
@click.option("--tenant", type=cliargs.TENANT_OR_ANY, default="*", help="tenant (default: all)")
@identity_option
@connection_options
@output_options
def drift(**params: Any) -> int:
    return cliargs.run(guarded(cmd_drift), params)
