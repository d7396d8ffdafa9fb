"""The core ``upm`` subcommands: up, down, service, health, submit, status, watch.

Thin: each parses its flags, calls :mod:`upm.app` or :mod:`services.common.client`, and prints
with :mod:`upm.output`. Exit codes: 0 success, 1 the change did not succeed, 2 refused
input (the message says why), 3 UPM not reachable.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio

from events.codec import json_dumps, to_builtins
from events.commands import ENVIRONMENTS
from events.model import ApprovalRequested, ChangeScheduled
from events.store import EventStore, StoredEvent
from events.subjects import ANY_TENANT
from services.common import client, connection, settings
from services.common.errors import CommandRejected, ConfigError, NotRunning, ServerStartFailed
from services.gateway import queries
from services.security import access
from upm import app, cliargs, emulators, health, instances, output
from upm.output import add_output_options, emit, render_table

T = TypeVar("T")
Sub = "argparse._SubParsersAction[argparse.ArgumentParser]"


def fail(message: str, code: int = 2) -> int:
    return output.error(message, code)


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nats", metavar="URL", help="NATS server URL (default: NATS_URL, then `upm up`'s)")
    parser.add_argument("--data", metavar="DIR", help="data folder of `upm up` (default: UPM_DATA or ./.upm)")


def add_identity_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--as", dest="as_user", metavar="NAME",
                        help=f"who you act as (default: {access.IDENTITY_ENV}, then your login name); with TLS, "
                             "the client certificate client-NAME is used, and with an access file the server "
                             "accepts no other name from it")


def identity(args: argparse.Namespace) -> str:
    """The identity this call acts as (``--as``, ``UPM_IDENTITY``, the login name)."""
    return access.whoami(getattr(args, "as_user", None))


def with_store(args: argparse.Namespace, body: Callable[[EventStore], Awaitable[T]]) -> T:
    """Connect as the flags say (as :func:`identity`), run ``body`` with an event store, close the connection."""

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
    folder = settings.data_dir(args.data)
    try:
        state = app.up(folder, external_url=args.nats or os.environ.get("NATS_URL") or None,
                       extras=emulators.parse_extras(args.with_),
                       aws_endpoint=args.aws_endpoint, postgres_dsn=args.postgres_dsn, tls=args.tls,
                       access=Path(args.access) if args.access else None, cluster_size=args.cluster,
                       copies=args.replicas, approvers=args.approvers,
                       preflight_config=Path(args.preflight_config) if args.preflight_config else None,
                       timeout=args.ready_timeout, console=args.console, console_port=args.console_port)
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
    """The shell's completion script, generated from the whole parser (shtab is imported only here)."""
    import shtab

    from upm.cli import build_parser

    sys.stdout.write(shtab.complete(build_parser(), shell=args.shell))
    return 0


def approval_summary(state: dict[str, Any]) -> str:
    """Who can approve, in words, with the command that does it."""
    if state.get("approvers"):
        return (f"{', '.join(state['approvers'])} can approve (group {app.APPROVER_GROUP}, every tenant): "
                f"`upm approve CHANGE_ID --as {state['approvers'][0]}`")
    if state.get("preflight_config"):
        return f"approver groups as set in {state['preflight_config']}"
    return (f"nobody can approve yet; low-risk dev changes go through on their own, others wait for an approver "
            f"of {app.APPROVER_GROUP}: start with `upm up --approvers NAME[,NAME]` (or --preflight-config FILE)")


def cmd_down(args: argparse.Namespace) -> int:
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
    default = settings.data_dir(None)
    return [default] if app.is_running(default) else instances.running(app.is_running)


