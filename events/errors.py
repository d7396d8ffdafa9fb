"""Errors of the event contract and the event store.

    UpmEventError                       anything the event layer refuses or cannot do
    ├── InvalidEvent                    an event or command that breaks the contract (never appended)
    ├── StoreError                      the event store could not complete an operation
    │   ├── ConcurrencyConflict         another writer appended to the change first (re-read, re-decide)
    │   ├── StreamNotFound              the event stream does not exist (run `upm up` or `ensure_stream`)
    │   ├── StreamMisconfigured         the stream exists with settings that break immutability
    │   ├── ServerRefused               the server refused the request (code and description kept)
    │   └── StoreTimeout                the server did not answer in time
    └── ChainBroken                     a change's hash chain does not verify (names the event)

Every message says what failed, why, and what to do.
"""

from __future__ import annotations


class UpmEventError(Exception):
    """Base of every error raised by :mod:`events`."""


class InvalidEvent(UpmEventError):
    """An event or command breaks the contract; ``field`` names what is wrong, ``rule`` which rule."""

    def __init__(self, message: str, *, field: str = "", rule: str = "invalid") -> None:
        super().__init__(message)
        self.field = field
        self.rule = rule


class StoreError(UpmEventError):
    """The event store could not complete an operation."""


class ConcurrencyConflict(StoreError):
    """Another writer appended to the change after we read it."""

    def __init__(self, subject: str, expected_seq: int, detail: str = "") -> None:
        super().__init__(
            f"append to {subject} refused: the change has moved on since sequence {expected_seq} "
            f"(another writer appended first){': ' + detail if detail else ''}. "
            "Re-read the change and decide again."
        )
        self.subject = subject
        self.expected_seq = expected_seq


class StreamNotFound(StoreError):
    """The event stream is missing."""


class StreamMisconfigured(StoreError):
    """The event stream exists but its settings break the log's guarantees."""


class ServerRefused(StoreError):
    """The server refused a request; keeps NATS's code and error code."""

    def __init__(self, message: str, *, code: int | None = None, err_code: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.err_code = err_code


class StoreTimeout(StoreError):
    """The server did not answer within the deadline."""


class ChainBroken(UpmEventError):
    """A change's hash chain does not verify at ``event_id`` (sequence ``seq``)."""

    def __init__(self, change_id: str, event_id: str, seq: int, reason: str) -> None:
        super().__init__(
            f"hash chain of change {change_id} is broken at event {event_id} (stream sequence {seq}): "
            f"{reason}. The log was altered outside UPM; keep the stream as it is for forensics "
            "and restore from a replica or backup."
        )
        self.change_id = change_id
        self.event_id = event_id
        self.seq = seq
        self.reason = reason
