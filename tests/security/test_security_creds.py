"""NATS credentials files (``NATS_CREDS``) against a real nats-server in operator (JWT) mode, as
Synadia Cloud / NGS or a self-run ``nsc`` deployment is. Each test names the threat it covers.

The operator, account and user are fresh nkeys; their JWTs are built here as ``nsc`` builds them
(nats-io/jwt v2: header ``{"typ":"JWT","alg":"ed25519-nkey"}``, each JWT signed by its issuer).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys
import pytest

from services.common import connection
from services.common.errors import ConfigError
from upm.natsserver import nats_server_binary

UNLIMITED = {"subs": -1, "data": -1, "payload": -1}


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _keypair(prefix: int) -> nkeys.KeyPair:
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _public(kp: nkeys.KeyPair) -> str:
    return str(kp.public_key.decode())


def _jwt(signer: nkeys.KeyPair, subject: str, name: str, nats: dict[str, Any], issuer: str = "") -> str:
    """A JWT as nats-io/jwt v2 encodes it, signed by ``signer``, issued by it unless ``issuer`` says
    otherwise; ``jti`` is the base32 SHA-512/256 of the claims without it."""
    claims: dict[str, Any] = {"iat": int(time.time()), "iss": issuer or _public(signer), "name": name,
                              "sub": subject, "nats": {**nats, "version": 2}}
    jti = base64.b32encode(hashlib.new("sha512_256", _json(claims)).digest()).rstrip(b"=").decode()
    signing_input = f"{_b64(_json({'typ': 'JWT', 'alg': 'ed25519-nkey'}))}.{_b64(_json({'jti': jti, **claims}))}"
    return f"{signing_input}.{_b64(signer.sign(signing_input.encode()))}"


def _account_jwt(operator: nkeys.KeyPair, account: nkeys.KeyPair) -> str:
    limits = {**UNLIMITED, "imports": -1, "exports": -1, "wildcards": True, "conn": -1, "leaf": -1}
    return _jwt(operator, _public(account), "UPM", {"type": "account", "limits": limits})


def _creds(path: Path, account: nkeys.KeyPair, name: str, issuer: str = "") -> Path:
    """A .creds file in the layout ``nsc generate creds`` writes, for a new user signed by ``account``."""
    user = _keypair(nkeys.PREFIX_BYTE_USER)
    token = _jwt(account, _public(user), name, {"type": "user", "pub": {}, "sub": {}, **UNLIMITED}, issuer)
    path.write_text(
        "-----BEGIN NATS USER JWT-----\n"
        f"{token}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user.seed.decode()}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )
    path.chmod(0o600)
    return path


@pytest.fixture(autouse=True)
def no_upm_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No UPM client certificates: these servers want credentials, not certificates."""
    monkeypatch.delenv(connection.TLS_ENV, raising=False)
    monkeypatch.setenv("UPM_DATA", str(tmp_path / "upm"))


@dataclass
class OperatorServer:
    url: str
    account: nkeys.KeyPair  # the one account the server trusts
    folder: Path


@pytest.fixture
def operator_server(tmp_path: Path) -> Iterator[OperatorServer]:
    """nats-server trusting one operator and, through a memory resolver, one account of it."""
    operator = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
    account = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    ports = tmp_path / "ports"
    ports.mkdir()
    conf = tmp_path / "nats.conf"
    conf.write_text("\n".join([
        'listen: "127.0.0.1:-1"',
        f"ports_file_dir: {json.dumps(str(ports))}",
        f"operator: {_jwt(operator, _public(operator), 'upm-test', {'type': 'operator'})}",
        "resolver: MEMORY",
        f"resolver_preload: {{ {_public(account)}: {_account_jwt(operator, account)} }}",
    ]))
    with (tmp_path / "nats-server.log").open("wb") as log:
        process = subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    try:
        ports_file = ports / f"nats-server_{process.pid}.ports"
        deadline = time.monotonic() + 10
        while not ports_file.exists() or not ports_file.read_text().strip():
            assert process.poll() is None, (tmp_path / "nats-server.log").read_text()
            assert time.monotonic() < deadline, "nats-server did not report its port"
            time.sleep(0.01)
        yield OperatorServer(json.loads(ports_file.read_text())["nats"][0], account, tmp_path)
    finally:
        process.terminate()
        process.wait(10)


async def test_a_user_of_the_trusted_account_connects_with_its_creds_file(
    operator_server: OperatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threat: none — the positive control: with NATS_CREDS naming a user's .creds file of an
    account the operator signed, connection.connect gets in and messages flow both ways."""
    creds = _creds(operator_server.folder / "alice.creds", operator_server.account, "alice")
    monkeypatch.setenv(connection.CREDS_ENV, str(creds))
    nc = await connection.connect(operator_server.url, identity="alice")
    try:
        sub = await nc.subscribe("upm.creds.echo")
        await nc.publish("upm.creds.echo", b"hello")
        assert (await sub.next_msg(timeout=2)).data == b"hello"
    finally:
        await nc.close()


async def test_without_creds_the_server_refuses_and_says_to_set_nats_creds(
    operator_server: OperatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threat: an anonymous client on a server in operator mode: refused, and told what to set."""
    monkeypatch.delenv(connection.CREDS_ENV, raising=False)
    with pytest.raises(ConfigError, match=f"requires authentication.*{connection.CREDS_ENV}"):
        await connection.connect(operator_server.url, identity="alice")


@pytest.mark.parametrize("forgery", ["unknown account", "forged signature"])
async def test_a_user_not_signed_by_a_trusted_account_is_refused(
    operator_server: OperatorServer, monkeypatch: pytest.MonkeyPatch, forgery: str
) -> None:
    """Threat: a forged .creds file: a user issued by an account key the operator never signed, or
    a user JWT naming the trusted account as issuer but signed with another key."""
    issuer = _public(operator_server.account) if forgery == "forged signature" else ""
    rogue = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    creds = _creds(operator_server.folder / "mallory.creds", rogue, "mallory", issuer)
    monkeypatch.setenv(connection.CREDS_ENV, str(creds))
    with pytest.raises(ConfigError, match=f"refused the user in {re.escape(str(creds))}"):
        await connection.connect(operator_server.url, identity="mallory")


@pytest.mark.parametrize("content", [None, "not a creds file\n"])
async def test_a_missing_or_malformed_creds_file_is_a_config_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | None
) -> None:
    """Threat: a mistyped NATS_CREDS silently connecting without credentials, or hanging (nats-py
    reads a file without a JWT block for ever): refused before connecting, naming the file."""
    creds = tmp_path / "missing.creds"
    if content is not None:
        creds.write_text(content)
    monkeypatch.setenv(connection.CREDS_ENV, str(creds))
    with pytest.raises(ConfigError, match=f"{re.escape(str(creds))}.*{connection.CREDS_ENV}"):
        await connection.connect("nats://127.0.0.1:1", identity="alice")
