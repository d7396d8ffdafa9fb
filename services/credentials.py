"""Ephemeral, per-change credentials for the executor's targets.

A :class:`CredentialsBroker` issues short-lived credentials scoped to one change's target and
revokes them when the change stops running. What it issues is split in two: what the step's
process needs (``env``: never argv, never an event) and what the log may hold (``ref``,
``expires_at``). Every value is also returned in ``secrets``, which the executor registers with
the guard's redactor, so it is masked in every output, event, log line and evidence file.

Brokers by kind:

- ``none`` (:class:`NoCredentials`): targets that need none (the local filesystem).
- ``token`` (:class:`LocalTokenBroker`): a random token with an expiry for local CLIs that
  authenticate with one; it keeps only the token's sha256 in its store folder, and
  :func:`check_local_token` is how a CLI checks what it was handed.

AWS (STS assume-role with a duration) and PostgreSQL (a login role ``VALID UNTIL``) brokers
implement the same protocol and slot into :func:`broker_for`. A broker that cannot issue or
revoke raises :class:`CredentialsUnavailable` (a :class:`services.errors.UpmServiceError`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from services.errors import UpmServiceError


class CredentialsUnavailable(UpmServiceError):
    """A broker could not issue or revoke credentials for a target (the message says why)."""


TOKEN_ENV = "UPM_LOCAL_TOKEN"
TOKEN_STORE_ENV = "UPM_LOCAL_TOKEN_STORE"


@dataclasses.dataclass(frozen=True, kw_only=True)
class IssuedCredentials:
    """Credentials for one target of one change. Only ``ref`` and ``expires_at`` may be logged."""

    target: str
    kind: str
    ref: str
    expires_at: str
    env: Mapping[str, str] = dataclasses.field(repr=False)
    secrets: tuple[str, ...] = dataclasses.field(repr=False)


class CredentialsBroker(Protocol):
    """Issues and revokes short-lived credentials (see the module docstring)."""

    kind: str

    async def issue(self, *, tenant: str, change_id: str, target: str, ttl_s: float) -> IssuedCredentials | None:
        """Credentials for ``target`` valid ``ttl_s`` seconds, or ``None`` when it needs none."""
        ...

    async def revoke(self, ref: str) -> None:
        """Make ``ref``'s credentials unusable now (revoking twice is harmless)."""
        ...


class NoCredentials:
    """The broker of targets that need no credentials."""

    kind = "none"

    async def issue(self, *, tenant: str, change_id: str, target: str, ttl_s: float) -> IssuedCredentials | None:
        return None

    async def revoke(self, ref: str) -> None:
        return None


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class LocalTokenBroker:
    """Random tokens with an expiry; the store folder keeps one file per token (hash only)."""

    kind = "token"

    def __init__(self, store: Path) -> None:
        self.store = store

    async def issue(self, *, tenant: str, change_id: str, target: str, ttl_s: float) -> IssuedCredentials:
        try:
            self.store.mkdir(parents=True, exist_ok=True, mode=0o700)
            token = "upmtok_" + secrets.token_urlsafe(32)
            ref = f"token:{uuid.uuid4()}"
            expires = time.time() + ttl_s
            record = {"sha256": _digest(token), "tenant": tenant, "change_id": change_id, "target": target,
                      "expires": expires}
            path = self._path(ref)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(record, out)
        except OSError as exc:
            raise CredentialsUnavailable(
                f"the token broker cannot write its store {self.store}: {exc}; fix credentials.token_store"
            ) from exc
        return IssuedCredentials(
            target=target,
            kind=self.kind,
            ref=ref,
            expires_at=_rfc3339(expires),
            env={TOKEN_ENV: token, TOKEN_STORE_ENV: str(self.store)},
            secrets=(token,),
        )

    async def revoke(self, ref: str) -> None:
        try:
            self._path(ref).unlink(missing_ok=True)
        except OSError as exc:
            raise CredentialsUnavailable(f"cannot revoke {ref} in {self.store}: {exc}") from exc

    def _path(self, ref: str) -> Path:
        return self.store / (ref.replace(":", "-") + ".json")


def check_local_token(store: Path, token: str, *, now: float | None = None) -> str | None:
    """The ref of the live (issued, unexpired, unrevoked) token ``token``, or ``None``."""
    want = _digest(token)
    moment = time.time() if now is None else now
    for path in sorted(store.glob("token-*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if secrets.compare_digest(str(record.get("sha256", "")), want) and float(record["expires"]) > moment:
            return path.stem.replace("token-", "token:", 1)
    return None


def broker_for(kind: str, *, token_store: str | None) -> CredentialsBroker:
    """The broker of ``kind`` (a value of ``credentials.brokers`` in the executor policy)."""
    if kind == "none":
        return NoCredentials()
    if kind == "token":
        if not token_store:
            raise CredentialsUnavailable(
                "the token broker needs a store folder: set credentials.token_store in the executor policy"
            )
        return LocalTokenBroker(Path(token_store))
    raise CredentialsUnavailable(
        f"unknown credentials broker {kind!r}: use 'none' or 'token' (AWS STS and PostgreSQL brokers "
        "come with the real targets)"
    )
