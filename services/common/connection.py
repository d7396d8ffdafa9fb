"""Reaching NATS: which server (``--nats URL``, else ``NATS_URL``, else the state file ``upm up`` wrote in
the data folder: ``./.upm`` by default, ``UPM_DATA`` or ``--data``), as which identity, with which
certificate or credentials file, and closing a connection at shutdown whatever state NATS is in.

Each service connects as ``upm-<service>``, each CLI call as its caller (:func:`services.security.access.whoami`);
with TLS each uses its own client certificate, and with an access file the server enforces what each may do.
Every service, the CLI and the console reach NATS through here; the composition root (:mod:`upm.app`) starts
what they connect to.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections import deque
from pathlib import Path

import anyio
import nats
from nats.aio.client import Client as NATS

from events.store import EventStore
from events.subjects import STREAM, inbox_prefix
from services.common import client, cluster
from services.common.errors import ConfigError, NotRunning
from services.common.settings import data_dir
from services.common.statefile import read_state
from services.security.access import IDENTITY_ENV, whoami

nats_log = logging.getLogger("upm.nats")

TLS_ENV = "UPM_TLS_DIR"
CREDS_ENV = "NATS_CREDS"  # a NATS user's .creds file (JWT and nkey seed), for a server in operator mode
SECURITY_OPEN = "open"  # no TLS, no access file: any local process may do anything as anyone
SECURITY_TLS = "tls"  # client certificates required; identities not enforced
SECURITY_ACCESS = "access"  # per-identity certificates and permissions enforced by NATS



def resolve_url(explicit: str | None = None, data: str | None = None) -> str:
    """The NATS URL to use (see the module docstring for the order)."""
    if explicit:
        return explicit
    if os.environ.get("NATS_URL"):
        return os.environ["NATS_URL"]
    state = read_state(data_dir(data))
    if state is None:
        raise NotRunning(
            f"no UPM is running for {data_dir(data)}: start one with `upm up`, "
            "or point at a server with --nats URL / NATS_URL"
        )
    return str(state["url"])


def tls_context(identity: str, service: bool = False, data: str | None = None) -> ssl.SSLContext | None:
    """The client certificate ``identity`` connects with: ``client-<identity>`` from ``UPM_TLS_DIR``,
    else from the folder ``upm up --tls`` made for this data folder; without one, the shared
    ``services`` / ``cli`` certificate of a TLS deployment without access file. ``None`` when TLS is off."""
    folder = os.environ.get(TLS_ENV)
    if folder is None:
        state = read_state(data_dir(data))
        folder = str(state["tls_dir"]) if state and state.get("tls_dir") else None
    if not folder:
        return None
    # X.509 (cryptography) is imported only when TLS is on: ~35 ms of every CLI call otherwise
    from services.security.tls import Pki

    pki = Pki(Path(folder))
    shared = "services" if service else "cli"
    if not pki.has_client(identity) and not pki.has_client(shared):
        raise ConfigError(
            f"no client certificate for identity {identity!r} in {folder} (client-{identity}.pem / .key): with an "
            f"access file only its members and UPM's services have one; act as one of them with --as NAME or "
            f"{IDENTITY_ENV}, or add {identity} to the access file and run `upm up --access FILE` again"
        )
    return pki.client_context(identity if pki.has_client(identity) else shared)


async def connect(url: str, *, service: bool = False, data: str | None = None, identity: str | None = None) -> NATS:
    """Connect to NATS as ``identity`` (a CLI call: :func:`services.security.access.whoami`; a service must name
    its own, ``upm-<service>``). Its replies arrive under ``_INBOX.<identity>.>``. A service
    reconnects for ever; a CLI call fails fast with a clear error."""
    if identity is None:
        if service:
            raise ConfigError("a service connects as its own identity: pass identity=service_identity(NAME)")
        identity = whoami()
    return await open_as(url, identity, tls_context(identity, service, data), service=service)


def nats_credentials() -> str | None:
    """The NATS credentials file ``NATS_CREDS`` names (a user JWT and its nkey seed, as ``nsc generate
    creds`` writes it), checked to be one; ``None`` when unset."""
    path = os.environ.get(CREDS_ENV)
    if not path:
        return None
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read the NATS credentials file {path} ({CREDS_ENV}): {exc}; point {CREDS_ENV} at your "
            f"NATS user's .creds file (e.g. from `nsc generate creds`), or unset it"
        ) from exc
    if "BEGIN NATS USER JWT" not in text or "BEGIN USER NKEY SEED" not in text:  # nats-py would hang on it
        raise ConfigError(
            f"{path} ({CREDS_ENV}) is not a NATS credentials file: it needs a user JWT block and a user nkey "
            f"seed block; point {CREDS_ENV} at the .creds file `nsc generate creds` wrote, or unset it"
        )
    return path


async def open_as(url: str, identity: str, tls: ssl.SSLContext | None, *, service: bool = False) -> NATS:
    attempts = -1 if service else 1
    creds = nats_credentials()
    # the server's reason, which a failed connect replaces by "no servers" (and a reset connection follows)
    last: deque[Exception] = deque(maxlen=4)
    nc = client.Connection()

    async def on_error(exc: Exception) -> None:
        last.append(exc)
        nc.refusals.note(exc)
        if service:  # a CLI call says what failed itself, once (a refusal, or the connect error below)
            nats_log.error("%s", exc)

    try:
        await nc.connect(
            servers=cluster.servers(url), connect_timeout=5, max_reconnect_attempts=attempts, reconnect_time_wait=0.5 if service else 0.1,  # type: ignore[arg-type]  # nats-py annotates int, sleeps a float
            tls=tls, inbox_prefix=inbox_prefix(identity), error_cb=on_error, user_credentials=creds,
        )
        return nc
    except (OSError, nats.errors.Error) as exc:
        if any("authorization violation" in str(e).lower() for e in (exc, *last)):
            if creds is not None:
                raise ConfigError(
                    f"NATS at {url} refused the user in {creds} ({CREDS_ENV}): the server does not trust its "
                    f"account, or its JWT is forged, expired or revoked; get a current .creds file for this "
                    f"server from its operator"
                ) from exc
            if tls is None:
                raise ConfigError(
                    f"NATS at {url} requires authentication: for a server in operator (JWT) mode set "
                    f"{CREDS_ENV} to your NATS user's .creds file; for UPM's own server with TLS set {TLS_ENV}"
                ) from exc
            from services.security.tls import distinguished_name

            raise ConfigError(
                f"NATS at {url} refused identity {identity} (certificate {distinguished_name(identity)}): with an "
                f"access file only its members and UPM's services may connect; act as a member with --as NAME or "
                f"{IDENTITY_ENV}"
            ) from exc
        raise NotRunning(f"cannot connect to NATS at {url}: {exc}. Is `upm up` running?") from exc


async def ensure_stream(nc: NATS) -> None:
    """The event stream, created at (or scaled up to) :func:`services.common.cluster.replicas`."""
    count = cluster.replicas()
    store = EventStore(nc)
    await store.ensure_stream(count)
    await cluster.scale(store.js, STREAM, count)


async def close(nc: NATS, within: float = 5.0) -> None:
    """Close a service's connection at shutdown, whatever state NATS is in: drain it (in-flight
    replies and acks go out) when connected, else just close it (nothing can go out anyway)."""
    if nc.is_connected:
        try:
            with anyio.fail_after(within):
                await nc.drain()
            return
        except (TimeoutError, nats.errors.Error) as exc:
            nats_log.warning("draining the connection failed (%s); closing it", exc or type(exc).__name__)
    if not nc.is_closed:
        try:
            await nc.close()
        except OSError as exc:  # nats-py flushes a socket the server already closed: nothing was lost
            nats_log.info("the connection was already gone when closed (%s)", exc)
