"""Reading a YAML or JSON document that must hold a mapping: configuration files and specs.

One reader for every such file, so they all fail the same clear way: which file, what is wrong
(unreadable, not YAML/JSON and where, not a mapping), and what to do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import yaml


def read_mapping(path: str | Path, *, what: str, error: type[Exception]) -> dict[str, Any]:
    """The mapping in a YAML or JSON file (JSON by ``.json`` suffix), or ``error`` saying why not."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read {what} {file}: {exc.strerror or exc}; check the path") from None
    try:
        doc = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
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
