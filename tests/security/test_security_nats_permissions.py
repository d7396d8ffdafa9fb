"""Per-identity NATS permissions, enforced by the server (``upm up --access``). Each test names
the threat it covers; each refusal is seen by the client as a permissions violation from the
server, and each has a positive control so the test can fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import nats
import nats.errors
import pytest
from cryptography import x509
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from events import model
from events.ids import new_id
from events.subjects import (
    LOG_HEADS_CHANGE_ID,
    STREAM,
    SYSTEM_TENANT,
    change_filter,
    command_subject,
    event_subject,
    inbox_prefix,
    sql_subject,
)
from services.common import connection
from services.common.errors import ConfigError
from services.security import access
from services.security.tls import Pki, distinguished_name, ensure_pki
from upm import app, natsauth
from upm.natsserver import EmbeddedNats

ACCESS = {
    "org": "example",
    "admins": ["root"],
    "tenants": {
        "acme": {"alice": ["requester"], "bob": ["approver"], "olga": ["operator"]},
        "globex": {"gina": ["requester"]},
    },
}
AUDIT_TYPES = ("change.closed", "chain.broken", "evidence.published", "log.head", "plan.recompiled")


@dataclass
class Secured:
    url: str
    pki: Pki


@dataclass
class Client:
    """A connection as one identity, with the errors the server sent it."""

    nc: NATS
    errors: list[Exception] = field(default_factory=list)

    async def refused(self, subject: str, within: float = 2.0) -> bool:
        """Whether the server reported a permissions violation on ``subject`` (waits up to ``within``)."""
        wanted = f'"{subject.lower()}"'
        with anyio.move_on_after(within):
            while not any("permissions violation" in str(e) and wanted in str(e) for e in self.errors):  # noqa: ASYNC110
                await anyio.sleep(0.01)
            return True
        return False


Connect = Callable[[str], Awaitable[Client]]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """nats-server with the users of :data:`ACCESS` and the event stream, created as ``upm-admin``."""
    folder = tmp_path_factory.mktemp("natsauth")
    acl = access.parse(ACCESS, "test access")
    pki = ensure_pki(folder / "tls", (*acl.principals(), *app.identities(), "mallory"))
    block = natsauth.authorization_block(natsauth.users(acl, app.SERVICE_NAMES))
    server = EmbeddedNats(folder / "nats", tls=pki, authorization=block)
    server.start()
    anyio.run(app.create_stream, server.url, pki.client_context(natsauth.ADMIN))
    yield Secured(server.url, pki)
    server.stop()


@pytest.fixture
async def connect(secured: Secured) -> AsyncIterator[Connect]:
    opened: list[Client] = []

    async def open_(identity: str) -> Client:
        errors: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            errors.append(exc)

        nc = await nats.connect(secured.url, tls=secured.pki.client_context(identity),
                                inbox_prefix=inbox_prefix(identity), error_cb=on_error, allow_reconnect=False,
                                connect_timeout=5)
        opened.append(Client(nc, errors))
        return opened[-1]

    yield open_
    for client in opened:
        await client.nc.close()


async def _messages(listener: Client, subject: str, act: Callable[[], Awaitable[object]]) -> list[Msg]:
    """What ``listener`` receives on ``subject`` while ``act`` runs: ``act`` is repeated until something
    arrives, for at most a second (on this machine about one fresh connection's first message in a
    hundred never reached a listener subscribed and flushed before it, with no error anywhere: the
    checks here are about permissions, not delivery), and the first batch that arrives is returned."""
    got: list[Msg] = []

    async def collect(msg: Msg) -> None:
        got.append(msg)

    sub = await listener.nc.subscribe(subject, cb=collect)
    await listener.nc.flush()
    with anyio.move_on_after(1):
        while not got:
            await act()  # the sender flushed: the server routed what it accepted before this returns
            await anyio.sleep(0.1)
            await listener.nc.flush()  # all of it has reached the listener's client
            with anyio.fail_after(5):
                while sub.pending_msgs:  # noqa: ASYNC110 - until the callback has taken every one
                    await anyio.sleep(0.01)
    await sub.unsubscribe()
    return got


async def _stored(admin: Client) -> int:
    return int((await admin.nc.jetstream().stream_info(STREAM)).state.messages)


# -- certificates ------------------------------------------------------------------------


def test_a_certificate_maps_to_exactly_its_holders_user(secured: Secured) -> None:
    """Threat: a certificate that nats-server maps to another user than its holder's. The server
    takes an e-mail SAN first, then a DNS SAN, then the RFC 2253 subject: UPM's client
    certificates carry no SAN, and their subject is the identity's user name."""
    for identity in ("alice", "upm-auditor"):
        cert = x509.load_pem_x509_certificate(secured.pki.cert(f"client-{identity}").read_bytes())
        assert cert.subject.rfc4514_string() == distinguished_name(identity) == f"CN={identity},O=UPM"
        with pytest.raises(x509.ExtensionNotFound):
            cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


