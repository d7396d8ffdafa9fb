"""RBAC and visibility in the application: every command checks the caller's role in the
change's tenant, the caller is the subject's principal (never a body field), and status / events
answer only with changes the caller may see. (That the server lets a connection speak only as its
own principal, and only in its tenants, is shown in test_security_nats_permissions.py.)

The whole pipeline runs in-process on a real nats-server with one access file:
acme: alice, dave requesters; bob, carol approvers; olga operator; audrey auditor.
globex: gina approver and requester.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS

from events.ids import new_id
from events.model import ApprovalGranted, IntentSubmitted
from events.store import EventStore
from events.subjects import ANY_TENANT, STREAM, command_subject, inbox_prefix, query_subject
from services.common import client
from services.common.errors import CommandRejected, ConfigError
from services.common.runtime import Runner
from services.executor import CommandService
from services.gateway import queries
from services.gateway.service import Gateway
from services.preflight import Host
from services.preflight.config import parse_config
from services.security.access import Access, parse
from upm import app
from upm.natsserver import EmbeddedNats

ACCESS: dict[str, Any] = {
    "org": "example",
    "tenants": {
        "acme": {"alice": ["requester"], "dave": ["requester"], "bob": ["approver"], "carol": ["approver"],
                 "olga": ["operator"], "audrey": ["auditor"]},
        "globex": {"gina": ["requester", "approver"]},
    },
}
Submit = Callable[..., Awaitable[str]]


class People:
    """One connection per person, each with its own reply inbox ``_INBOX.<name>`` (as
    ``upm.app.connect`` makes them): with an access file a request is answered only there."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.open: dict[str, NATS] = {}

    async def __call__(self, who: str) -> NATS:
        if who not in self.open:
            self.open[who] = await nats.connect(self.url, inbox_prefix=inbox_prefix(who))
        return self.open[who]


@pytest.fixture
async def people(nats_server: EmbeddedNats) -> AsyncIterator[People]:
    team = People(nats_server.url)
    yield team
    for conn in team.open.values():
        await conn.close()


@pytest.fixture
async def secured(nc: NATS, store: EventStore, host: Callable[..., Awaitable[None]]) -> Access:
    """The pipeline with the access file above (pre-flight group platform-owners = bob, carol, gina)."""
    access = parse(ACCESS, "test-access")
    config = parse_config({"groups": {"*": {"platform-owners": ["bob", "carol", "gina"]}}}, source="test-config")
    await host(Gateway(nc, access), Host(nc, config=config, interval=0.05, access=access), CommandService(nc, access),
               *(Runner(nc, app.PIPELINE[name]()) for name in ("planner", "executor", "verifier", "auditor")))
    return access


async def _submit(people: People, who: str, target: Path, *, tenant: str = "acme", **extra: Any) -> str:
    return await client.submit(await people(who), tenant, {"request": f"Create directory {target} with mode 0750", **extra},
                               principal=who)


async def _cmd(people: People, verb: str, change_id: str, who: str, tenant: str = "acme",
               **body: Any) -> dict[str, Any]:
    reply = await (await people(who)).request(command_subject(tenant, verb, who),
                             msgspec.json.encode({"change_id": change_id, **body}), timeout=10)
    decoded: dict[str, Any] = msgspec.json.decode(reply.data)
    return decoded


async def _until(store: EventStore, change_id: str, event_type: str) -> None:
    with anyio.fail_after(20):
        while event_type not in [s.event.type for s in (await store.read("acme", change_id)).events]:  # noqa: ASYNC110
            await anyio.sleep(0.05)


