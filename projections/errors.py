"""Errors of the projections layer: projector, SQL over the bus, KPIs, score, evidence queries.

    ProjectionError                     anything the projections layer refuses or cannot do
    ├── MigrationError                  a schema migration is unknown, edited after it ran, or failed
    ├── QueryRejected                   a query was refused before running (not one SELECT; a malformed request)
    ├── QueryFailed                     DuckDB could not run a query (its message is kept)
    │   └── QueryTimeout                the query ran past its time limit and was interrupted
    ├── ProjectionUnavailable           no projector answered and no database file can be opened
    ├── EvidenceNotFound                no evidence pack is stored for that change
    └── AccessDenied                    the caller may not read that: role, visibility, or `upm serve` token

Evidence packs and the audit of the log are the auditor's (:mod:`services.auditor.errors`).
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




class AccessDenied(ProjectionError):
    """The caller may not read that; ``rule`` says why: ``rbac`` (their roles), ``visibility`` (a change
    they may not see, worded like a missing one) or ``token`` (``upm serve``: no or unknown token)."""

    def __init__(self, message: str, *, rule: str = "rbac") -> None:
        super().__init__(message)
        self.rule = rule
