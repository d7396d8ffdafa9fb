"""Errors of the executor and its credentials brokers.

    ExecutorError                  anything the executor refuses or cannot do
    ├── ExecutorConfigInvalid      the executor configuration file is wrong (path, field, why)
    └── CommandNotAllowed          resume / rollback / cancel is not allowed in the change's state

    UpmServiceError
    └── CredentialsUnavailable     (services.security.credentials) a broker could not issue or revoke

A limit that stops a change (blast radius, deadline) or an anomaly that pauses it is not an
error: it is recorded as an event (``execution.failed`` with its ``rule``, ``execution.paused``).
Every message says what failed, why, and what to do.
"""

from __future__ import annotations


class ExecutorError(Exception):
    """Base of every error raised by :mod:`services.executor`."""


class ExecutorConfigInvalid(ExecutorError):
    """The executor configuration is wrong; the message names the file and the field."""


class CommandNotAllowed(ExecutorError):
    """An operator command that the change's current state does not allow; ``rule`` names why."""

    def __init__(self, message: str, *, rule: str) -> None:
        super().__init__(message)
        self.rule = rule
