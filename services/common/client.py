"""Library functions for producers: submit, commands, and a change's status from its events.

Any NATS client can do the same: a request on ``upm.cmd.<tenant>.intent.<you>``, and either the
queries of :mod:`services.gateway.queries` (what you may see) or, with stream rights, an ordinary
JetStream consumer on ``upm.evt.<tenant>.>``.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import msgspec
import nats.errors
from nats.aio.client import Client as NATS

from events import chain
from events.commands import CHANGE_TEXT_FIELDS, INTENT_TEXT_FIELDS, refuse_secrets_in
from events.errors import ChainBroken, InvalidEvent
from events.lifecycle import fold
from events.model import (
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    ChainVerificationFailed,
    ChangeApproved,
    ChangeClosed,
    ChangeStalled,
    Event,
    ExecutionFailed,
    PlanCompiled,
    PlanRejected,
    PreflightFailed,
    RollbackApproved,
    RollbackPlanned,
    RollbackStepCompleted,
    RollbackStepStarted,
    StepCompleted,
    StepFailed,
    StepSkipped,
    StepStarted,
    VerificationFailed,
    VerificationPassed,
)
from events.store import ChangeLog, EventStore, StoredEvent
from events.subjects import change_filter, command_subject
from services.common import retry
from services.common.errors import CommandRejected, NotRunning


class EventLine(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    ts: str
    phase: str
    type: str
    actor: str
    summary: str


class ChangeStatus(msgspec.Struct, frozen=True, kw_only=True):
    change_id: str
    tenant: str
    state: str
    outcome: str | None
    reason: str
    subject: str
    events: tuple[EventLine, ...]
    chain: str = "ok"  # or "broken — <where and why>" (see chain_of)


BUSY_POLICY = retry.RetryPolicy(initial_s=0.25, backoff=2.0, maximum_s=5.0, jitter=0.3)
"""Between attempts to submit an intent the gateway refused as busy (its queue was full)."""


async def submit(nc: NATS, tenant: str, command: dict[str, Any], *, principal: str, within: float = 10.0,
                 busy_within: float = 120.0, on_progress: Callable[[dict[str, Any]], None] | None = None) -> str:
    """Send ``principal``'s intent; return its change id, or raise :class:`CommandRejected` with the reason
    (a secret in it is refused here, before anything is sent).

    ``within`` is how long the gateway may stay silent: while the intent waits in its queue the gateway
    sends progress notes (``on_progress`` gets each one's body), and each restarts that wait. A refusal
    because the gateway's queue is full (rule ``busy``: nothing was stored) is sent again after the
    :data:`BUSY_POLICY` delay, for at most ``busy_within`` seconds; then that refusal is raised."""
    refuse_secrets_locally(command, INTENT_TEXT_FIELDS)
    subject = command_subject(tenant, "intent", principal)
    deadline = time.monotonic() + busy_within
    attempt = 0
    while True:
        try:
            body = await request(nc, subject, command, within=within, what="intents", on_progress=on_progress)
        except CommandRejected as refused:
            attempt += 1
            wait = BUSY_POLICY.delay(attempt, random.random())
            if refused.rule != "busy" or time.monotonic() + wait > deadline:
                raise
            await anyio.sleep(wait)
            continue
        return str(body["change_id"])


async def command(nc: NATS, tenant: str, verb: str, body: dict[str, Any], *, principal: str,
                  within: float = 10.0) -> dict[str, Any]:
    """Send ``principal``'s ``verb`` (approve, deny, resume, rollback, cancel) about a change (a secret
    in it is refused here, before anything is sent)."""
    refuse_secrets_locally(body, CHANGE_TEXT_FIELDS)
    return await request(nc, command_subject(tenant, verb, principal), body, within=within, what=f"`{verb}` commands")


async def request(nc: NATS, subject: str, body: dict[str, Any], *, within: float = 10.0,
                  what: str = "this request", on_progress: Callable[[dict[str, Any]], None] | None = None,
                  ) -> dict[str, Any]:
    """Ask on ``subject``; the ``{"ok": true, ...}`` reply, or :class:`CommandRejected` with its reason."""
    return raise_for_reply(await ask(nc, subject, msgspec.json.encode(body), within=within, what=what,
                                     on_progress=on_progress))


def refuse_secrets_locally(body: dict[str, Any], fields: tuple[str, ...]) -> None:
    """:class:`CommandRejected` (rule ``secret``) when ``fields`` of ``body`` hold a secret: nothing is sent."""
    try:
        refuse_secrets_in(body, fields)
    except InvalidEvent as err:
        raise CommandRejected(str(err), field=err.field, rule=err.rule) from None


class Refusals:
    """The publishes the server refused on one connection (its error callback feeds :meth:`note`),
    so a refused request fails at once with the reason instead of timing out."""

    _PATTERN = re.compile(r'permissions violation for publish to "([^"]+)"', re.IGNORECASE)

    def __init__(self) -> None:
        self.subjects: set[str] = set()
        self.changed = anyio.Event()

    def note(self, exc: Exception) -> bool:
        """Record ``exc`` if it is a refused publish (then True: the request reports it)."""
        match = self._PATTERN.search(str(exc))
        if match:
            self.subjects.add(match.group(1))
            self.changed.set()
            self.changed = anyio.Event()
        return match is not None

    async def wait_for(self, subject: str) -> None:
        while subject not in self.subjects:
            await self.changed.wait()


class Connection(NATS):
    """A NATS connection that keeps the publishes its server refused (:class:`Refusals`), so requests on it
    fail at once with the reason; :func:`services.common.connection.connect` opens these."""

    def __init__(self) -> None:
        super().__init__()
        self.refusals = Refusals()


PROGRESS_HEADER = "UPM-Progress"  # a note that the request is being worked on (services/gateway/service.py)
ACCEPT_HEADER = "UPM-Accept-Progress"  # a request's: its caller understands such notes (a reply echoes it)


async def ask(nc: NATS, subject: str, payload: bytes, *, within: float, what: str,
              on_progress: Callable[[dict[str, Any]], None] | None = None) -> bytes:
    """The raw reply to a request, or :class:`NotRunning` / :class:`CommandRejected` saying why there is none.

    The request says it accepts progress notes (header ``UPM-Accept-Progress``); the responder may send
    some before its reply (header ``UPM-Progress``): each restarts the ``within`` wait and goes to
    ``on_progress``; the first message without that header is the reply."""
    outcome: list[bytes | Exception] = []
    refusals = nc.refusals if isinstance(nc, Connection) else None
    async with anyio.create_task_group() as tg:

        async def request() -> None:
            try:
                outcome.append(await _reply(nc, subject, payload, within, on_progress))
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError, TimeoutError) as exc:
                outcome.append(exc)
            tg.cancel_scope.cancel()

        tg.start_soon(request)
        if refusals is not None:
            await refusals.wait_for(subject)
            tg.cancel_scope.cancel()
    match outcome:
        case [bytes() as reply]:
            return reply
        case [nats.errors.NoRespondersError() as exc]:
            raise NotRunning(f"nothing answers {what} on {subject}: is `upm up` running?") from exc
        case [Exception() as exc]:
            raise NotRunning(f"no answer on {subject} within {within}s") from exc
    raise CommandRejected(f"the server refused {subject}: this identity may not send that (its roles in the access "
                          "file do not allow it, or it is not this identity's own name)",
                          field="caller", rule="server-refused")


async def _reply(nc: NATS, subject: str, payload: bytes, within: float,
                 on_progress: Callable[[dict[str, Any]], None] | None) -> bytes:
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        await nc.publish(subject, payload, reply=inbox, headers={ACCEPT_HEADER: "1"})
        messages = sub.messages
        while True:
            with anyio.fail_after(within):
                msg = await anext(messages)
            if msg.headers and msg.headers.get("Status") == "503":
                raise nats.errors.NoRespondersError
            if not (msg.headers and PROGRESS_HEADER in msg.headers):
                return bytes(msg.data)
            if on_progress is not None:
                note = msgspec.json.decode(msg.data)
                on_progress(note if isinstance(note, dict) else {})
    finally:
        with anyio.CancelScope(shield=True):
            await sub.unsubscribe()


def raise_for_reply(data: bytes) -> dict[str, Any]:
    """The decoded ``{"ok": true, ...}`` reply; :class:`CommandRejected` for ``{"ok": false, ...}``."""
    body = msgspec.json.decode(data)
    if not isinstance(body, dict) or not body.get("ok"):
        error = (body.get("error") if isinstance(body, dict) else None) or {}
        raise CommandRejected(
            str(error.get("message", "rejected")), field=str(error.get("field", "")), rule=str(error.get("rule", ""))
        )
    return body


def summary(event: Event) -> str:
    """One line about an event, for people."""
    match event.payload:
        case PlanCompiled(plan=plan, revision=rev, compile_ms=ms):
            return f"revision {rev}: {len(plan.steps)} step(s), {plan.hash[:19]}, {ms:.1f} ms"
        case PlanRejected(reason=reason) | ExecutionFailed(reason=reason):
            return reason
        case PreflightFailed(reasons=reasons):
            return "; ".join(reasons)
        case StepStarted(command=command) | StepCompleted(command=command):
            return command
        case StepSkipped(reason=reason):
            return reason
        case StepFailed(error=error):
            return error
        case VerificationPassed(checks=checks):
            return f"{len(checks)} resource(s) read back, all match"
        case VerificationFailed(diff=diff):
            return "; ".join(f"{d.resource} {d.field}: {d.desired!r} → {d.observed!r}" for d in diff)
        case RollbackPlanned(commands=commands, automatic=automatic):
            undo = "; ".join(c.display for c in commands) or "nothing to undo"
            return f"undo: {undo}" + (" (automatic)" if automatic and commands else "")
        case RollbackApproved(lane=lane, by=by):
            return f"{lane}, by {by}"
        case RollbackStepStarted(command=command) | RollbackStepCompleted(command=command):
            return command
        case ApprovalRequested(groups=groups, required=required):
            return f"{required} approval(s) from {', '.join(groups)}"
        case ApprovalGranted(approver=who, group=group, by_policy=rule):
            return f"by policy: {rule}" if rule else f"{who} ({group})"
        case ApprovalDenied(approver=who, reason=reason):
            return f"{who}: {reason}"
        case ChangeApproved(lane=lane, rule=rule, approvers=approvers):
            return f"{lane} lane" + (f": {rule}" if rule else "") + (f" ({', '.join(approvers)})" if approvers else "")
        case ChangeClosed(outcome=outcome, events=n):
            return f"{outcome}: {n + 1} events in all (this one included)"  # ``events`` counts those before it
        case ChangeStalled(status=where, since=since, action=action, attempt=attempt):
            done = "given up" if action == "close" else f"re-driven (attempt {attempt})"
            return f"no progress while {where} since {since}: {done}"
        case ChainVerificationFailed(event_id=eid, reason=reason):
            return f"chain broken at {eid}: {reason}"
        case _:
            return ""


def line(stored: StoredEvent) -> EventLine:
    e = stored.event
    return EventLine(seq=stored.seq, ts=e.ts, phase=e.phase, type=e.type, actor=e.actor, summary=summary(e))


def status_of(log: ChangeLog) -> ChangeStatus:
    """Where a change stands, from its events."""
    events = [s.event for s in log.events]
    lifecycle = fold(events)
    state, outcome, reason = lifecycle.status, None, ""
    if state == "closed":
        outcome, reason = lifecycle.outcome, lifecycle.reason
    elif state == "chain-broken":
        reason = summary(events[-1])
    return ChangeStatus(
        change_id=log.change_id,
        tenant=log.tenant,
        state=state,
        outcome=outcome,
        reason=reason,
        subject=change_filter(log.tenant, log.change_id),
        events=tuple(line(s) for s in log.events),
        chain=chain_of(log, lifecycle.chain_broken),
    )


def chain_of(log: ChangeLog, reported: ChainVerificationFailed | None) -> str:
    """``ok``, or ``broken — …``: the auditor's latest ``chain.broken`` on the change (``reported``), else the
    chain checked here from the stored bytes, so an event lost or altered on disk shows even where no auditor
    looked yet."""
    if reported is not None:
        return f"broken — the auditor found it broken at event {reported.event_id}: {reported.reason}"
    try:
        chain.verify(log.change_id, [(s.seq, s.data) for s in log.events])
    except ChainBroken as broken:
        return (f"broken — at event {broken.event_id} (stream sequence {broken.seq}): {broken.reason}; an event of "
                "this change is missing from the stream or was altered, run `upm audit verify` to name it")
    return "ok"


async def status(store: EventStore, change_id: str, tenant: str = "*") -> ChangeStatus:
    log = await store.read(tenant, change_id)
    if not log.events:
        raise CommandRejected(f"no change {change_id} in the log (tenant {tenant})", field="change_id", rule="exists")
    return status_of(log)


async def wait_closed(
    store: EventStore,
    tenant: str,
    change_id: str,
    *,
    within: float = 120.0,
    on_event: Callable[[StoredEvent], None] | None = None,
) -> ChangeStatus:
    """Follow a change on the stream until it is closed (or its chain is reported broken)."""
    await until_final(store.follow(change_filter(tenant, change_id)), within=within, on_event=on_event)
    return await status(store, change_id, tenant)


async def until_final(
    events: AsyncIterator[StoredEvent], *, within: float, on_event: Callable[[StoredEvent], None] | None = None
) -> None:
    """Consume one change's events until it is closed or its chain is reported broken."""
    with anyio.fail_after(within):
        async for stored in events:
            if on_event is not None:
                on_event(stored)
            if is_final(stored):
                return


def is_final(stored: StoredEvent) -> bool:
    """The last event a follower of one change waits for: closed, or its chain reported broken."""
    return isinstance(stored.event.payload, (ChangeClosed, ChainVerificationFailed))
