"""`upm serve` in open mode: the console's JSON permalinks scoped by a per-tenant token (real server,
projector, witness; the console under uvicorn).

With an access file (token → identity) see tests/security/test_security_visibility.py; the pages
themselves, tests/console/.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import pytest
from nats.aio.client import Client as NATS
from upm_history import History, happy, publish

from events.store import EventStore
from projections import evidence_query
from projections.errors import AccessDenied
from projections.projector import Projector
from projections.serve import parse_tokens
from services.auditor import evidence
from services.auditor.service import Witness
from services.security.access import Access

HttpGet = Callable[..., Awaitable[tuple[int, bytes]]]  # the http_get fixture (tests/conftest.py)
ConsoleAt = Callable[..., Awaitable[int]]  # the console fixture (tests/conftest.py)

ACME, OTHER = "tok-acme-0123456789abcdef", "tok-other-0123456789abcdef"
TOKENS = {ACME: "acme", OTHER: "other"}


@pytest.fixture
async def served(projector: Projector, nc: NATS, store: EventStore, tmp_path: Path,
                 console: ConsoleAt) -> AsyncIterator[tuple[int, str]]:
    witness = Witness(nc, tmp_path / "data", interval=60)
    port = await console(nc, Access.open(), parse_tokens(TOKENS, "test", Access.open()))
    ready_w = anyio.Event()
    tasks = [asyncio.ensure_future(witness.run(ready=ready_w))]
    await ready_w.wait()
    h = History()
    c = happy(h, "acme", published=False)
    await publish(store, h.records)
    with anyio.fail_after(20):
        while witness.published < 1:  # noqa: ASYNC110 - polling the witness's counter
            await anyio.sleep(0.05)
    await projector.wait((await store.js.stream_info("UPM_EVENTS")).state.last_seq)
    yield port, c.change_id
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_permalinks_resolve_for_the_owning_tenant(served: tuple[int, str], http_get: HttpGet) -> None:
    port, change_id = served
    status, body = await http_get(port, f"/changes/{change_id}", ACME)
    assert status == 200
    view = json.loads(body)
    assert view["change"]["outcome"] == "succeeded" and view["events"][0]["type"] == "intent.submitted"
    status, pack = await http_get(port, f"/changes/{change_id}/evidence", ACME)
    assert status == 200 and evidence.verify_pack(pack).change_id == change_id
    status, body = await http_get(port, "/kpi", ACME)
    assert status == 200 and {r["kpi"] for r in json.loads(body)} >= {"change_success_pct"}
    status, body = await http_get(port, "/score?since=2025-01-01T00:00:00", ACME)
    assert status == 200 and "row" in json.loads(body)


async def test_other_tenants_and_strangers_are_refused(served: tuple[int, str], http_get: HttpGet) -> None:
    port, change_id = served
    assert (await http_get(port, f"/changes/{change_id}", OTHER))[0] == 404
    assert (await http_get(port, f"/changes/{change_id}/evidence", OTHER))[0] == 404
    assert (await http_get(port, f"/changes/{change_id}"))[0] == 401
    assert (await http_get(port, f"/changes/{change_id}", "forged"))[0] == 403
    assert (await http_get(port, "/kpi", ACME, method="POST"))[0] == 405
    assert (await http_get(port, "/etc/passwd", ACME))[0] == 404
    assert (await http_get(port, "/kpi?since=yesterday", ACME))[0] == 400


def test_a_malformed_tokens_file_says_what_to_write() -> None:
    with pytest.raises(AccessDenied, match="non-empty JSON object mapping each token to a tenant"):
        parse_tokens(["acme"], "tokens.json", Access.open())
    with pytest.raises(AccessDenied, match="at least 16 characters; make one with `upm serve token add NAME`"):
        parse_tokens({"short": "acme"}, "tokens.json", Access.open())
    with pytest.raises(AccessDenied, match=r"'Not A Tenant' is not a tenant name"):
        parse_tokens({ACME: "Not A Tenant"}, "tokens.json", Access.open())


async def test_a_pack_larger_than_a_message_comes_in_chunks(
    served: tuple[int, str], nc: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, change_id = served
    whole = await evidence_query.fetch(nc, change_id, principal="anyone")
    monkeypatch.setattr(evidence_query, "HEADROOM", nc.max_payload - 1000)  # 1000-byte pieces
    pieces = evidence_query.chunks(whole.data, 1000, whole.permalink, whole.object_name)
    assert len(pieces) > 3 and b"".join(p for p, _ in pieces) == whole.data
    chunked = await evidence_query.fetch(nc, change_id, principal="anyone", tenant="acme")
    assert chunked == whole and evidence.verify_pack(chunked.data).change_id == change_id
