"""The limits of a SQL request over the bus (:mod:`projections.sqlservice`) and of the projector's memory,
importable without DuckDB (the CLI shows them as defaults in ``--help``)."""

from __future__ import annotations

import os
import re

from projections.errors import ProjectionUnavailable

DEFAULT_ROWS = 1000
MAX_ROWS = 10_000
DEFAULT_TIMEOUT_S = 10.0
MAX_TIMEOUT_S = 60.0
MEMORY_ENV = "UPM_PROJECTOR_MEMORY"
"""A cap on the buffer pool of each file the projector writes (e.g. ``256MB``). Unset, DuckDB keeps up to 80 % of
the machine's memory and the projector grows with the pages it has touched; capped, it stays bounded, but a query
that needs more (the KPIs over a large log) fails with "Out of Memory" and names this variable."""
_SIZE = re.compile(r"\d+(?:\.\d+)?\s*(?:[KMGT]i?B)", re.IGNORECASE)


def memory_limit() -> str | None:
    """The cap :data:`MEMORY_ENV` asks for (``None``: DuckDB's default); a value that is no size is refused."""
    limit = os.environ.get(MEMORY_ENV, "").strip()
    if not limit:
        return None
    if not _SIZE.fullmatch(limit):
        raise ProjectionUnavailable(f"{MEMORY_ENV}={limit!r} is not a size: give one such as 256MB or 1GB, or unset "
                                    "it to leave DuckDB its default (up to 80 % of the machine's memory)")
    return limit
