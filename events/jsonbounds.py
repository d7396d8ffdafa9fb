"""Bounds on untrusted JSON, checked before it is decoded: nesting depth and duplicate keys.

msgspec (like most JSON decoders) recurses once per nesting level, so a message of a few KB of
``[[[[…`` raises ``RecursionError`` inside the decoder; and it keeps the last of duplicate keys,
so ``{"a": 1, "a": 2}`` means something else to a decoder that keeps the first. Neither has an
option to refuse them, so every bus ingress (commands, queries, SQL and evidence requests) and
every pack read offline runs :func:`check` first: one linear scan with a regular expression that
steps over whole strings, counting brackets and collecting each object's keys.

The scan does not validate JSON (the decoder does, afterwards); it only has to agree with a
decoder on what is a string, which it does for every prefix a decoder accepts.
"""

from __future__ import annotations

import re

import msgspec

from events.errors import InvalidEvent

MAX_DEPTH = 32
"""Deepest nesting of arrays and objects a message may have (a spec needs fewer than ten)."""

_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"(?:[ \t\r\n]*(:))?|[\[\]{}]', re.DOTALL)


def check(data: bytes, *, max_depth: int = MAX_DEPTH, what: str = "the message") -> None:
    """Raise :class:`InvalidEvent` (field ``body``, rule ``depth`` or ``duplicate-key``) if ``data``
    nests deeper than ``max_depth`` or an object in it repeats a key."""
    stack: list[set[bytes] | None] = []
    for match in _TOKEN.finditer(data):
        token = match.group()
        first = token[0]
        if first == 0x22:  # a string: a key when a colon follows
            keys = stack[-1] if stack else None
            if match.group(1) is None or keys is None:
                continue
            key = _key(token[: token.rindex(b'"') + 1])
            if key in keys:
                shown = key.decode("utf-8", "replace")[:64]
                raise InvalidEvent(
                    f"{what} repeats the key {shown!r} in one object; JSON readers disagree on which one counts, "
                    "so send each key once",
                    field="body",
                    rule="duplicate-key",
                )
            keys.add(key)
        elif first in b"[{":
            if len(stack) >= max_depth:
                raise InvalidEvent(
                    f"{what} nests arrays and objects more than {max_depth} deep; flatten it",
                    field="body",
                    rule="depth",
                )
            stack.append(set() if first == 0x7B else None)
        elif stack:
            stack.pop()


def _key(quoted: bytes) -> bytes:
    """A key as UTF-8 after its escapes are resolved (``"a"`` and ``"\\u0061"`` are one key)."""
    if b"\\" not in quoted:
        return quoted[1:-1]
    try:
        return str(msgspec.json.decode(quoted)).encode("utf-8", "surrogatepass")
    except msgspec.DecodeError:
        return quoted  # an invalid escape: the decoder refuses the message afterwards
