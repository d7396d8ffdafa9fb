-- kpi: approval_coverage_pct
-- formula: 100 × executed changes approved as required / executed changes
--   Approved as required: a change.approved for the executed plan hash before execution.started, and at
--   least as many distinct approval.granted approvers of that plan as its approval.requested required
--   (decided at ingest: executions.approved_as_required). One row per change that started executing,
--   for its first execution.started.
CREATE OR REPLACE VIEW kpi_approval_coverage AS
SELECT tenant, min(at_utc) AS at_utc,
       CASE WHEN arg_min(approved_as_required, seq) THEN 1.0 ELSE 0.0 END AS value
FROM executions
WHERE kind = 'started'
GROUP BY tenant, change_id;
