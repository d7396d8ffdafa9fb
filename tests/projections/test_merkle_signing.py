"""RFC 6962 Merkle tree (with the RFC's own test vectors) and ed25519 keys (pure, no NATS)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events import merkle, signing

# RFC 6962 / certificate-transparency test data: the 8 leaves and the roots of each prefix.
LEAVES = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                     "606162636465666768696a6b6c6d6e6f"]]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_roots_match_the_rfc_6962_test_vectors() -> None:
    tree = merkle.MerkleTree()
    for i, data in enumerate(LEAVES):
        tree.append(data)
        assert tree.root().hex() == ROOTS[i]
        assert merkle.root(tree.leaves).hex() == ROOTS[i]


@given(st.integers(1, 70), st.data())
def test_every_inclusion_and_consistency_proof_verifies(n: int, data: st.DataObject) -> None:
    tree = merkle.MerkleTree()
    for i in range(n):
        tree.append(f"event {i}".encode())
    i = data.draw(st.integers(0, n - 1))
    proof = tree.inclusion(i)
    assert merkle.verify_inclusion(tree.leaves[i], i, n, proof, tree.root())
    assert not merkle.verify_inclusion(merkle.leaf_hash(b"forged"), i, n, proof, tree.root())
    m = data.draw(st.integers(1, n))
    proof = tree.consistency(m)
    assert merkle.verify_consistency(m, n, tree.root_at(m), tree.root(), proof)
    if m < n:
        assert not merkle.verify_consistency(m, n, merkle.leaf_hash(b"forged"), tree.root(), proof)


def test_keys_are_created_private_and_signatures_are_deterministic(tmp_path: Path) -> None:
    signer = signing.load_or_create(tmp_path)
    path = tmp_path / "keys" / "ed25519.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert signing.load_or_create(tmp_path).key_id == signer.key_id
    assert signer.sign(b"m") == signer.sign(b"m")
    assert signing.verify(signer.public_hex, b"m", signer.sign(b"m"))
    assert not signing.verify(signer.public_hex, b"n", signer.sign(b"m"))
    assert signing.public_keys(tmp_path) == {signer.key_id: signer.public_hex}


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    signing.load_or_create(tmp_path)
    path = tmp_path / "keys" / "ed25519.pem"
    path.chmod(0o644)
    with pytest.raises(signing.SigningKeyError, match="chmod 600"):
        signing.load(path)


def test_auditors_starting_at_once_on_a_new_data_folder_share_one_whole_key(tmp_path: Path) -> None:
    """Copies of the auditor (``upm up --replicas``) create the key at the same moment: each reads the
    whole key the first one stored, never a half-written file (real processes, forked)."""
    for round_ in range(5):
        folder = tmp_path / f"round-{round_}"
        read, write = os.pipe()
        children = []
        for _ in range(6):
            pid = os.fork()
            if pid == 0:  # the child: create or load, answer with the key id (or the error), leave
                try:
                    try:
                        answer = signing.load_or_create(folder).key_id
                    except Exception as exc:  # reported to the parent, which fails the test
                        answer = f"error: {exc}"
                    os.write(write, answer.encode() + b"\n")
                finally:
                    os._exit(0)
            children.append(pid)
        os.close(write)
        for pid in children:
            os.waitpid(pid, 0)
        with os.fdopen(read) as answers:
            ids = answers.read().split("\n")[:-1]
        assert len(ids) == 6 and len(set(ids)) == 1 and not ids[0].startswith("error"), ids
        assert signing.load_or_create(folder).key_id == ids[0]
        assert [p.name for p in (folder / "keys").iterdir() if p.name.startswith(".")] == []
