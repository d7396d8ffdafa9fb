"""mTLS on the embedded server. Each test names the threat it covers."""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import nats
import nats.errors
import pytest
from cryptography import x509

from services.security.tls import Pki, ensure_pki
from upm import app
from upm.natsserver import EmbeddedNats


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return ensure_pki(tmp_path / "tls", ["services", "cli"])


@pytest.fixture
def tls_server(tmp_path: Path, pki: Pki) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats", tls=pki)
    server.start()
    yield server
    server.stop()


async def _refused(url: str, **kwargs: object) -> None:
    with pytest.raises((OSError, nats.errors.Error)):  # ssl.SSLError is an OSError
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False,
                                **kwargs)  # type: ignore[arg-type]
        await nc.close()


async def test_a_client_with_a_certificate_from_the_ca_connects(tls_server: EmbeddedNats, pki: Pki) -> None:
    """Threat: none — the positive control: a service with its own client certificate gets in."""
    nc = await nats.connect(tls_server.url, tls=pki.client_context("services"), connect_timeout=2)
    assert nc.is_connected
    await nc.close()


async def test_a_client_without_a_certificate_is_refused(tls_server: EmbeddedNats, pki: Pki) -> None:
    """Threat: an unauthenticated process on the machine talking to the bus over TLS but with no
    client certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    await _refused(tls_server.url, tls=context)


async def test_a_client_with_a_certificate_from_another_ca_is_refused(
    tls_server: EmbeddedNats, pki: Pki, tmp_path: Path
) -> None:
    """Threat: a client certificate minted by someone else's CA (a forged identity)."""
    rogue = ensure_pki(tmp_path / "rogue", ["services"])
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    context.load_cert_chain(str(rogue.cert("client-services")), str(rogue.key("client-services")))
    await _refused(tls_server.url, tls=context)


async def test_plaintext_is_refused(tls_server: EmbeddedNats) -> None:
    """Threat: a client (or a downgrade) speaking plaintext to a TLS-only server."""
    host, port = tls_server.url.rsplit("/", 1)[1].rsplit(":", 1)
    with anyio.fail_after(10):
        stream = await anyio.connect_tcp(host, int(port))
        info = await stream.receive()
        assert info.startswith(b"INFO ") and json.loads(info[5:])["tls_required"] is True
        await stream.send(b'CONNECT {"verbose":false}\r\nPING\r\n')
        answer = b""
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
            while b"PONG" not in answer:
                answer += await stream.receive()
        await stream.aclose()
    assert b"PONG" not in answer


def test_keys_are_private_to_their_owner(pki: Pki) -> None:
    """Threat: another local user reading the CA's or a client's private key."""
    for key in [pki.folder / "ca.key", pki.key("server"), pki.key("client-services"), pki.key("client-cli")]:
        assert key.stat().st_mode & 0o077 == 0, key
    assert pki.folder.stat().st_mode & 0o077 == 0


def _upm(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "UPM_TLS_DIR")}
    return subprocess.run([sys.executable, "-m", "upm.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


@pytest.mark.slow
def test_upm_up_with_tls_runs_changes_over_mtls_only(tmp_path: Path) -> None:
    """Threat: any process on the machine driving the control plane over the bus. With `upm up
    --tls` every service and the CLI use their own client certificates, and a client without one
    cannot even connect."""
    data = tmp_path / "upm"
    up = _upm("up", "--tls", "--data", str(data), "--json")
    assert up.returncode == 0, up.stderr
    try:
        state = json.loads(up.stdout)
        assert state["tls_dir"] == str(data / "tls")
        pki = Pki(data / "tls")
        assert all(pki.has_client(identity) for identity in app.identities())  # one per service
        target = tmp_path / "over-tls"
        done = _upm("submit", f"Create directory {target} with mode 0750", "--wait", "--json", "--data", str(data))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["outcome"] == "succeeded" and target.is_dir()

        async def anonymous() -> None:
            await _refused(state["url"])

        anyio.run(anonymous)
    finally:
        assert _upm("down", "--data", str(data)).returncode == 0


def test_stale_client_certificates_are_replaced(tmp_path: Path) -> None:
    """Threat: a certificate the server no longer maps to its holder (issued by a CA since
    replaced, or with an older subject) staying in use; `upm up` re-issues it."""
    folder = tmp_path / "tls"
    old = ensure_pki(folder, ["alice"]).cert("client-alice").read_bytes()
    for path in (folder / "ca.key", folder / "ca.pem"):
        path.unlink()
    pki = ensure_pki(folder, ["alice"])
    fresh = x509.load_pem_x509_certificate(pki.cert("client-alice").read_bytes())
    assert pki.cert("client-alice").read_bytes() != old
    fresh.verify_directly_issued_by(x509.load_pem_x509_certificate(pki.ca.read_bytes()))
    assert fresh.subject.rfc4514_string() == "CN=alice,O=UPM"
    assert ensure_pki(folder, ["alice"]).cert("client-alice").read_bytes() == pki.cert("client-alice").read_bytes()
