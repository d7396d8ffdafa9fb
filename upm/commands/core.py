"""The core ``upm`` subcommands: up, down, service, health, submit, status, watch, demo, completion.

Thin: each parses its flags, calls :mod:`upm.app` or :mod:`services.common.client`, and prints
with :mod:`upm.output`. Exit codes: 0 success, 1 the change did not succeed, 2 refused
input (the message says why), 3 UPM not reachable.

This module is light on purpose (click, :mod:`upm.cliargs`, :mod:`upm.output`): ``upm submit --help``
loads it, so NATS, the services and the composition root are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from events.subjects import ANY_TENANT
from services.common import settings, statefile
from services.common.errors import CommandRejected, ConfigError, NotRunning
from upm import cliargs, output
from upm.cliargs import connection_options, identity_option, output_options
from upm.output import emit, render_table

if TYPE_CHECKING:
    from events.store import EventStore, StoredEvent
    from services.common import client

T = TypeVar("T")
ENVIRONMENTS = cliargs.LazyChoice("events.commands:ENVIRONMENTS", "[dev|test|staging|prod]")
SERVICES = cliargs.LazyChoice("upm.app:PROCESS_NAMES", "NAME")


def fail(message: str, code: int = 2) -> int:
    return output.error(message, code)


def identity(args: argparse.Namespace) -> str:
    """The identity this call acts as (``--as``, ``UPM_IDENTITY``, the login name)."""
    from services.security import access

    return access.whoami(getattr(args, "as_user", None))


def with_store(args: argparse.Namespace, body: Callable[[EventStore], Awaitable[T]]) -> T:
    """Connect as the flags say (as :func:`identity`), run ``body`` with an event store, close the connection."""
    import anyio

    from events.store import EventStore
    from services.common import connection

    async def main() -> T:
        nc = await connection.connect(connection.resolve_url(args.nats, args.data), data=args.data, identity=identity(args))
        try:
            return await body(EventStore(nc))
        finally:
            await nc.close()

    return anyio.run(main)


def guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn UPM's own errors into a clear message and an exit code instead of a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except CommandRejected as err:
            if err.rule in ("visibility", "exists"):
                return fail(f"not found: {err}")
            where = f" (field {err.field}, rule {err.rule})" if err.field else ""
            return fail(f"rejected{where}: {err}")
        except NotRunning as err:
            return fail(str(err), 3)
        except ConfigError as err:
            return fail(str(err))
        except KeyboardInterrupt:
            return 130

    return run


# -- up / down / service ------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    from services.common.errors import ServerStartFailed
    from upm import app, emulators

    folder = settings.data_dir(args.data)
    try:
        state = app.up(folder, external_url=args.nats or os.environ.get("NATS_URL") or None,
                       extras=emulators.parse_extras(args.with_),
                       aws_endpoint=args.aws_endpoint, postgres_dsn=args.postgres_dsn, tls=args.tls,
                       access=Path(args.access) if args.access else None, cluster_size=args.cluster,
                       copies=args.replicas, approvers=args.approvers or (),
                       preflight_config=Path(args.preflight_config) if args.preflight_config else None,
                       timeout=args.ready_timeout, console=args.console, console_port=args.console_port,
                       process_per_service=args.process_per_service)
    except ServerStartFailed as err:
        return fail(str(err))
    targets = "".join(f"\n{name}: " + ", ".join(f"{k} {v}" for k, v in where.items() if v is not None)
                      for name, where in state.get("targets", {}).items())
    data_flag = "" if folder == settings.data_dir(None) else f" --data {shlex.quote(str(folder))}"
    emit(state, args, text=f"UPM is up: NATS {state['url']}, services {', '.join(app.SERVICE_NAMES)}{targets}\n"
                           f"security: {app.security_summary(state)}\n"
                           f"approvals: {approval_summary(state)}\n"
                           + (f"console: {state['console']}\n" if state.get("console") else "") +
                           f"data in {folder}; stop with `upm down{data_flag}`")
    return 0


def cmd_completion(args: argparse.Namespace) -> int:
    """The shell's completion script, as click generates it: the shell asks ``upm`` itself for the
    words (``_UPM_COMPLETE``), so every command, subcommand, flag and choice is completed."""
    from click.shell_completion import get_completion_class

    from upm import cli

    completion = get_completion_class(args.shell)
    if completion is None:  # click knows bash and zsh; the flag allows no other
        raise ConfigError(f"no completion for {args.shell}")
    sys.stdout.write(completion(cli.upm, {}, "upm", cli.COMPLETE_VAR).source() + "\n")
    return 0


def approval_summary(state: dict[str, Any]) -> str:
    """Who can approve, in words, with the command that does it."""
    from upm import app

    if state.get("approvers"):
        return (f"{', '.join(state['approvers'])} can approve (group {app.APPROVER_GROUP}, every tenant): "
                f"`upm approve CHANGE_ID --as {state['approvers'][0]}`")
    if state.get("preflight_config"):
        return f"approver groups as set in {state['preflight_config']}"
    return (f"nobody can approve yet; low-risk dev changes go through on their own, others wait for an approver "
            f"of {app.APPROVER_GROUP}: start with `upm up --approvers NAME[,NAME]` (or --preflight-config FILE)")


def cmd_down(args: argparse.Namespace) -> int:
    from upm import app

    folders = [settings.data_dir(args.data)] if args.data or os.environ.get("UPM_DATA") else _running_folders()
    if len(folders) > 1:
        listed = "; ".join(f"upm down --data {shlex.quote(str(f))}" for f in folders)
        return fail(f"{len(folders)} UPM instances are running; say which to stop: {listed}")
    folder = folders[0] if folders else settings.data_dir(None)
    stopped = app.down(folder)
    emit({"stopped": stopped, "data": str(folder)}, args,
         text=f"stopped: {', '.join(stopped) or 'nothing was running'} (data folder {folder})")
    return 0


def _running_folders() -> list[Path]:
    """Without --data: the default folder when it runs, else every registered running instance."""
    from upm import app, instances

    default = settings.data_dir(None)
    return [default] if app.is_running(default) else instances.running(app.is_running)


def cmd_service(args: argparse.Namespace) -> int:
    from services.common import connection
    from upm import app

    url = connection.resolve_url(args.nats, args.data)
    # the auditor's keys, the projector's files and the local scope live in the data folder
    app.run_service_process(tuple(args.name), url, Path(args.ready_dir) if args.ready_dir else None,
                            settings.Settings.from_env(args.data))
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    import anyio

    from services.common import connection
    from upm import app, health

    url = connection.resolve_url(args.nats, args.data)
    state = statefile.read_state(settings.data_dir(args.data))
    who = identity(args)

    async def ask() -> tuple[health.BusHealth | None, str, str]:
        """The responder's answer; else why NATS could not be reached, or why nobody answered."""
        try:
            nc = await connection.connect(url, data=args.data, identity=who)
        except NotRunning as err:
            return None, str(err), ""
        try:
            return await health.ask_health(nc, principal=who), "", ""
        except NotRunning as err:
            return None, "", str(err)
        finally:
            await nc.close()

    bus, unreachable, silent = anyio.run(ask)
    local = health.local_facts(state) if state is not None and state.get("url") == url else None
    report = health.assess(app.SERVICE_NAMES, url=url, local=local, bus=bus, unreachable=unreachable, silent=silent)
    emit(report, args, text=health.render(report))
    return 0 if report.ok else 1


