"""``upm resume|rollback|cancel ID --as USER [--reason R]``: operator commands on a change.

Each sends one request on ``upm.cmd.<tenant>.<verb>`` and prints the executor's reply. Exit
codes: 0 accepted, 2 refused (the message says why), 3 UPM not reachable.
"""

from __future__ import annotations

import argparse
import getpass
from typing import Any

import msgspec
import nats.errors

from events.store import EventStore
from events.subjects import command_subject
from services.commands import add_connection_options, guarded, with_store
from services.errors import CommandRejected, NotRunning
from services.output import add_output_options, emit

HELP = {
    "resume": "continue a paused change from its first unfinished step",
    "rollback": "undo what a change ran (the inverse of its completed steps, in reverse order)",
    "cancel": "stop a change: no further step starts (roll back what ran with `upm rollback`)",
}


async def send(store: EventStore, tenant: str, verb: str, command: dict[str, Any], within: float = 10.0) -> str:
    """Send ``verb`` for a change; its change id, or :class:`CommandRejected` with the reason."""
    try:
        reply = await store.nc.request(command_subject(tenant, verb), msgspec.json.encode(command), timeout=within)
    except nats.errors.NoRespondersError as exc:
        raise NotRunning(f"no executor answers `{verb}` commands: is `upm up` running?") from exc
    except nats.errors.TimeoutError as exc:
        raise NotRunning(f"the executor did not answer `{verb}` within {within}s") from exc
    body = msgspec.json.decode(reply.data)
    if not body.get("ok"):
        error = body.get("error") or {}
        raise CommandRejected(str(error.get("message", "refused")), field=str(error.get("field", "")),
                              rule=str(error.get("rule", "")))
    return str(body["change_id"])


async def tenant_of(store: EventStore, change_id: str) -> str:
    """The tenant a change belongs to, from the log."""
    log = await store.read("*", change_id)
    if not log.events:
        raise CommandRejected(f"no change {change_id} in the log", field="change_id", rule="exists")
    return log.tenant


def _handler(verb: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        command = {"change_id": args.change_id, "by": args.as_user or getpass.getuser(), "reason": args.reason}

        async def body(store: EventStore) -> str:
            tenant = args.tenant or await tenant_of(store, args.change_id)
            return await send(store, tenant, verb, command)

        change_id = with_store(args, body)
        emit({"ok": True, "change_id": change_id, "command": verb}, args, text=f"{verb}: accepted for {change_id}")
        return 0

    return guarded(run)


def register(sub: Any) -> None:
    """Add ``resume``, ``rollback`` and ``cancel`` to the ``upm`` parser."""
    for verb, text in HELP.items():
        p = sub.add_parser(verb, help=text)
        p.add_argument("change_id")
        p.add_argument("--as", dest="as_user", metavar="USER", help="operator (default: your user name)")
        p.add_argument("--reason", default="", help="why (recorded in the event)")
        p.add_argument("--tenant", help="tenant (default: the change's, looked up)")
        add_connection_options(p)
        add_output_options(p)
        p.set_defaults(func=_handler(verb))
