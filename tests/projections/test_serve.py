"""`upm serve`: read-only permalinks scoped by a per-tenant token (real server, projector, witness)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from nats.aio.client import Client as NATS
from upm_history import History, happy, publish

from events.store import EventStore
from projections import evidence
from projections.projector import Projector
from projections.serve import Server
from services.auditor import Witness

TOKENS = {"tok-acme": "acme", "tok-other": "other"}


async def get(port: int, path: str, token: str | None = None, method: str = "GET") -> tuple[int, bytes]:
    async with await anyio.connect_tcp("127.0.0.1", port) as conn:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        await conn.send(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
        raw = b""
        with contextlib.suppress(anyio.EndOfStream):
            while True:
                raw += await conn.receive()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


@pytest.fixture
async def served(projector: Projector, nc: NATS, store: EventStore, tmp_path: Path) -> AsyncIterator[tuple[int, str]]:
    witness = Witness(nc, tmp_path / "data", interval=60)
    server = Server(nc, TOKENS)
    ready_w, ready_s = anyio.Event(), anyio.Event()
    tasks = [asyncio.ensure_future(witness.run(ready=ready_w)),
             asyncio.ensure_future(server.serve(port=0, ready=ready_s))]
    await ready_w.wait()
    await ready_s.wait()
    h = History()
    c = happy(h, "acme", published=False)
    await publish(store, h.records)
    with anyio.fail_after(20):
        while witness.published < 1:  # noqa: ASYNC110 - polling the witness's counter
            await anyio.sleep(0.05)
    await projector.wait((await store.js.stream_info("UPM_EVENTS")).state.last_seq)
    yield server.port, c.change_id
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_permalinks_resolve_for_the_owning_tenant(served: tuple[int, str]) -> None:
    port, change_id = served
    status, body = await get(port, f"/changes/{change_id}", "tok-acme")
    assert status == 200
    view = json.loads(body)
    assert view["change"]["outcome"] == "succeeded" and view["events"][0]["type"] == "intent.submitted"
    status, pack = await get(port, f"/changes/{change_id}/evidence", "tok-acme")
    assert status == 200 and evidence.verify_pack(pack).change_id == change_id
    status, body = await get(port, "/kpi", "tok-acme")
    assert status == 200 and {r["kpi"] for r in json.loads(body)} >= {"change_success_pct"}
    status, body = await get(port, "/score?since=2025-01-01T00:00:00", "tok-acme")
    assert status == 200 and "row" in json.loads(body)


async def test_other_tenants_and_strangers_are_refused(served: tuple[int, str]) -> None:
    port, change_id = served
    assert (await get(port, f"/changes/{change_id}", "tok-other"))[0] == 404
    assert (await get(port, f"/changes/{change_id}/evidence", "tok-other"))[0] == 404
    assert (await get(port, f"/changes/{change_id}"))[0] == 401
    assert (await get(port, f"/changes/{change_id}", "forged"))[0] == 403
    assert (await get(port, "/kpi", "tok-acme", method="POST"))[0] == 405
    assert (await get(port, "/etc/passwd", "tok-acme"))[0] == 404
    assert (await get(port, "/kpi?since=yesterday", "tok-acme"))[0] == 400
