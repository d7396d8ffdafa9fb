-- kpi: rollback_success_pct
-- formula: 100 × rollback runs that completed and were not then failed by a rollback-scope verification /
--   rollback runs that ended (rollback.completed or rollback.failed).
--   One row per ended run, dated by its end.
CREATE OR REPLACE VIEW kpi_rollback_success AS
WITH ends AS (
    SELECT tenant, change_id, seq, at_utc, kind,
           lead(seq) OVER (PARTITION BY tenant, change_id ORDER BY seq) AS next_seq
    FROM rollbacks WHERE kind IN ('completed', 'failed')
), refuted AS (
    SELECT DISTINCT e.tenant, e.change_id, e.seq
    FROM ends e JOIN verifications v
      ON v.tenant = e.tenant AND v.change_id = e.change_id AND v.scope = 'rollback' AND NOT v.passed
     AND v.seq > e.seq AND (e.next_seq IS NULL OR v.seq < e.next_seq)
)
SELECT e.tenant, e.at_utc,
       CASE WHEN e.kind = 'completed' AND r.seq IS NULL THEN 1.0 ELSE 0.0 END AS value
FROM ends e LEFT JOIN refuted r USING (tenant, change_id, seq);
