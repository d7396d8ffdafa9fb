"""The guarded command runner: never a shell, pinned CLIs, bounded and redacted output.

Pure core: :func:`check` parses a command into a :class:`Pipeline` and applies the guard rules
(metacharacters, pipe allow-list, filter options, pins). Thin async shell: :func:`run` verifies
pins against the binaries' own version reports and runs the pipeline with timeouts, retries,
the TLS fallback, a rate limit and redaction. No NATS here; the executor and verifier use it.
See ``services/guard/README.md``.
"""

from __future__ import annotations

from services.guard.classify import PROFILES, CliProfile, Verdict, profile_for
from services.guard.errors import (
    BinaryNotFound,
    CommandRefused,
    ControlCharacterRefused,
    EmptyCommand,
    FilterOperandRefused,
    FilterOptionRefused,
    FilterProgramRefused,
    ForbiddenBinary,
    GuardError,
    MetacharacterRefused,
    PinMismatch,
    PipeTargetRefused,
    PolicyInvalid,
    RelativeProgramPath,
    SpawnFailed,
    UnpinnedBinary,
    UnterminatedQuote,
)
from services.guard.filters import BUILTIN_FILTERS, OPTIONAL, FilterSpec
from services.guard.parse import SPEC_METACHARACTERS, Pipeline, check
from services.guard.pins import DEFAULT_PINS, Pin, PinTable, is_forbidden
from services.guard.policy import DEFAULT_PIPE_ALLOW_LIST, DEFAULT_POLICY, GuardPolicy
from services.guard.ratelimit import RateLimiter
from services.guard.redact import MASK, PATTERN_NAMES, Redactor
from services.guard.runner import DEFAULT_PATH, Attempt, GuardWarning, RunResult, RunSpec, run

__all__ = [
    "BUILTIN_FILTERS",
    "DEFAULT_PATH",
    "DEFAULT_PINS",
    "DEFAULT_PIPE_ALLOW_LIST",
    "DEFAULT_POLICY",
    "MASK",
    "OPTIONAL",
    "PATTERN_NAMES",
    "PROFILES",
    "SPEC_METACHARACTERS",
    "Attempt",
    "BinaryNotFound",
    "CliProfile",
    "CommandRefused",
    "ControlCharacterRefused",
    "EmptyCommand",
    "FilterOperandRefused",
    "FilterOptionRefused",
    "FilterProgramRefused",
    "FilterSpec",
    "ForbiddenBinary",
    "GuardError",
    "GuardPolicy",
    "GuardWarning",
    "MetacharacterRefused",
    "Pin",
    "PinMismatch",
    "PinTable",
    "PipeTargetRefused",
    "Pipeline",
    "PolicyInvalid",
    "RateLimiter",
    "Redactor",
    "RelativeProgramPath",
    "RunResult",
    "RunSpec",
    "SpawnFailed",
    "UnpinnedBinary",
    "UnterminatedQuote",
    "Verdict",
    "check",
    "is_forbidden",
    "profile_for",
    "run",
]
