"""Where a UPM process keeps its files and which copy of a service it is: read once, handed down.

The composition root (:mod:`upm.app`) builds one :class:`Settings` per process — from its flags, else the
environment the supervisor gave it — and hands it to each hosted service's factory. Nothing below the
composition root changes ``os.environ`` to pass a setting on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DATA_ENV = "UPM_DATA"  # the data folder (default ./.upm)
INSTANCE_ENV = "UPM_INSTANCE"  # which copy of a service a process is (upm up --replicas), from 1


def data_dir(explicit: str | Path | None = None) -> Path:
    """The data folder: ``explicit``, else ``UPM_DATA``, else ``./.upm`` (resolved)."""
    return Path(explicit or os.environ.get(DATA_ENV) or ".upm").resolve()


@dataclass(frozen=True)
class Settings:
    """One process's settings: its data folder and its copy number."""

    data: Path
    instance: str = "1"

    @classmethod
    def from_env(cls, data: str | Path | None = None) -> Settings:
        """``data`` (a flag) over the environment's ``UPM_DATA``; the copy from ``UPM_INSTANCE``."""
        return cls(data=data_dir(data), instance=os.environ.get(INSTANCE_ENV, "1"))
