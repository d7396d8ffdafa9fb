"""The name-keyed migration registry: ``sql/*.sql`` once each, ``kpi/*.sql`` kept current.

Migrations are applied in name order and recorded in ``_migrations`` (name, sha256 of the file).
A table migration is applied once; if its file changes after it ran, :class:`MigrationError`
says so (write a new migration instead). KPI views are derived, so a changed KPI file simply
replaces its view. Nothing here reads the clock: two databases built from the same files and
the same log are identical.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import duckdb

from projections.errors import MigrationError

TABLE_DIR = "sql"
VIEW_DIR = "kpi"


@dataclass(frozen=True)
class Migration:
    """One SQL file: ``name`` is ``<dir>/<file>``; ``replaceable`` for views."""

    name: str
    sql: str
    replaceable: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def registry() -> list[Migration]:
    """Every migration, tables first, each directory in name order."""
    root = resources.files("projections")
    out: list[Migration] = []
    for folder, replaceable in ((TABLE_DIR, False), (VIEW_DIR, True)):
        files = sorted((f for f in root.joinpath(folder).iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
        out += [Migration(f"{folder}/{f.name}", f.read_text(), replaceable) for f in files]
    return out


def migrate(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Bring ``con``'s database up to date; return the names applied now."""
    con.execute("CREATE TABLE IF NOT EXISTS _migrations (name VARCHAR PRIMARY KEY, sha256 VARCHAR NOT NULL)")
    done = dict(con.execute("SELECT name, sha256 FROM _migrations").fetchall())
    applied: list[str] = []
    for m in registry():
        recorded = done.get(m.name)
        if recorded == m.sha256:
            continue
        if recorded is not None and not m.replaceable:
            raise MigrationError(
                f"migration {m.name} changed after it was applied (recorded sha256 {recorded[:12]}…, "
                f"file {m.sha256[:12]}…); never edit an applied migration: add a new file, or rebuild "
                "the projections by deleting the database folder and replaying the log"
            )
        try:
            con.execute("BEGIN TRANSACTION")
            con.execute(m.sql)
            con.execute("INSERT OR REPLACE INTO _migrations VALUES (?, ?)", [m.name, m.sha256])
            con.execute("COMMIT")
        except duckdb.Error as exc:
            con.execute("ROLLBACK")
            raise MigrationError(f"migration {m.name} failed: {exc}; fix the SQL file and retry") from exc
        applied.append(m.name)
    return applied


def is_current(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether every migration is applied as it is now (for read-only opens)."""
    try:
        done = dict(con.execute("SELECT name, sha256 FROM _migrations").fetchall())
    except duckdb.CatalogException:
        return False
    return all(done.get(m.name) == m.sha256 for m in registry())
