"""The executor service as its own OS process: ``python executor_process.py NATS_URL``.

Its policy comes from ``UPM_EXECUTOR_CONFIG``. Used by the crash test, which kills it with
SIGKILL in the middle of a change and starts another one.
"""

from __future__ import annotations

import sys

import anyio
import nats

from services import executor
from services.common.runtime import Runner


async def main(url: str) -> None:
    nc = await nats.connect(url)
    ready = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: Runner(nc, executor.spec()).run(ready=ready))
        await ready.wait()
        sys.stdout.write("ready\n")
        sys.stdout.flush()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
