-- Each change's lifecycle status (events/lifecycle.py: planning, preflight, approving, ..., closed),
-- evolved by the lifecycle itself at ingest (projections/lifecycle.py), never derived in SQL.
ALTER TABLE changes ADD COLUMN status VARCHAR;
