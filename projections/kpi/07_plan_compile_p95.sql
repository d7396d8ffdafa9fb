-- kpi: plan_compile_p95_ms
-- formula: P95 (linear interpolation, quantile_cont) of plan.compiled compile_ms.
--   One row per compiled plan, dated by its plan.compiled.
CREATE OR REPLACE VIEW kpi_plan_compile AS
SELECT tenant, at_utc, compile_ms AS value FROM plans WHERE compile_ms IS NOT NULL;
