"""An RFC 6962 (Certificate Transparency) Merkle tree over the stored events, pure.

    leaf hash  = sha256(0x00 ‖ stored event bytes)
    node hash  = sha256(0x01 ‖ left ‖ right)
    root of n  = MTH(D[0:k]) ‖ MTH(D[k:n]) with k the largest power of two below n

Leaf ``i`` is the event at stream sequence ``i + 1`` (the stream never deletes, so sequences are
contiguous). :class:`MerkleTree` appends in O(log n) and gives the current root at once (it keeps
the roots of its perfect subtrees); proofs are computed from the leaf hashes. Verification
follows RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency), and rejects whatever the
reference implementation (transparency-dev/merkle's ``proof`` package) rejects: hashes that are
not 32 bytes, indexes and sizes out of range (negative ones included), a consistency proof from
an empty tree; a ``None`` proof is an empty one, as a nil slice is there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()
HASH_SIZE = 32


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (n ≥ 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH of the leaf hashes ``leaves``."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = _split(n)
    return node_hash(root(leaves[:k]), root(leaves[k:]))


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``leaves`` (RFC 6962 PATH)."""
    n = len(leaves)
    if not 0 <= index < n:
        raise ValueError(f"leaf {index} is not in a tree of {n} leaves")
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return [*inclusion_proof(index, leaves[:k]), root(leaves[k:])]
    return [*inclusion_proof(index - k, leaves[k:]), root(leaves[:k])]


def _hashes(*values: bytes | None) -> bool:
    return all(isinstance(v, bytes) and len(v) == HASH_SIZE for v in values)


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes] | None, expected_root: bytes
) -> bool:
    """Whether ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree of ``size`` with ``expected_root``."""
    path = list(proof or ())
    if not 0 <= index < size or not _hashes(leaf, expected_root, *path):
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


def consistency_proof(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """The proof that the tree of the first ``old_size`` leaves is a prefix of ``leaves`` (RFC 6962 PROOF)."""
    n = len(leaves)
    if not 0 < old_size <= n:
        raise ValueError(f"no consistency proof from size {old_size} to {n}")
    return _subproof(old_size, leaves, True)


def _subproof(m: int, leaves: Sequence[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [root(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete), root(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), root(leaves[:k])]


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes] | None
) -> bool:
    """Whether ``proof`` shows the tree (old_size, old_root) is a prefix of (new_size, new_root);
    never from an empty tree (a proof from size 0 proves nothing)."""
    path = list(proof or ())
    if not 0 < old_size <= new_size:
        return False
    if old_size == new_size:
        return old_root == new_root and not path
    if not path or not _hashes(old_root, new_root, *path):
        return False
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


class MerkleTree:
    """An append-only tree of leaf hashes with an O(log n) running root."""

    def __init__(self) -> None:
        self.leaves: list[bytes] = []
        self._peaks: list[tuple[int, bytes]] = []  # (height, root) of perfect subtrees, left to right

    @property
    def size(self) -> int:
        return len(self.leaves)

    def append(self, data: bytes) -> bytes:
        """Add the stored bytes of the next event; return its leaf hash."""
        leaf = leaf_hash(data)
        self.leaves.append(leaf)
        height, node = 0, leaf
        while self._peaks and self._peaks[-1][0] == height:
            _, left = self._peaks.pop()
            node = node_hash(left, node)
            height += 1
        self._peaks.append((height, node))
        return leaf

    def root(self) -> bytes:
        """The root of the whole tree (RFC 6962 MTH)."""
        if not self._peaks:
            return EMPTY_ROOT
        node = self._peaks[-1][1]
        for _, left in reversed(self._peaks[:-1]):
            node = node_hash(left, node)
        return node

    def root_at(self, size: int) -> bytes:
        """The root of the first ``size`` leaves."""
        return root(self._prefix(size))

    def inclusion(self, index: int, size: int | None = None) -> list[bytes]:
        """The audit path of leaf ``index`` in the tree of the first ``size`` leaves (default: all)."""
        return inclusion_proof(index, self._prefix(self.size if size is None else size))

    def consistency(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """The proof that the first ``old_size`` leaves are a prefix of the first ``new_size`` (default: all)."""
        return consistency_proof(old_size, self._prefix(self.size if new_size is None else new_size))

    def _prefix(self, size: int) -> list[bytes]:
        """The first ``size`` leaf hashes; ``ValueError`` for a size this tree does not have (a slice
        would silently answer for another size)."""
        if not 0 <= size <= self.size:
            raise ValueError(f"no tree of size {size}: this one has {self.size} leaves")
        return self.leaves[:size]
