"""Running the console: its settings checked before anything listens, then uvicorn on one socket.

:func:`settings` decides everything that can be wrong *before* the server starts (so a bad tokens
file or an open console on a public address is a clear error at start-up, never a process that
dies in the background): the access rules, the tokens (required with an access file, optional in
open mode), and that an open console without tokens listens on loopback only. :func:`serve` then
runs uvicorn on a socket bound here (port 0 picks a free one) inside the caller's event loop, and
:class:`Hosted` is the same as one more process of `upm up --console`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from nats.aio.client import Client as NATS
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

from events import signing
from projections.console.app import CLIENT_CN, LIVE_POLL_S, create_app
from projections.serve import TOKENS_FILE, Grant, load_tokens
from services.common.errors import ConfigError
from services.security.access import Access
from services.security.access import load as load_access
from services.security.tls import Pki

HOST_ENV, PORT_ENV = "UPM_CONSOLE_HOST", "UPM_CONSOLE_PORT"
DEFAULT_PORT = 8080
log = logging.getLogger("upm.console")


@dataclass(frozen=True)
class Settings:
    rules: Access
    tokens: dict[str, Grant] = field(default_factory=dict)
    trusted: dict[str, str] = field(default_factory=dict)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def settings(data: Path, host: str, tokens_file: Path | None = None, rules: Access | None = None) -> Settings:
    """The console's rules and tokens, or :class:`ConfigError` / ``AccessDenied`` saying what to fix."""
    rules = rules if rules is not None else load_access()
    path = tokens_file or data / TOKENS_FILE
    tokens: dict[str, Grant] = {}
    if path.exists() or tokens_file is not None:
        tokens = load_tokens(path, rules)
    elif rules.enforced:
        raise ConfigError(f"secure mode ({rules.source}): people sign in to the console with a token, and there is "
                          f"no tokens file at {path}; create one per person with `UPM_ACCESS={rules.source} upm serve "
                          f"token add NAME --data {data}`")
    if not rules.enforced and not tokens and not is_loopback(host):
        raise ConfigError(f"an open console (no access file, no tokens file) serves loopback only, not {host}: "
                          "leave --host out (127.0.0.1), or run UPM with an access file and give people tokens")
    trusted = signing.public_keys(data) if data.is_dir() else {}
    return Settings(rules=rules, tokens=tokens, trusted=trusted)


def app_for(nc: NATS, chosen: Settings, poll_s: float = LIVE_POLL_S) -> Starlette:
    return create_app(nc, chosen.rules, chosen.tokens, trusted=chosen.trusted, poll_s=poll_s)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (``port`` 0: a free one), or :class:`ConfigError` saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, reuse_port=False)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port "
                          "(0 picks a free one)") from None
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket, *, https: bool = False) -> str:
    host, port = sock.getsockname()[:2]
    return f"{'https' if https else 'http'}://{f'[{host}]' if ':' in host else host}:{port}/"


def common_name(peercert: Any) -> str | None:
    """The common name of a verified peer certificate (:meth:`ssl.SSLSocket.getpeercert`'s dict)."""
    if not isinstance(peercert, dict):
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class _ClientCertificates(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, adding to each request's scope who the verified client certificate of
    its connection names (:data:`CLIENT_CN`), so a person can sign in with the certificate `upm up --access`
    issued them (``client-NAME.pem``) instead of a token."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        name = common_name(transport.get_extra_info("peercert"))
        if name is not None:
            inner = self.app

            async def app(scope: Any, receive: Any, send: Any) -> None:
                await inner({**scope, CLIENT_CN: name}, receive, send)

            self.app = app


def tls_options(pki: Pki) -> dict[str, Any]:
    """uvicorn's options for HTTPS with the deployment's server certificate; a client certificate from its CA
    is asked for but optional (people without one sign in with a token)."""
    for path in (pki.ca, pki.cert("server"), pki.key("server")):
        if not path.exists():
            raise ConfigError(f"--tls: {path} is missing; the console serves HTTPS with the certificates `upm up "
                              "--tls` / `--access` made in the data folder's tls/ (or UPM_TLS_DIR)")
    return {"ssl_certfile": str(pki.cert("server")), "ssl_keyfile": str(pki.key("server")),
            "ssl_ca_certs": str(pki.ca), "ssl_cert_reqs": ssl.CERT_OPTIONAL, "http": _ClientCertificates}


async def serve(app: Starlette, sock: socket.socket, *, ready: Callable[[str], None] | None = None,
                tls: Pki | None = None) -> None:
    """Serve ``app`` on ``sock`` until cancelled (uvicorn in this event loop; no signal handlers of its own);
    with ``tls``, HTTPS (see :func:`tls_options`)."""
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1,
                            access_log=False, log_config=None, **(tls_options(tls) if tls else {}))
    server = uvicorn.Server(config)
    config.load()
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])
    try:
        if ready is not None:
            ready(url_of(sock, https=tls is not None))
        await server.main_loop()
    finally:
        with anyio.CancelScope(shield=True):
            server.should_exit = True
            await server.shutdown(sockets=[sock])


class Hosted:
    """The console as a hosted process of `upm up --console` (``upm service console``): it listens on
    ``UPM_CONSOLE_HOST``:``UPM_CONSOLE_PORT`` (chosen by `upm up`, kept across restarts)."""

    def __init__(self, nc: NATS, data: Path) -> None:
        self.nc = nc
        self.data = data

    async def run(self, *, ready: anyio.Event | None = None) -> None:
        host = os.environ.get(HOST_ENV, "127.0.0.1")
        port = int(os.environ.get(PORT_ENV, str(DEFAULT_PORT)))
        chosen = settings(self.data, host)

        def started(url: str) -> None:
            log.info("console at %s", url)
            if ready is not None:
                ready.set()

        await serve(app_for(self.nc, chosen), bind(host, port), ready=started)
