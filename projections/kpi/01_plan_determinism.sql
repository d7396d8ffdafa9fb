-- kpi: plan_determinism_pct
-- formula: 100 × inputs whose every compile produced the same plan hash / inputs compiled at least twice
--   An input is the intent (tenant, request or spec, initiator, reason, window, variant, environment);
--   one row per input, dated by its last compile.
CREATE OR REPLACE VIEW kpi_plan_determinism AS
SELECT tenant, max(at_utc) AS at_utc,
       CASE WHEN count(DISTINCT plan_hash) = 1 THEN 1.0 ELSE 0.0 END AS value
FROM plans
WHERE input_key IS NOT NULL
GROUP BY tenant, input_key
HAVING count(*) >= 2;
