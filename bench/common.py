"""Shared bits of the benchmarks: percentiles, the machine line, a temp embedded server."""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from upm.natsserver import EmbeddedNats


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}"


@contextmanager
def embedded_server() -> Iterator[EmbeddedNats]:
    with tempfile.TemporaryDirectory(prefix="upm-bench-") as tmp:
        server = EmbeddedNats(Path(tmp))
        server.start()
        try:
            yield server
        finally:
            server.stop()
