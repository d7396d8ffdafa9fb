"""The state file of a running ``upm up``: ``<data>/state.json`` (the NATS URL, the pids of every process, the
restarts, the targets' endpoints; never a secret). Plain JSON, read and written atomically; this module imports
nothing heavy, so the supervisor can keep it without loading NATS or TLS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.common.errors import ConfigError

STATE_FILE = "state.json"


def read_state(folder: Path) -> dict[str, Any] | None:
    """The state ``upm up`` wrote for the data folder ``folder``; ``None`` when nothing runs for it."""
    path = folder / STATE_FILE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); remove it and run `upm up` again") from exc
    return state if isinstance(state, dict) else None


def write_state(folder: Path, state: dict[str, Any]) -> None:
    """Replace the state file at once (written aside, then renamed), readable by its owner only."""
    path = folder / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)
