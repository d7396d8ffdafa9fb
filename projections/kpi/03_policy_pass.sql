-- kpi: policy_pass_pct
-- formula: 100 × changes whose pre-flight passed with every policy decision allowed / changes with a
--   pre-flight result (preflight.passed or preflight.failed; the latest one counts).
--   One row per such change (named: a conformance run leaves its injected faults out), dated by its
--   latest pre-flight result.
CREATE OR REPLACE VIEW kpi_policy_pass AS
WITH pol AS (
    SELECT tenant, change_id, bool_and(allowed) AS allowed FROM policy_decisions GROUP BY tenant, change_id
)
SELECT c.tenant, c.change_id, c.preflight_at AS at_utc,
       CASE WHEN c.preflight = 'passed' AND coalesce(p.allowed, true) THEN 1.0 ELSE 0.0 END AS value
FROM changes c LEFT JOIN pol p USING (tenant, change_id)
WHERE c.preflight IS NOT NULL;
