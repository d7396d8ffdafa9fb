"""Errors of the auditor's evidence packs and of the audit of the log.

    AuditorError                        anything the auditor's checks refuse
    ├── EvidenceInvalid                 a pack does not verify (names the file or the check)
    │   └── EvidenceUntrusted           a pack is intact, but signed by a key the verifier was not given
    └── AuditFailed                     `upm audit verify` found missing events, a broken chain, a head it fails

Every message says what failed, why, and what to do.
"""

from __future__ import annotations


class AuditorError(Exception):
    """Base of the errors of :mod:`services.auditor`'s packs and audit."""


class EvidenceInvalid(AuditorError):
    """An evidence pack does not verify; ``file`` names the member (or ``""`` for the pack)."""

    def __init__(self, message: str, *, file: str = "", check: str) -> None:
        super().__init__(message)
        self.file = file
        self.check = check


class AuditFailed(AuditorError):
    """The log does not verify; ``event_id`` / ``seq`` name where (empty / 0 for a head)."""

    def __init__(self, message: str, *, event_id: str = "", seq: int = 0, check: str) -> None:
        super().__init__(message)
        self.event_id = event_id
        self.seq = seq
        self.check = check


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
