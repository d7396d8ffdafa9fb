"""The witness's Merkle tree in the data folder: restored when it is the tree the newest signed head
covers, refused (and built from the log again) when it is not; and a restarted witness goes on with
it on a real nats-server."""

from __future__ import annotations

import logging
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest
from nats.aio.client import Client as NATS
from upm_history import History, happy, publish

from events import merkle, signing
from events.store import EventStore
from projections import client
from services.auditor import evidence, heads, merkle_store
from services.auditor.evidence import LogHead
from services.auditor.service import Witness

Eventually = Callable[[Callable[[], Awaitable[bool]], float], Awaitable[None]]


def kept(data: Path, n: int, head_at: int) -> tuple[merkle.MerkleTree, signing.Signer]:
    """A tree of ``n`` leaves saved in ``data``, with a signed head of its first ``head_at``."""
    signer = signing.load_or_create(data)
    tree = merkle.MerkleTree()
    for i in range(n):
        tree.append(f"event {i}".encode())
    root = tree.root_at(head_at).hex()
    signature = signer.sign(signing.head_message(head_at, root, "2026-01-01T00:00:00Z", signer.key_id))
    merkle_store.save(data, 0, tree.leaf_bytes(0, n))
    heads.append(data, LogHead(seq=head_at + 1, size=head_at, root=root, signed_at="2026-01-01T00:00:00Z",
                               key_id=signer.key_id, signature=signature))
    return tree, signer


def test_a_saved_tree_is_restored_up_to_the_newest_signed_head(tmp_path: Path) -> None:
    tree, signer = kept(tmp_path, 120, 100)
    assert stat.S_IMODE(merkle_store.path(tmp_path).stat().st_mode) == 0o600
    restored, found = merkle_store.load(tmp_path, signer)
    assert restored.size == 100  # the 20 leaves no head vouches for are dropped
    assert restored.root() == tree.root_at(100)
    assert restored.inclusion(42) == tree.inclusion(42, 100)
    assert "restored" in found


@pytest.mark.parametrize(("damage", "why"), [
    (lambda blob: blob[:99 * 32], "covers at most the 99 leaves"),
    (lambda blob: blob[:40] + bytes([blob[40] ^ 1]) + blob[41:], "its root at size 100"),
])
def test_a_damaged_tree_is_refused_and_says_why(tmp_path: Path, damage: Callable[[bytes], bytes], why: str) -> None:
    _, signer = kept(tmp_path, 120, 100)
    file = merkle_store.path(tmp_path)
    file.write_bytes(damage(file.read_bytes()))
    restored, found = merkle_store.load(tmp_path, signer)
    assert restored.size == 0
    assert why in found and "building the tree from the log" in found


def test_the_newest_head_the_leaves_cover_is_the_one_checked(tmp_path: Path) -> None:
    tree, signer = kept(tmp_path, 120, 100)
    heads.append(tmp_path, LogHead(seq=200, size=150, root="00" * 32, signed_at="2026-01-01T00:01:00Z",
                                   key_id=signer.key_id, signature="00"))  # signed later; its leaves not written yet
    restored, _ = merkle_store.load(tmp_path, signer)
    assert restored.size == 100 and restored.root() == tree.root_at(100)


def test_a_head_of_another_key_or_no_head_or_no_file_gives_an_empty_tree(tmp_path: Path) -> None:
    _, signer = kept(tmp_path / "a", 10, 10)
    other = signing.load_or_create(tmp_path / "b")
    restored, found = merkle_store.load(tmp_path / "a", other)
    assert restored.size == 0 and "does not verify with this witness's key" in found
    heads.path(tmp_path / "a").unlink()
    assert "none of the 0 signed heads" in merkle_store.load(tmp_path / "a", signer)[1]
    assert "no stored Merkle tree" in merkle_store.load(tmp_path / "c", signer)[1]


async def test_a_restarted_witness_goes_on_with_the_stored_tree(
    nc: NATS, store: EventStore, tmp_path: Path, eventually: Eventually, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    h = History()
    first = [happy(h, "acme", at=10 * i, published=False) for i in range(3)]
    await publish(store, h.records)
    async with anyio.create_task_group() as tg:
        witness = Witness(nc, data, interval=0.2)
        ready = anyio.Event()
        tg.start_soon(lambda: witness.run(ready=ready))
        await ready.wait()

        async def packed() -> bool:  # and the tree kept as of the newest head (on the interval)
            return witness.published == len(first) and witness.saved == witness.head_size

        await eventually(packed, 20)
        tg.cancel_scope.cancel()
    size = witness.saved
    assert size > 0 and merkle_store.path(data).stat().st_size == size * 32

    before = len(h.records)
    later = [happy(h, "acme", at=1000 + 10 * i, published=False) for i in range(2)]
    await publish(store, h.records[before:])
    async with anyio.create_task_group() as tg:
        again = Witness(nc, data, interval=60)
        ready = anyio.Event()
        with caplog.at_level(logging.INFO, logger="upm.auditor"):
            tg.start_soon(lambda: again.run(ready=ready))
            await ready.wait()
        assert f"Merkle tree of {size} leaves restored" in caplog.text

        async def packed_again() -> bool:
            return again.published == len(later)  # the first three were packed already: only the new ones

        await eventually(packed_again, 20)
        tg.cancel_scope.cancel()
    keys = signing.public_keys(data)
    audited = await client.audit_stream(store, keys, require_signatures=True)
    assert audited.problems == []
    for change in (first[0], later[-1]):
        _, pack = await client.pack_of(store, await store.read("*", change.change_id))
        assert evidence.verify_pack(pack, keys).change_id == change.change_id
