"""Operator commands on a change: ``upm.cmd.<tenant>.resume|rollback|cancel``.

:func:`decide` (pure) checks the change's state from its events and returns the event to
append — ``execution.resumed``, ``rollback.approved(lane="manual")`` or ``execution.cancelled``
— or raises :class:`CommandNotAllowed` saying why not. A rollback that failed may be approved
again (after fixing its cause): steps already undone are not undone twice. :class:`CommandService` is the thin
shell: validate with ``parse_change_command``, read, decide, append, reply. Services share a
queue group, so any number of replicas can answer.
"""

from __future__ import annotations

import logging

import anyio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from events.commands import ChangeCommand, error_reply, ok_reply, parse_change_command
from events.errors import ConcurrencyConflict, InvalidEvent, StoreError
from events.ids import new_id
from events.lifecycle import ChangeState, fold
from events.model import ExecutionCancelled, ExecutionResumed, Payload, RollbackApproved
from events.store import EventStore, new_event
from events.subjects import command_filter, parse_caller_subject
from services.common import retry
from services.common.responder import reply_to
from services.common.runtime import MAX_CONFLICT_RETRIES, utc_now
from services.executor.errors import CommandNotAllowed
from services.security.access import Access, Forbidden, initiator_of, refusal
from services.security.access import load as load_access

log = logging.getLogger("upm.executor.commands")
QUEUE = "upm-executor-commands"
VERBS = ("resume", "rollback", "cancel")


def decide(verb: str, state: ChangeState, cmd: ChangeCommand) -> Payload:
    """The event an allowed command appends (raises :class:`CommandNotAllowed` otherwise)."""
    if state.status == "unknown":
        raise CommandNotAllowed(f"no change {cmd.change_id} in the log of this tenant", rule="exists")
    plan_hash = state.approved_hash
    status = state.status
    if not plan_hash:
        raise CommandNotAllowed(f"change {cmd.change_id} was never approved; nothing to {verb}", rule="state")
    if verb == "resume":
        if status != "paused":
            raise CommandNotAllowed(
                f"change {cmd.change_id} is not paused (it is {status}); only a paused change resumes",
                rule="not-paused",
            )
        return ExecutionResumed(plan_hash=plan_hash, by=cmd.by, reason=cmd.reason)
    if verb == "cancel":
        if state.ever_closed or status not in ("approved", "executing", "paused"):
            raise CommandNotAllowed(
                f"change {cmd.change_id} is {status}; only an approved, executing or paused change can be "
                "cancelled", rule="closed",
            )
        return ExecutionCancelled(plan_hash=plan_hash, by=cmd.by, reason=cmd.reason)
    if status in ("rolling-back", "verifying-rollback") or state.outcome == "rolled_back":
        shown = "rolled back" if state.outcome == "rolled_back" else status
        raise CommandNotAllowed(f"change {cmd.change_id} is already {shown}", rule="already-rolled-back")
    if status in ("approved", "executing"):
        raise CommandNotAllowed(
            f"change {cmd.change_id} is still {status}; cancel it first (`upm cancel`), then roll it back",
            rule="executing",
        )
    if not state.forward.completed:
        raise CommandNotAllowed(
            f"nothing to roll back: no step of change {cmd.change_id} completed", rule="nothing-to-roll-back"
        )
    return RollbackApproved(plan_hash=plan_hash, lane="manual", by=cmd.by, reason=cmd.reason)


class CommandService:
    """Answers resume / rollback / cancel requests (see the module docstring)."""

    def __init__(self, nc: NATS, access: Access | None = None) -> None:
        self.nc = nc
        self.store = EventStore(nc)
        self.access = access if access is not None else load_access()

    async def run(self, *, ready: anyio.Event | None = None) -> None:
        subs = [await self.nc.subscribe(command_filter(verb), queue=QUEUE) for verb in VERBS]
        if ready is not None:
            ready.set()
        try:
            async with anyio.create_task_group() as tg:
                for sub in subs:
                    tg.start_soon(self._serve, sub)
        finally:
            with anyio.CancelScope(shield=True):
                for sub in subs:
                    await sub.unsubscribe()

    async def _serve(self, sub: Subscription) -> None:
        async for msg in sub.messages:
            if self.access.caller(msg.subject, msg.reply) is None:
                continue
            await reply_to(msg, self.answer, what="a change command")

    async def answer(self, msg: Msg) -> bytes:
        """The reply to one command message."""
        tenant, verb, principal = parse_caller_subject(msg.subject)
        try:
            cmd = parse_change_command(tenant, verb, principal, msg.data)
            return await self._apply(tenant, verb, cmd)
        except InvalidEvent as err:
            return error_reply(err)
        except Forbidden as err:
            return refusal(err)
        except CommandNotAllowed as err:
            return error_reply(InvalidEvent(str(err), field="change_id", rule=err.rule))
        except StoreError as err:
            log.error("%s for %s not stored: %s", verb, tenant, err)
            return error_reply(InvalidEvent(f"not stored: {err}; retry", field="store", rule="unavailable"))

    async def _apply(self, tenant: str, verb: str, cmd: ChangeCommand) -> bytes:
        async def attempt(_: int) -> bytes:
            change = await self.store.read(tenant, cmd.change_id)
            if change.events:  # RBAC on the caller's authenticated identity (cmd.by is the subject's principal)
                self.access.require(cmd.by, tenant, verb, initiator=initiator_of([s.event for s in change.events]))
            payload = decide(verb, fold(s.event for s in change.events), cmd)
            origin = change.events[0].event
            event = new_event(payload, event_id=new_id(), change_id=cmd.change_id, tenant=tenant, ts=utc_now(),
                              actor=cmd.by, source=origin.source, visibility=origin.visibility)
            await self.store.append(change, [event])
            return ok_reply(cmd.change_id)

        try:
            return await retry.on_conflict(attempt, attempts=MAX_CONFLICT_RETRIES)
        except ConcurrencyConflict:
            raise CommandNotAllowed(f"change {cmd.change_id} kept changing while {verb} was applied; retry",
                                    rule="busy") from None