def cmd_service(args: argparse.Namespace) -> int:
    url = connection.resolve_url(args.nats, args.data)
    # the auditor's keys, the projector's files and the local scope live in the data folder
    app.run_service_process(tuple(args.name), url, Path(args.ready_dir) if args.ready_dir else None,
                            settings.Settings.from_env(args.data))
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    url = connection.resolve_url(args.nats, args.data)
    state = connection.read_state(settings.data_dir(args.data))
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
    status = with_store(args, lambda store: queries.ask_status(store.nc, args.tenant, args.change_id,
                                                               principal=identity(args)))
    table = render_table(to_builtins(list(status.events)))
    emit(status, args, text=f"{_outcome_text(status)}\n\n{table}")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
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
    from upm import demo

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


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on embedded defaults and show it")
    p.add_argument("--data", metavar="DIR", help="data folder for the demo (default ./.upm-demo, wiped first)")
    p.add_argument("--with", dest="with_", metavar="aws,postgres",
                   help="also start these targets (moto server, embedded PostgreSQL) and tell their stories")
    add_output_options(p)
    p.set_defaults(func=guarded(cmd_demo))

    p = sub.add_parser("up", help="start embedded NATS and every service (in the background)")
    add_connection_options(p)
    p.add_argument("--ready-timeout", type=cliargs.seconds, default=30.0, metavar="S",
                   help="seconds to wait for every service to be ready (default 30; more on a busy machine)")
    p.add_argument("--with", dest="with_", metavar="aws,postgres",
                   help="also start local targets: aws (a moto server), postgres (an embedded PostgreSQL)")
    p.add_argument("--aws-endpoint", metavar="URL",
                   help="use this AWS endpoint (and the usual AWS_* credentials) instead of a moto server")
    p.add_argument("--postgres-dsn", metavar="DSN",
                   help="use this PostgreSQL (a superuser's postgresql:// DSN) instead of an embedded one")
    p.add_argument("--tls", action="store_true",
                   help="mTLS: make a CA under DIR/tls; NATS then refuses any client without one of its certificates")
    p.add_argument("--access", metavar="FILE",
                   help="roles per tenant (YAML/JSON; implies --tls): a certificate per person and service, and NATS "
                        "lets each identity publish and subscribe only to what its roles allow")
    p.add_argument("--cluster", type=cliargs.positive, default=0, metavar="N",
                   help="start N (at least 3) embedded nats-servers on loopback forming one JetStream cluster; every "
                        "stream and store gets UPM_REPLICAS replicas (default 3)")
    p.add_argument("--replicas", type=cliargs.positive, default=1, metavar="N",
                   help="run N processes of each service (they share its durable consumer; default 1)")
    p.add_argument("--approvers", type=cliargs.names, default=(), metavar="NAME[,NAME]",
                   help=f"these people approve changes in every tenant (members of {app.APPROVER_GROUP}, the group "
                        "the built-in approval lanes ask); written to DIR/preflight.json")
    p.add_argument("--preflight-config", metavar="FILE",
                   help="the pre-flight configuration (groups, budgets, windows, policies; see "
                        "services/preflight/README.md; default UPM_PREFLIGHT_CONFIG)")
    p.add_argument("--console", action="store_true",
                   help="also run the web console (`upm serve`) on loopback, supervised like the services; with "
                        "--access people sign in with tokens from `upm serve token add NAME`")
    p.add_argument("--console-port", type=cliargs.port, default=0, metavar="P",
                   help="the console's port (default: a free one, printed)")
    add_output_options(p)
    p.set_defaults(func=guarded(cmd_up))

    p = sub.add_parser("completion", help="print a shell completion script (bash or zsh)",
                       description="Print the completion script of SHELL. bash: `source <(upm completion bash)` "
                                   "(or save it under ~/.local/share/bash-completion/completions/upm); zsh: save "
                                   "`upm completion zsh` as _upm in a folder of your $fpath.")
    p.add_argument("shell", choices=("bash", "zsh"), help="the shell")
    p.set_defaults(func=guarded(cmd_completion))

    p = sub.add_parser("down", help="stop what `upm up` started")
    p.add_argument("--data", metavar="DIR",
                   help="data folder of `upm up` (default: UPM_DATA, ./.upm, else the one instance running)")
    add_output_options(p)
    p.set_defaults(func=guarded(cmd_down))

    p = sub.add_parser("service", help="run one or more services in the foreground")
    p.add_argument("name", nargs="+", choices=(*app.SERVICE_NAMES, *app.OPTIONAL), help="service(s) to run")
    p.add_argument("--ready-dir", help=argparse.SUPPRESS)
    add_connection_options(p)
    p.set_defaults(func=guarded(cmd_service))

    p = sub.add_parser("health", help="is every service up, behind or failing; the stream, the newest signed head, "
                                      "stalled changes (exit 1 naming what is down)")
    add_identity_option(p)
    add_connection_options(p)
    add_output_options(p)
    p.set_defaults(func=guarded(cmd_health))

    p = sub.add_parser("submit", help="submit an intent (natural language or --file SPEC)")
    p.add_argument("request", nargs="?", help="what to change, in words")
    p.add_argument("--file", metavar="SPEC", help="a declarative spec (YAML or JSON) or infrastructure code "
                   "(terraform show -json plan, .tf file or directory, Kubernetes manifests) instead of words")
    cliargs.add_var_options(p)
    p.add_argument("--tenant", type=cliargs.tenant, default="default", help="tenant (default: default)")
    add_identity_option(p)
    p.add_argument("--source", default="api", choices=("chatops", "api", "ticket"))
    p.add_argument("--visibility", default="team", choices=("team", "org", "private"))
    p.add_argument("--env", default="dev", choices=ENVIRONMENTS, help="environment (default: dev)")
    p.add_argument("--reason", default="", help="why (recorded in the plan's annotations)")
    p.add_argument("--variant", help="rollout variant (canary, blue-green, waves)")
    p.add_argument("--window", help="requested change window")
    p.add_argument("--idempotency-key", help="resubmitting with the same key returns the same change")
    p.add_argument("--wait", action="store_true", help="follow the change until it is closed")
    p.add_argument("--timeout", type=cliargs.seconds, default=300.0, help="seconds to wait with --wait")
    add_connection_options(p)
    add_output_options(p)
    p.set_defaults(func=guarded(cmd_submit))

    p = sub.add_parser("status", help="where a change stands, with its events")
    p.add_argument("change_id", type=cliargs.change_id)
    p.add_argument("--tenant", type=cliargs.tenant_or_any, default=ANY_TENANT,
                   help="tenant (default: the change's, looked up)")
    add_identity_option(p)
    add_connection_options(p)
    add_output_options(p)
    p.set_defaults(func=guarded(cmd_status))

    p = sub.add_parser("watch", help="stream events live (a tenant's, or one change's)")
    p.add_argument("change_id", nargs="?", type=cliargs.change_id)
    p.add_argument("--tenant", type=cliargs.tenant, default=None,
                   help="tenant (default: the change's; without a change: `default`)")
    p.add_argument("--from-start", action="store_true", help="replay from the first event")
    p.add_argument("--count", type=cliargs.count, default=0, help="stop after N events")
    add_identity_option(p)
    add_connection_options(p)
    p.add_argument("--json", action="store_true", help="one JSON event per line")
    p.set_defaults(func=guarded(cmd_watch))
