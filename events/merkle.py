"""An RFC 6962 (Certificate Transparency) Merkle tree over the stored events, pure.

    leaf hash  = sha256(0x00 ‖ stored event bytes)
    node hash  = sha256(0x01 ‖ left ‖ right)
    root of n  = MTH(D[0:k]) ‖ MTH(D[k:n]) with k the largest power of two below n

Leaf ``i`` is the event at stream sequence ``i + 1`` (the stream never deletes, so sequences are
contiguous). :class:`MerkleTree` keeps every complete interior node, level by level, so it appends
in amortised O(1) hashes and gives roots and proofs, for its size and every earlier one, from
O(log n) stored nodes. Verification
follows RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency), and rejects whatever the
reference implementation (transparency-dev/merkle's ``proof`` package) rejects: hashes that are
not 32 bytes, indexes and sizes out of range (negative ones included), a consistency proof from
an empty tree; a ``None`` proof is an empty one, as a nil slice is there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import overload

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


class LeafHashes(Sequence[bytes]):
    """The leaf hashes of a tree, read-only, by index (a slice is a list)."""

    def __init__(self, level: bytearray) -> None:
        self._level = level

    def __len__(self) -> int:
        return len(self._level) // HASH_SIZE

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(f"no leaf {index} in a tree of {len(self)} leaves")
        start = (index % len(self)) * HASH_SIZE
        return bytes(self._level[start:start + HASH_SIZE])


class MerkleTree:
    """An append-only tree that keeps every complete node, level by level: node ``i`` of level ``h``
    is the root of the perfect subtree over leaves ``[i·2^h, (i+1)·2^h)``. Every subtree of the RFC's
    tree of any size up to this one is a run of at most log n of these nodes, so roots, inclusion and
    consistency proofs touch O(log n) nodes, for the current size and every earlier one. Appending
    stores the leaf and the nodes it completes (amortised two hashes)."""

    def __init__(self) -> None:
        self._levels: list[bytearray] = [bytearray()]

    @classmethod
    def from_leaf_hashes(cls, hashes: bytes) -> MerkleTree:
        """The tree over the concatenated 32-byte leaf ``hashes``, built level by level."""
        if len(hashes) % HASH_SIZE:
            raise ValueError(f"{len(hashes)} bytes are not a whole number of {HASH_SIZE}-byte leaf hashes")
        tree = cls()
        level = bytearray(hashes)
        tree._levels = [level]
        pair = 2 * HASH_SIZE
        while len(level) >= pair:
            with memoryview(level) as view:
                level = bytearray(b"".join(
                    hashlib.sha256(b"\x01" + view[i:i + pair]).digest() for i in range(0, len(view) - pair + 1, pair)
                ))
            tree._levels.append(level)
        return tree

    @property
    def size(self) -> int:
        return len(self._levels[0]) // HASH_SIZE

    @property
    def leaves(self) -> LeafHashes:
        return LeafHashes(self._levels[0])

    def leaf_bytes(self, start: int, end: int) -> bytes:
        """The leaf hashes ``[start, end)``, concatenated (what a node store keeps)."""
        return bytes(self._levels[0][start * HASH_SIZE:end * HASH_SIZE])

    def append(self, data: bytes) -> bytes:
        """Add the stored bytes of the next event; return its leaf hash."""
        leaf = leaf_hash(data)
        index, height, node = self.size, 0, leaf
        self._levels[0] += leaf
        while index & 1:
            node = node_hash(self._node(height, index - 1), node)
            height, index = height + 1, index >> 1
            if height == len(self._levels):
                self._levels.append(bytearray())
            self._levels[height] += node
        return leaf

    def truncate(self, size: int) -> None:
        """Forget every leaf from ``size`` on (and the nodes over them)."""
        self._check(size)
        for height, level in enumerate(self._levels):
            del level[(size >> height) * HASH_SIZE:]

    def root(self) -> bytes:
        """The root of the whole tree (RFC 6962 MTH)."""
        return self.root_at(self.size)

    def root_at(self, size: int) -> bytes:
        """The root of the first ``size`` leaves."""
        self._check(size)
        return self._range(0, size) if size else EMPTY_ROOT

    def inclusion(self, index: int, size: int | None = None) -> list[bytes]:
        """The audit path of leaf ``index`` in the tree of the first ``size`` leaves (default: all),
        RFC 6962 PATH, walked from the root down."""
        n = self._check(self.size if size is None else size)
        if not 0 <= index < n:
            raise ValueError(f"leaf {index} is not in a tree of {n} leaves")
        siblings: list[bytes] = []
        lo, m = 0, index
        while n > 1:
            k = _split(n)
            if m < k:
                siblings.append(self._range(lo + k, lo + n))
                n = k
            else:
                siblings.append(self._range(lo, lo + k))
                lo, m, n = lo + k, m - k, n - k
        return siblings[::-1]

    def consistency(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """The proof that the first ``old_size`` leaves are a prefix of the first ``new_size`` (default:
        all), RFC 6962 PROOF, walked from the root down."""
        n = self._check(self.size if new_size is None else new_size)
        if not 0 < old_size <= n:
            raise ValueError(f"no consistency proof from size {old_size} to {n}")
        siblings: list[bytes] = []
        lo, m, complete = 0, old_size, True
        while m != n:
            k = _split(n)
            if m <= k:
                siblings.append(self._range(lo + k, lo + n))
                n = k
            else:
                siblings.append(self._range(lo, lo + k))
                lo, m, n, complete = lo + k, m - k, n - k, False
        return ([] if complete else [self._range(lo, lo + n)]) + siblings[::-1]

    def _range(self, start: int, end: int) -> bytes:
        """MTH of leaves ``[start, end)``, a subtree of the RFC's tree (``start`` a multiple of a power
        of two ≥ ``end - start``): the perfect nodes of the binary digits of its width, folded from the right."""
        nodes: list[bytes] = []
        width = end - start
        for height in range(width.bit_length() - 1, -1, -1):
            if width >> height & 1:
                nodes.append(self._node(height, start >> height))
                start += 1 << height
        node = nodes.pop()
        while nodes:
            node = node_hash(nodes.pop(), node)
        return node

    def _node(self, height: int, index: int) -> bytes:
        start = index * HASH_SIZE
        return bytes(self._levels[height][start:start + HASH_SIZE])

    def _check(self, size: int) -> int:
        """``size``, if this tree has a tree of that size; ``ValueError`` otherwise (never an answer
        for another size)."""
        if not 0 <= size <= self.size:
            raise ValueError(f"no tree of size {size}: this one has {self.size} leaves")
        return size