async def test_a_requester_cannot_approve_and_an_approver_of_another_tenant_cannot_either(
    secured: Access, people: People, store: EventStore, tmp_path: Path
) -> None:
    """Threat: self-service escalation — a requester (or an approver from another team) pushes a
    prod change through approval. Only approvers of the change's tenant count."""
    change = await _submit(people, "alice", tmp_path / "prod", environment="prod")
    await _until(store, change, "approval.requested")
    requester = await _cmd(people, "approve", change, "dave")
    assert (requester["ok"], requester["error"]["rule"]) == (False, "rbac")
    assert "needs admin or approver" in requester["error"]["message"]
    foreign = await _cmd(people, "approve", change, "gina")  # approver in globex, in the owners group
    assert (foreign["ok"], foreign["error"]["rule"]) == (False, "rbac")
    assert "tenant acme" in foreign["error"]["message"]
    granted = await _cmd(people, "approve", change, "bob")
    assert granted["ok"] is True
    types = [s.event.type for s in (await store.read("acme", change)).events]
    assert types.count("approval.granted") == 1  # the refused ones left nothing behind


async def test_a_forged_by_or_initiator_field_is_ignored_for_the_authenticated_identity(
    secured: Access, people: People, store: EventStore, tmp_path: Path
) -> None:
    """Threat: impersonation through the body — a caller names someone else as initiator or
    approver. The identity is the subject's principal (authenticated by the server)."""
    change = await _submit(people, "alice", tmp_path / "forged", environment="prod", initiator="carol")
    await _until(store, change, "approval.requested")
    log = await store.read("acme", change)
    intent = log.events[0].event
    assert isinstance(intent.payload, IntentSubmitted)
    assert (intent.actor, intent.payload.initiator) == ("alice", "alice")
    reply = await _cmd(people, "approve", change, "bob", by="carol")
    assert reply["ok"] is True
    grants = [s.event for s in (await store.read("acme", change)).events if s.event.type == "approval.granted"]
    assert [(g.actor, g.payload.approver) for g in grants if isinstance(g.payload, ApprovalGranted)] == [
        ("bob", "bob")]


async def test_roles_gate_submit_resume_rollback_and_cancel(
    secured: Access, people: People, store: EventStore, tmp_path: Path
) -> None:
    """Threat: a caller outside the operator role stops or undoes production changes, or a
    stranger submits into a tenant."""
    with pytest.raises(CommandRejected, match="may not intent in tenant acme") as refused:
        await _submit(people, "gina", tmp_path / "stranger")
    assert refused.value.rule == "rbac"
    with pytest.raises(CommandRejected, match="needs admin or operator or requester"):
        await _submit(people, "bob", tmp_path / "approver-submits")
    change = await _submit(people, "alice", tmp_path / "done")
    status = await queries.wait_closed(await people("alice"), "acme", change, principal="alice", within=30)
    assert status.outcome == "succeeded"
    for verb, who in (("rollback", "alice"), ("rollback", "bob"), ("resume", "dave"), ("cancel", "dave")):
        reply = await _cmd(people, verb, change, who)
        assert (verb, who, reply["ok"], reply["error"]["rule"]) == (verb, who, False, "rbac")
    undo = await _cmd(people, "rollback", change, "olga")
    assert undo["ok"] is True
    await _until(store, change, "rollback.completed")
    assert not (tmp_path / "done").exists()


async def test_a_private_change_is_invisible_to_other_requesters_in_status_and_events(
    secured: Access, people: People, tmp_path: Path
) -> None:
    """Threat: information disclosure inside a team — a private change (say, a security fix)
    read by other requesters through status, a change's events or the tenant's live feed."""
    private = await _submit(people, "alice", tmp_path / "private", visibility="private")
    team = await _submit(people, "alice", tmp_path / "team")
    await queries.wait_closed(await people("alice"), "acme", private, principal="alice", within=30)
    await queries.wait_closed(await people("alice"), "acme", team, principal="alice", within=30)
    for who in ("alice", "audrey", "olga", "bob"):
        assert (await queries.ask_status(await people(who), "acme", private, principal=who)).outcome == "succeeded"
    for tenant in ("acme", ANY_TENANT):
        with pytest.raises(CommandRejected, match=f"no change {private} .* that dave may see") as hidden:
            await queries.ask_status(await people("dave"), tenant, private, principal="dave")
        assert hidden.value.rule == "visibility"
    with pytest.raises(CommandRejected, match="may see"):
        await queries.read_change(await people("dave"), "acme", private, principal="dave")
    assert (await queries.ask_status(await people("dave"), "acme", team, principal="dave")).outcome == "succeeded"

    async def feed(who: str) -> set[str]:
        seen = set()
        with anyio.move_on_after(1.0):
            async for stored in queries.follow(await people(who), "acme", principal=who, from_start=True, wait_s=0.2):
                seen.add(stored.event.change_id)
        return seen

    assert await feed("dave") == {team}
    assert await feed("alice") == {team, private}


