"""TLS on vs off (issue 11): connection set-up and steady-state throughput, with the ratio.

    python bench/bench_tls.py [--connects N] [--messages N] [--rounds N]

Two embedded nats-servers run side by side with the same configuration (JetStream on disk,
``sync_interval: always``), one plain and one with mTLS (``services.security.tls.ensure_pki``, client
certificate ``cli``). Each measure alternates plain and TLS so that neighbour load on a shared box
hits both alike:

- set-up: ``nats.connect`` until connected (TCP, INFO, TLS handshake with client certificate,
  CONNECT, PING/PONG), then ``close``; median and P95 over ``--connects`` pairs;
- core request/reply between two connections, one at a time and 64 in flight, 16 B and 1 KiB;
- JetStream publish with ack to a file stream (every acknowledged write fsynced), one at a time
  and 64 in flight, 16 B and 1 KiB.

Throughputs are the median over ``--rounds`` rounds of ``--messages`` each; ratio = TLS / plain.
"""

from __future__ import annotations

import argparse
import logging
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import nats
from common import machine, median, p95
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import StorageType

from services.security.tls import ensure_pki
from upm.natsserver import EmbeddedNats

IN_FLIGHT = 64
PAYLOADS = {"16 B": b"x" * 16, "1 KiB": b"x" * 1024}


@dataclass(frozen=True)
class Endpoint:
    """One server as a client sees it: its URL and the TLS context (None for plaintext)."""

    name: str
    url: str
    tls: ssl.SSLContext | None

    async def connect(self) -> Client:
        return await nats.connect(self.url, tls=self.tls, connect_timeout=5, allow_reconnect=False)


@contextmanager
def endpoints() -> Iterator[tuple[Endpoint, Endpoint]]:
    """A plain and a TLS embedded server, each in its own temporary data folder."""
    with tempfile.TemporaryDirectory(prefix="upm-bench-tls-") as tmp:
        root = Path(tmp)
        pki = ensure_pki(root / "tls", ("cli",))
        plain = EmbeddedNats(root / "plain")
        secure = EmbeddedNats(root / "secure", tls=pki)
        plain.start()
        try:
            secure.start()
            try:
                yield Endpoint("plain", plain.url, None), Endpoint("TLS", secure.url, pki.client_context("cli"))
            finally:
                secure.stop()
        finally:
            plain.stop()


async def connect_once(endpoint: Endpoint) -> float:
    start = time.perf_counter()
    nc = await endpoint.connect()
    elapsed = time.perf_counter() - start
    await nc.close()
    return elapsed * 1000


async def setup_times(plain: Endpoint, secure: Endpoint, n: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {plain.name: [], secure.name: []}
    for endpoint in (plain, secure):  # warm-up: imports, first handshake, certificate loading
        await connect_once(endpoint)
    for _ in range(n):
        for endpoint in (plain, secure):
            times[endpoint.name].append(await connect_once(endpoint))
    return times


async def in_lanes(n: int, lanes: int, one: Callable[[], Awaitable[object]]) -> float:
    """Run ``one`` n times spread over ``lanes`` concurrent loops; return messages per second."""
    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for lane in range(lanes):
            async def loop(lane: int = lane) -> None:
                for _ in range(lane, n, lanes):
                    await one()
            tg.start_soon(loop)
    return n / (time.perf_counter() - start)


class Session:
    """The connections one endpoint's throughput rounds use: a requester, a responder, a stream."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.requester: Client | None = None
        self.responder: Client | None = None

    async def open(self) -> None:
        self.requester = await self.endpoint.connect()
        self.responder = await self.endpoint.connect()

        async def echo(msg: Msg) -> None:
            await msg.respond(msg.data)

        await self.responder.subscribe("bench.echo", cb=echo)
        await self.responder.flush()
        js = self.requester.jetstream()
        await js.add_stream(name="BENCH", subjects=["bench.js.>"], storage=StorageType.FILE)

    async def close(self) -> None:
        for nc in (self.requester, self.responder):
            if nc is not None:
                await nc.close()

    async def requests(self, payload: bytes, n: int, lanes: int) -> float:
        assert self.requester is not None
        requester = self.requester

        async def one() -> None:
            reply = await requester.request("bench.echo", payload, timeout=10)
            assert reply.data == payload

        return await in_lanes(n, lanes, one)

    async def publishes(self, payload: bytes, n: int, lanes: int) -> float:
        assert self.requester is not None
        js = self.requester.jetstream()

        async def one() -> None:
            await js.publish("bench.js.x", payload, timeout=10)

        return await in_lanes(n, lanes, one)


MEASURES: tuple[tuple[str, str, int], ...] = tuple(
    (f"{kind} {size}, {'one at a time' if lanes == 1 else f'{IN_FLIGHT} in flight'}", size, lanes)
    for kind in ("request/reply", "JetStream publish+ack")
    for size in PAYLOADS
    for lanes in (1, IN_FLIGHT)
)


async def throughputs(plain: Endpoint, secure: Endpoint, n: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    sessions = {e.name: Session(e) for e in (plain, secure)}
    for session in sessions.values():
        await session.open()
    rates: dict[str, dict[str, list[float]]] = {label: {plain.name: [], secure.name: []} for label, _, _ in MEASURES}
    try:
        for session in sessions.values():  # warm-up
            await session.requests(PAYLOADS["16 B"], 200, 1)
            await session.publishes(PAYLOADS["16 B"], 200, 1)
        for _ in range(rounds):
            for label, size, lanes in MEASURES:
                for name, session in sessions.items():
                    run = session.requests if label.startswith("request") else session.publishes
                    rates[label][name].append(await run(PAYLOADS[size], n, lanes))
    finally:
        for session in sessions.values():
            await session.close()
    return rates


def report(setup: dict[str, list[float]], rates: dict[str, dict[str, list[float]]]) -> None:
    plain, secure = setup["plain"], setup["TLS"]
    print(f"connection set-up (n={len(plain)}), ms:   plain median {median(plain):.2f}  P95 {p95(plain):.2f}"
          f"   TLS median {median(secure):.2f}  P95 {p95(secure):.2f}"
          f"   ratio median {median(secure) / median(plain):.2f}  P95 {p95(secure) / p95(plain):.2f}")
    print(f"{'throughput (msgs/s, median of rounds)':<52} {'plain':>9} {'TLS':>9} {'TLS/plain':>10}")
    for label, by_name in rates.items():
        p, t = median(by_name["plain"]), median(by_name["TLS"])
        print(f"{label:<52} {p:9.0f} {t:9.0f} {t / p:10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connects", type=int, default=200)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    # asyncio's SSL transport warns on every close that nats-py's eof_received() returns True: noise here
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    print(f"# TLS on vs off — {machine()}")
    with endpoints() as (plain, secure):
        setup = anyio.run(setup_times, plain, secure, args.connects)
        rates = anyio.run(throughputs, plain, secure, args.messages, args.rounds)
    report(setup, rates)


if __name__ == "__main__":
    main()
