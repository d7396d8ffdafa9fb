-- kpi: evidence_completeness_pct
-- formula: 100 × closed changes with a published evidence pack (evidence.published) / closed changes.
--   One row per closed change, dated by its change.closed.
CREATE OR REPLACE VIEW kpi_evidence_completeness AS
SELECT tenant, closed_at AS at_utc, CASE WHEN permalink IS NULL THEN 0.0 ELSE 1.0 END AS value
FROM changes
WHERE outcome IS NOT NULL;