async def test_a_certificate_of_someone_not_in_the_access_file_is_refused(
    secured: Secured, connect: Connect
) -> None:
    """Threat: a certificate from UPM's CA (a left-over, or issued by mistake) whose holder is in
    no tenant: the server has no user for it."""
    alice = await connect("alice")
    assert alice.nc.is_connected
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(secured.url, tls=secured.pki.client_context("mallory"), allow_reconnect=False,
                           connect_timeout=5)


async def test_connect_acts_as_the_identity_with_its_own_certificate_and_inbox(
    secured: Secured, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threat: a client connecting with a shared certificate or inbox, so the server cannot tell
    (or limit) who it is: connection.connect uses client-<identity> and replies under _INBOX.<identity>;
    an identity the server does not know is refused with a message saying what to do."""
    monkeypatch.setenv(connection.TLS_ENV, str(secured.pki.folder))
    gateway = await connect("upm-gateway")
    sub = await gateway.nc.subscribe("upm.cmd.*.intent.*")
    nc = await connection.connect(secured.url, identity="alice")
    try:
        async with anyio.create_task_group() as tg:
            async def answer() -> None:
                msg = await sub.next_msg(timeout=2)
                assert msg.reply.startswith(f"{inbox_prefix('alice')}.")
                await msg.respond(b"ok")

            tg.start_soon(answer)
            assert (await nc.request(command_subject("acme", "intent", "alice"), b"{}", timeout=2)).data == b"ok"
    finally:
        await nc.close()
    with pytest.raises(ConfigError, match="refused identity mallory"):
        await connection.connect(secured.url, identity="mallory")
    with pytest.raises(ConfigError, match=r"client-nobody\.pem"):
        await connection.connect(secured.url, identity="nobody")


# -- people: commands, inboxes, events ------------------------------------------------------


async def test_a_person_commands_only_in_her_tenants_and_as_herself(connect: Connect) -> None:
    """Threats: a requester submitting into another tenant; impersonation (alice sending a command
    under bob's name)."""
    alice, gateway = await connect("alice"), await connect("upm-gateway")

    async def send(subject: str) -> list[Msg]:
        async def act() -> None:
            await alice.nc.publish(subject, b"{}")
            await alice.nc.flush()

        return await _messages(gateway, "upm.cmd.*.intent.*", act)

    assert [m.subject for m in await send(command_subject("acme", "intent", "alice"))] == ["upm.cmd.acme.intent.alice"]
    for forbidden in (command_subject("globex", "intent", "alice"), command_subject("acme", "intent", "bob")):
        assert await send(forbidden) == []
        assert await alice.refused(forbidden)


async def test_a_person_sends_only_the_verbs_her_roles_allow(connect: Connect) -> None:
    """Threat: a requester approving changes (hers or others') though she is no approver."""
    alice, bob, preflight = await connect("alice"), await connect("bob"), await connect("upm-preflight")

    async def approve(client: Client, who: str) -> list[Msg]:
        async def act() -> None:
            await client.nc.publish(command_subject("acme", "approve", who), b"{}")
            await client.nc.flush()

        return await _messages(preflight, "upm.cmd.*.approve.*", act)

    assert len(await approve(bob, "bob")) == 1
    assert await approve(alice, "alice") == []
    assert await alice.refused(command_subject("acme", "approve", "alice"))


async def test_the_console_sends_only_approve_and_deny_for_the_people_it_signed_in(connect: Connect) -> None:
    """Threat: the web console's identity (``upm-serve``, which approves for whoever signed in) used to
    submit, roll back, cancel or write events: it may send approve and deny only (pre-flight then
    checks the named person's roles, tests/console/)."""
    serve, preflight = await connect(natsauth.SERVE), await connect("upm-preflight")

    async def send(verb: str) -> list[Msg]:
        async def act() -> None:
            await serve.nc.publish(command_subject("acme", verb, "bob"), b"{}")
            await serve.nc.flush()

        return await _messages(preflight, f"upm.cmd.*.{verb}.*", act)

    assert len(await send("approve")) == 1 and len(await send("deny")) == 1
    for verb in ("intent", "rollback", "cancel"):
        await serve.nc.publish(command_subject("acme", verb, "bob"), b"{}")
        assert await serve.refused(command_subject("acme", verb, "bob"))


async def test_a_person_cannot_append_events(connect: Connect) -> None:
    """Threat: a person forging events directly on the stream (closing a change, faking an
    approval or a verification) instead of sending commands the services validate."""
    alice, admin = await connect("alice"), await connect(natsauth.ADMIN)
    before = await _stored(admin)
    change = new_id()
    for event_type in ("change.closed", "approval.granted", "intent.submitted"):
        subject = event_subject("acme", change, event_type)
        await alice.nc.publish(subject, b"{}")
        await alice.nc.flush()
        assert await alice.refused(subject)
    assert await _stored(admin) == before


async def test_a_person_listens_only_on_her_own_inbox(connect: Connect) -> None:
    """Threats: reading events raw, bypassing visibility (any tenant's), and reading another
    person's replies (their inbox)."""
    alice, gateway = await connect("alice"), await connect("upm-gateway")
    async def reply() -> None:
        await gateway.nc.publish(f"{inbox_prefix('alice')}.test", b"reply")
        await gateway.nc.flush()

    got = await _messages(alice, f"{inbox_prefix('alice')}.test", reply)
    assert [m.data for m in got][:1] == [b"reply"]
    for subject in ("upm.evt.acme.>", "upm.evt.globex.>", f"{inbox_prefix('bob')}.>", ">"):
        await alice.nc.subscribe(subject)
        await alice.nc.flush()
        assert await alice.refused(subject)


async def test_a_person_without_a_stream_role_cannot_use_jetstream(connect: Connect) -> None:
    """Threat: a requester reading the stream through the JetStream API (a consumer, or a direct
    get, whose body is not subject-scoped and would read any tenant) or managing the stream."""
    alice, admin = await connect("alice"), await connect(natsauth.ADMIN)
    subjects = (
        f"$JS.API.CONSUMER.CREATE.{STREAM}.c1.upm.evt.acme.>",
        f"$JS.API.CONSUMER.CREATE.{STREAM}",
        f"$JS.API.DIRECT.GET.{STREAM}",
        f"$JS.API.STREAM.INFO.{STREAM}",
        f"$JS.API.STREAM.DELETE.{STREAM}",
    )
    for subject in subjects:
        await alice.nc.publish(subject, b"{}", reply=f"{inbox_prefix('alice')}.x")
        await alice.nc.flush()
        assert await alice.refused(subject)
    assert await _stored(admin) >= 0  # the stream is still there


# -- people with a stream role ----------------------------------------------------------


async def _ordered(
    client: Client, subject_filter: str, name: str, api_wait_s: float = 2.0
) -> JetStreamContext.PushSubscription:
    """An ordered consumer created by the subject-scoped API (nats-py uses it when a name is given)."""
    return await client.nc.jetstream(timeout=api_wait_s).subscribe(
        subject_filter, stream=STREAM, ordered_consumer=True, config=api.ConsumerConfig(name=name)
    )


async def test_an_operator_follows_her_tenants_events_and_no_other(connect: Connect) -> None:
    """Threat: an operator of one tenant reading another tenant's events through JetStream. She
    may create a consumer only by the subject-scoped API, for her tenant's subjects; the server
    checks the filter in the body against the subject."""
    olga, gateway = await connect("olga"), await connect("upm-gateway")
    change = new_id()
    for tenant in ("acme", "globex"):
        await gateway.nc.jetstream().publish(event_subject(tenant, change, "intent.submitted"), b"{}")
    sub = await _ordered(olga, change_filter("acme", change), "olga-acme")
    assert (await sub.next_msg(timeout=2)).subject == event_subject("acme", change, "intent.submitted")
    await sub.unsubscribe()

    with pytest.raises(nats.errors.TimeoutError):
        await _ordered(olga, "upm.evt.globex.>", "olga-globex", api_wait_s=0.5)
    assert await olga.refused(f"$JS.API.CONSUMER.CREATE.{STREAM}.olga-globex.upm.evt.globex.>")
    for body_filter in ({"filter_subject": "upm.evt.globex.>"}, {"filter_subjects": ["upm.evt.globex.>"]}):
        config = {"name": "sneaky", "ack_policy": "none", "deliver_subject": f"{inbox_prefix('olga')}.s",
                  "deliver_policy": "all", **body_filter}
        reply = await olga.nc.request(f"$JS.API.CONSUMER.CREATE.{STREAM}.sneaky.upm.evt.acme.>",
                                      json.dumps({"stream_name": STREAM, "config": config}).encode(), timeout=2)
        assert "error" in json.loads(reply.data), reply.data


async def test_nobody_but_its_service_may_create_or_update_a_services_consumer(connect: Connect) -> None:
    """Threat: an operator re-pointing a service's durable consumer (the same create request
    updates an existing consumer), e.g. narrowing the auditor's filter so changes never close."""
    auditor, olga = await connect("upm-auditor"), await connect("olga")
    config = api.ConsumerConfig(durable_name="auditor", name="auditor", ack_policy=api.AckPolicy.EXPLICIT,
                                filter_subjects=["upm.evt.*.*.verification.passed"])
    await auditor.nc.jetstream().add_consumer(STREAM, config)
    hijack = f"$JS.API.CONSUMER.CREATE.{STREAM}.auditor.upm.evt.acme.>"
    body = {"stream_name": STREAM, "config": {"durable_name": "auditor", "name": "auditor", "ack_policy": "explicit",
                                               "filter_subject": "upm.evt.acme.>"}}
    await olga.nc.publish(hijack, json.dumps(body).encode(), reply=f"{inbox_prefix('olga')}.x")
    await olga.nc.flush()
    assert await olga.refused(hijack)
    info = await auditor.nc.jetstream().add_consumer(STREAM, config)  # unchanged: an idempotent create
    assert info.config.filter_subjects == ["upm.evt.*.*.verification.passed"]


# -- services ------------------------------------------------------------------------------


async def test_only_the_auditor_publishes_audit_events(connect: Connect) -> None:
    """Threat: a compromised service (here the executor) closing changes, signing log heads or
    publishing evidence: nobody but the auditor may publish audit events."""
    executor, auditor, admin = await connect("upm-executor"), await connect("upm-auditor"), await connect(
        natsauth.ADMIN)
    change = new_id()
    ack = await executor.nc.jetstream().publish(event_subject("acme", change, "step.started"), b"{}")
    assert ack.seq > 0
    before = await _stored(admin)
    forged = [event_subject("acme", change, t) for t in AUDIT_TYPES]
    forged.append(event_subject(SYSTEM_TENANT, LOG_HEADS_CHANGE_ID, "step.started"))
    for subject in forged:
        await executor.nc.publish(subject, b"{}")
        await executor.nc.flush()
        assert await executor.refused(subject)
    assert await _stored(admin) == before
    ack = await auditor.nc.jetstream().publish(event_subject("acme", change, "change.closed"), b"{}")
    assert ack.seq == before + 1


async def test_a_service_replies_only_to_inboxes(connect: Connect) -> None:
    """Threat: the confused deputy: a caller naming as reply subject the JetStream API or an event
    subject, so that the service's answer deletes the stream or lands in the log. (The server
    cannot stop a reply on an event type the service itself emits: responders must answer only
    ``_INBOX.`` reply subjects.)"""
    alice, gateway, admin = await connect("alice"), await connect("upm-gateway"), await connect(natsauth.ADMIN)
    sub = await gateway.nc.subscribe("upm.cmd.*.intent.*")
    await gateway.nc.flush()
    before = await _stored(admin)
    change = new_id()
    for reply in (f"$JS.API.STREAM.DELETE.{STREAM}", event_subject("acme", change, "change.closed")):
        await alice.nc.publish(command_subject("acme", "intent", "alice"), b"{}", reply=reply)
        msg = await sub.next_msg(timeout=2)
        await msg.respond(b'{"ok": false}')
        await gateway.nc.flush()
        assert await gateway.refused(reply)
    assert await _stored(admin) == before

    async def answer() -> None:
        msg = await sub.next_msg(timeout=2)
        await msg.respond(b'{"ok": true}')

    async with anyio.create_task_group() as tg:
        tg.start_soon(answer)
        reply_msg = await alice.nc.request(command_subject("acme", "intent", "alice"), b"{}", timeout=2)
    assert reply_msg.data == b'{"ok": true}'


async def test_sql_over_every_tenant_is_for_admins_only(connect: Connect) -> None:
    """Threat: a member querying every tenant at once (``_all``), which skips the per-tenant scoping
    of the projections; another tenant's org-visible rows stay readable (the projector filters)."""
    alice, root, projector = await connect("alice"), await connect("root"), await connect("upm-projector")

    async def ask(client: Client, subject: str) -> list[Msg]:
        async def act() -> None:
            await client.nc.publish(subject, b"{}")
            await client.nc.flush()

        return await _messages(projector, "upm.sql.*.*", act)

    assert len(await ask(root, sql_subject("_all", "root"))) == 1
    assert len(await ask(alice, sql_subject("globex", "alice"))) == 1
    assert await ask(alice, sql_subject("_all", "alice")) == []
    assert await alice.refused(sql_subject("_all", "alice"))


# -- the table itself ------------------------------------------------------------------------


def test_every_event_type_has_an_owner_and_audit_events_only_the_auditor() -> None:
    """Threat: an event type no service may publish (a silent outage under --access) or one a
    service outside its phase may publish."""
    needs = natsauth.service_needs()
    owners: dict[str, set[str]] = {}
    for name, need in needs.items():
        for event_type in need.emits:
            owners.setdefault(event_type, set()).add(name)
    types = {cls.__struct_config__.tag for cls in model.Payload.__subclasses__()}
    assert set(owners) == types
    for event_type in AUDIT_TYPES:
        assert owners[event_type] == {"auditor"}


def test_the_protected_durable_consumers_are_the_services_consumers() -> None:
    """Threat: a service's durable consumer missing from the names people may not create (it could
    then be re-pointed by an operator)."""
    needs = natsauth.service_needs()
    assert set(app.SERVICE_NAMES) == set(needs)
    assert {n for n, need in needs.items() if need.durable} == set(app.PIPELINE)
    assert all(make().name == name for name, make in app.PIPELINE.items())


def test_people_get_no_jetstream_without_a_stream_role() -> None:
    """Threat: a requester or approver granted any JetStream API subject at all."""
    table = natsauth.users(access.parse(ACCESS, "test access"), app.SERVICE_NAMES)
    for person in ("alice", "bob", "gina"):
        assert not [s for s in table[person].publish if s.startswith("$JS")], person
        assert table[person].subscribe == (f"{inbox_prefix(person)}.>",)
    assert "$JS.API.CONSUMER.CREATE.UPM_EVENTS.*.upm.evt.acme.>" in table["olga"].publish
    assert not [s for s in table["olga"].publish if "globex" in s]


# -- the whole pipeline ------------------------------------------------------------------------


def _upm(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", connection.TLS_ENV, access.ENV_VAR)}
    return subprocess.run([sys.executable, "-m", "upm.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


@pytest.mark.slow
def test_upm_up_with_access_runs_a_change_to_closed(tmp_path: Path) -> None:
    """Threat: permissions so tight the services cannot work (then people would loosen them): under
    `upm up --access` an intent of alice's is carried to change.closed, and the server logs no
    permission violation."""
    acl = tmp_path / "access.json"
    acl.write_text(json.dumps(ACCESS))
    data = tmp_path / "upm"
    up = _upm("up", "--access", str(acl), "--data", str(data), "--json")
    assert up.returncode == 0, up.stderr
    try:
        state = json.loads(up.stdout)
        assert state["security"] == connection.SECURITY_ACCESS
        change_id = anyio.run(_intent_to_closed, state, tmp_path / "made")
        assert (tmp_path / "made").is_dir()
        at = ("--data", str(data))
        healthy = _upm("health", "--as", "olga", "--json", *at)  # an operator asks; every service answers the ping
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        report = json.loads(healthy.stdout)
        assert all(s["up"] for s in report["services"]) and report["stream"]["messages"] > 0
        assert all(s["pending"] == 0 for s in report["services"] if s["name"] in app.PIPELINE)
        refused = _upm("health", "--as", "alice", *at)  # a requester may not ask
        assert refused.returncode == 2 and "alice may not ask for health" in refused.stderr, refused.stderr
        assert "Violation" not in (data / "logs" / "nats-server.log").read_text()
        shown = _upm("status", change_id, "--as", "alice", "--json", *at)  # the CLI, with alice's certificate
        assert shown.returncode == 0 and json.loads(shown.stdout)["outcome"] == "succeeded", shown.stderr
        refused = _upm("rollback", change_id, "--tenant", "acme", "--as", "alice", *at)  # requesters may not
        assert refused.returncode == 2 and "rule server-refused" in refused.stderr, refused.stderr
        assert _upm("status", change_id, "--as", "gina", *at).returncode == 2  # a team change of another tenant
        audit = _upm("audit", "verify", "--as", "alice", *at)  # blamed the server with a StoreTimeout traceback
        assert audit.returncode == 2 and "--as upm-admin" in audit.stderr and "Traceback" not in audit.stderr
        started = time.monotonic()
        watch = _upm("watch", "--tenant", "nosuch", "--as", "alice", *at)  # long-polled forever before
        assert watch.returncode == 2 and "no tenant nosuch" in watch.stderr, watch.stderr
        assert time.monotonic() - started < 30
    finally:
        assert _upm("down", "--data", str(data)).returncode == 0


async def _intent_to_closed(state: dict[str, object], target: Path) -> str:
    pki = Pki(Path(str(state["tls_dir"])))
    url = str(state["url"])
    alice = await nats.connect(url, tls=pki.client_context("alice"), inbox_prefix=inbox_prefix("alice"))
    olga = await nats.connect(url, tls=pki.client_context("olga"), inbox_prefix=inbox_prefix("olga"))
    try:
        body = json.dumps({"request": f"Create directory {target} with mode 0750", "reason": "test"}).encode()
        reply = json.loads((await alice.request(command_subject("acme", "intent", "alice"), body, timeout=10)).data)
        assert reply["ok"], reply
        sub = await olga.jetstream(timeout=5).subscribe(
            change_filter("acme", reply["change_id"]), stream=STREAM, ordered_consumer=True,
            config=api.ConsumerConfig(name="e2e"))
        with anyio.fail_after(30):
            async for msg in sub.messages:
                if msg.subject.endswith(".change.closed"):
                    assert json.loads(msg.data)["payload"]["outcome"] == "succeeded"
                    break
    finally:
        await alice.close()
        await olga.close()
    return str(reply["change_id"])