# -- submit / status / watch --------------------------------------------------------------


def intent_from_args(args: argparse.Namespace) -> dict[str, Any]:
    if (args.request is None) == (args.file is None):
        raise CommandRejected("give a REQUEST in words or --file SPEC (one of them)", field="request", rule="one-of")
    command: dict[str, Any] = {
        "source": args.source,
        "visibility": args.visibility,
        "environment": args.env,
        "reason": args.reason,
    }
    if args.request is not None:
        command["request"] = args.request
    else:
        from services.planner import PlanError, spec_to_intent
        from services.planner.errors import SecretRefused
        from services.planner.iac.load import load_input

        try:
            command["spec"] = load_input(Path(args.file), args.var, args.var_file)
            spec_to_intent(command["spec"])  # not a spec (e.g. /etc/passwd): refused here, never sent
        except PlanError as err:
            rule = "secret" if isinstance(err, SecretRefused) else "spec"
            raise CommandRejected(str(err), field="file", rule=rule) from None
    for key in ("variant", "window", "idempotency_key"):
        if getattr(args, key):
            command[key] = getattr(args, key)
    return command


def cmd_submit(args: argparse.Namespace) -> int:
    from services.common import client
    from services.gateway import queries

    command = intent_from_args(args)
    who = identity(args)

    async def body(store: EventStore) -> client.ChangeStatus | str:
        change_id = await client.submit(store.nc, args.tenant, command, principal=who)
        if not args.wait:
            return change_id
        if not args.json:
            sys.stdout.write(f"change {change_id} submitted (tenant {args.tenant}); following it until it closes "
                             f"(at most {args.timeout:g}s: --timeout; Ctrl-C stops waiting, the change goes on)\n")
            sys.stdout.flush()
        printer = None if args.json else _progress_printer(change_id, args.tenant)
        try:
            return await queries.wait_closed(store.nc, args.tenant, change_id, principal=who, within=args.timeout,
                                             on_event=printer)
        except TimeoutError:
            raise StoppedWaiting(change_id, args.tenant, args.timeout) from None

    try:
        result = with_store(args, body)
    except StoppedWaiting as stopped:
        return fail(str(stopped), STOPPED_WAITING)
    if isinstance(result, str):
        emit({"change_id": result, "tenant": args.tenant}, args, text=result)
        return 0
    emit(result, args, text=_outcome_text(result))
    return 0 if result.outcome == "succeeded" else 1


