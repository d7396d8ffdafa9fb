"""Command ingress: valid intents are appended; malformed ones get a clear reply and nothing else."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import anyio
import msgspec
import pytest
from nats.aio.client import Client as NATS

from events.commands import MAX_COMMAND_BYTES, parse_intent
from events.errors import InvalidEvent
from events.model import IntentSubmitted
from events.store import EventStore
from events.subjects import STREAM, command_subject
from services.gateway.service import Gateway


@pytest.fixture
async def gateway(nc: NATS, store: EventStore) -> AsyncIterator[Gateway]:
    gw = Gateway(nc)
    ready = anyio.Event()
    task = asyncio.ensure_future(gw.run(ready=ready))
    await ready.wait()
    yield gw
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _send(nc: NATS, tenant: str, body: bytes, principal: str = "alice") -> dict[str, object]:
    reply = await nc.request(command_subject(tenant, "intent", principal), body, timeout=5)
    decoded = msgspec.json.decode(reply.data)
    assert isinstance(decoded, dict)
    return decoded


async def _stored(store: EventStore) -> int:
    return int((await store.js.stream_info(STREAM)).state.messages)


async def test_a_valid_intent_is_appended_and_its_change_id_returned(
    nc: NATS, store: EventStore, gateway: Gateway
) -> None:
    reply = await _send(nc, "acme", b'{"request": "create directory /tmp/x", "initiator": "alice"}')
    assert reply["ok"] is True
    log = await store.read("acme", str(reply["change_id"]))
    assert [s.event.type for s in log.events] == ["intent.submitted"]
    event = log.events[0].event
    assert isinstance(event.payload, IntentSubmitted)
    assert (event.payload.request, event.actor, event.source, event.phase) == (
        "create directory /tmp/x", "alice", "api", "plan")


@pytest.mark.parametrize(
    ("tenant", "body", "field", "rule"),
    [
        ("acme", b"{not json", "body", "json"),
        ("acme", b"[1, 2]", "body", "schema"),
        ("acme", b'{"request": 42, "initiator": "alice"}', "request", "schema"),
        ("acme", b'{"request": "x", "initiator": ["alice"]}', "initiator", "schema"),
        ("acme", b'{"request": "x", "initiator": "alice", "colour": "red"}', "colour", "schema"),
        ("ACME", b'{"request": "x", "initiator": "alice"}', "tenant", "tenant-name"),
        ("-acme", b'{"request": "x", "initiator": "alice"}', "tenant", "tenant-name"),
        ("_system", b'{"request": "x", "initiator": "alice"}', "tenant", "tenant-name"),
        ("acme", b'{"request": "x", "initiator": "alice", "source": "email"}', "source", "source"),
        ("acme", b'{"request": "x", "initiator": "alice", "source": "drift"}', "source", "source"),
        ("acme", b'{"initiator": "alice"}', "request", "one-of"),
        ("acme", b'{"request": "x", "spec": {}, "initiator": "alice"}', "request", "one-of"),
        ("acme", b'{"request": "   ", "initiator": "alice"}', "request", "non-empty"),
        ("acme", b'{"request": "' + b"x" * 5000 + b'", "initiator": "alice"}', "request", "size"),
        ("acme", b'{"request": "x", "initiator": "' + b"a" * (MAX_COMMAND_BYTES + 1) + b'"}', "body", "size"),
        ("acme", b'{"request": "x", "initiator": "alice", "environment": "moon"}', "environment", "environment"),
        ("acme", b'{"request": "x", "initiator": "alice", "visibility": "public"}', "visibility", "schema"),
    ],
)
async def test_malformed_intents_get_a_clear_error_and_nothing_is_appended(
    nc: NATS, store: EventStore, gateway: Gateway, tenant: str, body: bytes, field: str, rule: str
) -> None:
    before = await _stored(store)
    reply = await _send(nc, tenant, body)
    assert reply["ok"] is False
    error = reply["error"]
    assert isinstance(error, dict)
    assert (error["field"], error["rule"]) == (field, rule), error
    assert len(str(error["message"])) > 20
    assert await _stored(store) == before


def test_the_error_names_the_allowed_sources() -> None:
    with pytest.raises(InvalidEvent, match="chatops, api, ticket"):
        parse_intent("acme", "a", b'{"request": "x", "source": "email"}')


async def test_the_initiator_is_the_caller_named_by_the_subject_not_the_body(
    nc: NATS, store: EventStore, gateway: Gateway
) -> None:
    """Threat: a producer forges who asked by writing someone else's name into the body."""
    reply = await _send(nc, "acme", b'{"request": "create directory /tmp/f", "initiator": "mallory"}', "alice")
    event = (await store.read("acme", str(reply["change_id"]))).events[0].event
    assert isinstance(event.payload, IntentSubmitted)
    assert (event.actor, event.payload.initiator) == ("alice", "alice")


async def test_a_caller_token_that_is_not_an_identity_is_refused(nc: NATS, store: EventStore,
                                                                gateway: Gateway) -> None:
    before = await _stored(store)
    reply = await _send(nc, "acme", b'{"request": "x"}', "al@ice")
    error = reply["error"]
    assert isinstance(error, dict)
    assert (reply["ok"], error["field"], error["rule"]) == (False, "caller", "identity")
    assert await _stored(store) == before


async def test_an_idempotency_key_maps_a_resubmission_to_the_same_change(
    nc: NATS, store: EventStore, gateway: Gateway
) -> None:
    body = b'{"request": "create directory /tmp/y", "initiator": "bob", "idempotency_key": "ticket-42"}'
    first = await _send(nc, "acme", body)
    second = await _send(nc, "acme", body)
    assert first["change_id"] == second["change_id"]
    assert second["duplicate"] is True
    assert len((await store.read("acme", str(first["change_id"]))).events) == 1


def _deep(depth: int) -> bytes:
    return b'{"spec": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        (_deep(1000), "depth"),  # ~6 KB, well under the size limit: once raised RecursionError and killed the gateway
        (b'{"request": "create directory /tmp/a", "request": "delete directory /srv"}', "duplicate-key"),
        (b'{"spec": {"resources": [], "reso\\u0075rces": [1]}}', "duplicate-key"),
        (b'[' * 60_000, "depth"),
    ],
)
async def test_hostile_structure_is_refused_and_the_gateway_keeps_answering(
    nc: NATS, store: EventStore, gateway: Gateway, body: bytes, rule: str
) -> None:
    before = await _stored(store)
    reply = await _send(nc, "acme", body)
    error = reply["error"]
    assert isinstance(error, dict)
    assert (reply["ok"], error["field"], error["rule"]) == (False, "body", rule)
    assert await _stored(store) == before
    normal = await _send(nc, "acme", b'{"request": "create directory /tmp/after"}')
    assert normal["ok"] is True


async def test_an_unexpected_failure_is_one_generic_error_reply_and_the_gateway_lives_on(
    nc: NATS, store: EventStore, gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever a handler did not foresee answers that message with a generic error, no traceback."""

    async def broken(*_: object) -> None:
        raise ZeroDivisionError("a bug in a handler")

    monkeypatch.setattr(gateway.store, "append", broken)
    reply = await _send(nc, "acme", b'{"request": "create directory /tmp/x"}')
    error = reply["error"]
    assert isinstance(error, dict)
    assert (reply["ok"], error["rule"]) == (False, "internal")
    assert "Traceback" not in str(error["message"]) and "ZeroDivisionError" not in str(error["message"])
    monkeypatch.undo()
    assert (await _send(nc, "acme", b'{"request": "create directory /tmp/y"}'))["ok"] is True
