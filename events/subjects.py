"""Subject and header names: the one place they are spelled.

    upm.evt.<tenant>.<change_id>.<event type>    events (the immutable log, stream UPM_EVENTS)
    upm.cmd.<tenant>.<verb>.<principal>          commands (request/reply; never stored)
    upm.qry.<tenant>.<verb>.<principal>          reads: status, events of a change (request/reply)
    upm.sql.<tenant>.<principal>                 read-only SQL over the projections
    _INBOX.<principal>.>                         where a principal's replies arrive
    upm.health.ping                              the auditor's health ping (every service answers)

The last token of a command, query or SQL subject is the caller's identity. With an access file
(``upm up --access``) the server lets a connection publish only under its own identity, so that
token is authenticated by the server; without one (open mode) it is whatever the caller says.
"""

from __future__ import annotations

import re

STREAM = "UPM_EVENTS"
EVENT_ROOT = "upm.evt"
COMMAND_ROOT = "upm.cmd"
SQL_ROOT = "upm.sql"
QUERY_ROOT = "upm.qry"
INBOX_ROOT = "_INBOX"

HDR_MSG_ID = "Nats-Msg-Id"
HDR_EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
HDR_EXPECTED_LAST_SUBJECT_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
HDR_EXPECTED_STREAM = "Nats-Expected-Stream"

TENANT_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
CHANGE_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PRINCIPAL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
COMMAND_VERBS = ("intent", "approve", "deny", "resume", "rollback", "cancel")
QUERY_VERBS = ("status", "events", "evidence", "health")  # health: tenant _system only (upm/health.py)
HEALTH_PING = "upm.health.ping"  # core NATS: every service answers with its heartbeat
SYSTEM_TENANT = "_system"
ANY_TENANT = "_any"  # in a query subject: look the change up in whichever tenant holds it
LOG_HEADS_CHANGE_ID = "00000000-0000-8000-8000-000000000001"


def is_tenant(name: str) -> bool:
    """A tenant name is 1–63 of ``a-z 0-9 -``, not starting or ending with ``-``.

    ``_system`` is reserved for UPM's own records (signed log heads); no producer can use it.
    """
    return is_producer_tenant(name) or name == SYSTEM_TENANT


def is_producer_tenant(name: str) -> bool:
    """A tenant a producer may name (every valid tenant but the reserved ``_system``)."""
    return bool(TENANT_RE.match(name))


def event_subject(tenant: str, change_id: str, event_type: str) -> str:
    """The subject one event is stored under."""
    return f"{EVENT_ROOT}.{tenant}.{change_id}.{event_type}"


def change_filter(tenant: str, change_id: str) -> str:
    """Every event of one change."""
    return f"{EVENT_ROOT}.{tenant}.{change_id}.>"


def tenant_filter(tenant: str) -> str:
    """Every event of one tenant (``*`` for every tenant)."""
    return f"{EVENT_ROOT}.{tenant}.>"


def type_filter(event_type: str, tenant: str = "*") -> str:
    """Every event of one type, across changes."""
    return f"{EVENT_ROOT}.{tenant}.*.{event_type}"


def is_principal(name: str) -> bool:
    """An identity is 1–64 of ``A-Z a-z 0-9 _ -``, starting with a letter or digit (one subject token)."""
    return bool(PRINCIPAL_RE.match(name))


def command_subject(tenant: str, verb: str, principal: str) -> str:
    """Where ``principal`` sends the command ``verb`` for ``tenant``."""
    return f"{COMMAND_ROOT}.{tenant}.{verb}.{principal}"


def command_filter(verb: str) -> str:
    """What the owner of ``verb`` subscribes to: every tenant, every caller."""
    return f"{COMMAND_ROOT}.*.{verb}.*"


def query_subject(tenant: str, verb: str, principal: str) -> str:
    """Where ``principal`` asks the read ``verb`` about ``tenant``'s changes."""
    return f"{QUERY_ROOT}.{tenant}.{verb}.{principal}"


def parse_caller_subject(subject: str) -> tuple[str, str, str]:
    """``(tenant, verb, principal)`` of a command or query subject."""
    parts = subject.split(".")
    if len(parts) != 5 or f"{parts[0]}.{parts[1]}" not in (COMMAND_ROOT, QUERY_ROOT):
        raise ValueError(f"{subject!r} is not a command or query subject (upm.cmd|qry.<tenant>.<verb>.<principal>)")
    return parts[2], parts[3], parts[4]


def sql_subject(tenant: str, principal: str) -> str:
    """Where the projector answers ``principal``'s SQL over ``tenant``."""
    return f"{SQL_ROOT}.{tenant}.{principal}"


def inbox_prefix(principal: str) -> str:
    """The inbox prefix a principal's connection uses (its replies arrive under it)."""
    return f"{INBOX_ROOT}.{principal}"


def parse_event_subject(subject: str) -> tuple[str, str, str]:
    """``(tenant, change_id, event_type)`` of an event subject."""
    parts = subject.split(".", 4)
    if len(parts) != 5 or f"{parts[0]}.{parts[1]}" != EVENT_ROOT:
        raise ValueError(f"{subject!r} is not an event subject ({EVENT_ROOT}.<tenant>.<change>.<type>)")
    return parts[2], parts[3], parts[4]
