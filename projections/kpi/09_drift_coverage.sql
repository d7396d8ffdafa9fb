-- kpi: drift_coverage_pct
-- formula: 100 × managed resources with a drift baseline / managed resources, where
--   managed   = a resource key created or updated (action ≠ delete) by the latest plan of a change whose
--               execution completed,
--   baseline  = a verification read-back check targets it (the baseline the drift loop compares with),
--               or a drift.detected / drift.resolved names it.
--   One row per (tenant, resource key), dated by the latest execution that touched it.
CREATE OR REPLACE VIEW kpi_drift_coverage AS
WITH managed AS (
    SELECT p.tenant, p.resource_key, max(c.execution_ended_at) AS at_utc
    FROM changes c
    JOIN plan_steps p ON p.tenant = c.tenant AND p.change_id = c.change_id AND p.plan_hash = c.plan_hash
    WHERE c.execution = 'completed' AND p.action <> 'delete'
    GROUP BY p.tenant, p.resource_key
), monitored AS (
    SELECT DISTINCT tenant, target AS resource_key FROM checks
    WHERE kind IN ('verification.passed', 'verification.failed')
    UNION
    SELECT DISTINCT tenant, resource AS resource_key FROM drift
)
SELECT m.tenant, m.at_utc, CASE WHEN o.resource_key IS NULL THEN 0.0 ELSE 1.0 END AS value
FROM managed m LEFT JOIN monitored o USING (tenant, resource_key);