STOPPED_WAITING = 5
"""``upm submit --wait`` stopped waiting (its ``--timeout``); the change itself goes on."""


class StoppedWaiting(Exception):
    def __init__(self, change_id: str, tenant: str, within: float) -> None:
        super().__init__(
            f"stopped waiting after {within:g}s; change {change_id} goes on without you: follow it with "
            f"`upm watch {change_id} --tenant {tenant}`, or see where it stands with `upm status {change_id}`")


def _progress_printer(change_id: str, tenant: str) -> Callable[[StoredEvent], None]:
    from events.model import ApprovalRequested, ChangeScheduled
    from services.common import client

    def show(stored: StoredEvent) -> None:
        e = client.line(stored)
        sys.stdout.write(f"  {e.phase:<9} {e.type:<22} {e.summary}\n")
        payload = stored.event.payload
        if isinstance(payload, ApprovalRequested):
            groups = " or ".join(payload.groups) or "any approver group"
            sys.stdout.write(f"  waiting for people: {payload.required} approval(s) from {groups} (not you: "
                             f"whoever submits cannot approve). An approver runs:\n"
                             f"      upm approve {change_id} --tenant {tenant} --as <approver>\n")
        elif isinstance(payload, ChangeScheduled):
            sys.stdout.write(f"  waiting for the {payload.window} maintenance window: it opens {payload.release_at}\n")
        sys.stdout.flush()

    return show


def _outcome_text(status: client.ChangeStatus) -> str:
    text = f"change {status.change_id}: {status.outcome or status.state}"
    if status.reason:
        text += f"\n  reason: {status.reason}"
    if status.chain != "ok":
        text += f"\n  chain: {status.chain}"
    return text + f"\n  events: {status.subject}"


def cmd_status(args: argparse.Namespace) -> int:
    from events.codec import to_builtins
    from services.gateway import queries

    status = with_store(args, lambda store: queries.ask_status(store.nc, args.tenant, args.change_id,
                                                               principal=identity(args)))
    table = render_table(to_builtins(list(status.events)))
    emit(status, args, text=f"{_outcome_text(status)}\n\n{table}")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from events.codec import json_dumps
    from services.common import client
    from services.gateway import queries

    async def body(store: EventStore) -> int:
        seen = 0
        tenant = args.tenant or (ANY_TENANT if args.change_id else "default")
        events = queries.follow(store.nc, tenant, principal=identity(args), change_id=args.change_id,
                                from_start=args.from_start)
        async for stored in events:
            e = client.line(stored)
            if args.json:
                sys.stdout.write(json_dumps(stored.event) + "\n")
            else:
                sys.stdout.write(f"{e.ts} {stored.event.change_id[:8]} {e.phase:<9} {e.type:<22} {e.summary}\n")
            sys.stdout.flush()
            seen += 1
            if (args.count and seen >= args.count) or (args.change_id and client.is_final(stored)):
                break
        return 0

    return with_store(args, body)


