"""The running ``upm up`` instances of this user: one small file per data folder, so ``upm down``
without ``--data`` finds the instance ``upm up --data DIR`` started.

The registry lives in ``$XDG_STATE_HOME/upm/instances`` (default ``~/.local/state/upm/instances``);
each entry is a file named by a digest of the folder's path, holding that path. An entry whose
folder no longer has a live ``upm up`` is stale: :func:`running` drops it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

STATE_HOME_ENV = "XDG_STATE_HOME"


def registry() -> Path:
    base = os.environ.get(STATE_HOME_ENV) or str(Path.home() / ".local" / "state")
    return Path(base) / "upm" / "instances"


def _entry(folder: Path) -> Path:
    return registry() / hashlib.sha256(str(folder).encode()).hexdigest()[:32]


def register(folder: Path) -> None:
    """Record ``folder`` as running (best effort: a registry that cannot be written costs only the lookup)."""
    with contextlib.suppress(OSError):
        registry().mkdir(parents=True, exist_ok=True, mode=0o700)
        _entry(folder).write_text(str(folder))


def unregister(folder: Path) -> None:
    with contextlib.suppress(OSError):
        _entry(folder).unlink(missing_ok=True)


def running(is_running: Callable[[Path], bool]) -> list[Path]:
    """The registered data folders ``is_running`` says still run (stale entries are removed), sorted."""
    found: list[Path] = []
    with contextlib.suppress(OSError):
        for entry in registry().iterdir():
            try:
                folder = Path(entry.read_text().strip())
            except OSError:
                continue
            if is_running(folder):
                found.append(folder)
            else:
                unregister(folder)
    return sorted(found)
