-- kpi: rollback_success_pct
-- formula: 100 × rollback runs that completed and whose restored state was then read back and matched
--   (a passing rollback-scope verification before the next run, and no failing one) /
--   rollback runs that ended (rollback.completed or rollback.failed). A run whose verification failed
--   or could not read back, or was never verified, counts as failed: only a read-back is evidence.
--   One row per ended run (named: a conformance run leaves its injected faults out), dated by its end.
CREATE OR REPLACE VIEW kpi_rollback_success AS
WITH ends AS (
    SELECT tenant, change_id, seq, at_utc, kind,
           lead(seq) OVER (PARTITION BY tenant, change_id ORDER BY seq) AS next_seq
    FROM rollbacks WHERE kind IN ('completed', 'failed')
), verified AS (
    SELECT e.tenant, e.change_id, e.seq, bool_and(v.passed) AS passed
    FROM ends e JOIN verifications v
      ON v.tenant = e.tenant AND v.change_id = e.change_id AND v.scope = 'rollback'
     AND v.seq > e.seq AND (e.next_seq IS NULL OR v.seq < e.next_seq)
    GROUP BY e.tenant, e.change_id, e.seq
)
SELECT e.tenant, e.change_id, e.at_utc,
       CASE WHEN e.kind = 'completed' AND coalesce(v.passed, false) THEN 1.0 ELSE 0.0 END AS value
FROM ends e LEFT JOIN verified v USING (tenant, change_id, seq);
