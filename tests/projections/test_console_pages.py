"""The console's change list in pages (issue 25: every page under 200 ms at 10,000 changes): a
real server, projector and gateway under an access file, the console under uvicorn, pages
followed through their "next" links as a browser and as a program would.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import nats
import pytest
from nats.aio.client import Client as NATS
from upm_history import History, make_plan, publish

from events.model import IntentSubmitted
from events.store import EventStore
from events.subjects import inbox_prefix
from projections.console import data
from projections.projector import Projector
from projections.serve import Grant
from services.gateway.service import Gateway
from services.security.access import ASKER, parse
from upm.natsserver import EmbeddedNats

Host = Callable[..., Awaitable[None]]  # the host fixture (tests/conftest.py)
ConsoleAt = Callable[..., Awaitable[int]]  # the console fixture (tests/conftest.py)

ACCESS = parse({"org": "example", "tenants": {"acme": {"alice": ["requester"], "bob": ["requester"],
                                                       "audrey": ["auditor"]}}}, "test access")
TOKENS = {f"token-of-{who}-0123456789": Grant(who) for who in ("alice", "audrey")}
ALICE, AUDREY = "token-of-alice-0123456789", "token-of-audrey-0123456789"
ROW = re.compile(r'<tr data-change="([0-9a-f-]+)"')
NEXT = re.compile(r'<a rel="next" href="([^"]+)"')


async def get(port: int, path: str, token: str, accept: str = "text/html") -> tuple[int, dict[str, str], str]:
    """``(status, headers, body)`` of one request, as a browser (``text/html``) or a program asks."""
    async with await anyio.connect_tcp("127.0.0.1", port) as conn:
        await conn.send(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nAccept: {accept}\r\n"
                        "Connection: close\r\n\r\n".encode())
        raw = b""
        with contextlib.suppress(anyio.EndOfStream):
            while True:
                raw += await conn.receive()
    head, _, body = raw.decode().partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, body.replace("&amp;", "&")


@dataclass(frozen=True)
class Listed:
    port: int
    alices: list[str]  # alice's changes, newest first
    prod: list[str]  # those in prod, newest first
    bobs: str  # bob's private change


@pytest.fixture
async def listed(nc: NATS, store: EventStore, tmp_path: Path, host: Host, console: ConsoleAt,
                 nats_server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Listed]:
    """Pages of 3 rows; in acme, 8 of alice's changes (even-numbered ones in prod, odd ones in dev) and,
    in the middle, one private change of bob's."""
    monkeypatch.setattr(data, "PAGE_SIZE", 3)
    projector = Projector(nc, tmp_path / "proj", access=ACCESS)
    await host(projector, Gateway(nc, ACCESS))
    h = History()
    alices: list[str] = []
    prod: list[str] = []
    bobs = ""
    for i in range(9):
        who, private = ("bob", True) if i == 4 else ("alice", False)
        c = h.change("acme", visibility="private" if private else "team")
        c.add(IntentSubmitted(request=f"make d{i}", initiator=who, environment="prod" if i % 2 == 0 else "dev"),
              i * 60.0, who)
        c.compiled(i * 60.0 + 1, make_plan((f"d{i}",), initiator=who)).preflight(i * 60.0 + 2)
        if private:
            bobs = c.change_id
        else:
            alices.insert(0, c.change_id)
            if i % 2 == 0:
                prod.insert(0, c.change_id)
    await projector.wait(await publish(store, h.records))
    asker = await nats.connect(nats_server.url, inbox_prefix=inbox_prefix(ASKER))  # as `upm serve` connects
    yield Listed(await console(asker, ACCESS, TOKENS), alices, prod, bobs)
    await asker.close()


async def follow(port: int, path: str, token: str) -> list[list[str]]:
    """Every page's change ids, from ``path`` through its "next" links (the first page is live, no other)."""
    pages: list[list[str]] = []
    while path:
        status, _, body = await get(port, path, token)
        assert status == 200, body
        assert ('data-stream="/changes/stream' in body) == (not pages)  # only the first page follows events
        pages.append(ROW.findall(body))
        found = NEXT.search(body)
        path = found.group(1) if found else ""
        assert len(pages) < 10, "the next links go round in circles"
    return pages


async def test_the_list_comes_in_pages_newest_first_each_change_once(listed: Listed) -> None:
    pages = await follow(listed.port, "/changes", ALICE)
    assert pages == [listed.alices[0:3], listed.alices[3:6], listed.alices[6:8]]  # bob's private one on none
    everyone = [cid for page in await follow(listed.port, "/changes", AUDREY) for cid in page]
    assert len(everyone) == 9 and listed.bobs in everyone  # an auditor sees it: the data is as the test means


async def test_filters_apply_on_every_page_and_the_json_list_links_the_next(listed: Listed) -> None:
    port, prod = listed.port, listed.prod
    assert len(prod) == 4
    pages = await follow(port, "/changes?environment=prod", ALICE)
    assert pages == [prod[:3], prod[3:]]
    status, headers, body = await get(port, "/changes?environment=prod", ALICE, accept="application/json")
    assert status == 200 and [r["change_id"] for r in json.loads(body)] == prod[:3]
    following = headers["link"].split("<", 1)[1].split(">", 1)[0]
    assert "environment=prod" in following and "before=" in following
    status, headers, body = await get(port, following, ALICE, accept="application/json")
    assert status == 200 and "link" not in headers
    assert [r["change_id"] for r in json.loads(body)] == prod[3:]


async def test_a_private_change_of_someone_else_is_on_no_page(listed: Listed) -> None:
    port, bobs = listed.port, listed.bobs
    for path in ("/changes", "/changes?before=999999", "/changes?initiator=bob", "/changes?status=approved",
                 "/approvals", "/drift", "/kpi"):
        for accept in ("text/html", "application/json"):
            status, _, body = await get(port, path, ALICE, accept)
            assert status == 200 and bobs not in body, (path, accept)
    assert (await get(port, f"/changes/{bobs}", ALICE))[0] == 404
    assert (await get(port, f"/changes/{bobs}", ALICE, "application/json"))[0] == 404
    assert (await get(port, f"/changes/{bobs}", AUDREY))[0] == 200


async def test_a_page_that_is_not_a_sequence_is_refused(listed: Listed) -> None:
    port = listed.port
    for bad in ("x", "-1", "0", "1%27%20OR%201=1", "9" * 30):
        status, _, body = await get(port, f"/changes?before={bad}", ALICE, "application/json")
        assert status == 400 and "stream sequence" in body, bad
