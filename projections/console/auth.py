"""Sign-in, sessions and CSRF for the console (pure, no HTTP).

* **Secure mode** (an access file): a person signs in with their token (``upm serve token add
  NAME``); the session then reads and acts as that identity.
* **A client certificate** (``upm serve --tls``: HTTPS with the deployment's certificates) of a
  person in the access file — the one `upm up --access` issued them — signs them in without a token.
* **Open mode with a tokens file**: a token stands for a tenant (``_all`` for every one), as the
  permalinks always did.
* **Open mode without one**: no sign-in. The console serves on loopback only and acts as the name
  the visitor picks (the CLI's ``--as`` label: in open mode identities are not authenticated
  anywhere), by default the login name of the process; every page says so.

A session is a random id in an ``HttpOnly``, ``SameSite=Strict`` cookie, kept in this process's
memory (a restart signs everyone out). Every POST must carry the session's CSRF token, a random
value bound to that session and compared in constant time.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from events.subjects import is_principal
from projections.errors import AccessDenied
from projections.serve import Grant
from services.security.access import Access

COOKIE = "upm_console"
IDLE_S = 12 * 3600
KEPT = 10_000


@dataclass
class Session:
    id: str
    grant: Grant
    csrf: str
    flash: list[str] = field(default_factory=list)
    seen: float = field(default_factory=time.monotonic)


class Sessions:
    """The signed-in sessions of this process (the newest :data:`KEPT`, each idle at most :data:`IDLE_S`)."""

    def __init__(self) -> None:
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def start(self, grant: Grant) -> Session:
        session = Session(id=secrets.token_urlsafe(32), grant=grant, csrf=secrets.token_urlsafe(32))
        self._by_id[session.id] = session
        while len(self._by_id) > KEPT:
            self._by_id.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        session = self._by_id.get(session_id or "")
        if session is None:
            return None
        if time.monotonic() - session.seen > IDLE_S:
            del self._by_id[session.id]
            return None
        session.seen = time.monotonic()
        self._by_id.move_to_end(session.id)
        return session

    def end(self, session_id: str | None) -> None:
        self._by_id.pop(session_id or "", None)


def certified(rules: Access, common_name: object) -> Grant | None:
    """The grant of a verified client certificate: a person named in the access file (secure mode only;
    UPM's own ``upm-…`` certificates and strangers sign nobody in)."""
    if not rules.enforced or not isinstance(common_name, str) or common_name not in rules.principals():
        return None
    return Grant(common_name)


def csrf_ok(session: Session | None, given: str | None) -> bool:
    """Whether a POST carries its session's CSRF token (none without a session)."""
    return session is not None and bool(given) and hmac.compare_digest(session.csrf.encode(), str(given).encode())


def sign_in(tokens: Mapping[str, Grant], *, token: str = "", name: str = "", open_console: bool) -> Grant:
    """The grant a sign-in form stands for: a token of the tokens file, or in an open console a name."""
    if open_console:
        if not is_principal(name):
            raise AccessDenied(f"{name[:64]!r} is not a name (1-64 of letters, digits, '_' and '-')", rule="token")
        return Grant(name)
    given = token.strip().encode()
    for known, grant in tokens.items():
        if hmac.compare_digest(known.encode(), given):
            return grant
    raise AccessDenied("unknown token: ask the operator of `upm serve` for yours (`upm serve token add NAME`)",
                       rule="token")
