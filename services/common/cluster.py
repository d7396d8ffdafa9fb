"""Scale-out on NATS itself: how many replicas everything UPM stores gets, and a server list.

One setting, ``UPM_REPLICAS`` (1 on a single server; 3 or 5 in a JetStream cluster), gives the
replica count of every stream UPM creates: the event stream ``UPM_EVENTS``, the evidence object
store, the executor's rate-bucket key-value store and its step-output object store. Each is
created at that count, and one created earlier with fewer replicas is scaled up to it (JetStream
moves a stream from R1 to R3 in place), so a deployment that grew into a cluster does not keep a
single copy of anything. ``NATS_URL`` (and ``--nats``) may list several servers separated by
commas: a client connects to any of them and fails over to the others (:func:`servers`).
"""

from __future__ import annotations

import os

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from services.common.errors import ConfigError

REPLICAS_ENV = "UPM_REPLICAS"
ALLOWED = ("1", "3", "5")


def replicas() -> int:
    """The replica count of every stream, key-value and object store UPM creates (``UPM_REPLICAS``)."""
    return replicas_of(os.environ.get(REPLICAS_ENV, "1"))


def replicas_of(value: str) -> int:
    """``UPM_REPLICAS``'s value, checked."""
    raw = value.strip() or "1"
    if raw not in ALLOWED:
        raise ConfigError(f"{REPLICAS_ENV}={raw!r}: use 1 (a single server) or 3 / 5 (a JetStream cluster of at "
                          "least that many servers)")
    return int(raw)


def servers(url: str) -> list[str]:
    """The server URLs of a comma-separated list (``nats://a:4222,nats://b:4222``), each checked."""
    found = [part.strip() for part in url.split(",") if part.strip()]
    if not found:
        raise ConfigError(f"no NATS server URL in {url!r}: give one, or several separated by commas")
    bad = [u for u in found if any(c.isspace() for c in u)]
    if bad:
        raise ConfigError(f"{', '.join(bad)} in {url!r} is not a NATS URL: write nats://HOST:PORT (several "
                          "separated by commas)")
    return found


async def scale(js: JetStreamContext, stream: str, count: int) -> None:
    """Raise ``stream``'s replicas to ``count`` if it has fewer (never lowers them)."""
    info = await js.stream_info(stream)
    had = info.config.num_replicas or 1
    if had >= count:
        return
    info.config.num_replicas = count
    try:
        await js.update_stream(info.config)
    except nats.errors.Error as exc:
        raise ConfigError(f"stream {stream} has {had} replica(s) and could not be scaled to "
                          f"{count} ({exc}); the cluster needs at least {count} JetStream servers, or set "
                          f"{REPLICAS_ENV} lower") from exc


async def object_store(js: JetStreamContext, bucket: str, description: str) -> ObjectStore:
    """The object store ``bucket`` (file storage), created at :func:`replicas` or scaled up to them."""
    count = replicas()
    try:
        objects = await js.object_store(bucket)
    except nats.js.errors.BucketNotFoundError:
        config = api.ObjectStoreConfig(storage=api.StorageType.FILE, description=description, replicas=count)
        return await js.create_object_store(bucket, config=config)
    await scale(js, f"OBJ_{bucket}", count)
    return objects


async def key_value(js: JetStreamContext, config: api.KeyValueConfig) -> KeyValue:
    """The key-value store ``config.bucket``, created with ``config`` at :func:`replicas` or scaled up to them."""
    count = replicas()
    try:
        kv = await js.key_value(config.bucket)
    except nats.js.errors.BucketNotFoundError:
        config.replicas = count
        return await js.create_key_value(config)
    await scale(js, f"KV_{config.bucket}", count)
    return kv
