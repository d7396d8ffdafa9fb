"""No message stops a responder: 10,000 hostile requests over every verb against the real services.

A real nats-server, and in this process the real gateway (intents, with the status and events
queries), the pre-flight command handlers (approve, deny), the executor's (resume, rollback,
cancel) and the projector (SQL and evidence). Hypothesis generates the bodies: random bytes,
nesting thousands deep, huge strings, unicode tricks (NUL, lone surrogates, bidi overrides,
NFC/NFD twins, invalid UTF-8), duplicate keys (plain and escaped), secret-bearing fields at any
depth, and well-formed commands among them. Each example sends a batch with all of it in flight.

Then: every request was answered (one reply, JSON), every service task is still running and
still answers a normal request, the stream holds only what accepted commands appended, and no
generated secret is anywhere in the data folder (JetStream's files, DuckDB, the logs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import re
import string
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS

from events.model import decode_event
from events.store import EventStore
from events.subjects import command_subject, inbox_prefix, query_subject, sql_subject
from projections.projector import Projector
from services.executor.commands import CommandService
from services.gateway.service import Gateway
from services.preflight import service as preflight_service
from services.security.access import Access
from upm.natsserver import EmbeddedNats

ME = "fuzz"
BATCHES = 125
PER_BATCH = 80  # 10,000 requests
VERBS = ("intent", "approve", "deny", "resume", "rollback", "cancel", "status", "events", "sql", "evidence")
FIELDS = ("request", "spec", "source", "visibility", "environment", "reason", "window", "variant", "idempotency_key",
          "change_id", "plan_hash", "group", "by", "initiator", "after_seq", "wait_s", "max_events", "sql", "max_rows",
          "timeout_s", "resources", "type", "name", "path", "content")
TRICKS = ("\x00", "\ud800", "\udfff", "\u202e", "\u200b", "\ufeff", "e\u0301", "\u00e9", "\U0001f600", "\\", '"',
          "\u2028", "'; DROP TABLE events; --", "${secret:X}", "../../etc/passwd", "upm.evt.acme.>", "*", ">")
SECRET_RE = re.compile(rb"AKIA[A-Z2-7]{16}|ghp_[A-Za-z0-9]{36}|Pw-[A-Za-z0-9]{16}")
CHANGE = "0190c5b8-5d2c-7b3a-8e4f-123456789abc"
TENANTS = ("acme", "acme", "acme", "acme", "globex", "t1", "ACME", "_system", "_any", "a-", "x" * 70)


@dataclass
class Sent:
    """What was sent and what came back (``None``: no answer)."""

    verb: str
    subject: str
    body: bytes
    reply: dict[str, Any] | None = None


@dataclass
class Run:
    secrets: set[bytes] = field(default_factory=set)
    sent: list[Sent] = field(default_factory=list)


# -- generation: hypothesis draws the shape, cheap code expands it -----------------------------

def _deep(depth: int, kind: int) -> bytes:
    """A value nested ``depth`` deep, as JSON bytes (too deep for any recursive encoder)."""
    opening, closing = (b"[", b"]") if kind else (b'{"a":', b"}")
    return opening * depth + b"1" + closing * depth


def _secret(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return "AKIA" + "".join(rng.choices(string.ascii_uppercase + "234567", k=16))
    if kind == 1:
        return "ghp_" + "".join(rng.choices(string.ascii_letters + string.digits, k=36))
    return "Pw-" + "".join(rng.choices(string.ascii_letters + string.digits, k=16))


def _text(rng: random.Random) -> str:
    match rng.randrange(5):
        case 0:
            return rng.choice(TRICKS)
        case 1:
            return rng.choice(("x", "é", "\U0001f600", "[", "{", "\u202e")) * rng.randrange(1000, 70_000)
        case 2:
            return unicodedata.normalize("NFD", "".join(rng.choices("éàüñçÅ ", k=rng.randrange(12))))
        case 3:
            return "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(16)))
        case _:
            return "".join(rng.choices(string.printable, k=rng.randrange(24)))


def _value(rng: random.Random, depth: int = 0) -> Any:
    """Any JSON value (and some that are not: NaN, huge integers, lone surrogates), a few levels deep."""
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind < 6:
        return (None, True, rng.randrange(-(2**70), 2**70), rng.choice((0.5, 1e308, -0.0, math.nan, math.inf)),
                _text(rng), _text(rng))[kind]
    if kind < 8:
        return {rng.choice((*FIELDS, _text(rng))): _value(rng, depth + 1) for _ in range(rng.randrange(4))}
    return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]


def _encode(doc: Any) -> bytes:
    try:
        return msgspec.json.encode(doc)
    except (msgspec.EncodeError, OverflowError, UnicodeEncodeError, ValueError):
        return repr(doc).encode("utf-8", "surrogatepass")


def build(verb: str, tenant: str, shape: int, seed: int) -> tuple[str, str, bytes, str | None]:
    """One request: its verb, tenant token, body, and the secret it carries. Hypothesis chooses the
    verb, tenant, shape and seed; the body is expanded from the seed (cheap: 10,000 in a few seconds)."""
    rng = random.Random(seed)
    secret: str | None = None
    if shape == 0:  # random bytes, possibly huge
        body = rng.randbytes(rng.randrange(1, 64)) * rng.randrange(1, 1200)
    elif shape == 1:  # nesting: arrays or objects, a few levels to thousands, inside a well-formed command
        body = (b'{"spec": ' + _deep(rng.randrange(1, 5000), rng.randrange(2))
                + b', "change_id": "' + CHANGE.encode() + b'", "sql": "SELECT 1"}')
    elif shape == 2:  # duplicate keys, plain or escaped
        key = rng.choice(FIELDS)
        twin = key if rng.randrange(2) else "\\u00" + format(ord(key[0]), "02x") + key[1:]
        body = f'{{"{key}": "create directory /tmp/a", "{twin}": "delete directory /srv"}}'.encode()
    else:  # well-formed-ish JSON: fields of every verb, values of any kind, maybe a secret at any depth
        base = {"intent": {"request": f"create directory /tmp/fuzz-{seed % 10**6}"},
                "sql": {"sql": rng.choice(("SELECT 1", "SELECT count(*) FROM events", "DROP TABLE x",
                                           "SELECT 1; SELECT 2", "SELECT * FROM read_text('/etc/passwd')"))},
                "events": {"after_seq": rng.randrange(-2, 5)}}.get(verb, {"change_id": CHANGE})
        doc = dict(base)
        if shape == 4:
            doc |= {rng.choice(FIELDS): _value(rng) for _ in range(rng.randrange(1, 5))}
        if shape >= 5:
            secret = _secret(rng)
            where = rng.choice(("request", "reason", "group", "spec", "sql", "window", "key"))
            if where == "spec":
                doc["spec"] = {"resources": [{"type": "local_file", "path": "/tmp/x", "content": f"token {secret}"}]}
            elif where == "key":
                doc["spec"] = {"resources": [{secret: "x"}]}
            else:
                doc[where] = f"rotate it: password={secret}" if secret.startswith("Pw-") else f"use {secret} now"
        if verb == "events":
            doc["wait_s"] = 0.0  # no long polls: every answer comes at once
        body = _encode(doc)
    return verb, tenant, body, secret


recipe = st.tuples(st.sampled_from(VERBS), st.sampled_from(TENANTS), st.integers(0, 7), st.integers(0, 2**32))
"""What hypothesis draws for one request (small, so a failing example prints readably); :func:`build` expands it."""


def _subject(verb: str, tenant: str) -> str:
    if verb == "sql":
        return sql_subject(tenant if tenant != "_system" else "_all", ME)
    if verb in ("status", "events", "evidence"):
        return query_subject(tenant, verb, ME)
    return command_subject(tenant, verb, ME)


# -- the services, in a portal's event loop ---------------------------------------------------


@dataclass
class Services:
    nc: NATS
    asker: NATS
    store: EventStore
    tasks: list[asyncio.Task[None]]

    @classmethod
    async def start(cls, url: str, data: Path) -> Services:
        nc = await nats.connect(url)
        asker = await nats.connect(url, inbox_prefix=inbox_prefix(ME))
        store = EventStore(nc)
        await store.ensure_stream()
        open_ = Access.open()
        tasks: list[asyncio.Task[None]] = []
        for runner in (Gateway(nc, access=open_).run, CommandService(nc, access=open_).run,
                       Projector(nc, data / "projections", batch_max=500, access=open_).run,
                       lambda ready: preflight_service.run(nc, ready=ready, interval=3600)):
            ready = anyio.Event()
            tasks.append(asyncio.ensure_future(runner(ready=ready)))
            with anyio.fail_after(15):
                await ready.wait()
        return cls(nc, asker, store, tasks)

    async def send(self, batch: list[tuple[str, str, bytes, str | None]]) -> list[Sent]:
        sent = [Sent(verb, _subject(verb, tenant), body) for verb, tenant, body, _ in batch]

        async def one(item: Sent) -> None:
            with contextlib.suppress(nats.errors.TimeoutError, nats.errors.NoRespondersError):  # no answer
                msg = await self.asker.request(item.subject, item.body, timeout=30)
                decoded = msgspec.json.decode(msg.data)
                item.reply = decoded if isinstance(decoded, dict) else {"not-an-object": decoded}

        await asyncio.gather(*(one(s) for s in sent))
        return sent

    def alive(self) -> list[str]:
        return [repr(t.exception() if not t.cancelled() else "cancelled") for t in self.tasks if t.done()]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.asker.close()
        await self.nc.close()


@pytest.fixture
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal() as p:
        yield p


@pytest.fixture
def logfile(tmp_path: Path) -> Iterator[Path]:
    """UPM's logs go to a file in the data folder (they are searched for secrets too)."""
    path = tmp_path / "data" / "logs" / "services.log"
    path.parent.mkdir(parents=True)
    handler = logging.FileHandler(path)
    logger = logging.getLogger("upm")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield path
    logger.removeHandler(handler)
    handler.close()


