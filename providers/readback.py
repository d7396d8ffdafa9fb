"""What a read-back tells: the resource is present (its fields), absent (proven), or unknown (why).

A read-back proves absence only by the answer its resource type declares (:class:`Absence`):
``stat`` saying "No such file or directory", an AWS service's not-found error code, a psql query
that ran and returned no row. Any other failure (a certificate the CLI refused, a password the
server refused, a connection refused, a time-out, the guard refusing the command) says nothing
about the resource: it is :class:`Unknown`, with the exit status, a short stderr summary and a
classification, never absent. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["tls", "auth", "timeout", "refused", "unreachable", "guard", "error"]

TIMED_OUT = 124
GUARD_REFUSED = 126
COULD_NOT_RUN = 127
_SUMMARY_CHARS = 240


@dataclass(frozen=True, slots=True)
class Present:
    """The resource is there; ``fields`` are what the read-back observed (with ``exists: True``)."""

    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Absent:
    """The read-back proved the resource absent; ``proof`` is what said so (an error code, "no row")."""

    proof: str = ""

    @property
    def fields(self) -> None:
        """Absent has no fields (so ``compare(desired, seen.fields)`` works on present and absent)."""
        return None


@dataclass(frozen=True, slots=True)
class Unknown:
    """The read-back did not answer: its exit status, a short stderr summary and why (``kind``)."""

    rc: int
    kind: Kind
    summary: str

    @property
    def reason(self) -> str:
        """One line for a check's detail or a step's error: ``tls (exit 255): SSL validation failed…``."""
        return f"{self.kind} (exit {self.rc}): {self.summary}"


Observed = Present | Absent | Unknown
Known = Present | Absent


@dataclass(frozen=True, slots=True)
class Absence:
    """What a failed read-back must say to prove its resource absent: stderr matching one of
    ``patterns`` (regular expressions), with an exit status in ``rcs`` when given. ``NEVER``: no
    failure proves absence (psql read-backs, whose "no row" is a success with empty output)."""

    patterns: tuple[str, ...] = ()
    rcs: frozenset[int] = frozenset()

    def proof(self, rc: int, stderr: str) -> str | None:
        """The text that proves absence in a failed read-back's stderr, or ``None``."""
        if rc in (0, TIMED_OUT, GUARD_REFUSED, COULD_NOT_RUN) or (self.rcs and rc not in self.rcs):
            return None
        for pattern in self.patterns:
            found = re.search(pattern, stderr)
            if found is not None:
                return found.group(0)
        return None


NEVER = Absence()

# The order matters: a TLS failure often mentions the connection too.
_KINDS: tuple[tuple[Kind, str], ...] = (
    ("tls", r"(?i)certificate verify failed|CERTIFICATE_VERIFY_FAILED|SSL validation failed|x509: certificate|"
            r"certificate signed by unknown authority|self[- ]signed certificate|tls: failed to verify|"
            r"SSLCertVerificationError|SSL certificate problem|unable to get local issuer certificate|"
            r"certificate has expired|SSL error|SSL SYSCALL"),
    ("auth", r"(?i)password authentication failed|permission denied|access ?denied|\(AccessDenied\w*\)|"
             r"InvalidClientTokenId|UnrecognizedClientException|SignatureDoesNotMatch|ExpiredToken|"
             r"InvalidAccessKeyId|\(403\)|Forbidden|Unauthorized|AuthorizationFailed|AuthenticationFailed|"
             r"Please run 'az login'|must be logged in|no pg_hba\.conf entry|role \"[^\"]*\" does not exist"),
    ("refused", r"(?i)connection refused|ECONNREFUSED|was refused"),
    ("unreachable", r"(?i)could not connect to the endpoint|could not translate host name|name or service not "
                    r"known|temporary failure in name resolution|no route to host|network is unreachable|"
                    r"unable to connect to the server|no such host|connection to server on socket|"
                    r"connection reset|server closed the connection"),
    ("timeout", r"(?i)\btimed out\b|timeout expired|Read timeout on|Connect timeout on|i/o timeout|deadline exceeded"),
)


def unknown(rc: int, stderr: str, *, timed_out: bool = False) -> Unknown:
    """Why a read-back that proved nothing did not answer, from its exit status and stderr. The
    summary is the last stderr line that shows the reason (kubectl repeats its log lines, psql adds
    a hint after it), else the last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if timed_out or rc == TIMED_OUT:
        return Unknown(rc=rc, kind="timeout", summary=_summary(lines, rc))
    if rc in (GUARD_REFUSED, COULD_NOT_RUN):
        return Unknown(rc=rc, kind="guard", summary=_summary(lines, rc))
    for kind, pattern in _KINDS:
        said = [line for line in lines if re.search(pattern, line)]
        if said:
            return Unknown(rc=rc, kind=kind, summary=_summary(said, rc))
    return Unknown(rc=rc, kind="error", summary=_summary(lines, rc))


def _summary(lines: list[str], rc: int) -> str:
    if not lines:
        return f"exited {rc} with nothing on stderr"
    line = lines[-1]
    return line if len(line) <= _SUMMARY_CHARS else line[: _SUMMARY_CHARS - 1] + "…"
