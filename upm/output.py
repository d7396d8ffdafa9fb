"""Output shared by every row-printing command: ``--json``, ``--csv`` or a table.

A command adds the options with :func:`upm.cliargs.output_options` and prints with :func:`emit`;
``--json`` prints one JSON document (an object, or an array of rows), so scripts can rely on it.
msgspec and the codec are imported when something is printed, not when ``upm --help`` loads this.
"""

from __future__ import annotations

import argparse
import contextvars
import csv
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any

JSON_ERRORS: contextvars.ContextVar[bool] = contextvars.ContextVar("upm_json_errors", default=False)
"""Set by ``upm``'s entry point when the command runs with ``--json``: errors are JSON too."""


def error(message: str, code: int, *, program: str = "upm") -> int:
    """Report a failed command: ``upm: message`` on stderr, or, under ``--json``, one JSON document
    ``{"ok": false, "error": {"message": ..., "exit": code}}`` on stdout. Returns ``code``."""
    if JSON_ERRORS.get():
        from events.codec import json_dumps

        sys.stdout.write(json_dumps({"ok": False, "error": {"message": message, "exit": code}}) + "\n")
    else:
        sys.stderr.write(f"{program}: {message}\n")
    return code


def emit(
    value: Any,
    args: argparse.Namespace,
    *,
    text: str | None = None,
    out: IO[str] | None = None,
) -> None:
    """Print ``value`` as JSON, CSV or a table (or ``text``, when given, for people)."""
    import msgspec

    from events.codec import json_dumps

    stream = out or sys.stdout
    if getattr(args, "json", False):
        stream.write(json_dumps(value) + "\n")
        return
    rows = _rows(msgspec.to_builtins(value))  # columns in the order the rows name them (a query's own)
    if getattr(args, "csv", False):
        writer = csv.DictWriter(stream, fieldnames=_columns(rows), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})
        return
    stream.write((text if text is not None else render_table(rows)) + "\n")


def render_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain fixed-width table; an empty list renders as ``(no rows)``."""
    if not rows:
        return "(no rows)"
    columns = _columns(rows)
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _rows(value: Any) -> list[Mapping[str, Any]]:
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, list):
        return [v if isinstance(v, Mapping) else {"value": v} for v in value]
    return [{"value": value}]


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    from events.codec import json_dumps

    return json_dumps(value)
