"""The pre-flight service: checks before any mutation, policy packs, risk, lanes, approvals, windows.

``plan.compiled`` → quotas, prerequisites and the dry run (read-backs) → risk and budget score →
every Rego policy pack of the tenant → ``preflight.failed`` (every reason listed), or
``preflight.passed`` and the lane: ``change.approved`` (auto, naming the rule), ``change.scheduled``
(waiting for the maintenance window) or ``approval.requested`` (people must approve, through
``upm approve`` / ``upm deny``). See ``services/preflight/README.md``.

:func:`spec` is the ``plan.compiled`` consumer run by the shared runtime; :func:`run` is the
approve/deny command subscriber and the release loop of scheduled changes; :class:`Host` runs all
three (``Host(nc).run(ready=...)``, the shape ``upm.app.HOSTED`` expects).
"""

from __future__ import annotations

from services.preflight.config import PreflightConfig, load_config, parse_config
from services.preflight.core import decide_command, decide_pending, decide_preflight, decide_release
from services.preflight.service import NAME, Host, Preflight, assess, run, spec
from services.preflight.trail import TrailEntry, approval_trail

__all__ = [
    "NAME",
    "Host",
    "Preflight",
    "PreflightConfig",
    "TrailEntry",
    "approval_trail",
    "assess",
    "decide_command",
    "decide_pending",
    "decide_preflight",
    "decide_release",
    "load_config",
    "parse_config",
    "run",
    "spec",
]
