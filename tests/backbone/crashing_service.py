"""Run the real planner, but die by SIGKILL right after its first append and before the ack.

Used by test_runtime.py as a separate OS process: ``python crashing_service.py NATS_URL``.
"""

from __future__ import annotations

import os
import signal
import sys

import anyio
import nats

from events.model import Event
from services.common.runtime import Context, Runner, ServiceSpec
from services.planner import service as planner

ACK_WAIT = 1.0


def crash_spec() -> ServiceSpec:
    real = planner.spec()

    async def handle(ctx: Context, history: list[Event], event: Event) -> None:
        await real.handle(ctx, history, event)
        os.kill(os.getpid(), signal.SIGKILL)

    return ServiceSpec(name=real.name, consumes=real.consumes, handle=handle, ack_wait=ACK_WAIT)


async def main(url: str) -> None:
    nc = await nats.connect(url)
    await Runner(nc, crash_spec()).run()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
