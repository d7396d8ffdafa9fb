"""Deliberately broken builds, for the conformance tests only: with ``UPM_TEST_BREAK=NAME`` and this
folder on ``PYTHONPATH``, every UPM process (services started by the supervisor included) breaks one
behaviour before anything else imports it. Never on the path outside tests/conformance."""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any


def _rebind(original: Any, replacement: Any) -> None:
    """Every loaded module's name for ``original`` now means ``replacement`` (``from m import f`` copies)."""
    for module in list(sys.modules.values()):
        for name, value in list(vars(module).items()) if module is not None else ():
            if value is original:
                setattr(module, name, replacement)


def _drift_ignores_rollbacks() -> None:
    """The desired-state inventory (the drift baseline) ignores what rollbacks undid."""
    from events import desired
    from events.model import RollbackStepCompleted, RollbackStepSkipped

    evolve = desired.evolve

    def broken(inventory: Any, event: Any) -> Any:
        if isinstance(event.payload, RollbackStepCompleted | RollbackStepSkipped):
            return inventory
        return evolve(inventory, event)

    _rebind(evolve, broken)


def _unknown_as_absent() -> None:
    """A read-back that cannot answer is taken as proof the resource is absent."""
    from providers import readback

    def broken(rc: int, stderr: str, *, timed_out: bool = False) -> Any:
        return readback.Absent(proof="(broken build: unknown taken as absent)")

    _rebind(readback.unknown, broken)


def _approvals_without_sod() -> None:
    """Pre-flight lets the initiator approve their own change."""
    from services.preflight import core

    decide = core.decide_command

    def broken(state: Any, verb: str, cmd: Any, config: Any, now: Any) -> Any:
        if verb == "approve" and cmd.by == state.initiator:
            state = dataclasses.replace(state, initiator="(nobody: broken build)")
        return decide(state, verb, cmd, config, now)

    _rebind(decide, broken)


def _secrets_unmasked() -> None:
    """The guard's redactor masks nothing: neither registered secret values nor what its patterns recognise."""
    from services.guard import redact

    def broken(self: Any, text: str, seen: set[str] | None = None) -> str:
        return text

    redact.Redactor.redact = broken  # type: ignore[method-assign]


BREAKERS = {"drift-ignores-rollbacks": _drift_ignores_rollbacks, "unknown-as-absent": _unknown_as_absent,
            "approvals-without-sod": _approvals_without_sod, "secrets-unmasked": _secrets_unmasked}

if os.environ.get("UPM_TEST_BREAK"):
    BREAKERS[os.environ["UPM_TEST_BREAK"]]()
