"""Step output in events: a bounded head in the event, the whole (redacted) output by reference.

The guarded runner has already redacted and bounded the output (``guard.max_output_bytes``).
The event keeps the first ``output.event_bytes`` of each stream; when that cuts something, the
whole redacted text goes to the JetStream object store bucket ``output.bucket`` and the event
names it as ``obs://<bucket>/<tenant>/<change>/<key>.<stream>``.
"""

from __future__ import annotations

import msgspec
from nats.js import JetStreamContext
from nats.js.object_store import ObjectStore

from events.model import StepOutput
from services.common import cluster


def cut(text: str, limit: int) -> tuple[str, bool]:
    """The first ``limit`` bytes of ``text`` (on a character boundary) and whether it was cut."""
    data = text.encode()
    if len(data) <= limit:
        return text, False
    return data[:limit].decode("utf-8", "ignore"), True


class OutputStore:
    """Bounds step outputs for events and keeps the whole of the long ones in an object store."""

    def __init__(self, js: JetStreamContext, bucket: str, event_bytes: int) -> None:
        self.js = js
        self.bucket = bucket
        self.event_bytes = event_bytes
        self._objects: ObjectStore | None = None

    async def _store(self) -> ObjectStore:
        if self._objects is None:
            self._objects = await cluster.object_store(self.js, self.bucket, "UPM step outputs")
        return self._objects

    async def bounded(self, out: StepOutput, name: str) -> StepOutput:
        """``out`` with each stream cut to the event bound and a reference to what was cut."""
        changes: dict[str, object] = {}
        for stream in ("stdout", "stderr"):
            text: str = getattr(out, stream)
            head, was_cut = cut(text, self.event_bytes)
            if not was_cut:
                continue
            objects = await self._store()
            await objects.put(f"{name}.{stream}", text.encode())
            changes |= {stream: head, f"{stream}_trunc": True, f"{stream}_ref": f"obs://{self.bucket}/{name}.{stream}"}
        return msgspec.structs.replace(out, **changes) if changes else out
