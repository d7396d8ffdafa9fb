"""The executor service: runs approved plans wave by wave under the guard-rails, and rolls back.

``spec()`` is the pipeline service (consumes ``change.approved``, ``execution.resumed``,
``rollback.approved``); ``run(nc)`` serves the operator commands resume / rollback / cancel.
See ``services/executor/README.md``.
"""

from __future__ import annotations

import anyio
from nats.aio.client import Client as NATS

from services.common.runtime import ServiceSpec
from services.executor.commands import CommandService
from services.executor.config import ExecutorConfig, load_config
from services.executor.service import Executor
from services.guard import worker
from services.security.scope import Scope

NAME = "executor"
CONSUMES = ("change.approved", "execution.resumed", "rollback.approved", "change.stalled")


def spec(config: ExecutorConfig | None = None, scope: Scope | None = None) -> ServiceSpec:
    """The executor as a pipeline service (policy from ``config``, else ``UPM_EXECUTOR_CONFIG``; local writes
    within ``scope``, else :func:`~services.security.scope.load_scope`)."""
    policy = config or load_config()
    return ServiceSpec(
        name=NAME,
        consumes=CONSUMES,
        handle=Executor(policy, scope).handle,
        concurrency=policy.service.concurrency,
        ack_wait=policy.service.ack_wait_s,
        on_stop=worker.close,  # the idle workers of its steps and probes (local writer, aws) end with the executor
    )


async def run(nc: NATS, *, ready: anyio.Event | None = None) -> None:
    """Serve ``upm.cmd.*.resume|rollback|cancel`` until cancelled (queue group: run any number)."""
    await CommandService(nc).run(ready=ready)


__all__ = ["CONSUMES", "NAME", "CommandService", "Executor", "ExecutorConfig", "load_config", "run", "spec"]
