-- kpi: change_success_pct
-- formula: 100 × changes closed 'succeeded' / changes closed 'succeeded', 'failed', 'rolled_back' or 'stalled'
--   (rejected, denied and cancelled changes never mutated anything and do not count; a change the
--   watchdog closed 'stalled' did not finish, so it counts as not successful).
--   One row per closed change (named: a conformance run leaves its injected faults out), dated by its change.closed.
CREATE OR REPLACE VIEW kpi_change_success AS
SELECT tenant, change_id, closed_at AS at_utc, CASE WHEN outcome = 'succeeded' THEN 1.0 ELSE 0.0 END AS value
FROM changes
WHERE outcome IN ('succeeded', 'failed', 'rolled_back', 'stalled');
