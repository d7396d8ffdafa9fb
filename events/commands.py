"""Commands: requests on ``upm.cmd.<tenant>.<verb>``. They are validated by their owner and
never stored; only the events an accepted command produces reach the log.

The caller is the principal the subject names (``upm.cmd.<tenant>.<verb>.<principal>``, made
authentic by the server's permissions when an access file is used): the parsers put it into
``initiator`` / ``by``, so whatever a body says there is ignored.

Replies are one JSON object: ``{"ok": true, ...}`` or
``{"ok": false, "error": {"field": ..., "rule": ..., "message": ...}}``.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec

from events import jsonbounds
from events.errors import InvalidEvent
from events.model import PRODUCER_SOURCES, VISIBILITIES, Source, Visibility
from events.secrets import refuse_secrets
from events.subjects import CHANGE_ID_RE, is_principal, is_producer_tenant

MAX_COMMAND_BYTES = 64 * 1024
MAX_REQUEST_CHARS = 4096
MAX_SPEC_BYTES = 48 * 1024
MAX_NAME_CHARS = 128
ENVIRONMENTS = ("dev", "test", "staging", "prod")


class IntentCommand(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a producer sends on ``upm.cmd.<tenant>.intent.<principal>``; ``initiator`` is set
    from the principal (a value in the body is ignored)."""

    request: str | None = None
    spec: dict[str, Any] | None = None
    initiator: str = ""
    source: Source = "api"
    visibility: Visibility = "team"
    reason: str = ""
    window: str | None = None
    variant: str | None = None
    environment: str = "dev"
    idempotency_key: str | None = None


