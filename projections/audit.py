"""`upm audit verify`: every hash chain and every signed log head, from the stored records alone.

:func:`verify_log` takes the raw ``(stream sequence, stored bytes)`` records — exactly what
``EventStore.read_raw("upm.evt.>")`` returns — rather than reading the stream itself. The stream
denies delete and purge, so a rewritten event cannot be stored there; a test (or a forensic
copy) simulates one by passing a copy of the records with one altered. It checks:

1. sequences run 1, 2, 3 … without a gap (leaf ``i`` of the Merkle tree is sequence ``i + 1``);
2. each change's hash chain (``events.chain.verify``), naming the first event that breaks;
3. each ``log.head``: it covers only events stored before it, its root is the RFC 6962 root of
   the first ``size`` events, a consistency proof from the previous head verifies (append-only),
   and its ed25519 signature verifies when its key is known (``require_signatures`` makes an
   unknown key a failure).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import msgspec

from events import chain, merkle, signing
from events.codec import decode_json_object
from events.errors import ChainBroken
from projections.errors import AuditFailed


class AuditReport(msgspec.Struct, frozen=True, kw_only=True):
    """What verified: counts, the latest head, and the keys whose signatures were checked."""

    events: int
    changes: int
    heads: int
    heads_signature_checked: int
    head_size: int
    head_root: str
    keys: list[str]


class _Head(msgspec.Struct, frozen=True):
    seq: int
    event_id: str
    size: int
    root: str
    signed_at: str
    key_id: str
    signature: str


def verify_log(
    records: Sequence[tuple[int, bytes]], public_keys: Mapping[str, str] | None = None, *,
    require_signatures: bool = False,
) -> AuditReport:
    """Verify the whole log (see the module docstring); raise :class:`AuditFailed` at the first fault."""
    keys = dict(public_keys or {})
    changes: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
    heads: list[_Head] = []
    for expected, (seq, data) in enumerate(records, start=1):
        if seq != expected:
            raise AuditFailed(
                f"stream sequence {expected} is missing (found {seq} next): the log is not contiguous, so the "
                "Merkle tree cannot be rebuilt; read the whole stream from sequence 1",
                seq=expected, check="sequence",
            )
        try:
            doc = decode_json_object(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise AuditFailed(f"event at sequence {seq} is not JSON ({exc}); the log was altered",
                              seq=seq, check="decode") from exc
        changes[str(doc.get("change_id"))].append((seq, data))
        payload = doc.get("payload") or {}
        if isinstance(payload, dict) and payload.get("type") == "log.head":
            heads.append(_Head(seq, str(doc.get("id")), int(payload["size"]), str(payload["root"]),
                               str(payload["signed_at"]), str(payload["key_id"]), str(payload["signature"])))
    for change_id, stored in changes.items():
        try:
            chain.verify(change_id, stored)
        except ChainBroken as broken:
            raise AuditFailed(str(broken), event_id=broken.event_id, seq=broken.seq, check="chain") from broken
    checked = _verify_heads(records, heads, keys, require_signatures)
    last = heads[-1] if heads else None
    return AuditReport(
        events=len(records), changes=len(changes), heads=len(heads), heads_signature_checked=checked,
        head_size=last.size if last else 0, head_root=last.root if last else "",
        keys=sorted({h.key_id for h in heads if h.key_id in keys}),
    )


def _verify_heads(
    records: Sequence[tuple[int, bytes]], heads: list[_Head], keys: Mapping[str, str], require_signatures: bool
) -> int:
    tree = merkle.MerkleTree()
    by_size = sorted(heads, key=lambda h: (h.size, h.seq))
    roots: dict[int, bytes] = {}
    i = 0
    for _, data in records:
        tree.append(data)
        while i < len(by_size) and by_size[i].size == tree.size:
            roots[tree.size] = tree.root()
            i += 1
    checked = 0
    previous: _Head | None = None
    for head in heads:
        where = f"signed log head {head.event_id} (stream sequence {head.seq}, size {head.size})"
        if not 0 < head.size < head.seq:
            raise AuditFailed(f"{where} claims events not stored before it", event_id=head.event_id, seq=head.seq,
                              check="head-size")
        if roots[head.size].hex() != head.root:
            raise AuditFailed(
                f"{where}: its root {head.root[:16]}… is not the root {roots[head.size].hex()[:16]}… of the first "
                f"{head.size} stored events; an event it covers was altered after it was signed",
                event_id=head.event_id, seq=head.seq, check="head-root",
            )
        if previous is not None:
            old, new = sorted((previous, head), key=lambda h: h.size)
            proof = tree.consistency(old.size, new.size)
            if not merkle.verify_consistency(old.size, new.size, bytes.fromhex(old.root), bytes.fromhex(new.root),
                                             proof):
                raise AuditFailed(f"{where} is not consistent with the previous head (size {previous.size}): "
                                  "the log was rewritten between them", event_id=head.event_id, seq=head.seq,
                                  check="consistency")
        public = keys.get(head.key_id)
        if public is not None:
            message = signing.head_message(head.size, head.root, head.signed_at, head.key_id)
            if not signing.verify(public, message, head.signature):
                raise AuditFailed(f"{where}: the signature does not verify with key {head.key_id}",
                                  event_id=head.event_id, seq=head.seq, check="head-signature")
            checked += 1
        elif require_signatures:
            raise AuditFailed(f"{where} is signed by {head.key_id}, which is not a known key; pass its public key",
                              event_id=head.event_id, seq=head.seq, check="head-key")
        previous = head
    return checked
