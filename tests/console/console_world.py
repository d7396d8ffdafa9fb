"""The secure world of the console tests (its fixtures are in conftest.py): every real UPM service
under an access file, people connected as themselves, and the console (as ``upm-serve``) on a free
loopback port.

People (tenant acme): alice requester, bob and carol approvers (members of ``platform-owners``,
the group prod changes ask for two of), audrey auditor; tenant globex: gina requester.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
from nats.aio.client import Client as NATS

from services.common import client
from services.common.client import ChangeStatus
from services.gateway import queries
from services.security.access import parse

ACCESS_DOC = {
    "org": "example",
    "tenants": {
        "acme": {"alice": ["requester"], "bob": ["approver"], "carol": ["approver"], "audrey": ["auditor"]},
        "globex": {"gina": ["requester"]},
    },
}
ACCESS = parse(ACCESS_DOC, "test access")
PEOPLE = ("alice", "bob", "carol", "audrey", "gina")


def token(who: str) -> str:
    return f"console-token-of-{who}-0123456789"


@dataclass
class World:
    url: str
    base: str
    people: dict[str, NATS]
    tmp: Path
    asker: NATS  # the console's connection (as upm-serve)

    async def submit(self, who: str, request: str, **fields: str) -> str:
        return await client.submit(self.people[who], "acme" if who != "gina" else "globex",
                                   {"request": request, "source": "api", **fields}, principal=who)

    async def status(self, who: str, change_id: str) -> ChangeStatus:
        return await queries.ask_status(self.people[who], "_any", change_id, principal=who)

    async def until(self, change_id: str, predicate: Callable[[ChangeStatus], bool], within: float = 30) -> ChangeStatus:
        with anyio.fail_after(within):
            while True:
                status = await self.status("audrey", change_id)
                if predicate(status):
                    return status
                await anyio.sleep(0.1)
