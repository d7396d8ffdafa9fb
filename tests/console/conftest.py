"""Fixtures of the console tests: the secure world (see console_world.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nats
import pytest
from console_world import ACCESS, ACCESS_DOC, PEOPLE, World, token

from events import signing
from events.store import EventStore
from events.subjects import inbox_prefix
from projections.serve import Grant
from services.security.access import ASKER
from upm.natsserver import EmbeddedNats

ConsoleAt = Callable[..., Awaitable[int]]  # the console fixture (tests/conftest.py)


@pytest.fixture
def secure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The access file and the approvers' group, for every service the pipeline starts."""
    access = tmp_path / "access.json"
    access.write_text(json.dumps(ACCESS_DOC))
    preflight = tmp_path / "preflight.json"
    preflight.write_text(json.dumps({"groups": {"*": {"platform-owners": ["bob", "carol"]}}}))
    monkeypatch.setenv("UPM_ACCESS", str(access))
    monkeypatch.setenv("UPM_PREFLIGHT_CONFIG", str(preflight))


@pytest.fixture
async def world(secure: None, pipeline: EventStore, nats_server: EmbeddedNats, console: ConsoleAt,
                tmp_path: Path) -> AsyncIterator[World]:
    people = {who: await nats.connect(nats_server.url, inbox_prefix=inbox_prefix(who)) for who in PEOPLE}
    asker = await nats.connect(nats_server.url, inbox_prefix=inbox_prefix(ASKER))  # what `upm serve` connects as
    port = await console(asker, ACCESS, {token(who): Grant(who) for who in PEOPLE},
                         trusted=signing.public_keys(tmp_path / "upm-data"))  # the auditor's key (pipeline)
    yield World(url=nats_server.url, base=f"http://127.0.0.1:{port}", people=people, tmp=tmp_path, asker=asker)
    for conn in [*people.values(), asker]:
        await conn.close()