async def test_org_visibility_spans_the_tenants_of_the_access_file_and_team_does_not(
    secured: Access, people: People, tmp_path: Path
) -> None:
    """Threat: cross-tenant disclosure — a team change of acme read from globex; only changes
    marked org are shared across the org."""
    org = await _submit(people, "alice", tmp_path / "org", visibility="org")
    team = await _submit(people, "alice", tmp_path / "team-only")
    await queries.wait_closed(await people("alice"), "acme", team, principal="alice", within=30)
    await queries.wait_closed(await people("alice"), "acme", org, principal="alice", within=30)
    assert (await queries.ask_status(await people("gina"), ANY_TENANT, org, principal="gina")).tenant == "acme"
    with pytest.raises(CommandRejected, match="that gina may see"):
        await queries.ask_status(await people("gina"), ANY_TENANT, team, principal="gina")
    with pytest.raises(CommandRejected, match="that mallory may see"):  # in no tenant at all
        await queries.ask_status(await people("mallory"), "acme", org, principal="mallory")


async def test_a_request_whose_reply_subject_is_not_the_callers_inbox_is_dropped(
    secured: Access, people: People, store: EventStore, tmp_path: Path
) -> None:
    """Threat: reply-subject injection — the server does not check a request's reply subject, so a
    caller could aim the service's answer at an event subject (stored for ever in someone's log)
    or at another person's inbox (a spoofed answer). Such requests are not acted on at all."""
    alice = await people("alice")
    before = int((await store.js.stream_info(STREAM)).state.messages)
    victim = f"upm.evt.globex.{new_id()}.intent.submitted"
    body = msgspec.json.encode({"request": f"Create directory {tmp_path / 'x'} with mode 0750"})
    for reply in (victim, "_INBOX.bob.spoofed", "$JS.ACK.UPM_EVENTS.planner.1.1.1.1.0"):
        await alice.publish(command_subject("acme", "intent", "alice"), body, reply=reply)
        await alice.publish(query_subject("acme", "status", "alice"), b'{"change_id": "' + new_id().encode() + b'"}',
                            reply=reply)
    await alice.flush()
    await anyio.sleep(0.3)
    assert int((await store.js.stream_info(STREAM)).state.messages) == before
    assert await _submit(people, "alice", tmp_path / "y")  # the proper inbox is answered


def test_a_malformed_access_file_is_refused_with_what_to_write() -> None:
    """Threat: a typo silently granting or dropping rights — the file is validated as a whole."""
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tenants": {"acme": {"alice": ["root"]}}}, "is not a list of roles"),
        ({"tenants": {"ACME": {"alice": ["requester"]}}}, "is not a tenant name"),
        ({"tenants": {"acme": {"al.ice": ["requester"]}}}, "is not a valid identity"),
        ({"tenants": {"acme": {"upm-gateway": ["admin"]}}}, "reserved for UPM's services"),
        ({"tenants": {}}, "tenants must map each tenant"),
        ({"tenants": {"acme": {"alice": ["requester"]}}, "roles": {}}, "unknown key"),
    ]
    for doc, message in cases:
        with pytest.raises(ConfigError, match=message):
            parse(doc, "access.yaml")
