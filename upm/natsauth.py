"""NATS users and permissions from an access file, enforced by the server (``upm up --access``).

Every identity connects with its own client certificate and the server maps the certificate to
the user :func:`services.security.tls.distinguished_name` names (``CN=alice,O=UPM``). A user may publish
and subscribe only to what is listed here; everything else is refused by the server (deny by
default), whatever the client does.

=============  ==================================================================================
identity       publish (P) / subscribe (S)
=============  ==================================================================================
person p       P ``upm.cmd.<t>.<verb>.p`` for each tenant t and each verb p's roles allow in t
               (owners' verbs cancel/deny for every member); P ``upm.qry.*.*.p``; P
               ``upm.sql.*.p`` but not ``upm.sql._all.p`` unless admin; S ``_INBOX.p.>`` only.
               In a tenant where p has a stream role (auditor, operator, admin): P the subject-
               scoped consumer create ``$JS.API.CONSUMER.CREATE.UPM_EVENTS.<name>.upm.evt.<t>.>``
               (the server checks the body's filter against the subject) and flow-control
               replies, never with the name of a service's durable consumer
upm-<service>  P its own event types on ``upm.evt.*.*.<type>`` (only ``upm-auditor`` may write
               ``_system``), the stream info and direct gets, its durable consumer or ordered
               consumers, its object-store and key-value buckets; S the commands / queries it
               answers and P replies to ``_INBOX.>`` (not ``allow_responses``, which would let a
               reply subject the caller picks reach the JetStream API or any event subject)
upm-serve      P ``upm.qry.*.*.*``, ``upm.sql.*.*`` and ``upm.cmd.*.approve|deny.*`` (the web console asks and
               approves for the people it signed in; pre-flight still checks each one's roles)
every service  S ``upm.health.ping`` and P its answer to ``_INBOX.upm-auditor.>`` (the health responder's
               inbox); ``upm-auditor`` also P the ping and the durable consumers' info, and answers
               ``upm.qry._system.health.*`` (it checks the asker's roles: operator, auditor or admin)
upm-admin      P the event stream's create and info (``upm up`` creates it before the services),
               and reading the whole log (direct gets, ordered consumers): the deployment's own
               identity, for `upm audit verify|verify|drift --as upm-admin` on the UPM host (its key
               is in ``<data>/tls``; whoever can read that folder owns the deployment anyway)
=============  ==================================================================================

What the server cannot check, so the services must:

* a reply subject is the caller's choice: an answer on one of the responder's own event types
  would be stored, so responders answer only ``_INBOX.`` reply subjects;
* a consumer's deliver subject is not checked against its creator's permissions: a stream
  reader can have JetStream deliver its tenant's events to any subject (another tenant's command
  subject, say), so handlers decode strictly (unknown fields refused) and ignore JetStream
  deliveries (reply subject ``$JS.ACK.``).

:func:`users` is pure; :func:`authorization_block` renders the nats-server ``authorization``
block.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from events.subjects import (
    COMMAND_VERBS,
    EVENT_ROOT,
    HEALTH_PING,
    INBOX_ROOT,
    QUERY_ROOT,
    SQL_ROOT,
    STREAM,
    SYSTEM_TENANT,
    command_filter,
    command_subject,
    event_subject,
    inbox_prefix,
    query_subject,
    sql_subject,
    tenant_filter,
)
from projections.db import ALL_TENANTS
from services.auditor.evidence import EVIDENCE_BUCKET
from services.common.errors import ConfigError
from services.executor.config import Output
from services.executor.limits import RATES_BUCKET
from services.security.access import ACTION_ROLES, ASKER, OWNER_ACTIONS, Access, service_identity
from services.security.tls import distinguished_name

OUTPUTS_BUCKET = Output().bucket
SERVE = ASKER
ADMIN = service_identity("admin")
HEALTH_ASKER = service_identity("auditor")  # hosts the health responder (upm/health.py)
API = "$JS.API"


@dataclass(frozen=True)
class Permissions:
    """What one NATS user may publish and subscribe to (deny wins over allow)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()


@dataclass(frozen=True)
class Needs:
    """What a UPM service does on the bus: the permissions follow from it."""

    emits: tuple[str, ...] = ()  # event types it appends
    answers: tuple[str, ...] = ()  # request subjects it subscribes to and replies on
    listens: tuple[str, ...] = ()  # core subscriptions it never replies on
    durable: bool = False  # a durable pull consumer named after the service (services.common.runtime)
    follows: bool = False  # ordered consumers over the whole event stream
    writes: tuple[str, ...] = ()  # object-store buckets it creates and writes
    reads: tuple[str, ...] = ()  # object-store buckets it reads
    updates: tuple[str, ...] = ()  # key-value buckets it creates, reads and updates
    health: bool = False  # hosts the health responder: pings every service, reads every durable's lag


