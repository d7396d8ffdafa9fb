"""One codec for the whole contract: canonical JSON, digests and readable JSON (events are encoded and
decoded by :mod:`events.model`).

Canonical JSON is msgspec's JSON with keys in sorted order and no whitespace; it is what every
hash in UPM (event chain, plan hash, baselines, evidence manifests) is computed over, so the same
value always hashes the same in any process, whatever ``PYTHONHASHSEED`` says.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

_canonical = msgspec.json.Encoder(order="sorted")
_readable = msgspec.json.Encoder(order="deterministic")


def canonical_json(value: Any) -> bytes:
    """Canonical JSON bytes of ``value`` (Structs, dicts, tuples...): sorted keys, no spaces."""
    return _canonical.encode(value)


def to_builtins(value: Any) -> Any:
    """Structs, tuples and the like as plain JSON-ready Python values (fields in declaration order)."""
    return msgspec.to_builtins(value, order="deterministic")


def json_dumps(value: Any) -> str:
    """One deterministic JSON document for ``value`` (Structs included), for people and tools to read."""
    return _readable.encode(value).decode()


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def digest(value: Any) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``value``."""
    return "sha256:" + sha256_hex(canonical_json(value))


def decode_json_object(data: bytes) -> dict[str, Any]:
    """Bytes as a plain JSON object; schema-free, so hashes survive schema evolution. Stored bytes
    are not bounded like ingress (see :mod:`events.jsonbounds`), so nesting too deep for the
    decoder is a ``ValidationError`` here, like any other malformed record."""
    try:
        value = msgspec.json.decode(data)
    except RecursionError:
        raise msgspec.ValidationError("the JSON nests too deeply to be read") from None
    if not isinstance(value, dict):
        raise msgspec.ValidationError("expected a JSON object")
    return value
