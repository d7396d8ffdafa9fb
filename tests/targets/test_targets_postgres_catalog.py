"""PostgreSQL catalog breadth end to end (real psql, embedded PostgreSQL, every UPM service): login users,
grants on a schema itself and on one table — created, verified, drifted and reconciled, updated,
revoked, and rolled back when a later step fails."""

from __future__ import annotations

import time

import pytest
from targets_helpers import DRIFT_INTERVAL, Eventually, rolled_back, sql, submit, submit_approved

from events.commands import idempotent_change_id
from events.model import DriftDetected, DriftResolved
from events.store import EventStore
from services.verifier.drift import DRIFT_LOG_KEY
from upm.emulators import PG_OPERATOR, PgTarget

pytestmark = [pytest.mark.usefixtures("pg_target"), pytest.mark.timeout(480)]


def table_privilege(target: PgTarget, role: str, table: str, privilege: str, database: str) -> str:
    return sql(target, f"SELECT has_table_privilege('{role}', '{table}', '{privilege}')", database=database)


def schema_privilege(target: PgTarget, role: str, schema: str, privilege: str, database: str) -> str:
    return sql(target, f"SELECT has_schema_privilege('{role}', '{schema}', '{privilege}')", database=database)


def make_table(target: PgTarget, database: str, table: str) -> None:
    """A table the operator owns (UPM's catalog has no table type: an application makes its tables)."""
    sql(target, f"CREATE TABLE {table} (id int)", database=database)
    sql(target, f"ALTER TABLE {table} OWNER TO {PG_OPERATOR}", database=database)


async def test_a_login_user_and_schema_and_table_grants_are_created_updated_and_revoked(
    pg_target: PgTarget, targets_pipeline: EventStore, eventually: Eventually
) -> None:
    created = await submit(
        targets_pipeline,
        "Create postgres user reporter and postgres database shop2 and schema sales in database shop2 "
        "and grant role reporter all privileges on schema sales in database shop2",
        within=180,
    )
    assert created.outcome == "succeeded", created.reason
    assert sql(pg_target, "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'reporter'") == "t"
    assert schema_privilege(pg_target, "reporter", "sales", "CREATE", "shop2") == "t"
    assert schema_privilege(pg_target, "reporter", "sales", "USAGE", "shop2") == "t"

    make_table(pg_target, "shop2", "sales.items")
    granted = await submit(targets_pipeline, "Grant role reporter write access to table sales.items in database shop2")
    assert granted.outcome == "succeeded", granted.reason
    assert table_privilege(pg_target, "reporter", "sales.items", "INSERT", "shop2") == "t"
    make_table(pg_target, "shop2", "sales.other")
    assert table_privilege(pg_target, "reporter", "sales.other", "SELECT", "shop2") == "f"  # one table only

    updated = await submit(targets_pipeline, "Update postgres user reporter without login")
    assert updated.outcome == "succeeded", updated.reason
    assert sql(pg_target, "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'reporter'") == "f"

    revoked = await submit_approved(
        targets_pipeline,
        "Revoke role reporter write access to table sales.items in database shop2 and "
        "revoke role reporter all privileges on schema sales in database shop2",
        eventually,
        within=180,
    )
    assert revoked.outcome == "succeeded", revoked.reason
    assert table_privilege(pg_target, "reporter", "sales.items", "INSERT", "shop2") == "f"
    assert schema_privilege(pg_target, "reporter", "sales", "CREATE", "shop2") == "f"
    dropped = await submit_approved(targets_pipeline, "Delete postgres user reporter", eventually)
    assert dropped.outcome == "succeeded", dropped.reason
    assert sql(pg_target, "SELECT count(*) FROM pg_roles WHERE rolname = 'reporter'") == "0"


async def test_a_table_grant_revoked_with_psql_is_detected_and_reconciled(
    pg_target: PgTarget, targets_pipeline: EventStore, eventually: Eventually
) -> None:
    base = await submit(targets_pipeline, "Create postgres database ledger2 and postgres user auditor2")
    assert base.outcome == "succeeded", base.reason
    make_table(pg_target, "ledger2", "entries")
    status = await submit(targets_pipeline, "Grant role auditor2 read access to table entries in database ledger2")
    assert status.outcome == "succeeded", status.reason
    drift_log = idempotent_change_id("acme", DRIFT_LOG_KEY)

    async def payloads() -> list[object]:
        return [s.event.payload for s in (await targets_pipeline.read("acme", drift_log)).events]

    seen = len(await payloads())
    sql(pg_target, "REVOKE SELECT ON TABLE entries FROM auditor2", database="ledger2")
    assert table_privilege(pg_target, "auditor2", "entries", "SELECT", "ledger2") == "f"
    changed_at = time.monotonic()
    resource = "pg_table_grant:default:auditor2@ledger2.public.entries:read"

    async def resolved() -> bool:
        return any(isinstance(p, DriftResolved) and p.resource == resource for p in (await payloads())[seen:])

    await eventually(resolved, 6 * DRIFT_INTERVAL + 60)
    detected = next(p for p in (await payloads())[seen:] if isinstance(p, DriftDetected) and p.resource == resource)
    assert detected.action == "reconcile" and detected.reconcile_change_id
    assert time.monotonic() - changed_at < 120
    assert table_privilege(pg_target, "auditor2", "entries", "SELECT", "ledger2") == "t"


async def test_a_grant_on_a_missing_table_rolls_back_the_user_created_before_it(
    pg_target: PgTarget, targets_pipeline: EventStore, eventually: Eventually
) -> None:
    status = await submit(
        targets_pipeline,
        "Create postgres database rb_shop and postgres user rb_user and "
        "grant role rb_user read access to table no_such_table in database rb_shop",
    )
    assert status.outcome in ("failed", "rolled_back"), status.reason
    types = await rolled_back(targets_pipeline, status.change_id, eventually)
    assert types.count("rollback.step.completed") >= 2, types
    assert sql(pg_target, "SELECT count(*) FROM pg_roles WHERE rolname = 'rb_user'") == "0"
    assert sql(pg_target, "SELECT count(*) FROM pg_database WHERE datname = 'rb_shop'") == "0"
