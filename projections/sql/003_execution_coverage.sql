-- Whether a change's execution.started was approved as required, decided at ingest (the approvals
-- always precede the execution), so the approval-coverage KPI reads one column instead of joining
-- the approval trail at query time. NULL for other execution events.
ALTER TABLE executions ADD COLUMN approved_as_required BOOLEAN;
