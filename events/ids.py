"""Time-ordered identifiers.

New ids are UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then randomness, so ids sort by
creation time. A service's output ids are *derived*: the input event's timestamp bits and a
sha256 of (input id, key) for the rest. A service that crashes after appending and before
acking re-derives exactly the same ids, so nothing is appended twice.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid


def _with_version(raw: bytearray) -> str:
    raw[6] = (raw[6] & 0x0F) | 0x70  # version 7
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return str(uuid.UUID(bytes=bytes(raw)))


def new_id(now_ms: int | None = None) -> str:
    """A fresh UUIDv7."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return _with_version(bytearray(ms.to_bytes(6, "big") + os.urandom(10)))


def derive_id(parent: str, key: str) -> str:
    """The deterministic id of the output ``key`` of the event ``parent``.

    It keeps the parent's time bits, so derived ids still sort after their cause.
    """
    ms = uuid.UUID(parent).bytes[:6]
    tail = hashlib.sha256(f"{parent}\x00{key}".encode()).digest()[:10]
    return _with_version(bytearray(ms + tail))


def id_time_ms(event_id: str) -> int:
    """The Unix milliseconds carried by a UUIDv7."""
    return int.from_bytes(uuid.UUID(event_id).bytes[:6], "big")
