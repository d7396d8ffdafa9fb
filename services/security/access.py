"""Who may do what: roles per tenant from an access file, and who may see which change.

The access file (YAML or JSON; ``upm up --access FILE``, or ``UPM_ACCESS`` for a service)::

    org: example                 # every tenant below is one org ("org" visibility spans them)
    admins: [root]               # admin of every tenant; may query every tenant at once
    tenants:
      acme:
        alice: [requester]
        bob: [approver]
        olga: [operator]
        audrey: [auditor]

Roles (additive; a person may hold several, in several tenants):

==========  =====================================================================
requester   submit intents; cancel or withdraw (deny) their own changes
approver    approve or deny changes
operator    resume, roll back, cancel; read every change of the tenant and its event stream
auditor     read every change, its evidence and the event stream
admin       everything, in every tenant
==========  =====================================================================

Every member may read (status, events, SQL) the changes they can see:

* ``team`` (the default): every member of the change's tenant;
* ``org``: every member of any tenant of this access file;
* ``private``: the initiator, and the tenant's approvers, operators, auditors and admins.

Identity is the principal the server authenticated (the last token of the command, query or SQL
subject, see :mod:`events.subjects`), never a field the caller fills in. Without an access file
UPM runs *open*: every check passes and identities are whatever callers say (a single-user
machine, the demo); ``upm up`` says so when it starts.
"""

from __future__ import annotations

import getpass
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from events.commands import error_reply
from events.errors import InvalidEvent
from events.lifecycle import fold
from events.model import Event
from events.subjects import INBOX_ROOT, inbox_prefix, is_principal, is_producer_tenant
from services.common.configfile import read_mapping
from services.common.errors import ConfigError, UpmServiceError

log = logging.getLogger("upm.access")
ENV_VAR = "UPM_ACCESS"
IDENTITY_ENV = "UPM_IDENTITY"
ROLES = ("requester", "approver", "operator", "auditor", "admin")
SERVICE_PREFIX = "upm-"  # identities of UPM's own services: upm-planner, upm-executor, ...
ASKER = f"{SERVICE_PREFIX}serve"  # `upm serve`: asks (queries, SQL) on behalf of the token holders it checked
_EVERYONE = frozenset(ROLES)
_SEE_PRIVATE = frozenset({"approver", "operator", "auditor", "admin"})
ACTION_ROLES: dict[str, frozenset[str]] = {
    "intent": frozenset({"requester", "operator", "admin"}),
    "approve": frozenset({"approver", "admin"}),
    "deny": frozenset({"approver", "admin"}),
    "resume": frozenset({"operator", "admin"}),
    "rollback": frozenset({"operator", "admin"}),
    "cancel": frozenset({"operator", "admin"}),
    "read": _EVERYONE,
    "sql": _EVERYONE,
    "evidence": frozenset({"auditor", "operator", "admin"}),
    "stream": frozenset({"auditor", "operator", "admin"}),
    "health": frozenset({"auditor", "operator", "admin"}),  # of the whole deployment (`upm health`)
}
OWNER_ACTIONS = frozenset({"cancel", "deny", "evidence"})  # the initiator may, on their own change


class Forbidden(UpmServiceError):
    """The caller's roles do not allow the action, or the change is not visible to them."""

    def __init__(self, message: str, *, rule: str = "rbac") -> None:
        super().__init__(message)
        self.rule = rule


