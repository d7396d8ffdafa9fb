"""`upm serve`'s tokens: who a bearer token or a console sign-in stands for.

The HTTP side is the web console (:mod:`projections.console`, Starlette under uvicorn): its pages
and the JSON permalinks ``/changes/{id}``, ``/changes/{id}/evidence``, ``/kpi``, ``/score``.

The tokens file (default ``<data>/serve_tokens.json``, mode 0600) is one JSON object; a token has
at least :data:`MIN_TOKEN` characters:

* with an access file (``UPM_ACCESS``), token → **identity** (a person named in the access file).
  Every request is asked over the bus *as that identity* (``upm.sql.<tenant>.<identity>``,
  ``upm.qry.<tenant>.evidence.<identity>``), so the projector applies that person's roles and
  visibility, exactly as for `upm sql` and `upm evidence`. ``upm serve token add NAME`` creates one.
* in open mode (no access file), token → **tenant** (``_all`` for every tenant): nothing is
  enforced on the bus there, so the token's tenant is the only scope. Without a tokens file an
  open console needs no token at all (loopback only).

This process connects as ``upm-serve``, which the server lets ask those subjects for any identity;
the token is the authentication.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from events.subjects import is_principal, is_tenant
from projections.db import ALL_TENANTS
from projections.errors import AccessDenied
from services.common.configfile import read_mapping
from services.common.errors import ConfigError
from services.security.access import Access, service_identity

SERVICE = "serve"  # connects as upm-serve
MIN_TOKEN = 16
TOKENS_FILE = "serve_tokens.json"


@dataclass(frozen=True)
class Grant:
    """What a token reads as: ``principal``, and in open mode the one ``tenant`` it is scoped to."""

    principal: str
    tenant: str | None = None


def parse_tokens(doc: object, source: str, rules: Access) -> dict[str, Grant]:
    """token → :class:`Grant` (see the module docstring); :class:`AccessDenied` says what is malformed."""
    want = ("an identity named in the access file" if rules.enforced
            else "a tenant name (or _all); with an access file (UPM_ACCESS) it would be an identity")
    if not isinstance(doc, dict) or not doc:
        raise AccessDenied(f"{source} must be a non-empty JSON object mapping each token to {want}", rule="token")
    people = set(rules.principals())
    grants: dict[str, Grant] = {}
    for n, (token, value) in enumerate(doc.items(), 1):
        where = f"{source}: entry {n} (token not shown)"
        if not isinstance(token, str) or len(token) < MIN_TOKEN:
            raise AccessDenied(f"{where}: a token must be a string of at least {MIN_TOKEN} characters; "
                               "make one with `upm serve token add NAME`", rule="token")
        if rules.enforced and not (isinstance(value, str) and is_principal(value) and value in people):
            raise AccessDenied(f"{where}: {value!r} is not {want} ({rules.source})", rule="token")
        if not rules.enforced and not (isinstance(value, str) and (is_tenant(value) or value == ALL_TENANTS)):
            raise AccessDenied(f"{where}: {value!r} is not {want}", rule="token")
        assert isinstance(value, str)
        grants[token] = Grant(value) if rules.enforced else Grant(service_identity(SERVICE), value)
    return grants


def load_tokens(path: Path, rules: Access) -> dict[str, Grant]:
    """The tokens file at ``path`` (JSON; mode 0600 advised)."""
    try:
        doc = read_mapping(path, what="the tokens file", error=ConfigError)
    except ConfigError as exc:
        raise AccessDenied(f"{exc}; write a JSON object token → {'identity' if rules.enforced else 'tenant'}",
                           rule="token") from exc
    return parse_tokens(doc, str(path), rules)


def grant_for(header: str | None, tokens: Mapping[str, Grant]) -> Grant:
    """The grant of a bearer token; :class:`AccessDenied` if there is none or it is unknown."""
    if not header or not header.startswith("Bearer "):
        raise AccessDenied("send `Authorization: Bearer <token>` (a token from the tokens file of `upm serve`)",
                           rule="no-token")
    given = header.removeprefix("Bearer ").strip().encode()
    found = [grant for token, grant in tokens.items() if hmac.compare_digest(token.encode(), given)]
    if not found:
        raise AccessDenied("unknown token: ask the operator of `upm serve` for yours", rule="token")
    return found[0]


def pinned(grant: Grant, asked: str | None) -> str | None:
    """The tenant a request is pinned to: the token's (open mode), else ``?tenant=``, else none."""
    if asked is not None and not (is_tenant(asked) or asked == ALL_TENANTS):
        raise ValueError(f"tenant {asked!r} is not a tenant name (a-z, 0-9, '-'; or {ALL_TENANTS})")
    if grant.tenant is not None and asked not in (None, grant.tenant):
        raise AccessDenied(f"this token reads tenant {grant.tenant} only, not {asked}")
    return grant.tenant or asked


def tenants_to_try(grant: Grant, asked: str | None, rules: Access) -> list[str]:
    """Where to look for a change: the pinned tenant, else the identity's own tenants, then the org's others."""
    tenant = pinned(grant, asked)
    if tenant is not None:
        return [tenant]
    if not rules.enforced:
        return [ALL_TENANTS]  # an open console without tokens: nothing is scoped
    own = list(rules.tenants_of(grant.principal))
    return own + [t for t in sorted(rules.members) if t not in own]


def one_tenant(grant: Grant, asked: str | None, rules: Access) -> str:
    """The single tenant a report (``/kpi``, ``/score``) is about."""
    tenant = pinned(grant, asked)
    if tenant is not None:
        return tenant
    if not rules.enforced:
        return ALL_TENANTS
    own = rules.tenants_of(grant.principal)
    if len(own) != 1:
        raise ValueError(f"add ?tenant=T: {grant.principal} reads {len(own)} tenants ({', '.join(own) or 'none'})")
    return own[0]


def add_token(path: Path, value: str, rules: Access) -> str:
    """Create a random token for ``value`` (an identity of the access file; in open mode a tenant or
    ``_all``) in the tokens file at ``path`` (created with mode 0600; the other tokens are kept)."""
    doc: dict[str, str] = {}
    if path.exists():
        existing = read_mapping(path, what="the tokens file", error=ConfigError)
        parse_tokens(existing, str(path), rules)  # refuse to extend a file that would not load
        doc = {str(k): str(v) for k, v in existing.items()}
    token = secrets.token_urlsafe(24)
    doc[token] = value
    parse_tokens(doc, str(path), rules)  # the new entry names who it must
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(doc, out, indent=1, sort_keys=True)
        out.write("\n")
    temp.replace(path)
    return token
