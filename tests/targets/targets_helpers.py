"""Helpers of the real-target tests: submitting, and checks that bypass UPM's own read-backs."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import ssl
import subprocess
import sysconfig
import threading
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from events.commands import idempotent_change_id
from events.store import EventStore
from events.subjects import command_subject
from projections import kpi
from projections.db import ProjectionDB
from services.common import client, targets
from services.verifier.drift import DRIFT_LOG_KEY
from upm.emulators import AwsTarget, PgTarget

Eventually = Callable[[Callable[[], Awaitable[bool]], float], Awaitable[None]]
DRIFT_INTERVAL = 6.0  # a pass must fit every read-back (an aws CLI start-up is ~0.8 s of CPU)


async def submit(store: EventStore, request: str, *, within: float = 90) -> client.ChangeStatus:
    change_id = await client.submit(store.nc, "acme", {"request": request}, principal="alice")
    return await client.wait_closed(store, "acme", change_id, within=within)


async def submit_approved(
    store: EventStore, request: str, eventually: Eventually, *, within: float = 90
) -> client.ChangeStatus:
    """Submit a change that needs an approver (a delete in staging: one in dev takes the automatic lane),
    approve it as bob, wait until it closes."""
    change_id = await client.submit(store.nc, "acme", {"request": request, "environment": "staging"},
                                    principal="alice")

    async def asked() -> bool:
        return any(s.event.type == "approval.requested" for s in (await store.read("acme", change_id)).events)

    await eventually(asked, 30)
    body = json.dumps({"change_id": change_id, "reason": "reviewed"}).encode()
    reply = json.loads((await store.nc.request(command_subject("acme", "approve", "bob"), body, timeout=10)).data)
    assert reply.get("ok"), reply
    return await client.wait_closed(store, "acme", change_id, within=within)


async def drift_payloads(store: EventStore, tenant: str = "acme") -> list[object]:
    """Every payload of the tenant's drift log so far (drift detected, reconciled, resolved)."""
    return [s.event.payload for s in (await store.read(tenant, idempotent_change_id(tenant, DRIFT_LOG_KEY))).events]


async def rolled_back(store: EventStore, change_id: str, eventually: Eventually) -> list[str]:
    """Wait for the change's rollback (a step failed, then every step that ran undone, newest first);
    return the change's event types."""

    async def types() -> list[str]:
        return [s.event.type for s in (await store.read("acme", change_id)).events]

    async def done() -> bool:
        return "rollback.completed" in await types()

    await eventually(done, 60)
    seen = await types()
    assert "step.failed" in seen and "rollback.failed" not in seen, seen
    return seen


def boto(target: AwsTarget, service: str) -> Any:
    """A boto3 client as the moto server's root user: checks that bypass UPM's own read-backs."""
    import boto3  # type: ignore[import-untyped]

    return boto3.client(service, endpoint_url=target.endpoint, region_name=target.region,
                        aws_access_key_id=target.root_key_id, aws_secret_access_key=target.root_secret)


def aws_cli(target: AwsTarget, *args: str, creds: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real ``aws`` CLI against the moto server (root credentials unless ``creds``)."""
    env = {"PATH": os.environ["PATH"], "AWS_ENDPOINT_URL": target.endpoint or "", "AWS_DEFAULT_REGION": target.region,
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
           **(creds or {"AWS_ACCESS_KEY_ID": target.root_key_id, "AWS_SECRET_ACCESS_KEY": target.root_secret})}
    aws = str(Path(sysconfig.get_path("scripts")) / "aws")
    return subprocess.run([aws, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def sql(target: PgTarget, statement: str, *, database: str = "postgres") -> str:
    """A direct query as the superuser (real psql), bypassing UPM's read-backs."""
    dsn = target.dsn.rsplit("/", 1)[0] + "/" + database
    return targets.psql_dsn(dsn, (statement,)).strip()


def moto_sessions(target: AwsTarget) -> list[dict[str, Any]]:
    """Every STS session the moto server issued, with its secret values (moto's own state API)."""
    with urllib.request.urlopen(f"{target.endpoint}/moto-api/data.json", timeout=10) as reply:
        data = json.load(reply)
    sessions: list[dict[str, Any]] = data.get("sts", {}).get("AssumedRole", [])
    return sessions


async def operator_command(store: EventStore, verb: str, change_id: str, by: str = "bob") -> None:
    """``upm VERB CHANGE`` as ``by`` (resume / rollback / cancel / approve), asserting it was accepted."""
    body = json.dumps({"change_id": change_id, "reason": "operator request"}).encode()
    reply = json.loads((await store.nc.request(command_subject("acme", verb, by), body, timeout=10)).data)
    assert reply.get("ok"), reply


async def kpis_of(store: EventStore, change_id: str, folder: Path) -> dict[str, float | None]:
    """The KPI figures of a projection of one change's stored events (what `upm kpi` computes)."""
    records = [(s.seq, s.data) for s in (await store.read("acme", change_id)).events]
    db = ProjectionDB(folder)
    try:
        db.ingest(records)
        return kpi.compute(db.main)
    finally:
        db.close()


class UntrustedTls:
    """An https endpoint in front of a plain-TCP server (moto), with a self-signed certificate made
    here and put in no trust store: a client that verifies certificates (awscli) refuses it, as it
    would an expired certificate or an intercepting proxy; one that does not sees the server behind.
    Runs in a thread of its own (its own event loop); use it as a context manager."""

    def __init__(self, upstream_port: int, folder: Path) -> None:
        self.upstream_port = upstream_port
        self.cert, self.key = folder / "untrusted.pem", folder / "untrusted.key"
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(lambda loop, context: None)  # refused handshakes are the point
        self.thread = threading.Thread(target=self.loop.run_forever, name="untrusted-tls", daemon=True)
        self.url = ""

    def __enter__(self) -> UntrustedTls:
        _self_signed(self.cert, self.key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._forward, "127.0.0.1", 0, ssl=context), self.loop).result(10)
        self.url = f"https://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    def __exit__(self, *exc: object) -> None:
        async def shutdown() -> None:
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def status_unverified(self, path: str) -> int:
        """The HTTP status of ``GET path`` through the proxy without checking its certificate: it does
        serve the server behind it, only trust is broken."""
        unverified = ssl._create_unverified_context()
        with urllib.request.urlopen(f"{self.url}{path}", context=unverified, timeout=10) as reply:
            return int(reply.status)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


def _self_signed(cert_path: Path, key_path: Path) -> None:
    """A certificate for 127.0.0.1 signed by its own key (valid for a day)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
