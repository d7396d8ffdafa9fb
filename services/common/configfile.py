"""Reading a YAML or JSON document that must hold a mapping: configuration files and specs.

One reader for every such file, so they all fail the same clear way: which file, what is wrong
(not a regular file, larger than :data:`MAX_FILE_BYTES`, not UTF-8 text, not YAML/JSON and where,
nested deeper than :data:`events.jsonbounds.MAX_DEPTH`, a repeated key, a YAML alias, not a
mapping), and what to do. YAML aliases (``*name``) are refused outright: a few hundred bytes of
nested aliases expand to billions of nodes for whoever walks the document. ``check_text`` sees the text before it is parsed (a spec's
secret scan), so a parse error can never be the first place its content shows up.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import yaml
from yaml.nodes import MappingNode, Node

from events import jsonbounds
from events.errors import InvalidEvent

MAX_FILE_BYTES = 1024 * 1024


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing aliases, duplicate keys and nesting deeper than :data:`jsonbounds.MAX_DEPTH`."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.YAMLError(f"line {mark.line + 1}: YAML aliases (*name) are not accepted; write the value out")
        start = self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent)
        if start:
            self._depth += 1
            if self._depth > jsonbounds.MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.YAMLError(f"line {mark.line + 1}: nested more than {jsonbounds.MAX_DEPTH} deep; flatten it")
        try:
            return super().compose_node(parent, index)
        finally:
            if start:
                self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[object, object]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.YAMLError(f"line {key_node.start_mark.line + 1}: the key {key!r} is repeated; "
                                     "keep one of them")
            seen.add(key if isinstance(key, (str, int, float, bool)) else id(key))
        return super().construct_mapping(node, deep=deep)


def _parse(text: str, is_json: bool) -> Any:
    """The document in ``text``; ``ValueError`` / ``yaml.YAMLError`` naming what is wrong."""
    if is_json:
        try:
            jsonbounds.check(text.encode("utf-8", "surrogatepass"), what="the file")
        except InvalidEvent as exc:
            raise ValueError(str(exc)) from None
        return json.loads(text)
    return yaml.load(text, Loader=_BoundedLoader)


def parse_documents(text: str) -> list[Any]:
    """Every document of a multi-document YAML ``text`` (``---`` separated), read as safely as one
    mapping is (no aliases, no repeated keys, bounded nesting); ``yaml.YAMLError`` otherwise."""
    return list(yaml.load_all(text, Loader=_BoundedLoader))


def read_bytes(path: str | Path, *, what: str, error: type[Exception], limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, or ``error`` saying why not (a
    directory, a device such as /dev/zero, a FIFO, a missing or unreadable path, too large)."""
    file = Path(path)
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise error(f"cannot read {what} {file}: {exc.strerror or exc}; check the path") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{what} {file} is not a regular file; give the path of a file")
        if info.st_size > limit:
            raise error(f"{what} {file} has {info.st_size} bytes; the limit is {limit}")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise error(f"cannot read {what} {file}: {exc.strerror or exc}; check the path") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise error(f"{what} {file} is larger than {limit} bytes")
    return data


def read_text(path: str | Path, *, what: str, error: type[Exception]) -> str:
    """The UTF-8 text of a regular file of at most :data:`MAX_FILE_BYTES`, or ``error`` saying why not."""
    file = Path(path)
    data = read_bytes(file, what=what, error=error)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{what} {file} is not UTF-8 text; give a YAML or JSON file") from None
    if "\0" in text:
        raise error(f"{what} {file} holds NUL bytes, so it is not a text file; give a YAML or JSON file")
    return text


def read_mapping(
    path: str | Path, *, what: str, error: type[Exception], check_text: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """The mapping in a YAML or JSON file (JSON by ``.json`` suffix), or ``error`` saying why not."""
    file = Path(path)
    text = read_text(file, what=what, error=error)
    if check_text is not None:
        check_text(text)
    try:
        doc = _parse(text, file.suffix == ".json")
    except (ValueError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise error(
            f"{what} {file}{where} is not valid {'JSON' if file.suffix == '.json' else 'YAML'}: {exc}"
        ) from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise error(f"{what} {file} must hold a mapping at the top level, not {type(doc).__name__}")
    return cast(dict[str, Any], doc)
