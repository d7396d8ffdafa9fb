"""The witness's Merkle tree kept in the data folder: ``<data>/heads/merkle-leaves.bin``.

Next to the signed heads file (:mod:`services.auditor.heads`): the leaf hashes of the tree, 32 bytes
each in stream order, up to a head already kept there (written on the witness's interval, not in a
pack's way; fsynced, readable by its owner only). A restarted witness rebuilds the interior nodes
from them level by level (no event is read for it) and keeps the tree only if its root at the size
of the newest kept head the file covers is that head's root and the head's signature verifies with
the witness's key: anything else (no such head, a flipped byte, a head of another key) is reported
and the tree is built from the log again. Leaves past that head are not trusted and are dropped. Writes are positional, so two witnesses sharing a
data folder (replicas of one log) write the same bytes at the same places.
"""

from __future__ import annotations

import os
from pathlib import Path

from events import merkle, signing
from services.auditor import heads
from services.auditor.audit import KnownHead
from services.auditor.errors import AuditFailed

LEAVES_FILE = "merkle-leaves.bin"


def path(data_dir: Path | str) -> Path:
    return Path(data_dir) / heads.HEADS_DIR / LEAVES_FILE


def save(data_dir: Path | str, start: int, leaves: bytes) -> None:
    """Write the concatenated leaf hashes ``leaves``, from leaf ``start`` on, at their place in the
    file; flushed to disk on return."""
    file = path(data_dir)
    file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(file, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.pwrite(fd, leaves, start * merkle.HASH_SIZE)
        os.fsync(fd)
    finally:
        os.close(fd)


def load(data_dir: Path | str, signer: signing.Signer) -> tuple[merkle.MerkleTree, str]:
    """The tree as of the newest signed head in the data folder that the stored leaves cover, and
    what was found (a sentence for the log); an empty tree when there is nothing to trust."""
    file = path(data_dir)
    try:
        blob = file.read_bytes()
    except FileNotFoundError:
        return merkle.MerkleTree(), f"no stored Merkle tree ({file}): building it from the log"
    try:
        known = heads.read(data_dir)
    except AuditFailed as exc:
        return merkle.MerkleTree(), f"the stored Merkle tree is not used, the heads file is unreadable ({exc}): building it from the log"
    have = len(blob) // merkle.HASH_SIZE
    newest = max((h for h in known if h.size <= have), key=lambda h: h.size, default=None)
    if newest is None:
        return merkle.MerkleTree(), (f"none of the {len(known)} signed heads kept covers at most the {have} leaves of {file}: "
                                     "building the tree from the log")
    tree, reason = restore(blob, newest, signer)
    if reason:
        return merkle.MerkleTree(), f"{file} does not match the newest signed head ({reason}): building the tree from the log"
    return tree, f"Merkle tree of {tree.size} leaves restored from {file}, matching the newest signed head it covers"


def restore(blob: bytes, head: KnownHead, signer: signing.Signer) -> tuple[merkle.MerkleTree, str]:
    """The tree of the leaf hashes ``blob`` up to ``head``'s size, and why it is not the tree
    ``head`` signed (empty when it is)."""
    empty = merkle.MerkleTree()
    if head.key_id != signer.key_id or not signing.verify(
        signer.public_hex, signing.head_message(head.size, head.root, head.signed_at, head.key_id), head.signature
    ):
        return empty, f"the head of size {head.size} ({head.origin}) does not verify with this witness's key {signer.key_id}"
    tree = merkle.MerkleTree.from_leaf_hashes(blob[:head.size * merkle.HASH_SIZE])
    if tree.root().hex() != head.root:
        return empty, f"its root at size {head.size} is {tree.root().hex()[:16]}…, the head's is {head.root[:16]}…"
    return tree, ""
