"""Which failures are worth another attempt, per CLI (pure).

An attempt ends in one of five verdicts: ``ok``; ``tls`` (certificate verification failed: the
one insecure retry may follow, if the policy allows it); ``retryable`` (connection refused or
reset, throttling, a 5xx: worth a retry after a backoff); ``timeout`` (the step's own timeout:
not retried, the step is over budget); ``fatal`` (anything else: retrying would fail the same).
A :class:`CliProfile` classifies by exit code and stderr patterns and says how its CLI skips TLS
verification: a flag inserted after the program (kubectl, aws, curl) or an environment variable
(az). psql has none, so a certificate error there is final.
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from services.guard.errors import PolicyInvalid

Kind = Literal["ok", "tls", "retryable", "timeout", "fatal"]


class Verdict(msgspec.Struct, frozen=True):
    """How an attempt ended and why, in a few words."""

    kind: Kind
    reason: str


_TLS = (
    r"(?i)certificate verify failed|CERTIFICATE_VERIFY_FAILED|SSL certificate problem|"
    r"x509: certificate|certificate signed by unknown authority|self[- ]signed certificate|"
    r"unable to get local issuer certificate|unable to verify the first certificate|"
    r"certificate has expired|tls: failed to verify certificate|SSLCertVerificationError|"
    r"SSL validation failed"
)

_COMMON: tuple[tuple[str, str], ...] = (
    (r"(?i)connection refused|ECONNREFUSED|could not connect to the endpoint", "connection refused"),
    (
        r"(?i)connection reset|ECONNRESET|connection was closed|ConnectionClosedError|"
        r"connection aborted|server closed the connection unexpectedly",
        "connection reset",
    ),
    (
        r"(?i)throttl|rate exceeded|too many requests|TooManyRequests|SlowDown|RequestLimitExceeded|"
        r"\b429\b",
        "throttled",
    ),
    (
        r"(?i)\b(?:HTTP/[0-9.]+|status(?: code)?:?|returned error:|error)\s*\(?5[0-9][0-9]\b|"
        r"Internal ?Server ?Error|Bad Gateway|Service ?Unavailable|Gateway Time-?out|InternalError|"
        r"InternalFailure|currently unable to handle the request",
        "server error (5xx)",
    ),
)


class CliProfile(msgspec.Struct, frozen=True, kw_only=True):
    """Retry and TLS-fallback rules for one CLI."""

    name: str
    retryable_codes: dict[int, str] = msgspec.field(default_factory=dict)
    retryable_patterns: tuple[tuple[str, str], ...] = _COMMON
    tls_codes: frozenset[int] = frozenset()
    tls_pattern: str = _TLS
    tls_args: tuple[str, ...] = ()
    tls_env: dict[str, str] = msgspec.field(default_factory=dict)

    @property
    def has_tls_fallback(self) -> bool:
        """True when the CLI has a way to skip certificate verification."""
        return bool(self.tls_args or self.tls_env)

    def classify(self, rc: int, stderr: str, *, timed_out: bool) -> Verdict:
        """The verdict on an attempt that exited with ``rc`` and wrote ``stderr``."""
        if timed_out:
            return Verdict("timeout", "the step's timeout expired")
        if rc == 0:
            return Verdict("ok", "")
        if rc in self.tls_codes or re.search(self.tls_pattern, stderr):
            return Verdict("tls", "TLS certificate verification failed")
        if rc in self.retryable_codes:
            return Verdict("retryable", self.retryable_codes[rc])
        for pattern, reason in self.retryable_patterns:
            if re.search(pattern, stderr):
                return Verdict("retryable", reason)
        return Verdict("fatal", f"exit status {rc}")

    def with_tls_fallback(
        self, argv: tuple[str, ...], env: dict[str, str]
    ) -> tuple[tuple[str, ...], dict[str, str]]:
        """``argv`` and ``env`` changed to skip certificate verification."""
        return (argv[0], *self.tls_args, *argv[1:]), env | self.tls_env


PROFILES: dict[str, CliProfile] = {
    profile.name: profile
    for profile in (
        CliProfile(name="generic"),
        CliProfile(
            name="curl",
            retryable_codes={
                7: "connection refused",
                52: "empty reply (connection reset)",
                55: "send failure (connection reset)",
                56: "receive failure (connection reset)",
            },
            tls_codes=frozenset({60}),
            tls_args=("--insecure",),
        ),
        CliProfile(name="kubectl", tls_args=("--insecure-skip-tls-verify",)),
        CliProfile(name="aws", tls_args=("--no-verify-ssl",)),
        CliProfile(name="az", tls_env={"AZURE_CLI_DISABLE_CONNECTION_VERIFICATION": "1"}),
        CliProfile(
            name="psql",
            retryable_patterns=(
                *_COMMON,
                (r"the database system is (?:starting up|shutting down)", "server starting or stopping"),
                (r"too many (?:clients|connections)", "throttled (too many connections)"),
            ),
        ),
    )
}
"""Built-in profiles: generic, curl, kubectl, aws, az, psql."""

_VERSION_SUFFIX = re.compile(r"-[0-9]+(?:\.[0-9]+)*\Z")


def profile_for(program: str, name: str | None = None) -> CliProfile:
    """The profile called ``name``, else the one for ``program`` (``kubectl-1.29`` → kubectl),
    else ``generic``."""
    if name is not None:
        if name not in PROFILES:
            raise PolicyInvalid(f"unknown CLI profile {name!r}; known: {', '.join(sorted(PROFILES))}.")
        return PROFILES[name]
    base = _VERSION_SUFFIX.sub("", program.rpartition("/")[2])
    return PROFILES.get(base, PROFILES["generic"])
