"""Signed log heads kept outside the stream: ``<data>/heads/log-heads.jsonl``.

The auditor's witness appends every head it signs here as well as to the stream (one JSON object
a line: seq, size, root, signed_at, key_id, signature), fsynced, readable by its owner only. A
truncated or rewritten stream cannot take these with it: `upm audit verify` checks the stream
against them (:mod:`services.auditor.audit`). A crash can leave a torn last line; it is skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from services.auditor.audit import KnownHead
from services.auditor.errors import AuditFailed
from services.auditor.evidence import LogHead

HEADS_DIR = "heads"
HEADS_FILE = "log-heads.jsonl"

_decode = msgspec.json.Decoder(LogHead).decode


def path(data_dir: Path | str) -> Path:
    return Path(data_dir) / HEADS_DIR / HEADS_FILE


def append(data_dir: Path | str, head: LogHead) -> None:
    """Add ``head`` to the data folder's heads file and flush it to disk before returning."""
    file = path(data_dir)
    file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, msgspec.json.encode(head) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def read(data_dir: Path | str) -> list[KnownHead]:
    """The heads in the data folder's heads file (none when there is no file yet)."""
    file = path(data_dir)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        return []
    out: list[KnownHead] = []
    complete = raw.split(b"\n")[:-1]  # what follows the last newline is empty, or a write a crash cut short
    for number, line in enumerate(complete, start=1):
        try:
            head = _decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise AuditFailed(
                f"{file} line {number} is not a signed head ({exc}): the file was edited or damaged; restore it "
                "from backup, or pin the heads you trust with --expect-head", check="heads-file",
            ) from exc
        out.append(KnownHead(size=head.size, root=head.root, origin=f"{file} line {number}", seq=head.seq,
                             signed_at=head.signed_at, key_id=head.key_id, signature=head.signature))
    return out