def _query_filter(verb: str) -> str:
    return f"{QUERY_ROOT}.*.{verb}.*"


def service_needs(outputs_bucket: str = OUTPUTS_BUCKET) -> dict[str, Needs]:
    """What each service (``upm.app.SERVICE_NAMES``) needs; ``outputs_bucket`` is the
    executor's ``output.bucket``."""
    return {
        "gateway": Needs(
            emits=("intent.submitted",),
            answers=(command_filter("intent"), _query_filter("status"), _query_filter("events")),
            listens=(f"{EVENT_ROOT}.>",),  # wakes long-polling readers
        ),
        "planner": Needs(emits=("plan.compiled", "plan.rejected"), durable=True),
        "preflight": Needs(
            emits=("preflight.passed", "preflight.failed", "policy.evaluated", "approval.requested",
                   "approval.granted", "approval.denied", "change.approved", "change.scheduled", "slo.breached"),
            answers=(command_filter("approve"), command_filter("deny")),
            durable=True,
            follows=True,  # the desired-state inventory: who owns what (services/common/inventory.py)
        ),
        "executor": Needs(
            emits=("execution.started", "execution.completed", "execution.failed", "execution.cancelled",
                   "execution.paused", "execution.resumed", "step.started", "step.completed", "step.retried",
                   "step.skipped", "step.failed", "wave.started", "wave.completed", "credentials.issued",
                   "credentials.revoked", "tls.fallback", "rollback.approved", "rollback.started",
                   "rollback.step.started", "rollback.step.completed", "rollback.step.skipped",
                   "rollback.step.failed", "rollback.completed", "rollback.failed"),
            answers=(command_filter("resume"), command_filter("rollback"), command_filter("cancel")),
            durable=True,
            writes=(outputs_bucket,),
            updates=(RATES_BUCKET,),
        ),
        "verifier": Needs(
            emits=("verification.passed", "verification.failed", "rollback.planned", "rollback.approved",
                   "slo.breached"),
            durable=True,
        ),
        "auditor": Needs(
            emits=("change.closed", "change.stalled", "chain.broken", "plan.recompiled", "evidence.published",
                   "log.head"),
            answers=(query_subject(SYSTEM_TENANT, "health", "*"),),
            health=True,
            durable=True,
            follows=True,
            writes=(EVIDENCE_BUCKET,),
        ),
        "drift": Needs(emits=("intent.submitted", "drift.detected", "drift.resolved", "drift.scanned"), follows=True),
        "projector": Needs(
            answers=(sql_subject("*", "*"), _query_filter("evidence")),
            follows=True,
            reads=(EVIDENCE_BUCKET,),
        ),
    }


def _api(*tokens: str) -> str:
    return ".".join((API, *tokens))


def _bucket_write(bucket: str) -> tuple[str, ...]:
    """nats-py's object store: info and create the bucket, read the metadata, put, purge old chunks."""
    stream = f"OBJ_{bucket}"
    return (_api("STREAM", "INFO", stream), _api("STREAM", "CREATE", stream), _api("STREAM", "MSG", "GET", stream),
            _api("STREAM", "PURGE", stream), f"$O.{bucket}.>")


def _bucket_read(bucket: str) -> tuple[str, ...]:
    """nats-py's object store: info, read the metadata, follow the chunks with an ordered consumer."""
    stream = f"OBJ_{bucket}"
    return (_api("STREAM", "INFO", stream), _api("STREAM", "MSG", "GET", stream), _api("STREAM", "NAMES"),
            _api("CONSUMER", "CREATE", stream), f"$JS.FC.{stream}.>")


def _kv_update(bucket: str) -> tuple[str, ...]:
    """nats-py's key-value store: info and create the bucket, direct gets of a key, puts."""
    stream = f"KV_{bucket}"
    return (_api("STREAM", "INFO", stream), _api("STREAM", "CREATE", stream), _api("DIRECT", "GET", stream, ">"),
            f"$KV.{bucket}.>")


def service_permissions(name: str, needs: Needs) -> Permissions:
    """The permissions of ``upm-<name>``."""
    identity = service_identity(name)
    publish = [_api("STREAM", "INFO", STREAM), _api("DIRECT", "GET", STREAM)]
    publish += [event_subject("*", "*", t) for t in needs.emits]
    if needs.answers:
        publish.append(f"{INBOX_ROOT}.>")
    if needs.durable:
        publish += [_api("CONSUMER", "CREATE", STREAM, name), _api("CONSUMER", "MSG", "NEXT", STREAM, name),
                    f"$JS.ACK.{STREAM}.{name}.>"]
    if needs.follows:
        publish += [_api("STREAM", "NAMES"), _api("CONSUMER", "CREATE", STREAM), f"$JS.FC.{STREAM}.>"]
    for bucket in needs.writes:
        publish += _bucket_write(bucket)
    for bucket in needs.reads:
        publish += [p for p in _bucket_read(bucket) if p not in publish]
    for bucket in needs.updates:
        publish += _kv_update(bucket)
    if needs.health:
        publish += [HEALTH_PING, _api("CONSUMER", "INFO", STREAM, "*")]
    publish.append(f"{inbox_prefix(HEALTH_ASKER)}.>")  # every service answers the health ping
    deny = (f"{EVENT_ROOT}.{SYSTEM_TENANT}.>",) if needs.emits and "log.head" not in needs.emits else ()
    subscribe = (f"{inbox_prefix(identity)}.>", *needs.answers, *needs.listens, HEALTH_PING)
    return Permissions(publish=tuple(publish), subscribe=subscribe, publish_deny=deny)


