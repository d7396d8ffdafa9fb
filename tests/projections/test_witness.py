"""The auditor's witness on a real nats-server: signed heads, packs in the object store, audit verify."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest
from nats.aio.client import Client as NATS
from upm_history import History, failed, happy, publish

from events import signing
from events.model import EvidencePublished, LogHeadSigned
from events.store import EventStore
from events.subjects import LOG_HEADS_CHANGE_ID, SYSTEM_TENANT
from projections import client
from projections.errors import EvidenceNotFound
from services.auditor import evidence
from services.auditor.service import Witness

Eventually = Callable[[Callable[[], Awaitable[bool]], float], Awaitable[None]]


@pytest.fixture
async def witness(nc: NATS, store: EventStore, tmp_path: Path, host: Callable[..., Awaitable[None]]) -> Witness:
    w = Witness(nc, tmp_path / "data", interval=0.3)
    await host(w)
    return w


async def published(store: EventStore, change_id: str) -> list[EvidencePublished]:
    log = await store.read("*", change_id)
    return [s.event.payload for s in log.events if isinstance(s.event.payload, EvidencePublished)]


async def test_closed_changes_get_a_signed_pack_and_the_log_audits(
    witness: Witness, store: EventStore, eventually: Eventually, tmp_path: Path
) -> None:
    h = History()
    ok = happy(h, published=False)
    bad = failed(h, "other", at=100, published=False)  # closed, then rolled back: a second pack
    await publish(store, h.records)

    async def packs_published() -> bool:
        return len(await published(store, ok.change_id)) == 1 and len(await published(store, bad.change_id)) == 2

    await eventually(packs_published, 20)
    keys = signing.public_keys(tmp_path / "data")
    info, pack = await client.pack_of(store, await store.read("*", bad.change_id))
    report = evidence.verify_pack(pack, keys)
    assert report.change_id == bad.change_id
    assert "rollback.evidence.json" in evidence.read_pack(pack)
    assert info.permalink == f"upm://evidence/other/{bad.change_id}"

    heads = await store.read(SYSTEM_TENANT, LOG_HEADS_CHANGE_ID)
    assert heads.events and all(isinstance(s.event.payload, LogHeadSigned) for s in heads.events)
    audited = await client.audit_stream(store, keys, require_signatures=True)
    assert audited.problems == []
    assert audited.heads == len(heads.events)
    assert audited.heads_signature_checked == audited.heads


async def test_heads_are_signed_on_the_interval_and_not_when_idle(
    witness: Witness, store: EventStore, eventually: Eventually
) -> None:
    h = History()
    h.change().intent(0).compiled(1)  # an open change: no pack, but the interval head covers it
    last = await publish(store, h.records)

    async def headed() -> bool:
        return witness.head_size >= last

    await eventually(headed, 10)
    count = len((await store.read(SYSTEM_TENANT, LOG_HEADS_CHANGE_ID)).events)
    await anyio.sleep(1.0)  # three idle intervals: nothing new to sign
    assert len((await store.read(SYSTEM_TENANT, LOG_HEADS_CHANGE_ID)).events) == count


async def test_a_change_without_a_pack_is_reported(store: EventStore) -> None:
    h = History()
    c = happy(h, published=False)
    await publish(store, h.records)
    with pytest.raises(EvidenceNotFound, match="no published evidence pack yet"):
        await client.pack_of(store, await store.read("*", c.change_id))
