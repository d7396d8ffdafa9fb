"""Subject and header names: the one place they are spelled.

    upm.evt.<tenant>.<change_id>.<event type>    events (the immutable log, stream UPM_EVENTS)
    upm.cmd.<tenant>.<verb>                      commands (request/reply; never stored)
    upm.sql.<tenant>                             read-only SQL over the projections
"""

from __future__ import annotations

import re

STREAM = "UPM_EVENTS"
EVENT_ROOT = "upm.evt"
COMMAND_ROOT = "upm.cmd"
SQL_ROOT = "upm.sql"

HDR_MSG_ID = "Nats-Msg-Id"
HDR_EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
HDR_EXPECTED_LAST_SUBJECT_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
HDR_EXPECTED_STREAM = "Nats-Expected-Stream"

TENANT_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
CHANGE_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
COMMAND_VERBS = ("intent", "approve", "deny", "resume", "rollback", "cancel")
SYSTEM_TENANT = "_system"
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


def command_subject(tenant: str, verb: str) -> str:
    """Where producers send the command ``verb`` for ``tenant``."""
    return f"{COMMAND_ROOT}.{tenant}.{verb}"


def sql_subject(tenant: str) -> str:
    """Where the projector answers ``tenant``'s SQL."""
    return f"{SQL_ROOT}.{tenant}"


def parse_event_subject(subject: str) -> tuple[str, str, str]:
    """``(tenant, change_id, event_type)`` of an event subject."""
    parts = subject.split(".", 4)
    if len(parts) != 5 or f"{parts[0]}.{parts[1]}" != EVENT_ROOT:
        raise ValueError(f"{subject!r} is not an event subject ({EVENT_ROOT}.<tenant>.<change>.<type>)")
    return parts[2], parts[3], parts[4]