def _rule(reply: dict[str, Any] | None) -> str:
    """The rule a refusal names (commands and queries: ``error.rule``; SQL: ``rule``)."""
    error = (reply or {}).get("error")
    return str(error.get("rule", "")) if isinstance(error, dict) else str((reply or {}).get("rule", ""))


def _accepted_change_ids(sent: list[Sent]) -> tuple[set[str], set[str], int]:
    """Change ids of accepted intents, of accepted change commands, and how many intents were new."""
    intents, commands, new = set(), set(), 0
    for s in sent:
        if not s.reply or s.reply.get("ok") is not True or s.verb in ("status", "events", "sql", "evidence"):
            continue
        if s.verb == "intent":
            intents.add(str(s.reply["change_id"]))
            new += not s.reply.get("duplicate", False)
        else:
            commands.add(str(s.reply.get("change_id")))
    return intents, commands, new


@pytest.mark.timeout(300)
def test_ten_thousand_hostile_requests_are_all_answered_and_leave_no_trace(
    tmp_path: Path, portal: BlockingPortal, logfile: Path,
) -> None:
    data = tmp_path / "data"
    server = EmbeddedNats(data / "jetstream")
    server.start()
    run = Run()
    try:
        services = portal.call(Services.start, server.url, data)

        @settings(max_examples=BATCHES, deadline=None, database=None, phases=(Phase.generate,),
                  suppress_health_check=list(HealthCheck))
        @given(st.lists(recipe, min_size=PER_BATCH, max_size=PER_BATCH))
        def batch(recipes: list[tuple[str, str, int, int]]) -> None:
            requests = [build(*r) for r in recipes]
            run.secrets.update(s.encode() for *_, s in requests if s)
            sent = portal.call(services.send, requests)
            run.sent += sent
            silent = [s for s in sent if s.reply is None]
            assert not silent, f"no answer to {silent[0].subject}: {silent[0].body[:200]!r}"
            assert not services.alive(), services.alive()

        batch()
        assert len(run.sent) >= BATCHES * PER_BATCH
        assert {s.verb for s in run.sent} == set(VERBS)
        refusals = [s for s in run.sent if s.reply and s.reply.get("ok") is False]
        assert len(refusals) > len(run.sent) // 2  # most of it is refused, each with a reason
        assert not [s for s in run.sent if _rule(s.reply) == "internal"]
        tricks = {_rule(s.reply) for s in refusals if s.verb == "intent"}
        assert {"depth", "duplicate-key", "secret", "json"} <= tricks, tricks

        async def still_serving() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
            ok = msgspec.json.decode((await services.asker.request(
                command_subject("acme", "intent", ME), b'{"request": "create directory /tmp/after"}', timeout=10)).data)
            status = msgspec.json.decode((await services.asker.request(
                query_subject("acme", "status", ME), msgspec.json.encode({"change_id": ok["change_id"]}),
                timeout=10)).data)
            sql = msgspec.json.decode((await services.asker.request(
                sql_subject("acme", ME), b'{"sql": "SELECT 1"}', timeout=10)).data)
            return ok, status, sql

        ok, status, sql = portal.call(still_serving)
        assert ok["ok"] and status["ok"] and sql.get("rows") == [[1]], (ok, status, sql)
        assert not services.alive()

        intents, commands, new = _accepted_change_ids(run.sent)

        async def stored() -> list[tuple[str, str]]:
            records = await services.store.read_raw("upm.evt.>")
            return [(e.change_id, e.type) for e in (decode_event(d) for _, d in records)]

        events = portal.call(stored)
        assert len([1 for _, t in events if t == "intent.submitted"]) == new + 1  # + the one just above
        assert {c for c, _ in events} <= intents | commands | {ok["change_id"]}
        assert all(t == "intent.submitted" or c in commands for c, t in events)
        portal.call(services.stop)
    finally:
        server.stop()

    assert run.secrets, "no secret was generated"
    leaked = set()
    for path in data.rglob("*"):
        if path.is_file():
            leaked |= set(SECRET_RE.findall(path.read_bytes())) & run.secrets
    assert not leaked, f"{len(leaked)} generated secrets were stored in {data}"
