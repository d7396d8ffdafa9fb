"""A projector process; with KILL_AT > 0 it SIGKILLs itself inside its KILL_AT-th file transaction.

    python projector_process.py NATS_URL DB_FOLDER KILL_AT BATCH_MAX
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import anyio
import duckdb
import nats

from projections import ingest
from projections.lifecycle import Lifecycles
from projections.projector import Projector

original = ingest.apply_batch
writes = 0


def dying(con: duckdb.DuckDBPyConnection, records: list[tuple[int, bytes]], lifecycles: Lifecycles | None = None) -> int:
    global writes
    seq = original(con, records, lifecycles)  # rows written, transaction still open
    writes += 1
    if 0 < int(sys.argv[3]) <= writes:
        os.kill(os.getpid(), signal.SIGKILL)
    return seq


ingest.apply_batch = dying  # type: ignore[assignment]


async def main() -> None:
    nc = await nats.connect(sys.argv[1])
    await Projector(nc, sys.argv[2], batch_max=int(sys.argv[4])).run()


anyio.run(main)
