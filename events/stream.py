"""The configuration of the event stream, and the check that an existing one is immutable."""

from __future__ import annotations

from nats.js import api

from events.errors import StreamMisconfigured
from events.subjects import EVENT_ROOT, STREAM

DUPLICATE_WINDOW_S = 10 * 60.0


def event_stream_config(replicas: int = 1) -> api.StreamConfig:
    """``UPM_EVENTS``: file storage, nothing ever deleted, purged, rolled up or aged out.

    One replica embedded; three in a cluster (an acknowledged event then survives the loss of
    a node). The embedded server also runs with ``sync_interval: always``.
    """
    return api.StreamConfig(
        name=STREAM,
        description="UPM immutable change log",
        subjects=[f"{EVENT_ROOT}.>"],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        num_replicas=replicas,
        max_age=0,
        max_msgs=-1,
        max_bytes=-1,
        max_msgs_per_subject=-1,
        discard=api.DiscardPolicy.NEW,
        duplicate_window=DUPLICATE_WINDOW_S,
        deny_delete=True,
        deny_purge=True,
        allow_rollup_hdrs=False,
        allow_direct=True,
    )


def check_immutable(config: api.StreamConfig) -> None:
    """Refuse a stream whose settings could lose or rewrite events."""
    problems = []
    if not config.deny_delete:
        problems.append("deny_delete is off")
    if not config.deny_purge:
        problems.append("deny_purge is off")
    if config.allow_rollup_hdrs:
        problems.append("rollups are allowed")
    if config.max_age:
        problems.append(f"max_age is {config.max_age}")
    for name in ("max_msgs", "max_bytes", "max_msgs_per_subject"):
        value = getattr(config, name)
        if value not in (None, -1, 0):
            problems.append(f"{name} is {value}")
    if config.storage != api.StorageType.FILE:
        problems.append(f"storage is {config.storage}")
    if problems:
        raise StreamMisconfigured(
            f"stream {config.name} exists but is not an immutable log: {', '.join(problems)}. "
            "Events could be lost or rewritten. Recreate it with the settings of "
            "events.stream.event_stream_config() (deny_delete, deny_purge, no limits, file storage)."
        )
