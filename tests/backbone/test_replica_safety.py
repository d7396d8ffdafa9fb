"""Replicas writing one change, against real nats-servers (one, or a three-node cluster):

* a handler whose append conflicts with another writer's event decides again from the fresh state
  (it never stores a decision made on a state that lacked that event);
* a handler always sees the change through the delivered event (:func:`read_through`), however
  late the replica it reads from is;
* two auditors signing the same log heads on a cluster never fail (409 "duplicate message id is in
  process", wrong last sequence: re-read and move on);
* a task group's transient NATS errors are transient (the runtime's fetch loop raises them so);
* ``NATS_URL`` lists servers; ``UPM_REPLICAS`` is checked.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import msgspec
import nats
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS

from events.errors import StoreTimeout
from events.ids import new_id
from events.model import Event, PlanRejected, SloBreached
from events.store import EventStore, new_event
from events.subjects import LOG_HEADS_CHANGE_ID, SYSTEM_TENANT
from services.auditor.service import Witness
from services.common import cluster, retry
from services.common.errors import ConfigError
from services.common.runtime import Context, Runner, ServiceSpec, read_through
from services.gateway.service import Gateway
from services.security.access import whoami
from upm.cli import main
from upm.natsserver import EmbeddedCluster


def _has_passwd_entry(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


async def _intent(nc: NATS, request: str) -> str:
    reply = await nc.request("upm.cmd.acme.intent.alice", msgspec.json.encode({"request": request}), timeout=5)
    body = msgspec.json.decode(reply.data)
    assert body["ok"], body
    return str(body["change_id"])


async def test_a_handler_superseded_by_another_writer_decides_again_on_the_fresh_state(
    nc: NATS, store: EventStore
) -> None:
    seen: list[list[str]] = []

    async def handle(ctx: Context, history: list[Event], event: Event) -> None:
        seen.append([s.event.type for s in ctx.log.events])
        if len(seen) == 1:  # another writer (a replica, the watchdog, an operator) gets in first
            other = new_event(SloBreached(phase="plan", metric="m", value_ms=2.0, target_ms=1.0), event_id=new_id(),
                              change_id=event.change_id, tenant=event.tenant, ts=event.ts, actor="other",
                              source=event.source)
            await store.append(await store.read(event.tenant, event.change_id), [other])
        await ctx.emit(PlanRejected(reason=f"decided on {len(ctx.log.events)} events", error="E"))

    runner = Runner(nc, ServiceSpec(name="decider", consumes=("intent.submitted",), handle=handle))
    async with anyio.create_task_group() as tg:
        for part in (Gateway(nc), runner):
            ready = anyio.Event()
            tg.start_soon(lambda p=part, r=ready: p.run(ready=r))
            await ready.wait()
        change_id = await _intent(nc, "Create directory /tmp/x")
        with anyio.fail_after(20):
            while runner.handled == 0:  # noqa: ASYNC110 - polling the runner's count
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    stored = [s.event.payload for s in (await store.read("acme", change_id)).events]
    assert seen == [["intent.submitted"], ["intent.submitted", "slo.breached"]]
    rejected = [p for p in stored if isinstance(p, PlanRejected)]
    assert [p.reason for p in rejected] == ["decided on 2 events"]  # not the stale decision on 1


async def test_read_through_waits_for_the_sequence_it_was_given(store: EventStore, nc: NATS) -> None:
    change_id = await _append_one(store, "acme")
    change = await store.read("acme", change_id)
    assert (await read_through(store, "acme", change_id, change.last_seq)).last_seq == change.last_seq

    async def late_writer() -> None:
        await anyio.sleep(0.5)
        await _append_one(store, "acme", change_id)

    async with anyio.create_task_group() as tg:
        tg.start_soon(late_writer)
        later = await read_through(store, "acme", change_id, change.last_seq + 1)
    assert len(later.events) == 2
    with anyio.fail_after(30), pytest.raises(StoreTimeout, match="not yet"):
        await read_through(store, "acme", change_id, later.last_seq + 100)


async def _append_one(store: EventStore, tenant: str, change_id: str | None = None) -> str:
    change_id = change_id or new_id()
    event = new_event(PlanRejected(reason="r", error="E"), event_id=new_id(), change_id=change_id, tenant=tenant,
                      ts="2026-01-01T00:00:00.000Z", actor="t", source="api")
    await store.append(await store.read(tenant, change_id), [event])
    return change_id


@pytest.fixture
def three_nodes(tmp_path: Path) -> Iterator[str]:
    servers = EmbeddedCluster(tmp_path / "cluster", 3)
    yield servers.start()
    servers.stop()


@pytest.fixture
async def cluster_nc(three_nodes: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[NATS]:
    monkeypatch.setenv(cluster.REPLICAS_ENV, "3")
    conn = await nats.connect(servers=cluster.servers(three_nodes))
    store = EventStore(conn)
    await retry.within(30, lambda: store.ensure_stream(3))
    yield conn
    await conn.close()


@pytest.mark.slow
async def test_two_auditors_signing_the_same_heads_on_a_cluster_never_fail(cluster_nc: NATS, tmp_path: Path) -> None:
    store = EventStore(cluster_nc)
    witnesses = [Witness(cluster_nc, tmp_path / "data") for _ in range(2)]  # one data folder: one key
    for w in witnesses:
        await retry.within(30, w._open)
    change_id = new_id()
    for _ in range(25):
        await _append_one(store, "acme", change_id)
        records = await store.read_raw("upm.evt.>", witnesses[0].tree.size + 1)
        for w in witnesses:
            for seq, data in records:
                w.observe(seq, data)
        async with anyio.create_task_group() as tg:  # both sign the same head at once
            for w in witnesses:
                tg.start_soon(w.sign_head)
    heads = await store.read(SYSTEM_TENANT, LOG_HEADS_CHANGE_ID)
    sizes = [s.event.payload.size for s in heads.events]  # type: ignore[union-attr]
    assert len(sizes) == len(set(sizes)) == 25  # each head stored once
    assert witnesses[0]._head == witnesses[1]._head
    info = await cluster_nc.jetstream().stream_info("OBJ_UPM_EVIDENCE")
    assert info.config.num_replicas == 3


def test_an_exception_group_of_transient_nats_errors_is_transient() -> None:
    unavailable = nats.js.errors.ServiceUnavailableError()
    assert retry.is_transient(ExceptionGroup("fetch", [ExceptionGroup("inner", [unavailable])]))
    assert not retry.is_transient(ExceptionGroup("mixed", [unavailable, ValueError("bug")]))


def test_nats_url_lists_servers_and_replicas_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cluster.servers(" nats://a:1, nats://b:2 ,nats://c:3") == ["nats://a:1", "nats://b:2", "nats://c:3"]
    with pytest.raises(ConfigError, match="no NATS server URL"):
        cluster.servers(" , ")
    with pytest.raises(ConfigError, match="not a NATS URL"):
        cluster.servers("nats://a:1,nats://b c:2")
    monkeypatch.setenv(cluster.REPLICAS_ENV, "3")
    assert cluster.replicas() == 3
    monkeypatch.setenv(cluster.REPLICAS_ENV, "2")
    with pytest.raises(ConfigError, match="UPM_REPLICAS='2'"):
        cluster.replicas()


@pytest.mark.skipif(os.geteuid() != 0 or _has_passwd_entry(65532), reason="needs root and a uid with no passwd entry")
def test_who_am_i_as_a_uid_without_a_passwd_entry_is_the_uid() -> None:
    """The container's user (Dockerfile: USER 65532) as a real process (forked, then setuid): no login
    name, no passwd entry."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become uid 65532, answer, leave without running anything of pytest's
        try:
            for name in ("UPM_IDENTITY", "LOGNAME", "USER", "LNAME", "USERNAME"):
                os.environ.pop(name, None)
            os.setgid(65532)
            os.setuid(65532)
            os.write(write, whoami().encode())
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read) as answer:
        assert (status, answer.read()) == (0, "uid-65532")


def test_up_refuses_a_cluster_of_fewer_than_three_and_a_cluster_beside_a_given_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NATS_URL", raising=False)
    assert main(["up", "--data", str(tmp_path / "a"), "--cluster", "2"]) == 2
    assert "at least 3 servers" in capsys.readouterr().err
    assert main(["up", "--data", str(tmp_path / "b"), "--cluster", "3", "--nats", "nats://127.0.0.1:1"]) == 2
    assert "--cluster starts a cluster of embedded servers" in capsys.readouterr().err
    monkeypatch.setenv(cluster.REPLICAS_ENV, "3")
    assert main(["up", "--data", str(tmp_path / "c")]) == 2  # R3 on one server: refused before anything starts
    assert "needs a cluster of at least 3 servers" in capsys.readouterr().err
    assert not (tmp_path / "c" / "state.json").exists()
