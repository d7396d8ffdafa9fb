"""PostgreSQL end to end: the real psql against an embedded PostgreSQL, through every UPM service."""

from __future__ import annotations

import time

import pytest
from targets_helpers import (
    DRIFT_INTERVAL,
    Eventually,
    drift_payloads,
    rolled_back,
    sql,
    submit,
    submit_approved,
)

from events.model import CredentialsIssued, DriftDetected, DriftResolved
from events.store import EventStore
from upm.emulators import PgTarget

pytestmark = pytest.mark.usefixtures("pg_target")


def explicit_grantees(target: PgTarget, database: str) -> str:
    return sql(target, f"SELECT coalesce(datacl::text, '') FROM pg_database WHERE datname = '{database}'")


async def test_database_role_and_grant_go_intent_to_closed_under_a_login_role_valid_until_the_change_ends(
    pg_target: PgTarget, targets_pipeline: EventStore
) -> None:
    status = await submit(
        targets_pipeline,
        "Create postgres database orders and postgres role analyst with login "
        "and grant role analyst read access to database orders",
    )
    assert status.outcome == "succeeded", status.reason
    assert sql(pg_target, "SELECT datname FROM pg_database WHERE datname = 'orders'") == "orders"
    assert sql(pg_target, "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'analyst'") == "t"
    assert "analyst=c/" in explicit_grantees(pg_target, "orders")
    assert sql(pg_target, "SELECT has_schema_privilege('analyst', 'public', 'USAGE')", database="orders") == "t"

    log = await targets_pipeline.read("acme", status.change_id)
    issued = [s.event.payload for s in log.events if isinstance(s.event.payload, CredentialsIssued)]
    assert [i.kind for i in issued] == ["postgres"]
    login = issued[0].ref.removeprefix("postgres:")
    assert sql(pg_target, f"SELECT count(*) FROM pg_roles WHERE rolname = '{login}'") == "0"  # dropped at the end
    owner = sql(pg_target, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'orders'")
    assert owner == "upm_operator"  # what the change made outlives its login role


async def test_a_grant_revoked_with_psql_is_detected_and_reconciled(
    pg_target: PgTarget, targets_pipeline: EventStore, eventually: Eventually
) -> None:
    status = await submit(
        targets_pipeline,
        "Create postgres database ledger and postgres role clerk with login "
        "and grant role clerk write access to database ledger",
    )
    assert status.outcome == "succeeded", status.reason
    seen = len(await drift_payloads(targets_pipeline))
    sql(pg_target, "REVOKE CONNECT ON DATABASE ledger FROM clerk")
    assert "clerk=" not in explicit_grantees(pg_target, "ledger")
    changed_at = time.monotonic()
    resource = "pg_grant:default:clerk@ledger.public:write"

    async def resolved() -> bool:
        return any(isinstance(p, DriftResolved) and p.resource == resource for p in (await drift_payloads(targets_pipeline))[seen:])

    await eventually(resolved, 6 * DRIFT_INTERVAL + 30)
    detected = next(p for p in (await drift_payloads(targets_pipeline))[seen:] if isinstance(p, DriftDetected) and p.resource == resource)
    assert detected.action == "reconcile" and detected.reconcile_change_id
    assert time.monotonic() - changed_at < 90
    assert "clerk=c/" in explicit_grantees(pg_target, "ledger")


async def test_a_role_that_cannot_be_created_rolls_back_the_database_created_before_it(
    pg_target: PgTarget, targets_pipeline: EventStore, eventually: Eventually
) -> None:
    status = await submit(targets_pipeline, "Create postgres database rb_db and postgres role pg_blocked")
    assert status.outcome in ("failed", "rolled_back"), status.reason
    types = await rolled_back(targets_pipeline, status.change_id, eventually)
    assert "rollback.step.completed" in types
    assert sql(pg_target, "SELECT count(*) FROM pg_database WHERE datname = 'rb_db'") == "0"
    assert sql(pg_target, "SELECT count(*) FROM pg_roles WHERE rolname = 'pg_blocked'") == "0"


async def test_database_owner_schema_and_role_are_created_updated_and_deleted(
    pg_target: PgTarget, targets_pipeline: EventStore, eventually: Eventually
) -> None:
    created = await submit(targets_pipeline, "Create postgres role shop_owner and postgres database shop owned by "
                                             "shop_owner and schema sales in database shop")
    assert created.outcome == "succeeded", created.reason
    assert sql(pg_target, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'shop'") == "shop_owner"
    assert sql(pg_target, "SELECT nspname FROM pg_namespace WHERE nspname = 'sales'", database="shop") == "sales"

    updated = await submit(targets_pipeline, "Update postgres role shop_owner with login")
    assert updated.outcome == "succeeded", updated.reason
    assert sql(pg_target, "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'shop_owner'") == "t"

    deleted = await submit_approved(targets_pipeline, "Delete schema sales in database shop", eventually)
    assert deleted.outcome == "succeeded", deleted.reason
    assert sql(pg_target, "SELECT count(*) FROM pg_namespace WHERE nspname = 'sales'", database="shop") == "0"
    dropped = await submit_approved(targets_pipeline, "Delete postgres database shop", eventually)
    assert dropped.outcome == "succeeded", dropped.reason
    assert sql(pg_target, "SELECT count(*) FROM pg_database WHERE datname = 'shop'") == "0"