@dataclass(frozen=True)
class Access:
    """Roles per tenant and principal; ``enforced=False`` is open mode (see the module docstring)."""

    org: str = "default"
    members: Mapping[str, Mapping[str, frozenset[str]]] = field(default_factory=dict)
    admins: frozenset[str] = frozenset()
    source: str = "open mode (no access file)"
    enforced: bool = True

    @classmethod
    def open(cls) -> Access:
        return cls(enforced=False)

    def roles(self, principal: str, tenant: str) -> frozenset[str]:
        """The roles ``principal`` holds in ``tenant`` (admins hold every role everywhere)."""
        if not self.enforced or principal in self.admins:
            return _EVERYONE
        return self.members.get(tenant, {}).get(principal, frozenset())

    def tenants_of(self, principal: str) -> tuple[str, ...]:
        """The tenants ``principal`` is a member of (every tenant for an admin)."""
        if principal in self.admins:
            return tuple(sorted(self.members))
        return tuple(sorted(t for t, people in self.members.items() if principal in people))

    def sees_everything(self, principal: str, tenant: str) -> bool:
        """Whether every change of ``tenant`` is visible to ``principal`` (no filtering needed)."""
        return bool(self.roles(principal, tenant) & _SEE_PRIVATE)

    def principals(self) -> tuple[str, ...]:
        """Every person named in the file."""
        return tuple(sorted(self.admins | {p for people in self.members.values() for p in people}))

    def allows(self, principal: str, tenant: str, action: str, *, initiator: str | None = None) -> bool:
        roles = self.roles(principal, tenant)
        if roles & ACTION_ROLES[action]:
            return True
        return bool(roles) and action in OWNER_ACTIONS and initiator == principal

    def require(self, principal: str, tenant: str, action: str, *, initiator: str | None = None) -> None:
        """Raise :class:`Forbidden` unless ``principal`` may do ``action`` in ``tenant``."""
        if self.allows(principal, tenant, action, initiator=initiator):
            return
        held = ", ".join(sorted(self.roles(principal, tenant))) or "no role"
        needed = " or ".join(sorted(ACTION_ROLES[action]))
        owner = " (or be the change's initiator)" if action in OWNER_ACTIONS else ""
        raise Forbidden(
            f"{principal} may not {action} in tenant {tenant}: that needs {needed}{owner}, and {principal} has "
            f"{held} there; roles are set in {self.source}"
        )

    def require_anywhere(self, principal: str, action: str) -> None:
        """Raise :class:`Forbidden` unless ``principal`` may do ``action`` in some tenant (or is UPM's
        own ``upm-serve`` / ``upm-admin``): for what concerns the deployment, not one tenant."""
        if principal in (ASKER, service_identity("admin")) or any(
                self.allows(principal, t, action) for t in (self.tenants_of(principal) or ("default",))):
            return
        raise Forbidden(f"{principal} may not ask for {action}: that needs {' or '.join(sorted(ACTION_ROLES[action]))} "
                        f"in some tenant; roles are set in {self.source}")

    def can_see(self, principal: str, tenant: str, visibility: str, initiator: str) -> bool:
        """Whether ``principal`` may see a change of ``tenant`` with this visibility and initiator."""
        roles = self.roles(principal, tenant)
        if visibility == "org" and not roles:
            return bool(self.tenants_of(principal))
        if visibility == "private":
            return (principal == initiator and bool(roles)) or bool(roles & _SEE_PRIVATE)
        return bool(roles)

    def answers(self, reply: str | None, principal: str) -> bool:
        """Whether a request from ``principal`` with this reply subject may be acted on at all.

        The reply subject is the caller's choice and the server does not check it: an answer sent
        to an event subject would be stored in someone's log, one sent to another person's inbox
        would spoof their reply, and a JetStream delivery (``$JS.ACK.…``) is no request at all.
        So only the caller's own inbox counts, or that of :data:`ASKER`, which asks on behalf of the
        people it authenticated (any ``_INBOX.`` in open mode, where nobody's identity is
        authenticated anyway); anything else is dropped without acting.
        """
        if not reply:
            return False
        if not self.enforced:
            return reply.startswith(f"{INBOX_ROOT}.")
        return any(reply.startswith(f"{inbox_prefix(who)}.") for who in (principal, ASKER))

    def caller(self, subject: str, reply: str | None) -> str | None:
        """The caller of a request (the last token of its subject) when it may be acted on (see
        :meth:`answers`); ``None``, logged, when it must be dropped."""
        principal = subject.rsplit(".", 1)[-1]
        if self.answers(reply, principal):
            return principal
        log.warning("dropped a request on %s from %s: its reply subject %r is not the caller's inbox",
                    subject, principal, reply)
        return None

    def require_visible(self, principal: str, tenant: str, change_id: str, visibility: str, initiator: str) -> None:
        """Raise :class:`Forbidden` (worded like a missing change: existence is not leaked) unless visible."""
        if not self.can_see(principal, tenant, visibility, initiator):
            raise Forbidden(f"no change {change_id} in tenant {tenant} that {principal} may see", rule="visibility")


