"""``upm approve``, ``upm deny``, ``upm approvals`` and ``upm policy test``.

Exit codes: 0 accepted, 2 refused (the message says why), 3 UPM not reachable.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from events.subjects import ANY_TENANT
from upm import cliargs
from upm.cliargs import connection_options, identity_option, output_options
from upm.commands.core import ENVIRONMENTS, fail, guarded, identity, with_store
from upm.output import emit, render_table

if TYPE_CHECKING:  # what a handler needs is imported when it runs: `upm approve --help` loads none of it
    from events.plan import Plan
    from events.store import EventStore


def _command(verb: str, args: argparse.Namespace) -> int:
    import msgspec

    from events.commands import CHANGE_TEXT_FIELDS
    from events.subjects import command_subject
    from services.common import client
    from services.gateway import queries

    body: dict[str, Any] = {"change_id": args.change_id, "reason": args.reason}
    if getattr(args, "plan_hash", None):
        body["plan_hash"] = args.plan_hash
    if getattr(args, "group", None):
        body["group"] = args.group
    client.refuse_secrets_locally(body, CHANGE_TEXT_FIELDS)
    who = identity(args)

    async def send(store: EventStore) -> dict[str, Any]:
        tenant = args.tenant or await queries.tenant_of(store.nc, args.change_id, principal=who)
        reply = await client.ask(store.nc, command_subject(tenant, verb, who), msgspec.json.encode(body),
                                 within=10.0, what=f"{verb} commands")
        decoded: dict[str, Any] = msgspec.json.decode(reply)
        return decoded

    reply = with_store(args, send)
    if not reply.get("ok"):
        error = reply.get("error") or {}
        if args.json:
            emit(reply, args)
            return 2
        return fail(f"{verb} refused ({error.get('rule', '')}): {error.get('message', 'refused')}")
    state = reply.get("state", "")
    text = f"{verb} recorded for change {args.change_id}: {state}"
    if reply.get("release_at"):
        text += f" (released when the {reply.get('window')} window opens at {reply['release_at']})"
    emit(reply, args, text=text)
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    return _command("approve", args)


def cmd_deny(args: argparse.Namespace) -> int:
    return _command("deny", args)


def cmd_approvals(args: argparse.Namespace) -> int:
    from events.codec import to_builtins
    from services.gateway import queries
    from services.preflight.trail import approval_trail

    async def read(store: EventStore) -> list[Any]:
        events = await queries.read_change(store.nc, args.tenant or ANY_TENANT, args.change_id,
                                           principal=identity(args))
        return list(approval_trail([s.event for s in events]))

    rows = with_store(args, read)
    emit(rows, args, text=render_table(to_builtins(rows)))
    return 0


def cmd_policy_test(args: argparse.Namespace) -> int:
    """Evaluate packs on a plan offline (no NATS, no read-backs): violations, lane, approvals."""
    from services.preflight.config import load_config
    from services.preflight.errors import PolicyEvaluationError, PolicyLoadError
    from services.preflight.policy import load_pack
    from services.preflight.risk import Subject, score
    from services.preflight.verdict import evaluate, policy_input

    plan = _load_plan(Path(args.file), args.tenant)
    config = load_config(args.config)
    now = datetime.fromisoformat(args.at) if args.at else datetime.now().astimezone()
    subject = Subject(tenant=args.tenant, change_id="00000000-0000-7000-8000-000000000000", environment=args.env,
                      initiator=args.initiator, plan=plan)
    risk = score(subject, config, now)
    folders = [Path(p) for p in args.pack] if args.pack else list(config.packs(args.tenant))
    try:
        packs = [load_pack(f) for f in folders]
        verdict, _ = evaluate(packs, policy_input(subject, risk, config, now), plan.hash, risk)
    except (PolicyLoadError, PolicyEvaluationError) as err:
        return fail(str(err))
    result = {
        "plan_hash": plan.hash,
        "allowed": verdict.allowed,
        "violations": verdict.violations,
        "risk": risk,
        "lane": verdict.lane,
        "approvals": verdict.requirements(),
        "auto_rule": verdict.auto[0].rule if verdict.lane == "auto" else "",
        "windows": verdict.windows,
        "packs": [{"name": p.name, "folder": str(p.folder), "hash": p.hash} for p in packs],
    }
    lines = [f"plan {plan.hash}: {'allowed' if verdict.allowed else 'REFUSED'}, risk {risk.score} ({risk.level}), "
             f"lane {verdict.lane}"]
    lines += [f"  violation {v.rule}: {v.message}" for v in verdict.violations]
    lines += [f"  needs {a.count} approver(s) from {', '.join(a.groups) or 'any group'} ({a.rule})"
              for a in verdict.requirements()]
    lines += [f"  window {w.rule} ({w.outside} outside): {w.message}" for w in verdict.windows]
    emit(result, args, text="\n".join(lines))
    return 0 if verdict.allowed else 1


def _load_plan(path: Path, tenant: str) -> Plan:
    import msgspec

    from events import jsonbounds
    from events.errors import InvalidEvent
    from events.plan import Plan
    from services.common.configfile import read_text
    from services.common.errors import CommandRejected, ConfigError

    if path.suffix == ".json":
        raw = read_text(path, what="the plan file", error=ConfigError).encode()
        try:
            jsonbounds.check(raw, what=str(path))
            doc = msgspec.json.decode(raw)
        except (InvalidEvent, msgspec.DecodeError) as exc:
            raise CommandRejected(f"{path} is not a plan or spec: {exc}", field="file", rule="plan") from exc
        if isinstance(doc, dict) and isinstance(doc.get("plan"), dict):
            doc = doc["plan"]
        if isinstance(doc, dict) and "steps" in doc:
            try:
                return msgspec.convert(doc, Plan)
            except msgspec.ValidationError as exc:
                raise CommandRejected(f"{path} is not a plan: {exc}", field="file", rule="plan") from exc
    from services.planner import CompileInput, PlanError, compile_intent
    from services.planner.iac.load import load_input

    try:
        return compile_intent(CompileInput(spec=load_input(path), tenant=tenant))
    except PlanError as err:
        raise CommandRejected(f"{path}: {err}", field="file", rule="spec") from err


# -- the click commands (registered in upm/cli.py's COMMANDS) --------------------------------------


@click.command(help="Approve a change's current plan.")
@click.argument("change_id", type=cliargs.CHANGE_ID)
@identity_option
@click.option("--reason", default="", help="why (recorded in the approval trail)")
@click.option("--plan-hash", help="the plan hash you reviewed (refused if it is not the current plan)")
@click.option("--group", help="the approver group you approve for")
@click.option("--tenant", type=cliargs.TENANT_OR_ANY, help="tenant of the change (default: looked up)")
@connection_options
@output_options
def approve(**params: Any) -> int:
    return cliargs.run(guarded(cmd_approve), params)


@click.command(help="Deny a change (a denied change never executes).")
@click.argument("change_id", type=cliargs.CHANGE_ID)
@identity_option
@click.option("--reason", default="", help="why (recorded in the approval trail)")
@click.option("--tenant", type=cliargs.TENANT_OR_ANY, help="tenant of the change (default: looked up)")
@connection_options
@output_options
def deny(**params: Any) -> int:
    return cliargs.run(guarded(cmd_deny), params)


@click.command(help="A change's approval trail (who, when, group, plan hash, reason).")
@click.argument("change_id", type=cliargs.CHANGE_ID)
@click.option("--tenant", type=cliargs.TENANT_OR_ANY, help="tenant of the change (default: any)")
@connection_options
@output_options
def approvals(**params: Any) -> int:
    return cliargs.run(guarded(cmd_approvals), params)


@click.group(help="Policy packs.")
def policy() -> None:
    """``upm policy``: its subcommands."""


@policy.command("test", help="Evaluate policy packs on a plan offline (violations, lane, approvals).")
@click.option("--file", required=True, metavar="PLAN|SPEC", help="a plan JSON (upm plan --json) or a spec file")
@click.option("--pack", multiple=True, metavar="DIR", help="a pack folder (repeatable; default: the config's)")
@click.option("--env", default="dev", type=ENVIRONMENTS, help="environment (default: dev)")
@click.option("--tenant", type=cliargs.TENANT, default="default", help="(default: default)")
@click.option("--initiator", default="policy-test", help="(default: policy-test)")
@click.option("--config", metavar="FILE", help="pre-flight configuration (default: UPM_PREFLIGHT_CONFIG)")
@click.option("--at", type=cliargs.ISO_TIME, metavar="ISO-TIME",
              help="evaluate as of this time (windows), e.g. 2025-10-11T23:00+02:00")
@output_options
def test(**params: Any) -> int:
    return cliargs.run(guarded(cmd_policy_test), params)
