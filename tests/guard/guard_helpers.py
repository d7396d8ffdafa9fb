"""Shared helpers of the guard tests (a uniquely named module, imported by the test modules)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from services.guard import DEFAULT_PINS, Pin, PinTable

MakeScript = Callable[..., Path]
"""The ``make_script`` fixture: ``make_script(name, body, version='1.0') -> Path``."""


def pinned(*scripts: Path, version: str = "1.0") -> PinTable:
    """The default pins plus ``scripts`` pinned by absolute path."""
    return DEFAULT_PINS.with_pins(*(Pin(binary=os.fspath(s), version=version) for s in scripts))


def running(pid: int) -> bool:
    """Alive and not a zombie (orphans wait for init to reap them); never reaps a child itself."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")
