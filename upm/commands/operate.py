"""``upm resume|rollback|cancel ID [--as NAME] [--reason R]``: operator commands on a change.

Each sends one request on ``upm.cmd.<tenant>.<verb>.<you>`` and prints the executor's reply. Exit
codes: 0 accepted, 2 refused (the message says why), 3 UPM not reachable.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from upm import cliargs
from upm.cliargs import connection_options, identity_option, output_options
from upm.commands.core import guarded, identity, with_store
from upm.output import emit

if TYPE_CHECKING:
    from events.store import EventStore

HELP = {
    "resume": "continue a paused change from its first unfinished step",
    "rollback": "undo what a change ran (the inverse of its completed steps, in reverse order)",
    "cancel": "stop a change: no further step starts (roll back what ran with `upm rollback`)",
}


def _handler(verb: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from events.commands import CHANGE_TEXT_FIELDS  # imported when it runs: `--help` loads no client
        from services.common import client
        from services.gateway import queries

        body = {"change_id": args.change_id, "reason": args.reason}
        client.refuse_secrets_locally(body, CHANGE_TEXT_FIELDS)
        who = identity(args)

        async def send(store: EventStore) -> dict[str, Any]:
            tenant = args.tenant or await queries.tenant_of(store.nc, args.change_id, principal=who)
            return await client.command(store.nc, tenant, verb, body, principal=who)

        reply = with_store(args, send)
        emit({"ok": True, "change_id": reply["change_id"], "command": verb}, args,
             text=f"{verb}: accepted for {reply['change_id']}")
        return 0

    return guarded(run)


def _command(verb: str) -> click.Command:
    """The click command of ``verb``: the same flags for all three."""

    @click.command(verb, help=HELP[verb][0].upper() + HELP[verb][1:] + ".")
    @click.argument("change_id", type=cliargs.CHANGE_ID)
    @identity_option
    @click.option("--reason", default="", help="why (recorded in the event)")
    @click.option("--tenant", type=cliargs.TENANT_OR_ANY, help="tenant (default: the change's, looked up)")
    @connection_options
    @output_options
    def command(**params: Any) -> int:
        return cliargs.run(_handler(verb), params)

    return command


resume, rollback, cancel = (_command(verb) for verb in ("resume", "rollback", "cancel"))
