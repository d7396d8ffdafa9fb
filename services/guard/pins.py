"""Version-pinned CLIs: only a pinned program runs, and only at its pinned version.

A pin names a program as the command writes it (a bare name, found on the step's PATH, or an
absolute path) and the version it must report. A versioned name such as ``kubectl-1.29`` carries
its version in the name (:meth:`Pin.versioned`). The first time a process runs a binary, the
runner asks the binary itself (``--version`` or the pin's ``version_args``), extracts the version
with the pin's pattern and compares: equal, or the pin is a prefix at a dot boundary (pin
``1.29`` accepts ``1.29.4``, not ``1.290``). The verdict is cached for the life of the process,
keyed by the resolved file (its path, inode and mtime), so a replaced binary is checked again.

Shells, interpreters and program runners (:func:`is_forbidden`) can never be pinned: pinning one
would hand the command to a shell after all.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping

import msgspec

from services.guard.errors import (
    BinaryNotFound,
    ForbiddenBinary,
    PinMismatch,
    PolicyInvalid,
    SpawnFailed,
    UnpinnedBinary,
)
from services.guard.proc import run_pipeline

_FORBIDDEN = re.compile(
    r"(?:sh|bash|dash|zsh|ksh|mksh|pdksh|yash|fish|csh|tcsh|rbash|busybox|toybox|env|xargs|nohup|"
    r"timeout|nice|ionice|stdbuf|setsid|sudo|su|doas|runuser|chroot|unshare|nsenter|script|expect|"
    r"watch|parallel|find|awk|gawk|mawk|nawk|sed|perl|ruby|node|nodejs|php|lua|tclsh|wish|osascript|"
    r"python[0-9.]*|pypy[0-9.]*|ssh|eval|exec|command|builtin|strace|ltrace|gdb)"
)
_VERSIONED_NAME = re.compile(r".+-(?P<version>[0-9]+(?:\.[0-9]+)*)")
_REPORT_TIMEOUT_S = 10.0
_REPORT_BYTES = 16 * 1024

Identity = tuple[int, int, int]
"""A binary file's device, inode and mtime (ns): another file, or the same one rewritten, differs."""


def is_forbidden(program: str) -> bool:
    """True for a shell, interpreter or program runner (by the basename of ``program``)."""
    return _FORBIDDEN.fullmatch(program.rpartition("/")[2]) is not None


class Pin(msgspec.Struct, frozen=True, kw_only=True):
    """``binary`` must report ``version``: ``version_args`` ask for the report, ``pattern``'s
    first group (or whole match) extracts the version from it."""

    binary: str
    version: str
    version_args: tuple[str, ...] = ("--version",)
    pattern: str = r"([0-9]+(?:\.[0-9]+)+)"

    @classmethod
    def versioned(
        cls,
        binary: str,
        *,
        version_args: tuple[str, ...] = ("--version",),
        pattern: str = r"([0-9]+(?:\.[0-9]+)+)",
    ) -> Pin:
        """A pin whose version is the name's suffix: ``kubectl-1.29`` must report 1.29(.x)."""
        found = _VERSIONED_NAME.fullmatch(os.path.basename(binary))
        if found is None:
            raise PolicyInvalid(f"{binary!r} carries no version in its name (expected NAME-1.2[.3]).")
        return cls(binary=binary, version=found["version"], version_args=version_args, pattern=pattern)

    def accepts(self, reported: str) -> bool:
        """True when ``reported`` is the pinned version, or extends it after a dot."""
        return reported == self.version or reported.startswith(self.version + ".")


