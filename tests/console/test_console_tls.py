"""Signing in with a client certificate (`upm serve --tls`): HTTPS with the deployment's certificates;
the certificate `upm up --access` issued a person signs them in, with their roles and visibility; a
certificate of another CA is refused at the handshake (issue 25)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio.to_thread
import pytest
from console_world import ACCESS, World

from services.security.tls import Pki, ensure_pki

pytestmark = pytest.mark.slow
ConsoleAt = Callable[..., Awaitable[int]]  # the console fixture (tests/conftest.py)


def context(pki: Pki, who: str | None) -> ssl.SSLContext:
    if who is None:
        return ssl.create_default_context(cafile=str(pki.ca))
    return pki.client_context(who)


async def get(port: int, path: str, ctx: ssl.SSLContext) -> tuple[int, str]:
    def fetch() -> tuple[int, str]:
        request = urllib.request.Request(f"https://127.0.0.1:{port}{path}", headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, context=ctx, timeout=60) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    return await anyio.to_thread.run_sync(fetch)


async def test_a_client_certificate_signs_its_person_in(world: World, console: ConsoleAt, tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path / "tls", ("alice", "gina", "upm-planner"))
    port = await console(world.asker, ACCESS, {}, tls=pki)
    private = await world.submit("alice", f"Create directory {world.tmp / 'mine'}", visibility="private")
    await world.until(private, lambda s: s.state == "closed")

    status, body = await get(port, f"/changes/{private}", context(pki, "alice"))
    assert status == 200 and json.loads(body)["change"]["initiator"] == "alice"
    assert (await get(port, f"/changes/{private}", context(pki, "gina")))[0] == 404  # another tenant's requester
    assert (await get(port, f"/changes/{private}", context(pki, "upm-planner")))[0] == 401  # no person: sign in
    assert (await get(port, f"/changes/{private}", context(pki, None)))[0] == 401  # no certificate, no token

    other = ensure_pki(tmp_path / "other-ca", ("alice",))  # alice's name, another CA
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # TLS 1.3: the server hangs up after the handshake
        await get(port, f"/changes/{private}", _foreign(pki, other))


def _foreign(pki: Pki, other: Pki) -> ssl.SSLContext:
    """Trusts the console's server certificate, shows a client certificate the console's CA did not issue."""
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.load_cert_chain(str(other.cert("client-alice")), str(other.key("client-alice")))
    return ctx