def cmd_demo(args: argparse.Namespace) -> int:
    from upm import demo, emulators

    folder = Path(args.data or ".upm-demo").resolve()
    out = sys.stderr if args.json else sys.stdout
    extras = emulators.parse_extras(args.with_)
    results = demo.run_demo(folder, out, extras)
    rows = [{"change": r.title, "outcome": r.outcome, "events": r.events, "seconds": r.seconds,
             "change_id": r.change_id} for r in results]
    text = (
        "\n" + render_table(rows)
        + f"\n\nEvents are kept in {folder} (stream UPM_EVENTS, subjects upm.evt.{demo.TENANT}.<change_id>.>)."
        + f"\nInspect them: upm up --data {folder} --access {folder / 'demo-access.yaml'} && "
        f"upm status <change_id> --as {demo.INITIATOR} --data {folder}; then upm down --data {folder}"
    )
    emit(rows, args, text=text)
    expected = demo.expected_outcomes(demo.files_of(folder), extras)
    return 0 if [r.outcome for r in results] == expected else 1


# -- the click commands (registered in upm/cli.py's COMMANDS) --------------------------------------


@click.command(help="Run the whole pipeline on embedded defaults and show it.")
@click.option("--data", metavar="DIR", help="data folder for the demo (default ./.upm-demo, wiped first)")
@click.option("--with", "with_", metavar="aws,postgres",
              help="also start these targets (moto server, embedded PostgreSQL) and tell their stories")
@output_options
def demo(**params: Any) -> int:
    return cliargs.run(guarded(cmd_demo), params)


@click.command(help="Start embedded NATS and every service (in the background).")
@connection_options
@click.option("--ready-timeout", type=cliargs.SECONDS, default=30.0,
              help="seconds to wait for every service to be ready (default 30; more on a busy machine)")
@click.option("--with", "with_", metavar="aws,postgres",
              help="also start local targets: aws (a moto server), postgres (an embedded PostgreSQL)")
@click.option("--aws-endpoint", metavar="URL",
              help="use this AWS endpoint (and the usual AWS_* credentials) instead of a moto server")
@click.option("--postgres-dsn", metavar="DSN",
              help="use this PostgreSQL (a superuser's postgresql:// DSN) instead of an embedded one")
@click.option("--tls", is_flag=True,
              help="mTLS: make a CA under DIR/tls; NATS then refuses any client without one of its certificates")
@click.option("--access", metavar="FILE",
              help="roles per tenant (YAML/JSON; implies --tls): a certificate per person and service, and NATS "
                   "lets each identity publish and subscribe only to what its roles allow")
@click.option("--cluster", type=cliargs.POSITIVE, default=0,
              help="start N (at least 3) embedded nats-servers on loopback forming one JetStream cluster; every "
                   "stream and store gets UPM_REPLICAS replicas (default 3)")
@click.option("--replicas", type=cliargs.POSITIVE, default=1,
              help="run N processes of each service (they share its durable consumer; default 1)")
@click.option("--process-per-service", is_flag=True,
              help="run every service in a process of its own (default: pre-flight, the executor and the "
                   "projector each alone, the other five sharing one process, which saves about 185 MiB)")
@click.option("--approvers", type=cliargs.NAMES,
              help="these people approve changes in every tenant (members of the group the built-in approval "
                   "lanes ask, which `upm up` names); written to DIR/preflight.json")
@click.option("--preflight-config", metavar="FILE",
              help="the pre-flight configuration (groups, budgets, windows, policies; see "
                   "services/preflight/README.md; default UPM_PREFLIGHT_CONFIG)")
