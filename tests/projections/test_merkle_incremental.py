"""The incremental tree's proofs are the RFC 6962 ones: compared with a straight transcription of
the RFC's recursive MTH, PATH and PROOF over the whole leaf list, for random sizes and indexes."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from events import merkle


def ref_path(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(m, D[n])."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if index < k:
        return [*ref_path(index, leaves[:k]), merkle.root(leaves[k:])]
    return [*ref_path(index - k, leaves[k:]), merkle.root(leaves[:k])]


def ref_subproof(m: int, leaves: Sequence[bytes], complete: bool) -> list[bytes]:
    """RFC 6962 §2.1.2 SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if complete else [merkle.root(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*ref_subproof(m, leaves[:k], complete), merkle.root(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), merkle.root(leaves[:k])]


def grown(n: int) -> merkle.MerkleTree:
    tree = merkle.MerkleTree()
    for i in range(n):
        tree.append(f"event {i}".encode())
    return tree


TREE = grown(300)
LEAVES = list(TREE.leaves)


def test_every_proof_of_every_size_up_to_40_is_the_rfcs() -> None:
    for size in range(1, 41):
        assert TREE.root_at(size) == merkle.root(LEAVES[:size])
        for index in range(size):
            assert TREE.inclusion(index, size) == ref_path(index, LEAVES[:size]), (index, size)
        for old in range(1, size + 1):
            assert TREE.consistency(old, size) == ref_subproof(old, LEAVES[:size], True), (old, size)


def test_random_sizes_and_indexes_up_to_300_give_the_rfcs_proofs() -> None:
    rng = random.Random(6962)
    for _ in range(400):
        size = rng.randint(1, 300)
        index, old = rng.randrange(size), rng.randint(1, size)
        assert TREE.inclusion(index, size) == ref_path(index, LEAVES[:size])
        assert TREE.consistency(old, size) == ref_subproof(old, LEAVES[:size], True)
        assert merkle.verify_inclusion(LEAVES[index], index, size, TREE.inclusion(index, size), TREE.root_at(size))


def test_a_tree_rebuilt_from_its_leaf_hashes_is_the_same_tree() -> None:
    rebuilt = merkle.MerkleTree.from_leaf_hashes(TREE.leaf_bytes(0, TREE.size))
    assert rebuilt.root() == TREE.root()
    assert rebuilt.inclusion(137) == TREE.inclusion(137)
    assert rebuilt.consistency(99, 250) == TREE.consistency(99, 250)
    rebuilt.append(b"next")  # and it grows on
    assert rebuilt.root_at(300) == TREE.root()
    assert rebuilt.root() == merkle.root([*LEAVES, merkle.leaf_hash(b"next")])
    with pytest.raises(ValueError, match="whole number"):
        merkle.MerkleTree.from_leaf_hashes(b"\0" * 33)


def test_truncating_forgets_the_leaves_and_nodes_from_that_size() -> None:
    tree = grown(77)
    tree.truncate(50)
    assert tree.size == 50
    assert tree.root() == TREE.root_at(50)
    tree.append(b"other")
    assert tree.root() == merkle.root([*LEAVES[:50], merkle.leaf_hash(b"other")])
    assert tree.inclusion(50) == ref_path(50, [*LEAVES[:50], merkle.leaf_hash(b"other")])
