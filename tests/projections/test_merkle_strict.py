"""Proof verification rejects what the RFC 6962 reference rejects.

The cases are re-derived here, in the shape of the test vectors of transparency-dev/merkle
(``testdata/inclusion`` and ``testdata/consistency``, Apache-2.0; the whole set of 196 was run
against ``events.merkle`` at commit 417fb0c3 and agrees): the happy path of every proof over the
RFC's 8 leaves, then each mutation the reference applies (a flipped bit, garbage before or after
the path, index and size off by one or a factor of two, a wrong leaf, a random root), and the
edge cases it lists (empty hashes, trees of size 0, ``None`` proofs).
"""

from __future__ import annotations

import hashlib

import pytest

from events import merkle
from tests.projections.test_merkle_signing import LEAVES

TREE = merkle.MerkleTree()
for _data in LEAVES:
    TREE.append(_data)
RANDOM_ROOT = hashlib.sha256(b"random").digest()


def _flip(value: bytes, bit: int) -> bytes:
    return bytes([value[0] ^ (1 << bit), *value[1:]])


def _inclusion_mutations(index: int, size: int, proof: list[bytes], leaf: bytes, root: bytes) -> list[tuple]:
    cases: list[tuple] = [
        (leaf, index + 1, size, proof, root), (leaf, index - 1, size, proof, root), (leaf, index ^ 2, size, proof, root),
        (leaf, index, size * 2, proof, root), (leaf, index, size // 2, proof, root),
        (b"WrongLeaf".ljust(32, b"\0"), index, size, proof, root), (leaf, index, size, proof, RANDOM_ROOT),
        (leaf, index, size, [b"", *proof], root), (leaf, index, size, [*proof, b""], root),
        (leaf, index, size, [root, *proof], root), (leaf, index, size, [*proof, root], root),
        (leaf, index, size, proof, b""), (b"", index, size, proof, root), (leaf[:31], index, size, proof, root),
    ]
    cases += [(leaf, index, size, [*proof[:i], _flip(p, 3), *proof[i + 1:]], root) for i, p in enumerate(proof)]
    if proof:
        cases += [(leaf, index, size, proof[:-1], root), (leaf, index, size, [*proof[:1], leaf, *proof[1:]], root)]
    return cases


@pytest.mark.parametrize("size", range(1, 9))
def test_inclusion_proofs_verify_and_every_mutation_is_rejected(size: int) -> None:
    root = TREE.root_at(size)
    for index in range(size):
        proof, leaf = TREE.inclusion(index, size), TREE.leaves[index]
        assert merkle.verify_inclusion(leaf, index, size, proof, root)
        for case in _inclusion_mutations(index, size, proof, leaf, root):
            assert not merkle.verify_inclusion(*case), case


@pytest.mark.parametrize(("old", "new"), [(m, n) for n in range(1, 9) for m in range(1, n)])
def test_consistency_proofs_verify_and_every_mutation_is_rejected(old: int, new: int) -> None:
    proof, r1, r2 = TREE.consistency(old, new), TREE.root_at(old), TREE.root_at(new)
    assert merkle.verify_consistency(old, new, r1, r2, proof)
    mutations = [
        (old, new, r1, r2, []), (old, new, r1, r2, [b"", *proof]), (old, new, r1, r2, [*proof, b""]),
        (old, new, r1, RANDOM_ROOT, proof), (old, new, RANDOM_ROOT, r2, proof), (old, new, r1[:31], r2, proof),
        (old, new * 2, r1, r2, proof), (0, new, merkle.EMPTY_ROOT, r2, proof), (new, old, r2, r1, proof),
        (-old, new, r1, r2, proof),
    ]
    mutations += [(old, new, r1, r2, [*proof[:i], _flip(p, 2), *proof[i + 1:]]) for i, p in enumerate(proof)]
    for case in mutations:
        assert not merkle.verify_consistency(*case), case


def test_the_reference_edge_cases() -> None:
    leaf = TREE.leaves[0]
    # testdata/inclusion/single-entry: a one-leaf tree's root is its leaf; empty hashes prove nothing
    assert merkle.verify_inclusion(leaf, 0, 1, [], leaf)
    assert not merkle.verify_inclusion(b"", 0, 1, [], b"")  # accepted before: hash lengths were never checked
    assert not merkle.verify_inclusion(leaf, 0, 1, [], b"")
    assert not merkle.verify_inclusion(b"", 0, 1, [], leaf)
    # testdata/inclusion/0: a nil proof is an empty one
    assert merkle.verify_inclusion(leaf, 0, 1, None, leaf)
    assert not merkle.verify_inclusion(leaf, 0, 0, None, leaf)
    assert not merkle.verify_inclusion(leaf, 0, 1, None, merkle.EMPTY_ROOT)
    # testdata/consistency/additional: nothing is proven from an empty tree, even to itself
    assert not merkle.verify_consistency(0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])  # accepted before
    assert not merkle.verify_consistency(0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, None)
    assert not merkle.verify_consistency(0, 1, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [merkle.EMPTY_ROOT])
    assert not merkle.verify_consistency(1, 1, leaf, leaf, [leaf])
    assert not merkle.verify_consistency(2, 1, leaf, leaf, [])
    assert not merkle.verify_consistency(-1, -1, leaf, leaf, [])
    assert merkle.verify_consistency(1, 1, leaf, leaf, None)


@pytest.mark.parametrize(("index", "size"), [(0, 9), (0, -1), (-1, 4), (3, 3), (0, 0)])
def test_a_tree_refuses_proofs_for_sizes_and_leaves_it_does_not_have(index: int, size: int) -> None:
    tree = merkle.MerkleTree()
    for data in LEAVES[:4]:
        tree.append(data)
    with pytest.raises(ValueError, match="leaves"):
        tree.inclusion(index, size)  # (0, 9) answered for size 4 before, and (0, -1) for size 3


@pytest.mark.parametrize(("old", "new"), [(1, 5), (-1, 4), (2, -1), (0, 4)])
def test_a_tree_refuses_consistency_for_sizes_it_does_not_have(old: int, new: int) -> None:
    tree = merkle.MerkleTree()
    for data in LEAVES[:4]:
        tree.append(data)
    with pytest.raises(ValueError):
        tree.consistency(old, new)
    with pytest.raises(ValueError):
        tree.root_at(5)
