"""Running a plan's commands through the guarded runner, and reading resources back.

Shared by pre-flight (prerequisite checks), the executor (guards and mutations) and the
verifier (read-backs): all of them run only pinned CLIs, as argv, under the guard-rails.
"""

from __future__ import annotations

import functools
import os
import shlex
from typing import Any

from events.model import StepOutput
from events.plan import Command, ResourceRef, Step
from providers import PINS, compare, observe
from services.guard import (
    DEFAULT_PATH,
    DEFAULT_PINS,
    CommandRefused,
    GuardError,
    Pin,
    PinTable,
    Redactor,
    RunResult,
    RunSpec,
    run,
)


@functools.cache
def pin_table() -> PinTable:
    """The guard's default pins plus every provider's pinned CLI, binary by binary."""
    return DEFAULT_PINS.with_pins(
        *(
            Pin(binary=binary, version=cli.version, version_args=cli.version_argv[1:], pattern=cli.version_pattern)
            for cli in PINS.values()
            for binary in cli.binaries
        )
    )


def step_env() -> dict[str, str]:
    """The explicit, minimal environment every step gets (nothing inherited by accident)."""
    return {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def step_path() -> str:
    """Where steps find their pinned CLIs (``UPM_STEP_PATH`` overrides)."""
    return os.environ.get("UPM_STEP_PATH", DEFAULT_PATH)


def to_output(result: RunResult) -> StepOutput:
    return StepOutput(
        rc=result.rc,
        stdout=result.stdout,
        stderr=result.stderr,
        stdout_trunc=result.stdout_truncated,
        stderr_trunc=result.stderr_truncated,
        attempts=len(result.attempts),
        duration_ms=round(sum(a.duration_ms for a in result.attempts), 3),
    )


async def run_command(
    command: Command,
    *,
    timeout_s: float = 60.0,
    stdin: str | None = None,
    target: str = "local",
    max_attempts: int = 3,
    redactor: Redactor | None = None,
) -> StepOutput:
    """Run one command under the guard-rails; a refused command becomes rc 126 with the reason."""
    spec = RunSpec(
        timeout_s=timeout_s,
        max_attempts=max_attempts,
        env=step_env(),
        path=step_path(),
        target=target,
        pins=pin_table(),
        stdin=None if stdin is None else stdin.encode(),
    )
    try:
        result = await run(shlex.join(command.argv), spec, redactor=redactor)
    except CommandRefused as refused:
        return StepOutput(rc=126, stderr=f"refused by the guard ({refused.rule}): {refused}")
    except GuardError as err:
        return StepOutput(rc=127, stderr=f"could not run: {err}")
    return to_output(result)


async def read_back(ref: ResourceRef, command: Command, *, timeout_s: float = 30.0) -> dict[str, Any] | None:
    """Observe a resource: its fields, or ``None`` when it does not exist."""
    out = await run_command(command, timeout_s=timeout_s)
    return observe(ref, out.rc, out.stdout)


async def already_done(step: Step) -> bool:
    """Whether the step's guard read-back already shows its desired state."""
    if step.guard is None:
        return False
    observed = await read_back(step.resource, step.guard, timeout_s=step.timeout_s)
    return not compare(step.desired, observed)