def command_verbs(access: Access, principal: str, tenant: str) -> tuple[str, ...]:
    """The command verbs ``principal`` may send in ``tenant`` (as a role holder or as an initiator)."""
    roles = access.roles(principal, tenant)
    if not roles:
        return ()
    return tuple(v for v in COMMAND_VERBS if roles & ACTION_ROLES[v] or v in OWNER_ACTIONS)


def stream_tenants(access: Access, principal: str) -> tuple[str, ...]:
    """The tenants whose raw event stream ``principal`` may read."""
    return tuple(t for t in access.tenants_of(principal) if access.roles(principal, t) & ACTION_ROLES["stream"])


def person_permissions(access: Access, principal: str, durables: Iterable[str]) -> Permissions:
    """The permissions of a person named in the access file; ``durables`` are the names of the
    services' durable consumers, which nobody else may create or update."""
    publish = [command_subject(t, v, principal) for t in access.tenants_of(principal)
               for v in command_verbs(access, principal, t)]
    publish += [f"{QUERY_ROOT}.*.*.{principal}", sql_subject("*", principal)]
    deny = [] if principal in access.admins else [sql_subject(ALL_TENANTS, principal)]
    followed = stream_tenants(access, principal)
    if followed:
        publish += [_api("CONSUMER", "CREATE", STREAM, "*", tenant_filter(t)) for t in followed]
        publish.append(f"$JS.FC.{STREAM}.>")
        deny += [_api("CONSUMER", "CREATE", STREAM, d, ">") for d in durables]
    return Permissions(publish=tuple(publish), subscribe=(f"{inbox_prefix(principal)}.>",), publish_deny=tuple(deny))


def users(access: Access, services: Sequence[str], *, outputs_bucket: str = OUTPUTS_BUCKET) -> dict[str, Permissions]:
    """Every identity's permissions: the people of ``access``, ``upm-<s>`` for each of
    ``services``, ``upm-serve`` and ``upm-admin``."""
    if not access.enforced:
        raise ConfigError("open mode has no users: give an access file (upm up --access FILE)")
    table = service_needs(outputs_bucket)
    unknown = sorted(set(services) - set(table))
    if unknown:
        raise ConfigError(f"no NATS permissions are defined for service(s) {', '.join(unknown)}: add them to "
                          "upm/natsauth.py service_needs()")
    durables = sorted(s for s in services if table[s].durable)
    out = {p: person_permissions(access, p, durables) for p in access.principals()}
    out |= {service_identity(s): service_permissions(s, table[s]) for s in services}
    out[SERVE] = Permissions(publish=(f"{QUERY_ROOT}.*.*.*", f"{SQL_ROOT}.*.*", command_subject("*", "approve", "*"),
                                      command_subject("*", "deny", "*")),
                             subscribe=(f"{inbox_prefix(SERVE)}.>",))
    out[ADMIN] = Permissions(publish=(_api("STREAM", "INFO", STREAM), _api("STREAM", "CREATE", STREAM),
                                      _api("DIRECT", "GET", STREAM), _api("STREAM", "NAMES"),
                                      _api("CONSUMER", "CREATE", STREAM), f"$JS.FC.{STREAM}.>",
                                      query_subject(SYSTEM_TENANT, "health", ADMIN)),
                             subscribe=(f"{inbox_prefix(ADMIN)}.>",))
    return out


def _list(subjects: Sequence[str]) -> str:
    return "[" + ", ".join(json.dumps(s) for s in subjects) + "]"


def authorization_block(table: Mapping[str, Permissions]) -> str:
    """The nats-server ``authorization`` block: one user per identity, by certificate subject."""
    lines = ["authorization {", "  users = ["]
    for identity, perms in sorted(table.items()):
        publish = f"allow: {_list(perms.publish)}" + (f", deny: {_list(perms.publish_deny)}"
                                                       if perms.publish_deny else "")
        lines.append(f"    {{user: {json.dumps(distinguished_name(identity))}, permissions: {{"
                     f"publish: {{{publish}}}, subscribe: {{allow: {_list(perms.subscribe)}}}}}}}")
    lines += ["  ]", "}", ""]
    return "\n".join(lines)
