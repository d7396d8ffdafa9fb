"""Errors of the pre-flight service.

    PreflightError                  anything pre-flight refuses or cannot do
    ├── PreflightConfigError        the configuration file is wrong (names the key and what to write)
    ├── PolicyLoadError             a policy pack cannot be loaded (names the file and the line)
    ├── PolicyEvaluationError       a loaded pack failed on an input, or answered in the wrong shape
    └── ApprovalRefused             an approve/deny command is not allowed now (``field``, ``rule``)

Every message says what failed, why, and what to do. ``ApprovalRefused`` becomes the command's
``{"ok": false, "error": {...}}`` reply; nothing is appended for it.
"""

from __future__ import annotations

from services.common.errors import ConfigError


class PreflightError(Exception):
    """Base of every error raised by :mod:`services.preflight`."""


class PreflightConfigError(PreflightError, ConfigError):
    """The pre-flight configuration is wrong; the message names the key and what to write."""


class PolicyLoadError(PreflightError, ConfigError):
    """A policy pack cannot be loaded; ``file`` and ``line`` say where (line 0: not known)."""

    def __init__(self, message: str, *, file: str = "", line: int = 0) -> None:
        where = f"{file}:{line}: " if file and line else f"{file}: " if file else ""
        super().__init__(f"{where}{message}")
        self.file = file
        self.line = line


class PolicyEvaluationError(PreflightError):
    """A loaded pack failed on an input, or answered in a shape pre-flight does not understand."""


class ApprovalRefused(PreflightError):
    """An approve or deny command is not allowed now; ``field`` and ``rule`` say why."""

    def __init__(self, message: str, *, field: str = "change_id", rule: str = "state") -> None:
        super().__init__(message)
        self.field = field
        self.rule = rule
