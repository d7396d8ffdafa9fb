"""Answering one request message so that no message can stop a responder.

Every request/reply responder (the gateway's intents, the queries, the approve/deny and
resume/rollback/cancel handlers, the projector's SQL and evidence answers) hands each message to
:func:`reply_to`. What its answer function raises that it did not expect is a per-message
failure: it is logged here with its traceback, and the caller gets one generic error reply
(never the traceback). A reply that cannot be delivered (the asker is gone) is logged and
dropped. Cancellation is never caught.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.msg import Msg

from events.commands import error_reply
from events.errors import InvalidEvent

log = logging.getLogger("upm.responder")

INTERNAL_ERROR_TEXT = ("UPM could not answer this request: an internal error, logged by the service that "
                       "received it; nothing was stored. Retry, and report it with the time if it persists")
INTERNAL_ERROR = error_reply(InvalidEvent(INTERNAL_ERROR_TEXT, field="body", rule="internal"))
"""The reply to a message whose handling failed unexpectedly."""

Answer = Callable[[Msg], Awaitable[bytes | None]]


async def reply_to(msg: Msg, answer: Answer, *, what: str, failed: bytes = INTERNAL_ERROR) -> None:
    """Send ``answer(msg)`` (``None``: send nothing), or ``failed`` if it raised (see the module docstring)."""
    try:
        data = await answer(msg)
    except Exception:
        log.exception("%s on %s failed unexpectedly; answered with a generic error", what, msg.subject)
        data = failed
    if data is None or not msg.reply:
        return
    try:
        await msg.respond(data)
    except nats.errors.Error as exc:
        log.warning("the answer to %s on %s could not be sent: %s", what, msg.subject, exc)
