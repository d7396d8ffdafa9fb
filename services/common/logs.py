"""Logging, configured in one place: one JSON object per line.

Every record has ``time`` (RFC 3339 UTC, milliseconds), ``service``, ``level``, ``logger`` and
``message``; ``change_id`` and ``event_id`` when the record was made while a service handled an
event (the runtime sets them with :func:`context`), the exception's traceback as ``exc`` when
there is one, and any ``extra={"fields": {...}}`` the caller adds. Under ``upm up`` each process
writes to standard error, which is ``<data>/logs/<service>.log``.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

_context: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar("upm_log_context", default=())
_service: contextvars.ContextVar[str | None] = contextvars.ContextVar("upm_log_service", default=None)


@contextlib.contextmanager
def serving(service: str) -> Iterator[None]:
    """Records made inside (in this task and the tasks it starts) name ``service``: one process may host
    several services, and each record still says whose it is."""
    token = _service.set(service)
    try:
        yield
    finally:
        _service.reset(token)


@contextlib.contextmanager
def context(**fields: str) -> Iterator[None]:
    """Add ``fields`` (e.g. ``change_id``, ``event_id``) to every record made inside, in this task
    and in the tasks it starts."""
    token = _context.set((*_context.get(), *fields.items()))
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON (see the module docstring for its keys)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "service": _service.get() or self.service,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **dict(_context.get()),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class LastError(logging.Handler):
    """Remembers the latest record at ``error`` or above of each service this process hosts, and of the
    process itself (made outside any service, e.g. by the connection): ``upm health`` shows them."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.latest: dict[str | None, dict[str, str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.latest[_service.get()] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "logger": record.name, "message": record.getMessage()[:500]}

    def of(self, service: str) -> dict[str, str] | None:
        """The newer of ``service``'s latest error and its process's own."""
        found = [e for e in (self.latest.get(service), self.latest.get(None)) if e is not None]
        return max(found, key=lambda e: e["time"]) if found else None


LAST_ERROR = LastError()


def track_errors() -> None:
    """Have :data:`LAST_ERROR` see every record of this process (idempotent)."""
    root = logging.getLogger()
    if LAST_ERROR not in root.handlers:
        root.addHandler(LAST_ERROR)


def configure(service: str, stream: TextIO | None = None, level: int = logging.INFO) -> None:
    """Send every record of this process at ``level`` and above, as JSON lines, to ``stream``
    (standard error by default); replaces any handler configured before."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.addHandler(LAST_ERROR)
    root.setLevel(level)
    logging.getLogger("asyncio").setLevel(logging.ERROR)  # TLS close noise; see upm/cli.py
    logging.captureWarnings(True)
