"""``upm resume|rollback|cancel ID [--as NAME] [--reason R]``: operator commands on a change.

Each sends one request on ``upm.cmd.<tenant>.<verb>.<you>`` and prints the executor's reply. Exit
codes: 0 accepted, 2 refused (the message says why), 3 UPM not reachable.
"""

from __future__ import annotations

import argparse
from typing import Any

from events.commands import CHANGE_TEXT_FIELDS
from events.store import EventStore
from services.common import client
from services.gateway import queries
from upm import cliargs
from upm.commands.core import add_connection_options, add_identity_option, guarded, identity, with_store
from upm.output import add_output_options, emit

HELP = {
    "resume": "continue a paused change from its first unfinished step",
    "rollback": "undo what a change ran (the inverse of its completed steps, in reverse order)",
    "cancel": "stop a change: no further step starts (roll back what ran with `upm rollback`)",
}


def _handler(verb: str) -> Any:
    def run(args: argparse.Namespace) -> int:
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


def register(sub: Any) -> None:
    """Add ``resume``, ``rollback`` and ``cancel`` to the ``upm`` parser."""
    for verb, text in HELP.items():
        p = sub.add_parser(verb, help=text)
        p.add_argument("change_id", type=cliargs.change_id)
        add_identity_option(p)
        p.add_argument("--reason", default="", help="why (recorded in the event)")
        p.add_argument("--tenant", type=cliargs.tenant_or_any, help="tenant (default: the change's, looked up)")
        add_connection_options(p)
        add_output_options(p)
        p.set_defaults(func=_handler(verb))
