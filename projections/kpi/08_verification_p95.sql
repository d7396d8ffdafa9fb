-- kpi: verification_p95_ms
-- formula: P95 (linear interpolation, quantile_cont) of duration_ms of every verification.passed and
--   verification.failed (change and rollback scope). One row per verification.
CREATE OR REPLACE VIEW kpi_verification AS
SELECT tenant, at_utc, duration_ms AS value FROM verifications WHERE duration_ms IS NOT NULL;
