"""Errors of the guarded command runner.

    GuardError                          anything the guard refuses or cannot do
    ├── CommandRefused                  a rule refused the command; nothing ran (.rule .token .position)
    │   ├── EmptyCommand                "empty"            no program, or an empty pipe stage
    │   ├── UnterminatedQuote           "quote"            a ' or " is never closed
    │   ├── MetacharacterRefused        "meta"             ; && || \\ $( ` < > >> newline (and &)
    │   ├── ControlCharacterRefused     "control"          NUL, CR and other control characters
    │   ├── RelativeProgramPath         "relative-path"    ./tool or bin/tool: name it or give its absolute path
    │   ├── PipeTargetRefused           "pipe-allow-list"  a stage after | that is not an allowed filter
    │   ├── FilterOptionRefused         "filter-option"    a filter option that writes/reads files or runs programs
    │   ├── FilterOperandRefused        "filter-operand"   a file operand after |: filters read stdin only
    │   ├── FilterProgramRefused        "filter-program"   a jq program that reads files or the environment
    │   ├── UnpinnedBinary              "unpinned"         a program with no entry in the pin table
    │   ├── ForbiddenBinary             "forbidden-binary" a shell, interpreter or program runner
    │   ├── BinaryNotFound              "not-found"        a pinned program that is not on the step's PATH
    │   └── PinMismatch                 "pin-mismatch"     the program reports another version than its pin
    ├── SpawnFailed                     the OS would not start a stage (missing cwd, permissions)
    └── PolicyInvalid                   a policy, pin table or run spec that cannot be honoured (also ValueError)

Every message says what failed, why, and what to do. Messages, tokens and everything else the
runner hands back have been through the step's redactor, so they are safe to log.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import ClassVar, Self


class GuardError(Exception):
    """Base of every error raised by :mod:`services.guard`."""

    def redacted(self, redact: Callable[[str], str]) -> Self:
        """A copy whose message went through ``redact`` (for anything that is logged)."""
        clone = copy.copy(self)
        clone.args = (redact(str(self)),)
        return clone


class CommandRefused(GuardError):
    """A guard rule refused the command before anything ran.

    ``rule`` is a short stable id (``"meta"``, ``"pipe-allow-list"``...), ``token`` the offending
    text (a metacharacter, a program, an option) and ``position`` its 0-based character offset in
    the command string when it has one.
    """

    rule: ClassVar[str] = "refused"

    def __init__(self, message: str, *, token: str = "", position: int | None = None) -> None:
        super().__init__(message)
        self.token = token
        self.position = position

    def redacted(self, redact: Callable[[str], str]) -> Self:
        """A copy whose message and token went through ``redact`` (for anything that is logged)."""
        clone = super().redacted(redact)
        clone.token = redact(self.token)
        return clone


class EmptyCommand(CommandRefused):
    """The command, or one stage of its pipeline, names no program."""

    rule = "empty"


class UnterminatedQuote(CommandRefused):
    """A quote is opened and never closed."""

    rule = "quote"


class MetacharacterRefused(CommandRefused):
    """A live shell metacharacter (chaining, redirection, substitution, escape, newline)."""

    rule = "meta"


class ControlCharacterRefused(CommandRefused):
    """A control character (NUL, carriage return...) that has no place in a command."""

    rule = "control"


class RelativeProgramPath(CommandRefused):
    """A program named by a relative path, which would depend on the working directory."""

    rule = "relative-path"


class PipeTargetRefused(CommandRefused):
    """A stage after ``|`` whose program is not on the pipe allow-list."""

    rule = "pipe-allow-list"


class FilterOptionRefused(CommandRefused):
    """An option of an allowed filter that would write files, read files or run programs."""

    rule = "filter-option"


class FilterOperandRefused(CommandRefused):
    """An operand of an allowed filter that names a file (filters after ``|`` read stdin only)."""

    rule = "filter-operand"


class FilterProgramRefused(CommandRefused):
    """A filter program (jq) using a builtin that reads files or the environment."""

    rule = "filter-program"


class UnpinnedBinary(CommandRefused):
    """A program with no entry in the pin table."""

    rule = "unpinned"


class ForbiddenBinary(CommandRefused):
    """A shell, interpreter or program runner: these can never be pinned or run."""

    rule = "forbidden-binary"


class BinaryNotFound(CommandRefused):
    """A pinned program that cannot be found on the step's PATH."""

    rule = "not-found"


class PinMismatch(CommandRefused):
    """The program's own version report disagrees with its pin."""

    rule = "pin-mismatch"

    def __init__(
        self,
        message: str,
        *,
        token: str = "",
        position: int | None = None,
        pinned: str = "",
        reported: str = "",
    ) -> None:
        super().__init__(message, token=token, position=position)
        self.pinned = pinned
        self.reported = reported


class SpawnFailed(GuardError):
    """The operating system would not start a stage of the pipeline."""


class PolicyInvalid(GuardError, ValueError):
    """A policy, pin table or run spec that the guard cannot honour as written."""
