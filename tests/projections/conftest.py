"""Fixtures of the projections tests.

This folder is named like the ``projections`` package; ``pythonpath = ["."]`` in the pytest
configuration puts the repository on ``sys.path``, so ``import projections`` finds the real
package (a regular package wins over this folder, which would only be a namespace portion).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from events.store import EventStore
from projections.projector import Projector
from services.security.access import Access

Host = Callable[..., Awaitable[None]]  # the host fixture (tests/conftest.py)


@pytest.fixture
async def projector(nc: NATS, store: EventStore, tmp_path: Path, host: Host) -> Projector:
    """A projector task on the test's server, writing to ``tmp_path / "proj"`` (open mode: no access file)."""
    p = Projector(nc, tmp_path / "proj", batch_max=500, access=Access.open())
    await host(p)
    return p
