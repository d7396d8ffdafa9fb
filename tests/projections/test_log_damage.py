"""A stream damaged on disk, as a failing disk or a careless restore leaves it: one byte flipped in the
last block file of UPM_EVENTS, with ``index.db`` removed (nats-server then keeps only what precedes
the bad record, and says nothing) or kept (the bad record alone is gone). `upm audit verify`, the real
CLI, must fail and name what is lost — from the signed heads the auditor kept in the data folder and
the projection — and `upm status` must say the change's chain is broken."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import nats
import pytest
from upm_history import History, happy, publish

from events.model import decode_event
from events.store import EventStore
from events.subjects import EVENT_ROOT, STREAM
from projections.projector import Projector
from services.auditor import heads
from services.auditor.evidence import LogHead
from services.auditor.service import Witness
from services.common import client
from services.security.access import Access
from upm.commands.core import _outcome_text
from upm.natsserver import EmbeddedNats

UPM = str(Path(sys.executable).parent / "upm")
CHANGES = 30  # 30 × 8 events, plus the auditor's packs and heads: a few hundred records


@dataclass
class Logged:
    server: EmbeddedNats
    data: Path
    head: LogHead  # the newest head the auditor signed (and kept in the data folder)
    records: list[tuple[int, bytes]]  # the stream as written

    def victim(self) -> tuple[int, bytes]:
        """A record a third of the way in that is neither its change's first nor last event."""
        for seq, data in self.records[len(self.records) // 3:]:
            if decode_event(data).type == "plan.compiled":
                return seq, data
        raise AssertionError("no plan.compiled record")

    def damage(self, seq: int, data: bytes, *, drop_index: bool) -> None:
        """Stop the server, flip one byte inside the stored record ``seq``, optionally remove the
        stream's index, and start the server again on the same store."""
        self.server.stop()
        msgs = next((self.server.data_dir / "jetstream").glob(f"jetstream/*/streams/{STREAM}/msgs"))
        block = sorted(msgs.glob("*.blk"), key=lambda p: int(p.stem))[-1]
        raw = bytearray(block.read_bytes())
        at = raw.find(data)
        assert at >= 0, f"record {seq} is not in the last block {block}"
        raw[at + len(data) // 2] ^= 0x20
        block.write_bytes(bytes(raw))
        if drop_index:
            (msgs / "index.db").unlink()
        self.server.start()


def upm(logged: Logged, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UPM_DATA": str(logged.data)}
    env.pop("NATS_URL", None)
    return subprocess.run([UPM, *argv, "--nats", logged.server.url, "--data", str(logged.data)],
                          capture_output=True, text=True, env=env, timeout=90, check=False)


@pytest.fixture
async def logged(nats_server: EmbeddedNats, tmp_path: Path) -> AsyncIterator[Logged]:
    """Closed changes written through the event store, the auditor's witness signing heads and packs
    and a projector following the log; both stopped once everything is covered (the projection file
    is then free for `upm audit verify` to read)."""
    data = tmp_path / "upm-data"
    h = History()
    for i in range(CHANGES):
        happy(h, "acme", at=10 * i, published=False)
    nc = await nats.connect(nats_server.url)
    store = EventStore(nc)
    await store.ensure_stream()
    witness = Witness(nc, data, interval=60)
    projector = Projector(nc, data / "projections", batch_max=500, access=Access.open())
    async with anyio.create_task_group() as tg:
        for service in (witness, projector):
            ready = anyio.Event()
            tg.start_soon(lambda s=service, r=ready: s.run(ready=r))
            await ready.wait()
        await publish(store, h.records)
        with anyio.fail_after(30):
            while witness.published < CHANGES:  # noqa: ASYNC110 - the witness's progress
                await anyio.sleep(0.05)
            head = await witness.sign_head()
            while projector.position < head.seq:  # noqa: ASYNC110 - the projector's progress
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    records = await store.read_raw(f"{EVENT_ROOT}.>")
    await nc.close()
    yield Logged(nats_server, data, head, records)


def test_the_auditor_keeps_every_head_it_signs_in_the_data_folder(logged: Logged) -> None:
    file = heads.path(logged.data)
    assert file.stat().st_mode & 0o777 == 0o600
    kept = heads.read(logged.data)
    assert len(kept) >= 2  # one per pack batch, and the last one signed above
    newest = kept[-1]
    assert (newest.size, newest.root, newest.seq, newest.signature) == (
        logged.head.size, logged.head.root, logged.head.seq, logged.head.signature)


def test_a_truncated_stream_fails_naming_the_lost_range_and_changes(logged: Logged) -> None:
    seq, data = logged.victim()
    victim = decode_event(data)
    logged.damage(seq, data, drop_index=True)

    done = upm(logged, "audit", "verify")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"stream sequences {seq}–{logged.head.seq} are missing" in done.stderr
    assert f"the stream ends at sequence {seq - 1}" in done.stderr
    assert f"sequence {seq}: change {victim.change_id} (acme), event {victim.id} (plan.compiled)" in done.stderr
    lost_changes = {decode_event(d).change_id for s, d in logged.records if s >= seq}
    assert f"{len(lost_changes)} changes lost events" in done.stderr
    assert f"covers {logged.head.size} events, but only the first {seq - 1} are readable" in done.stderr
    assert done.stderr.count("the signed head") == 2  # the lost range, and the newest head beyond the stream


async def test_one_unreadable_record_names_its_change_and_status_says_the_chain_is_broken(logged: Logged) -> None:
    seq, data = logged.victim()
    victim = decode_event(data)
    logged.damage(seq, data, drop_index=False)

    done = upm(logged, "audit", "verify")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"stream sequence {seq} is missing" in done.stderr
    assert f"sequence {seq}: change {victim.change_id} (acme), event {victim.id} (plan.compiled)" in done.stderr
    assert f"hash chain of change {victim.change_id} is broken" in done.stderr

    nc = await nats.connect(logged.server.url)
    try:
        status = await client.status(EventStore(nc), victim.change_id)
    finally:
        await nc.close()
    assert status.state == "closed" and status.chain.startswith("broken — ")
    assert "\n  chain: broken — " in _outcome_text(status)


def test_a_pinned_head_passes_when_the_log_has_it_and_fails_otherwise(logged: Logged) -> None:
    done = upm(logged, "audit", "verify")
    assert done.returncode == 0, done.stderr
    pin = f"{logged.head.size}:{logged.head.root}"
    assert f"newest verified head: {pin}" in done.stdout

    assert upm(logged, "audit", "verify", "--expect-head", pin).returncode == 0
    wrong = f"{logged.head.size}:{'0' * 64}"
    done = upm(logged, "audit", "verify", "--expect-head", pin, "--expect-head", wrong)
    assert done.returncode == 1
    assert f"not the root of the signed head {wrong} (--expect-head)" in done.stderr
    longer = f"{logged.head.seq + 50}:{logged.head.root}"
    done = upm(logged, "audit", "verify", "--expect-head", longer)
    assert done.returncode == 1 and "the stream was truncated" in done.stderr
    done = upm(logged, "audit", "verify", "--expect-head", "12:abc")
    assert done.returncode == 2 and "is not a head: give SIZE:ROOT" in done.stderr