def parse(doc: Mapping[str, Any], source: str) -> Access:
    """Validate an access document; :class:`ConfigError` names the key and what to write instead."""
    unknown = sorted(set(doc) - {"org", "admins", "tenants"})
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; an access file has org, admins, tenants")
    org = doc.get("org", "default")
    if not isinstance(org, str) or not org:
        raise ConfigError(f"{source}: org must be a non-empty string")
    admins = doc.get("admins", [])
    if not isinstance(admins, list):
        raise ConfigError(f"{source}: admins must be a list of names, e.g. admins: [root]")
    for name in admins:
        _check_principal(name, f"{source}: admins")
    tenants = doc.get("tenants")
    if not isinstance(tenants, dict) or not tenants:
        raise ConfigError(f"{source}: tenants must map each tenant to its members, e.g. tenants: {{acme: {{alice: "
                          "[requester]}}")
    members: dict[str, dict[str, frozenset[str]]] = {}
    for tenant, people in tenants.items():
        where = f"{source}: tenants.{tenant}"
        if not isinstance(tenant, str) or not is_producer_tenant(tenant):
            raise ConfigError(f"{where}: {tenant!r} is not a tenant name (1-63 of a-z, 0-9, '-')")
        if not isinstance(people, dict) or not people:
            raise ConfigError(f"{where} must map each member to a list of roles ({', '.join(ROLES)})")
        members[tenant] = {}
        for name, roles in people.items():
            _check_principal(name, where)
            if not isinstance(roles, list) or not roles or not all(isinstance(r, str) and r in ROLES for r in roles):
                raise ConfigError(f"{where}.{name}: {roles!r} is not a list of roles; use some of {', '.join(ROLES)}")
            members[tenant][name] = frozenset(roles)
    return Access(org=org, members=members, admins=frozenset(admins), source=source)


def _check_principal(name: object, where: str) -> None:
    if not isinstance(name, str) or not is_principal(name):
        raise ConfigError(f"{where}: {name!r} is not a valid identity (1-64 of letters, digits, '_' and '-', "
                          "starting with a letter or digit; it is also the certificate's common name)")
    if name.startswith(SERVICE_PREFIX):
        raise ConfigError(f"{where}: {name!r} starts with {SERVICE_PREFIX!r}, which is reserved for UPM's services")


def load(path: str | Path | None = None) -> Access:
    """The access file at ``path``, else ``UPM_ACCESS``, else open mode."""
    chosen = path or os.environ.get(ENV_VAR)
    if not chosen:
        return Access.open()
    return parse(read_mapping(chosen, what="access file", error=ConfigError), str(chosen))


def whoami(explicit: str | None = None) -> str:
    """The identity a CLI call acts as: ``--as``, else ``UPM_IDENTITY``, else the login name, else
    ``uid-<uid>`` (a container user with no passwd entry, e.g. uid 65532, has no login name).

    With TLS it also names the client certificate (``client-<identity>.pem``); with an access
    file the server then refuses any other identity on the wire.
    """
    name = explicit or os.environ.get(IDENTITY_ENV) or _login_name()
    if not is_principal(name):
        raise ConfigError(f"identity {name!r} is not valid (1-64 of letters, digits, '_' and '-', starting with a "
                          f"letter or digit): pass --as NAME or set {IDENTITY_ENV}")
    return name


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no LOGNAME/USER and no passwd entry for this uid
        return f"uid-{os.getuid()}"


def service_identity(service: str) -> str:
    """The identity a UPM service connects as (``upm-<service>``)."""
    return f"{SERVICE_PREFIX}{service}"


def initiator_of(events: Sequence[Event]) -> str:
    """Who submitted a change: its lifecycle's initiator (the intent is a change's first event, so
    folding that one is enough); the first event's actor for a log that is no change."""
    return fold(events[:1]).initiator or (events[0].actor if events else "")


def refusal(err: Forbidden) -> bytes:
    """The command reply for a refused caller (field ``caller``, rule ``rbac`` or ``visibility``)."""
    return error_reply(InvalidEvent(str(err), field="caller", rule=err.rule))
