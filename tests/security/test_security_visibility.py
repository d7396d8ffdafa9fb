"""Roles and visibility (team / org / private) on the read side: SQL, evidence, HTTP permalinks.

A real nats-server, a projector and the auditor's witness (which packs each closed change) over
real DuckDB files. In tenant acme: a *private* change of alice, a *team* change of alice and an
*org* change of alice; in tenant globex: a team change of gina. dave is another requester of
acme, audrey acme's auditor, gina a requester of globex, root the admin. Each test names the
threat it covers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import msgspec
import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS

from events.ids import new_id
from events.model import ChangeClosed, IntentSubmitted
from events.store import ChangeLog, EventStore, new_event
from events.subjects import inbox_prefix, sql_subject
from projections import evidence_query, schema, sqlservice
from projections.errors import AccessDenied
from projections.projector import Projector
from projections.serve import parse_tokens
from projections.sqlservice import SqlRequest
from projections.visibility import CHANGE_FREE
from services.auditor import evidence
from services.auditor.service import Witness
from services.common.runtime import utc_now
from services.security.access import ASKER, parse
from upm.natsserver import EmbeddedNats

HttpGet = Callable[..., Awaitable[tuple[int, bytes]]]  # the http_get fixture (tests/conftest.py)
ConsoleAt = Callable[..., Awaitable[int]]  # the console fixture (tests/conftest.py)

ACCESS = parse({
    "org": "example",
    "admins": ["root"],
    "tenants": {
        "acme": {"alice": ["requester"], "dave": ["requester"], "audrey": ["auditor"]},
        "globex": {"gina": ["requester"]},
    },
}, "test access")
SECRET = "rotate the payroll signing key"  # the private change's request text
TOKENS = {f"token-of-{who}-0123456789": who for who in ("alice", "dave", "audrey", "gina")}


@dataclass
class World:
    nc: NATS
    url: str
    store: EventStore
    projector: Projector
    folder: Path
    private: str
    team: str
    org: str
    globex: str

    async def sql(self, principal: str, sql: str, tenant: str = "acme", after_seq: int = 0) -> list[list[object]]:
        request = SqlRequest(sql=sql, after_seq=after_seq)
        return (await sqlservice.query(self.nc, tenant, request, principal=principal)).rows


async def change(store: EventStore, tenant: str, initiator: str, visibility: str, request: str) -> tuple[str, int]:
    """Submit and close one change (the witness then packs it); its id and last sequence."""
    change_id = new_id()
    log = ChangeLog(tenant, change_id)
    intent = IntentSubmitted(request=request, initiator=initiator)
    await store.append(log, [new_event(intent, event_id=new_id(), change_id=change_id, tenant=tenant, ts=utc_now(),
                                       actor=initiator, source="api", visibility=visibility)])
    closed = ChangeClosed(outcome="rejected", reason="test", events=1, chain_head=log.head)
    stored = await store.append(log, [new_event(closed, event_id=new_id(), change_id=change_id, tenant=tenant,
                                                ts=utc_now(), actor="auditor", source="api", visibility=visibility)])
    return change_id, stored[-1].seq


@pytest.fixture
async def asker(nats_server: EmbeddedNats) -> AsyncIterator[NATS]:
    """The connection that asks on behalf of everyone, as `upm serve` does: its replies arrive
    under its own inbox (``_INBOX.upm-serve``), the only foreign inbox the services answer."""
    conn = await nats.connect(nats_server.url, inbox_prefix=inbox_prefix(ASKER))
    yield conn
    await conn.close()


@pytest.fixture
async def world(nats_server: EmbeddedNats, nc: NATS, asker: NATS, store: EventStore,
                tmp_path: Path) -> AsyncIterator[World]:
    projector = Projector(nc, tmp_path / "proj", batch_max=500, access=ACCESS)
    witness = Witness(nc, tmp_path / "data", interval=60)
    ready = [anyio.Event(), anyio.Event()]
    tasks = [asyncio.ensure_future(projector.run(ready=ready[0])), asyncio.ensure_future(witness.run(ready=ready[1]))]
    for event in ready:
        await event.wait()
    private, _ = await change(store, "acme", "alice", "private", SECRET)
    team, _ = await change(store, "acme", "alice", "team", "create directory /srv/team")
    org, _ = await change(store, "acme", "alice", "org", "create directory /srv/org")
    globex, _ = await change(store, "globex", "gina", "team", "create directory /srv/globex")
    with anyio.fail_after(20):
        while witness.published < 4:  # noqa: ASYNC110 - polling the witness's counter
            await anyio.sleep(0.02)
    await projector.wait((await store.js.stream_info("UPM_EVENTS")).state.last_seq)
    yield World(asker, nats_server.url, store, projector, tmp_path / "proj", private, team, org, globex)
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def ids(rows: list[list[object]]) -> set[object]:
    return {r[0] for r in rows}


PROBES = [
    "SELECT * FROM events",
    "SELECT * FROM main.events",
    "SELECT * FROM changes",
    "SELECT * FROM intents",
    "SELECT * FROM evidence",
    "SELECT database_name, table_name, estimated_size FROM duckdb_tables()",
    "SELECT * FROM duckdb_databases()",
    "SELECT string_agg(payload::VARCHAR, ' ') FROM events",
]


async def test_a_private_change_leaves_no_trace_in_another_requesters_sql(world: World) -> None:
    """Threat: dave, a requester of the same tenant, reads alice's private change through SQL —
    plain or qualified table names, the catalog functions, or the JSON payloads."""
    for sql in PROBES:
        seen = json.dumps(await world.sql("dave", sql))
        assert world.private not in seen and SECRET not in seen, sql
        assert str(world.folder) not in seen, sql  # nor where the tenant's file is
    assert world.private in json.dumps(await world.sql("alice", PROBES[0]))  # the probe does find it


async def test_counts_and_aggregates_cover_only_the_visible_changes(world: World) -> None:
    """Threat: dave infers that a hidden change exists (or how many there are) from counts, the KPI
    views or the size of a table."""
    assert await world.sql("dave", "SELECT count(*) FROM events") == [[6]]  # 2 visible changes × 3 events
    assert await world.sql("dave", "SELECT count(*), count(DISTINCT change_id) FROM changes") == [[2, 2]]
    assert await world.sql("dave", "SELECT count(*) FROM kpi_evidence_completeness") == [[2]]
    assert await world.sql("audrey", "SELECT count(*) FROM kpi_evidence_completeness") == [[3]]
    assert await world.sql("dave", "SELECT estimated_size FROM duckdb_tables() WHERE table_name = 'changes'") \
        == [[2]]
    assert await world.sql("audrey", "SELECT count(*) FROM changes") == [[3]]
    with pytest.raises(sqlservice.QueryFailed, match=r"disabled by configuration|Permission"):
        await world.sql("dave", f"SELECT * FROM read_text('{world.folder / 'tenants' / 'acme.duckdb'}')")


async def test_the_initiator_and_an_auditor_see_the_private_change(world: World) -> None:
    """Threat: the other way round — the filtering hides a private change from the people it is
    for (its initiator, the tenant's auditor) or from an admin."""
    for who in ("alice", "audrey", "root"):
        assert ids(await world.sql(who, "SELECT change_id FROM changes")) == {world.private, world.team, world.org}
    assert ids(await world.sql("dave", "SELECT change_id FROM changes")) == {world.team, world.org}


async def test_an_org_change_is_visible_across_the_org_a_team_change_is_not(world: World) -> None:
    """Threat: a member of another tenant (gina of globex) reads acme's team or private changes;
    and the positive control: acme's org change is hers to read."""
    assert ids(await world.sql("gina", "SELECT change_id FROM events")) == {world.org}
    assert ids(await world.sql("gina", "SELECT change_id FROM changes", "globex")) == {world.globex}
    assert ids(await world.sql("dave", "SELECT change_id FROM changes", "globex")) == set()  # no org change there


async def test_every_tenant_at_once_and_strangers_are_refused(world: World) -> None:
    """Threat: a requester escapes the per-tenant scope with ``_all`` (the main file, every tenant),
    or someone outside the access file reads a tenant."""
    for who in ("dave", "audrey", "gina"):
        with pytest.raises(AccessDenied, match="for admins"):
            await world.sql(who, "SELECT count(*) FROM events", "_all")
    assert await world.sql("root", "SELECT count(DISTINCT tenant) FROM events", "_all") == [[3]]  # + _system
    with pytest.raises(AccessDenied, match="mallory may not sql in tenant acme"):
        await world.sql("mallory", "SELECT 1")
    with pytest.raises(AccessDenied, match="may not sql in tenant _system"):
        await world.sql("dave", "SELECT * FROM log_heads", "_system")


async def test_an_identity_in_the_body_changes_nothing(world: World) -> None:
    """Threat: dave claims to be the auditor (or the initiator) in a body field; only the subject's
    last token — the identity the server authenticated — counts, and bodies are decoded strictly."""
    subject, sql = sql_subject("acme", "dave"), "SELECT change_id FROM changes"
    for forged in ({"principal": "audrey"}, {"as": "alice"}, {"initiator": "dave"}):
        reply = await world.nc.request(subject, json.dumps({"sql": sql, **forged}).encode(), timeout=10)
        refused = msgspec.json.decode(reply.data)
        assert (refused["kind"], refused["rule"]) == ("rejected", "schema") and "rows" not in refused
    reply = await world.nc.request(subject, json.dumps({"sql": sql}).encode(), timeout=10)
    assert ids(msgspec.json.decode(reply.data)["rows"]) == {world.team, world.org}  # dave's own view
    body = json.dumps({"change_id": world.private, "principal": "alice"}).encode()
    reply = await world.nc.request("upm.qry._any.evidence.dave", body, timeout=10)
    assert evidence_query.HDR_CHUNK not in (reply.headers or {})  # no pack: an error naming the field
    assert msgspec.json.decode(reply.data)["error"]["rule"] == "schema"


async def fetch(world: World, principal: str, change_id: str, tenant: str = "_any") -> bytes:
    return (await evidence_query.fetch(world.nc, change_id, principal=principal, tenant=tenant)).data


async def test_evidence_of_a_private_change_is_refused_like_a_missing_one(world: World) -> None:
    """Threat: dave downloads alice's private change's evidence pack, or learns from the refusal
    that the change exists (and in which tenant)."""
    missing = new_id()
    for target in (world.private, missing):
        with pytest.raises(AccessDenied) as refused:
            await fetch(world, "dave", target)
        assert refused.value.rule == "visibility"
        assert str(refused.value) == f"no change {target} in tenant _any that dave may see"
    with pytest.raises(AccessDenied, match="that dave may see"):
        await fetch(world, "dave", world.private, "acme")


async def test_evidence_goes_to_the_initiator_and_the_auditor_only(world: World) -> None:
    """Threat: a member who may see a change (a teammate, a member of the org) takes its evidence
    pack, which only its initiator and the tenant's auditors, operators and admins may; and the
    positive control: alice, a requester with no JetStream rights, gets her own private pack."""
    for who in ("alice", "audrey", "root"):
        report = evidence.verify_pack(await fetch(world, who, world.private))
        assert (report.change_id, report.tenant) == (world.private, "acme")
    with pytest.raises(AccessDenied, match="dave may not evidence in tenant acme") as refused:
        await fetch(world, "dave", world.team)
    assert refused.value.rule == "rbac"
    with pytest.raises(AccessDenied, match="gina may not evidence in tenant acme"):
        await fetch(world, "gina", world.org)


@pytest.fixture
async def http(world: World, console: ConsoleAt) -> int:
    return await console(world.nc, ACCESS, parse_tokens(TOKENS, "test tokens", ACCESS))


def token(who: str) -> str:
    return f"token-of-{who}-0123456789"


async def test_permalinks_apply_the_token_holders_roles_and_visibility(world: World, http: int, http_get: HttpGet) -> None:
    """Threat: a permalink (an HTTP URL, easy to pass around) shows a private change or its pack to
    a token holder who may not see it — or says that it exists."""
    private, pack = f"/changes/{world.private}", f"/changes/{world.private}/evidence"
    for who in ("dave", "gina"):
        assert [(await http_get(http, url, token(who)))[0] for url in (private, pack)] == [404, 404]
    for who in ("alice", "audrey"):
        status, body = await http_get(http, private, token(who))
        assert status == 200 and json.loads(body)["change"]["request"] == SECRET
        status, body = await http_get(http, pack, token(who))
        assert status == 200 and evidence.verify_pack(body).change_id == world.private
    assert (await http_get(http, f"/changes/{world.org}", token("gina")))[0] == 200  # org: across the org
    assert (await http_get(http, f"/changes/{world.team}", token("gina")))[0] == 404
    assert (await http_get(http, f"/changes/{world.team}/evidence", token("dave")))[0] == 403  # sees it, may not take it
    status, body = await http_get(http, "/kpi", token("dave"))
    assert status == 200 and {r["kpi"] for r in json.loads(body)} >= {"change_success_pct"}
    assert (await http_get(http, "/kpi?tenant=_all", token("dave")))[0] == 403


def test_a_tokens_file_must_name_identities_of_the_access_file() -> None:
    """Threat: a tokens file written for open mode (token → tenant) silently granting something
    once an access file is in force; each token must name a person of the access file."""
    with pytest.raises(AccessDenied, match=r"'acme' is not an identity named in the access file"):
        parse_tokens({"token-of-acme-0123456789": "acme"}, "tokens.json", ACCESS)
    with pytest.raises(AccessDenied, match="at least 16 characters"):
        parse_tokens({"abc": "alice"}, "tokens.json", ACCESS)


async def test_the_filtered_copy_follows_the_log_and_never_shows_a_new_hidden_change(world: World) -> None:
    """Threat: a stale or shared filtered copy — one built before a change was added shows an old
    view, or a copy built for one person is answered to another."""
    assert await world.sql("dave", "SELECT count(*) FROM changes") == [[2]]
    built = world.projector.sql.copies_refreshed if world.projector.sql else -1
    assert await world.sql("dave", "SELECT count(*) FROM changes") == [[2]]
    assert world.projector.sql is not None and world.projector.sql.copies_refreshed == built  # same position: reused
    await change(world.store, "acme", "alice", "private", "another secret")
    newer, last = await change(world.store, "acme", "dave", "private", "dave's own")
    assert ids(await world.sql("dave", "SELECT change_id FROM changes", after_seq=last)) \
        == {world.team, world.org, newer}
    assert world.projector.sql.copies_refreshed == built + 1
    assert await world.sql("alice", "SELECT count(*) FROM changes", after_seq=last) == [[4]]  # her copy, not dave's
    assert await world.sql("audrey", "SELECT count(*) FROM changes", after_seq=last) == [[5]]


def test_every_table_is_filtered_by_change_or_holds_no_change_data() -> None:
    """Threat: a new projection table without a change_id carrying a hidden change's data into a
    filtered copy (unclassified tables stay empty there; this keeps the list honest)."""
    import duckdb

    con = duckdb.connect(":memory:")
    schema.migrate(con)
    tables = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    scoped = {t for (t,) in con.execute(
        "SELECT DISTINCT table_name FROM duckdb_columns() WHERE column_name = 'change_id'").fetchall()}
    assert tables - scoped == CHANGE_FREE


async def test_answers_go_to_inboxes_only(world: World) -> None:
    """Threat: a caller picks a reply subject that is not an inbox (an event subject, the JetStream
    API, another service's command), so the projector's answer lands where the caller may not
    publish (the server cannot check reply subjects: the responder must)."""
    body = json.dumps({"sql": "SELECT 1"}).encode()
    for reply_to in ("upm.evt.acme.x.intent.submitted", "upm.cmd.acme.cancel.dave"):
        sub = await world.nc.subscribe(reply_to)
        await world.nc.publish(sql_subject("acme", "dave"), body, reply=reply_to)
        with pytest.raises(nats.errors.TimeoutError):
            await sub.next_msg(timeout=0.3)
        await sub.unsubscribe()
    assert (await world.nc.request(sql_subject("acme", "dave"), body, timeout=10)).data  # an inbox is answered
    stranger = await nats.connect(world.url)
    try:  # an inbox that is neither dave's nor the asker's: another person's reply would be spoofed
        with pytest.raises(nats.errors.TimeoutError):
            await stranger.request(sql_subject("acme", "dave"), body, timeout=0.5)
    finally:
        await stranger.close()