class ChangeCommand(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A command about an existing change: ``upm.cmd.<tenant>.<verb>.<principal>`` for approve,
    deny, resume, rollback and cancel. ``by`` is set from the principal (a value in the body is
    ignored); ``plan_hash`` pins an approval to the plan it approves."""

    change_id: str
    by: str = ""
    reason: str = ""
    plan_hash: str | None = None
    group: str | None = None


class Reply(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    ok: bool
    change_id: str | None = None
    duplicate: bool = False
    error: dict[str, str] | None = None


_intent_decoder = msgspec.json.Decoder(IntentCommand)
_change_decoder = msgspec.json.Decoder(ChangeCommand)
_reply_encoder = msgspec.json.Encoder()


def _reject(message: str, field: str, rule: str) -> InvalidEvent:
    return InvalidEvent(message, field=field, rule=rule)


def parse_intent(tenant: str, principal: str, data: bytes) -> IntentCommand:
    """Validate ``principal``'s intent command; raise :class:`InvalidEvent` naming the field and the rule."""
    _check_envelope(tenant, principal, data)
    try:
        cmd = _intent_decoder.decode(data)
    except msgspec.ValidationError as exc:  # a DecodeError too: it must come first
        field = _field_of(str(exc))
        rule = "source" if field == "source" else "schema"
        hint = f" (one of {', '.join(PRODUCER_SOURCES)})" if field == "source" else ""
        raise _reject(f"invalid intent: {exc}{hint}", field, rule) from exc
    except msgspec.DecodeError as exc:
        raise _reject(f"the command is not valid JSON: {exc}. Send one JSON object.", "body", "json") from exc
    cmd = msgspec.structs.replace(cmd, initiator=principal)
    refuse_secrets_in(msgspec.structs.asdict(cmd), INTENT_TEXT_FIELDS)
    _check_intent(cmd)
    return cmd


INTENT_TEXT_FIELDS = ("request", "spec", "reason", "window", "variant", "environment", "idempotency_key")
"""The fields of an intent a person writes freely: each is scanned for secrets."""
CHANGE_TEXT_FIELDS = ("reason", "group")
"""The same for approve, deny, resume, rollback and cancel."""


def refuse_secrets_in(body: Mapping[str, Any], fields: tuple[str, ...]) -> None:
    """Raise :class:`InvalidEvent` (rule ``secret``) if one of ``fields`` of ``body`` holds a secret:
    the gateway and the command handlers before anything is appended, the CLI before sending."""
    refuse_secrets({name: body.get(name) for name in fields})


def parse_change_command(tenant: str, verb: str, principal: str, data: bytes) -> ChangeCommand:
    """Validate ``principal``'s approve/deny/resume/rollback/cancel command (not whether it is
    allowed now: that is its owner's decision); raise :class:`InvalidEvent` naming the field and the rule."""
    _check_envelope(tenant, principal, data)
    try:
        cmd = _change_decoder.decode(data)
    except msgspec.ValidationError as exc:  # a DecodeError too: it must come first
        raise _reject(f"invalid {verb} command: {exc}", _field_of(str(exc)), "schema") from exc
    except msgspec.DecodeError as exc:
        raise _reject(f"the command is not valid JSON: {exc}. Send one JSON object.", "body", "json") from exc
    if not CHANGE_ID_RE.match(cmd.change_id):
        raise _reject(f"change_id {cmd.change_id!r} is not a change id (a UUID)", "change_id", "uuid")
    cmd = msgspec.structs.replace(cmd, by=principal)
    refuse_secrets_in(msgspec.structs.asdict(cmd), CHANGE_TEXT_FIELDS)
    if len(cmd.reason) > MAX_REQUEST_CHARS:
        raise _reject(f"'reason' is longer than {MAX_REQUEST_CHARS} characters", "reason", "size")
    if cmd.plan_hash is not None and not re.fullmatch(r"sha256:[0-9a-f]{64}", cmd.plan_hash):
        raise _reject("plan_hash must look like sha256:<64 hex digits>", "plan_hash", "hash")
    return cmd


def _check_envelope(tenant: str, principal: str, data: bytes) -> None:
    if not is_principal(principal):
        raise _reject(
            f"caller {principal!r} is not a valid identity: the last subject token must be 1-64 of letters, "
            "digits, '_' and '-' (upm.cmd.<tenant>.<verb>.<you>)",
            "caller",
            "identity",
        )
    if not is_producer_tenant(tenant):
        raise _reject(
            f"tenant {tenant!r} is not valid: use 1-63 characters of a-z, 0-9 and '-', "
            "starting and ending with a letter or digit",
            "tenant",
            "tenant-name",
        )
    if len(data) > MAX_COMMAND_BYTES:
        raise _reject(
            f"the command is {len(data)} bytes; the limit is {MAX_COMMAND_BYTES}. Split the change.",
            "body",
            "size",
        )
    jsonbounds.check(data, what="the command")


def _check_intent(cmd: IntentCommand) -> None:
    if (cmd.request is None) == (cmd.spec is None):
        raise _reject(
            "give exactly one of 'request' (natural language) or 'spec' (a declarative spec object)",
            "request",
            "one-of",
        )
    if cmd.request is not None and not cmd.request.strip():
        raise _reject("'request' is empty: say what to change", "request", "non-empty")
    if cmd.request is not None and len(cmd.request) > MAX_REQUEST_CHARS:
        raise _reject(
            f"'request' has {len(cmd.request)} characters; the limit is {MAX_REQUEST_CHARS}",
            "request",
            "size",
        )
    if cmd.spec is not None and len(msgspec.json.encode(cmd.spec)) > MAX_SPEC_BYTES:
        raise _reject(f"'spec' is larger than {MAX_SPEC_BYTES} bytes", "spec", "size")
    if cmd.source not in PRODUCER_SOURCES:
        raise _reject(
            f"source {cmd.source!r} is not allowed for producers: use one of {', '.join(PRODUCER_SOURCES)}",
            "source",
            "source",
        )
    if cmd.visibility not in VISIBILITIES:
        raise _reject(f"visibility must be one of {', '.join(VISIBILITIES)}", "visibility", "visibility")
    if cmd.environment not in ENVIRONMENTS:
        raise _reject(
            f"environment {cmd.environment!r} is unknown: use one of {', '.join(ENVIRONMENTS)}",
            "environment",
            "environment",
        )
    if cmd.idempotency_key is not None and not 1 <= len(cmd.idempotency_key) <= MAX_NAME_CHARS:
        raise _reject(f"idempotency_key must be 1-{MAX_NAME_CHARS} characters", "idempotency_key", "size")
    if len(cmd.reason) > MAX_REQUEST_CHARS:
        raise _reject(f"'reason' is longer than {MAX_REQUEST_CHARS} characters", "reason", "size")


def _field_of(message: str) -> str:
    match = re.search(r"at `\$\.([A-Za-z_]+)", message)
    if match:
        return match.group(1)
    match = re.search(r"field `([A-Za-z_]+)`", message)
    return match.group(1) if match else "body"


def idempotent_change_id(tenant: str, key: str) -> str:
    """The change id a producer's idempotency key always maps to (UUID version 8)."""
    raw = bytearray(hashlib.sha256(f"{tenant}\x00{key}".encode()).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x80
    raw[8] = (raw[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(raw)))


def ok_reply(change_id: str, *, duplicate: bool = False) -> bytes:
    """``{"ok": true, "change_id": ...}``."""
    return _reply_encoder.encode(Reply(ok=True, change_id=change_id, duplicate=duplicate))


def error_reply(err: InvalidEvent) -> bytes:
    return _reply_encoder.encode(
        Reply(ok=False, error={"field": err.field or "body", "rule": err.rule, "message": str(err)})
    )
