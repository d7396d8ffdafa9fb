"""Errors of the projections layer: projector, SQL over the bus, KPIs, score, evidence, audit.

    ProjectionError                     anything the projections layer refuses or cannot do
    ├── MigrationError                  a schema migration is unknown, edited after it ran, or failed
    ├── QueryRejected                   a query was refused before running (not one SELECT; a malformed request)
    ├── QueryFailed                     DuckDB could not run a query (its message is kept)
    │   └── QueryTimeout                the query ran past its time limit and was interrupted
    ├── ProjectionUnavailable           no projector answered and no database file can be opened
    ├── EvidenceNotFound                no evidence pack is stored for that change
    ├── EvidenceInvalid                 a pack does not verify (names the file or the check)
    │   └── EvidenceUntrusted           a pack is intact, but signed by a key the verifier was not given
    ├── AuditFailed                     `upm audit verify` found missing events, a broken chain, a head it fails
    └── AccessDenied                    the caller may not read that: role, visibility, or `upm serve` token

Signing-key problems are ``events.signing.SigningKeyError`` (the auditor raises them too).
Every message says what failed, why, and what to do.
"""

from __future__ import annotations


class ProjectionError(Exception):
    """Base of every error raised by :mod:`projections`."""


class MigrationError(ProjectionError):
    """A migration is unknown, was edited after it was applied, or failed to apply."""


class QueryRejected(ProjectionError):
    """The query was refused before it ran; ``rule`` names the rule it broke."""

    def __init__(self, message: str, *, rule: str) -> None:
        super().__init__(message)
        self.rule = rule


class QueryFailed(ProjectionError):
    """DuckDB could not run the query."""


class QueryTimeout(QueryFailed):
    """The query ran past its time limit."""


class ProjectionUnavailable(ProjectionError):
    """Neither a projector nor a database file is there to answer."""


class EvidenceNotFound(ProjectionError):
    """No evidence pack is stored for the change."""


class EvidenceInvalid(ProjectionError):
    """An evidence pack does not verify; ``file`` names the member (or ``""`` for the pack)."""

    def __init__(self, message: str, *, file: str = "", check: str) -> None:
        super().__init__(message)
        self.file = file
        self.check = check


class AuditFailed(ProjectionError):
    """The log does not verify; ``event_id`` / ``seq`` name where (empty / 0 for a head)."""

    def __init__(self, message: str, *, event_id: str = "", seq: int = 0, check: str) -> None:
        super().__init__(message)
        self.event_id = event_id
        self.seq = seq
        self.check = check


class AccessDenied(ProjectionError):
    """The caller may not read that; ``rule`` says why: ``rbac`` (their roles), ``visibility`` (a change
    they may not see, worded like a missing one) or ``token`` (``upm serve``: no or unknown token)."""

    def __init__(self, message: str, *, rule: str = "rbac") -> None:
        super().__init__(message)
        self.rule = rule


class EvidenceUntrusted(EvidenceInvalid):
    """A pack is intact and its signature verifies, but with a key that is not one of the trusted keys:
    anyone can sign a pack with a key of their own, so this is no evidence of what UPM recorded."""

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"the pack is intact, but signed by {key_id}, which is not one of the trusted keys; trust the signing "
            "key of the UPM that made it: --public-key HEX, --trust FILE, or its data folder (--data DIR, with "
            "keys/*.pub and trust/*.pub)",
            file="manifest.sig", check="untrusted-key",
        )
        self.key_id = key_id
