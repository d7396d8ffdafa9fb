-- kpi: mttr_failed_change_min
-- formula: mean over restored failed changes of (restored_at − failed_at) in minutes, where
--   failed_at   = first execution.failed or change-scope verification.failed,
--   restored_at = first passed rollback-scope verification (the restored state read back and
--                 matched: a rollback that completed but was never verified, or whose read-back
--                 failed or could not tell, restored nothing as far as evidence goes).
--   Failed changes not (yet) restored have no row. One row per restored change, dated by failed_at.
CREATE OR REPLACE VIEW kpi_mttr_failed_change AS
WITH failed AS (
    SELECT tenant, change_id, min(at_utc) AS failed_at FROM (
        SELECT tenant, change_id, at_utc FROM executions WHERE kind = 'failed'
        UNION ALL
        SELECT tenant, change_id, at_utc FROM verifications WHERE scope = 'change' AND NOT passed
    ) GROUP BY tenant, change_id
), restored AS (
    SELECT f.tenant, f.failed_at, v.ok_at AS restored_at
    FROM failed f JOIN (
        SELECT tenant, change_id, min(at_utc) FILTER (WHERE passed) AS ok_at
        FROM verifications WHERE scope = 'rollback' GROUP BY tenant, change_id
    ) v USING (tenant, change_id)
)
SELECT tenant, failed_at AS at_utc, date_diff('millisecond', failed_at, restored_at) / 60000.0 AS value
FROM restored
WHERE restored_at IS NOT NULL;
