"""The projection folder: one DuckDB file for every tenant, and one file per tenant.

    <folder>/upm.duckdb              every event of every tenant (admins: `--all-tenants`)
    <folder>/tenants/<tenant>.duckdb one tenant's events only: what `upm sql` of that tenant sees

Every file carries its own position, written in the same transaction as its rows, and skips
records at or below it: each file holds every event exactly once. The main file is written
batch by batch. Tenant files are written in larger batches, in a second thread, off the hot path:
records wait in a per-tenant buffer until ``TENANT_FLUSH`` of them are buffered, the projector
is idle, or a query of that tenant arrives (its buffer is flushed first, so reads see their
writes). After each full flush the main file records ``tenants``: the sequence through which
every tenant file is complete; the projector resumes after min(main position, tenants), so a
crash loses no buffered record.

Tenant isolation is structural: a tenant's queries run in a DuckDB instance that opened only
that tenant's file, with file access disabled and the configuration locked, so no SQL can name
another tenant's rows. Delete the folder and replay the log to rebuild.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import duckdb
import msgspec

from events.subjects import is_tenant
from projections import ingest, schema
from projections.errors import ProjectionUnavailable
from projections.lifecycle import Lifecycles
from projections.limits import memory_limit

MAIN_FILE = "upm.duckdb"
TENANT_DIR = "tenants"
ALL_TENANTS = "_all"
TENANTS_POSITION = "tenants"
TENANT_FLUSH = 20_000
CHECKPOINT_EVERY = 4_000
"""Records written to a file between its checkpoints. Until a checkpoint DuckDB keeps what was written
since the last one in memory (its tables' new rows and their primary-key indexes): at DuckDB's own
threshold (``checkpoint_threshold``, 256 MB of WAL) that is hundreds of MiB per file, so the
projector checkpoints each file every ``CHECKPOINT_EVERY`` records instead, and its memory stays flat
as the log grows."""
# File access off and the configuration locked (see above); checkpoints every 256 MB of WAL instead of
# 16 MB: ingest is ~1.5× faster, at the cost of a longer WAL replay when a file is reopened.
LOCKED: dict[str, str | bool] = {"enable_external_access": False, "lock_configuration": True, "checkpoint_threshold": "256MB"}


class _Tenant(msgspec.Struct):
    tenant: str


_tenant_of = msgspec.json.Decoder(_Tenant).decode


def open_file(path: Path, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    """One locked DuckDB instance on ``path`` (migrated when writable)."""
    try:
        config: dict[str, str | bool | int | float | list[str]] = dict(LOCKED)
        limit = None if read_only else memory_limit()
        if limit is not None:
            config["memory_limit"] = limit
        con = duckdb.connect(str(path), read_only=read_only, config=config)
    except duckdb.Error as exc:
        raise ProjectionUnavailable(
            f"cannot open {path}{' read-only' if read_only else ''}: {exc}. If a projector is running it "
            "holds the file: ask it over the bus instead (start NATS and the projector with `upm up`)"
        ) from exc
    if read_only:
        if not schema.is_current(con):
            con.close()
            raise ProjectionUnavailable(
                f"{path} is not at the current schema; run the projector once (it migrates the file) "
                "or rebuild by deleting the folder and replaying the log"
            )
    else:
        schema.migrate(con)
    return con


class ProjectionDB:
    """The open projection folder (see the module docstring)."""

    def __init__(self, folder: Path | str, *, read_only: bool = False) -> None:
        self.folder = Path(folder)
        self.read_only = read_only
        if not read_only:  # the owner's only: the files are the audit trail, every tenant's
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            (self.folder / TENANT_DIR).mkdir(exist_ok=True, mode=0o700)
        elif not (self.folder / MAIN_FILE).exists():
            raise ProjectionUnavailable(
                f"no projection database in {self.folder}: start the projector (`upm up`) to build it"
            )
        self.main = open_file(self.folder / MAIN_FILE, read_only=read_only)
        self._tenants: dict[str, duckdb.DuckDBPyConnection] = {}
        self._lifecycles: dict[str, Lifecycles] = defaultdict(Lifecycles)  # per file: "" is the main one
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._buffers: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
        self._buffered = 0
        self._unsaved: dict[str, int] = defaultdict(int)  # records written per file since its checkpoint
        self._background: Future[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upm-tenant-ingest")

    def tenant(self, name: str) -> duckdb.DuckDBPyConnection:
        """The instance holding only ``name``'s rows (created empty when writable and new)."""
        if name == ALL_TENANTS:
            return self.main
        if not is_tenant(name):
            raise ProjectionUnavailable(f"{name!r} is not a tenant name (a-z, 0-9, '-'; 1-63 characters)")
        with self._lock:
            con = self._tenants.get(name)
            if con is None:
                path = self.folder / TENANT_DIR / f"{name}.duckdb"
                if self.read_only and not path.exists():
                    raise ProjectionUnavailable(f"tenant {name} has no events in {self.folder} yet")
                con = self._tenants[name] = open_file(path, read_only=self.read_only)
            return con

    def tenants(self) -> list[str]:
        """Every tenant with a file, sorted."""
        return sorted(p.stem for p in (self.folder / TENANT_DIR).glob("*.duckdb"))

    def position(self) -> int:
        """The main file's position (what read-your-writes waits for)."""
        return ingest.position(self.main)

    def resume_position(self) -> int:
        """Where to resume following the log: no event after it is missing from any file."""
        tenants = self.main.execute(
            "SELECT last_seq FROM projector_position WHERE name = ?", [TENANTS_POSITION]
        ).fetchone()
        return min(self.position(), int(tenants[0]) if tenants else 0)

    def ingest(self, records: Sequence[tuple[int, bytes]]) -> int:
        """Write one batch to the main file and buffer it for the tenant files; return the main position.

        Every ``TENANT_FLUSH`` buffered records, the tenant files are written in a second thread
        while the main file goes on; ingest waits for that thread only when the buffers hold four
        times as much (backpressure).
        """
        with self._lock:
            for seq, data in records:
                self._buffers[_tenant_of(data).tenant].append((seq, data))
            self._buffered += len(records)
            buffered = self._buffered
        seq = ingest.ingest(self.main, records, self._lifecycles[""])
        self._checkpoint("", self.main, len(records))
        in_flight = self._background is not None and not self._background.done()
        if buffered >= TENANT_FLUSH and not in_flight:
            self._background = self._pool.submit(self.flush_all)
        elif buffered >= 4 * TENANT_FLUSH and self._background is not None:
            self._background.result()
        return seq

    def flush(self, tenant: str) -> None:
        """Write ``tenant``'s buffered records to its file (before a query of that tenant)."""
        with self._flushing:
            with self._lock:
                batch = self._buffers.pop(tenant, [])
                self._buffered -= len(batch)
            if batch:
                con = self.tenant(tenant)
                ingest.ingest(con, batch, self._lifecycles[tenant])
                self._checkpoint(tenant, con, len(batch))

    def flush_all(self) -> None:
        """Write every tenant's buffered records, then record that the tenant files are complete
        through the last record taken."""
        with self._flushing:
            with self._lock:
                batches, self._buffers = self._buffers, defaultdict(list)
                self._buffered = 0
            if not batches:
                return
            for name in sorted(batches):
                con = self.tenant(name)
                ingest.ingest(con, batches[name], self._lifecycles[name])
                self._checkpoint(name, con, len(batches[name]))
            through = max(batch[-1][0] for batch in batches.values())
            cur = self.main.cursor()
            try:
                cur.execute("INSERT OR REPLACE INTO projector_position VALUES (?, ?)", [TENANTS_POSITION, through])
            finally:
                cur.close()

    def _checkpoint(self, name: str, con: duckdb.DuckDBPyConnection, written: int) -> None:
        """Count ``written`` records into file ``name``; checkpoint it every ``CHECKPOINT_EVERY`` (see there).
        A checkpoint DuckDB declines (a query's transaction is open on the file) is tried after the next batch."""
        self._unsaved[name] += written
        if self._unsaved[name] < CHECKPOINT_EVERY:
            return
        cur = con.cursor()
        try:
            cur.execute("CHECKPOINT")
        except duckdb.Error:
            return
        finally:
            cur.close()
        self._unsaved[name] = 0

    def flush_idle(self) -> None:
        """Bring every tenant file up to date (the projector is idle, or closing)."""
        if self._background is not None:
            self._background.result()
        self.flush_all()

    def close(self) -> None:
        """Flush the tenant buffers (when writable) and close every file."""
        if not self.read_only:
            self.flush_idle()
        self._pool.shutdown()
        for con in self._tenants.values():
            con.close()
        self._tenants.clear()
        self.main.close()
