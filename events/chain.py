"""The per-change hash chain: ``hash = sha256(prev_hash ‖ canonical_json(envelope − hash))``.

Pure functions. Hashes are computed over the schema-free JSON object of the envelope, so an
event stored by an older version of UPM still verifies after the schema has grown new fields.
The first event of a change has ``prev_hash == ""``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from events.codec import canonical_json, decode_json_object, sha256_hex
from events.errors import ChainBroken
from events.model import Event

GENESIS = ""


def hash_object(envelope: Mapping[str, Any]) -> str:
    """The chain hash of an envelope given as a JSON object (its ``hash`` key is ignored)."""
    body = {k: v for k, v in envelope.items() if k != "hash"}
    prev = envelope.get("prev_hash", "")
    return "sha256:" + sha256_hex(str(prev).encode() + canonical_json(body))


def seal(event: Event, prev_hash: str) -> Event:
    """``event`` linked after ``prev_hash``, with its own hash filled in."""
    linked = msgspec.structs.replace(event, prev_hash=prev_hash, hash="")
    return msgspec.structs.replace(linked, hash=hash_object(msgspec.to_builtins(linked)))


def verify(change_id: str, stored: Iterable[tuple[int, bytes]]) -> str:
    """Verify a change's chain from its stored ``(sequence, bytes)``; return the head hash.

    Raises :class:`ChainBroken` naming the first event that does not verify.
    """
    head = GENESIS
    for seq, data in stored:
        try:
            envelope = decode_json_object(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ChainBroken(change_id, "?", seq, f"the stored bytes are not a JSON object ({exc})") from exc
        event_id = str(envelope.get("id", "?"))
        if envelope.get("change_id") != change_id:
            raise ChainBroken(change_id, event_id, seq, f"it belongs to change {envelope.get('change_id')!r}")
        if envelope.get("prev_hash") != head:
            raise ChainBroken(
                change_id, event_id, seq, f"prev_hash {envelope.get('prev_hash')!r} does not match {head!r}"
            )
        actual = hash_object(envelope)
        if envelope.get("hash") != actual:
            raise ChainBroken(
                change_id, event_id, seq, f"its content hashes to {actual}, not its recorded {envelope.get('hash')}"
            )
        head = actual
    return head
