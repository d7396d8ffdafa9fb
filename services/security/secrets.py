"""Secret references resolved at run time: where values come from, and the one resolution hook.

A plan, its events, packs and logs hold only references (:mod:`events.secrets`: ``secret:NAME``
as a whole value, ``${secret:NAME}`` inside file content). The executor resolves them just before
a step's stdin is fed (:func:`services.guard.steps.execute`), from its configured sources in order:

- ``env``: the environment variable ``UPM_SECRET_<NAME>`` of the executor process;
- ``dir``: a directory holding one file per secret, named ``NAME``, readable by its owner only
  (mode 0600 or stricter: a file others may read is refused); one trailing newline is dropped.

Any other store plugs in as a :class:`SecretSource`. Every resolved value is masked in all output
(the run's redactor). The verifier resolves the same references to compare digests: a file's
desired ``size``/``sha256`` (:data:`events.secrets.RESOLVED_AT_RUN_TIME` in the plan) are
computed from the resolved content by :func:`resolved_desired`, never stored as values.

Configured by the ``secrets`` section of the executor's and the verifier's configuration::

    secrets: {env: true, dir: /etc/upm/secrets}
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec

from events.plan import Step
from events.secrets import RESOLVED_AT_RUN_TIME, references, substitute
from providers import CATALOG
from services.common.errors import UpmServiceError
from services.guard.redact import MIN_SECRET_LENGTH

ENV_PREFIX = "UPM_SECRET_"


class UnresolvedSecret(UpmServiceError):
    """A secret reference no source could resolve; the message names the reference and where it
    was looked for, never a value."""


class SecretSource(Protocol):
    """Where secret values come from."""

    def lookup(self, name: str) -> str | None:
        """The value of secret ``name``, ``None`` when this source does not hold it."""
        ...

    def where(self, name: str) -> str:
        """Where this source looked for ``name``, in words (for an error message)."""
        ...


class EnvSource:
    """``UPM_SECRET_<NAME>`` in this process's environment."""

    def lookup(self, name: str) -> str | None:
        return os.environ.get(ENV_PREFIX + name)

    def where(self, name: str) -> str:
        return f"the environment variable {ENV_PREFIX}{name}"


class DirSource:
    """A directory of files, one per secret (``<dir>/<NAME>``, mode 0600 or stricter)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def lookup(self, name: str) -> str | None:
        path = self.folder / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UnresolvedSecret(f"cannot read secret file {path}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise UnresolvedSecret(f"secret file {path} is not a regular file")
            if info.st_mode & 0o077:
                raise UnresolvedSecret(
                    f"secret file {path} has mode {stat.S_IMODE(info.st_mode):04o}: others may read it; "
                    f"run chmod 600 {path}"
                )
            text = handle.read().decode("utf-8", errors="strict")
        return text[:-1] if text.endswith("\n") else text

    def where(self, name: str) -> str:
        return f"the file {self.folder / name}"


class SecretResolver:
    """Resolves references from its sources, first hit wins."""

    def __init__(self, sources: Sequence[SecretSource]) -> None:
        self.sources = tuple(sources)

    def value(self, name: str) -> str:
        for source in self.sources:
            found = source.lookup(name)
            if found is not None:
                if len(found) < MIN_SECRET_LENGTH:
                    raise UnresolvedSecret(
                        f"secret reference secret:{name} ({source.where(name)}) has fewer than "
                        f"{MIN_SECRET_LENGTH} characters, too short to be masked in output; use a real secret"
                    )
                return found
        looked = " and ".join(s.where(name) for s in self.sources) or "no source (none is configured)"
        raise UnresolvedSecret(
            f"secret reference secret:{name} could not be resolved: looked in {looked}; set it there "
            "(see the `secrets` section of the executor configuration)"
        )

    def resolve(self, text: str) -> tuple[str, tuple[str, ...]]:
        """``text`` with its references replaced, and the values used (to mask them)."""
        values = {name: self.value(name) for name in references(text)}
        return substitute(text, values.__getitem__), tuple(values.values())


class SecretsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``secrets`` section: which sources resolve references, in this order (env, then dir)."""

    env: bool = True
    dir: str | None = None

    def resolver(self) -> SecretResolver:
        sources: list[SecretSource] = [EnvSource()] if self.env else []
        if self.dir:
            sources.append(DirSource(self.dir))
        return SecretResolver(sources)


def resolve_stdin(stdin: str | None, resolver: SecretResolver | None) -> tuple[str | None, tuple[str, ...]]:
    """The hook before a step runs: its stdin with references resolved, and the values to mask."""
    if stdin is None or not references(stdin):
        return stdin, ()
    if resolver is None:
        raise UnresolvedSecret(
            f"the step's input references {', '.join('secret:' + n for n in references(stdin))}, "
            "but this runner has no secret sources; only the executor resolves references"
        )
    return resolver.resolve(stdin)


def resolved_desired(step: Step, resolver: SecretResolver) -> dict[str, Any]:
    """``step.desired`` with the fields the plan left to run time (a file's size and digest)
    computed from the resolved stdin; when a reference cannot be resolved, those fields say so
    (and verification fails, naming it)."""
    pending = [field for field, value in step.desired.items() if value == RESOLVED_AT_RUN_TIME]
    rtype = CATALOG.get(step.resource.type)
    if not pending or step.stdin is None or rtype is None or rtype.derive is None or rtype.stdin_field is None:
        return dict(step.desired)
    try:
        content, _ = resolver.resolve(step.stdin)
    except UnresolvedSecret as err:
        return step.desired | {field: f"unresolved: {err}" for field in pending}
    derived = rtype.derive({rtype.stdin_field: content, "path": step.resource.name})
    return step.desired | {field: derived.get(field) for field in pending}