class PinTable:
    """Program name (as written in commands) → :class:`Pin`."""

    def __init__(self, pins: Iterable[Pin] = ()) -> None:
        table: dict[str, Pin] = {}
        for pin in pins:
            if is_forbidden(pin.binary):
                raise PolicyInvalid(
                    f"{pin.binary!r} is a shell, interpreter or program runner and can never be pinned."
                )
            if "/" in pin.binary and not os.path.isabs(pin.binary):
                raise PolicyInvalid(f"pin {pin.binary!r}: give a bare name or an absolute path.")
            if pin.binary in table:
                raise PolicyInvalid(f"{pin.binary!r} is pinned twice; keep one pin per program.")
            table[pin.binary] = pin
        self._pins = table

    @classmethod
    def from_versions(cls, versions: Mapping[str, str]) -> PinTable:
        """A table from ``{program: version}`` with the default ``--version`` report."""
        return cls(Pin(binary=name, version=version) for name, version in versions.items())

    def with_pins(self, *pins: Pin) -> PinTable:
        """A new table: this one plus ``pins`` (which replace same-named entries)."""
        replaced = {pin.binary for pin in pins}
        return PinTable([*(p for p in self._pins.values() if p.binary not in replaced), *pins])

    def __contains__(self, program: object) -> bool:
        return program in self._pins

    def __iter__(self) -> Iterator[Pin]:
        return iter(self._pins.values())

    def __len__(self) -> int:
        return len(self._pins)

    def __repr__(self) -> str:
        return f"PinTable({sorted(self._pins)})"

    def require(self, program: str, position: int | None = None) -> Pin:
        """The pin for ``program``; refuses forbidden and unpinned programs (pure)."""
        pin = self._pins.get(program)
        if pin is not None:
            return pin  # forbidden programs never get into the table
        if is_forbidden(program):
            raise ForbiddenBinary(
                f"{program!r} at position {position} is a shell, interpreter or program runner; "
                "UPM never runs one. Call the CLI that does the work directly.",
                token=program,
                position=position,
            )
        raise UnpinnedBinary(
            f"{program!r} at position {position} is not pinned: only version-pinned CLIs run. "
            "Add a Pin for it (binary and version) to the step's pin table.",
            token=program,
            position=position,
        )

    async def verify(self, program: str, *, path: str) -> str:
        """Resolve ``program`` on ``path`` and check its version report against its pin.

        Returns the absolute path to execute. The report runs once per process per binary file.
        Raises :class:`UnpinnedBinary`, :class:`ForbiddenBinary`, :class:`BinaryNotFound` or
        :class:`PinMismatch` (which names both versions).
        """
        return (await self.verified(program, path=path))[0]

    async def verified(self, program: str, *, path: str) -> tuple[str, Identity]:
        """:meth:`verify`, with the identity of the file whose report was checked."""
        pin = self.require(program)
        resolved, identity = _resolve(program, path)
        key = (resolved, *identity, pin.version_args, pin.pattern)
        reported = _REPORTED.get(key)
        if reported is None:
            _refuse_disguised(program, resolved)
            reported = await _report(resolved, pin, path)
            _REPORTED[key] = reported
        if not pin.accepts(reported):
            raise PinMismatch(
                f"{program!r} is pinned to version {pin.version} but {resolved} reports {reported} "
                f"(asked with {' '.join(pin.version_args)}). Install version {pin.version}, "
                "or change the pin after reviewing the new version.",
                token=program,
                pinned=pin.version,
                reported=reported,
            )
        return resolved, identity


_REPORTED: dict[tuple[str, int, int, int, tuple[str, ...], str], str] = {}
"""Per-process cache: binary (path, device, inode, mtime) and how it was asked → the version it reported."""


def _resolve(program: str, path: str) -> tuple[str, Identity]:
    """The absolute path to execute, and its file's identity (device, inode, mtime)."""
    if os.path.isabs(program):
        found = program if os.path.isfile(program) and os.access(program, os.X_OK) else None
    else:
        found = shutil.which(program, path=path)
    if found is None:
        raise BinaryNotFound(
            f"{program!r} is pinned but is not an executable file "
            f"{'' if os.path.isabs(program) else f'on PATH {path!r}'}; install it or fix the step's PATH.",
            token=program,
        )
    stat = os.stat(found)
    return os.path.abspath(found), (stat.st_dev, stat.st_ino, stat.st_mtime_ns)


def _refuse_disguised(program: str, resolved: str) -> None:
    """Refuse a shell or interpreter hiding behind another name (a symlink, a copy's path)."""
    real = os.path.realpath(resolved)
    if is_forbidden(real):
        raise ForbiddenBinary(
            f"{program!r} resolves to {real!r}, a shell, interpreter or program runner; UPM never runs one.",
            token=program,
        )


async def _report(resolved: str, pin: Pin, path: str) -> str:
    """The version ``resolved`` reports, or ``"unknown (...)"`` when none can be read."""
    try:
        done = await run_pipeline(
            [[resolved, *pin.version_args]],
            envs=[{"PATH": path}],
            cwd="/",
            timeout_s=_REPORT_TIMEOUT_S,
            grace_s=1.0,
            keep_bytes=_REPORT_BYTES,
        )
    except SpawnFailed as exc:
        return f"unknown (could not run it: {exc})"
    if done.timed_out:
        return f"unknown (no version report within {_REPORT_TIMEOUT_S:g} s)"
    text = (done.stdout.data + done.stderr.data).decode("utf-8", "replace")
    found = re.search(pin.pattern, text)
    if found is None:
        first = text.strip().splitlines()[0][:80] if text.strip() else "no output"
        return f"unknown (report: {first!r})"
    return found.group(1) if found.groups() else found.group()


_COREUTILS = (
    "mkdir chmod chown rm rmdir stat ln cp mv cat touch install dd printf ls readlink realpath "
    "sleep true echo head tail wc cut sort uniq"
)

DEFAULT_PINS = PinTable(
    [
        *(Pin(binary=name, version="9.1") for name in _COREUTILS.split()),
        Pin(binary="grep", version="3.8"),
        Pin(binary="jq", version="1.6"),
    ]
)
"""Debian 12's coreutils 9.1 (what the local provider uses), grep 3.8 and jq 1.6.

``test`` is not pinned: it cannot report its version (``test --version`` is a true test of a
non-empty string); use ``stat`` to check for a path.
"""
