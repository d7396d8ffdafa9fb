"""Errors of the UPM services and their shared runtime.

    UpmServiceError                 anything a service, the gateway or the CLI refuses or cannot do
    ├── ConfigError                 a setting, file or environment variable is wrong or missing
    ├── ServerStartFailed           the embedded nats-server did not come up
    ├── NotRunning                  no UPM is running where one was expected (`upm up` first)
    └── CommandRejected             a command failed validation; ``field`` and ``rule`` say why

Every message says what failed, why, and what to do.
"""

from __future__ import annotations


class UpmServiceError(Exception):
    """Base of every error raised by :mod:`services`."""


class ConfigError(UpmServiceError):
    """A setting, file or environment variable is wrong or missing."""


class ServerStartFailed(UpmServiceError):
    """The embedded nats-server did not come up."""


class NotRunning(UpmServiceError):
    """No running UPM was found."""


class CommandRejected(UpmServiceError):
    """A command failed validation."""

    def __init__(self, message: str, *, field: str = "", rule: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.rule = rule
