"""Fixtures of the projections tests.

This folder is named like the ``projections`` package; ``pythonpath = ["."]`` in the pytest
configuration puts the repository on ``sys.path``, so ``import projections`` finds the real
package (a regular package wins over this folder, which would only be a namespace portion).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from nats.aio.client import Client as NATS

from events.store import EventStore
from projections.projector import Projector
from services.access import Access


@pytest.fixture
async def projector(nc: NATS, store: EventStore, tmp_path: Path) -> AsyncIterator[Projector]:
    """A projector task on the test's server, writing to ``tmp_path / "proj"`` (open mode: no access file)."""
    p = Projector(nc, tmp_path / "proj", batch_max=500, access=Access.open())
    ready = anyio.Event()
    task = asyncio.ensure_future(p.run(ready=ready))
    with anyio.fail_after(10):
        await ready.wait()
    yield p
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
