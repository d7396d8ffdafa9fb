"""Library functions behind `upm evidence` and `upm audit verify`: thin I/O over the pure cores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import nats.js.errors

from events.model import EvidencePublished
from events.store import ChangeLog, EventStore
from events.subjects import EVENT_ROOT, STREAM
from projections.errors import EvidenceNotFound
from services.auditor import audit
from services.auditor.evidence import EVIDENCE_BUCKET


async def pack_of(store: EventStore, log: ChangeLog) -> tuple[EvidencePublished, bytes]:
    """The change's latest ``evidence.published`` and the pack it names, from the object store."""
    change_id = log.change_id
    published = [s.event.payload for s in log.events if isinstance(s.event.payload, EvidencePublished)]
    if not published:
        what = "no such change" if not log.events else "the change has no published evidence pack yet"
        raise EvidenceNotFound(
            f"no evidence pack for change {change_id}: {what}. Packs are published when a change closes "
            "(is the auditor running? see `upm status ID`)"
        )
    latest = published[-1]
    try:
        objects = await store.js.object_store(EVIDENCE_BUCKET)
        result = await objects.get(latest.object_name)
    except (nats.js.errors.BucketNotFoundError, nats.js.errors.ObjectNotFoundError) as exc:
        raise EvidenceNotFound(
            f"the pack {latest.object_name} of change {change_id} is not in the object store {EVIDENCE_BUCKET}; "
            "it was published but the bucket was lost — rebuild it with the auditor"
        ) from exc
    if not result.data:
        raise EvidenceNotFound(f"the pack {latest.object_name} of change {change_id} is empty in the object store")
    data: bytes = result.data
    return latest, data


async def audit_stream(
    store: EventStore, public_keys: Mapping[str, str] | None = None, *, require_signatures: bool = False,
    known: Sequence[audit.KnownHead] = (),
) -> audit.AuditReport:
    """`upm audit verify`: read every stored event, check chains and heads against the stream's own
    last sequence and the ``known`` heads; the report lists every problem (see :func:`audit.check_log`)."""
    last_seq = (await store.js.stream_info(STREAM)).state.last_seq
    records = await store.read_raw(f"{EVENT_ROOT}.>")
    return audit.check_log(records, public_keys, require_signatures=require_signatures, stream_last_seq=last_seq,
                           known=known)