@click.option("--console", is_flag=True,
              help="also run the web console (`upm serve`) on loopback, supervised like the services; with "
                   "--access people sign in with tokens from `upm serve token add NAME`")
@click.option("--console-port", type=cliargs.PORT, default=0,
              help="the console's port (default: a free one, printed)")
@output_options
def up(**params: Any) -> int:
    return cliargs.run(guarded(cmd_up), params)


@click.command(help="Print the completion script of SHELL. bash: `source <(upm completion bash)` (or save it "
                    "under ~/.local/share/bash-completion/completions/upm); zsh: save `upm completion zsh` as "
                    "_upm in a folder of your $fpath.")
@click.argument("shell", type=click.Choice(("bash", "zsh")))
def completion(**params: Any) -> int:
    return cliargs.run(guarded(cmd_completion), params)


@click.command(help="Stop what `upm up` started.")
@click.option("--data", metavar="DIR",
              help="data folder of `upm up` (default: UPM_DATA, ./.upm, else the one instance running)")
@output_options
def down(**params: Any) -> int:
    return cliargs.run(guarded(cmd_down), params)


@click.command(help="Run one or more services in the foreground.")
@click.argument("name", nargs=-1, required=True, type=SERVICES)
@click.option("--ready-dir", hidden=True)
@connection_options
def service(**params: Any) -> int:
    return cliargs.run(guarded(cmd_service), params)


@click.command(help="Is every service up, behind or failing; the stream, the newest signed head, stalled changes "
                    "(exit 1 naming what is down).")
@identity_option
@connection_options
@output_options
def health(**params: Any) -> int:
    return cliargs.run(guarded(cmd_health), params)


@click.command(help="Submit an intent: REQUEST in words, or --file SPEC.")
@click.argument("request", required=False)
@click.option("--file", metavar="SPEC", help="a declarative spec (YAML or JSON) or infrastructure code "
              "(terraform show -json plan, .tf file or directory, Kubernetes manifests) instead of words")
@cliargs.var_options
@click.option("--tenant", type=cliargs.TENANT, default="default", help="tenant (default: default)")
@identity_option
@click.option("--source", default="api", type=click.Choice(("chatops", "api", "ticket")), help="(default: api)")
@click.option("--visibility", default="team", type=click.Choice(("team", "org", "private")),
              help="(default: team)")
@click.option("--env", default="dev", type=ENVIRONMENTS, help="environment (default: dev)")
@click.option("--reason", default="", help="why (recorded in the plan's annotations)")
@click.option("--variant", help="rollout variant (canary, blue-green, waves)")
@click.option("--window", help="requested change window")
@click.option("--idempotency-key", help="resubmitting with the same key returns the same change")
@click.option("--wait", is_flag=True, help="follow the change until it is closed")
@click.option("--timeout", type=cliargs.SECONDS, default=300.0, help="seconds to wait with --wait")
@connection_options
@output_options
def submit(**params: Any) -> int:
    return cliargs.run(guarded(cmd_submit), params)


@click.command(help="Where a change stands, with its events.")
@click.argument("change_id", type=cliargs.CHANGE_ID)
@click.option("--tenant", type=cliargs.TENANT_OR_ANY, default=ANY_TENANT,
              help="tenant (default: the change's, looked up)")
@identity_option
@connection_options
@output_options
def status(**params: Any) -> int:
    return cliargs.run(guarded(cmd_status), params)


@click.command(help="Stream events live (a tenant's, or one change's).")
@click.argument("change_id", required=False, type=cliargs.CHANGE_ID)
@click.option("--tenant", type=cliargs.TENANT, help="tenant (default: the change's; without a change: `default`)")
@click.option("--from-start", is_flag=True, help="replay from the first event")
@click.option("--count", type=cliargs.COUNT, default=0, help="stop after N events")
@identity_option
@connection_options
@click.option("--json", is_flag=True, help="one JSON event per line")
def watch(**params: Any) -> int:
    return cliargs.run(guarded(cmd_watch), params)
