"""Batch ingest: stored event records → DuckDB rows, position in the same transaction.

:func:`ingest` is the one way rows get into a projection database (the projector, the
rebuild, the benchmark all call it). A batch is a list of ``(stream sequence, stored bytes)``;
records at or below the stored position are skipped, so a batch re-delivered after a crash
is applied exactly once. The raw JSON goes in with two list parameters (columnar, no row-by-
row inserts); DuckDB parses the envelopes and derives every fact table with set-based SQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import msgspec

from projections import lifecycle
from projections.lifecycle import Lifecycles

POSITION = "upm"

_ENVELOPE = (
    '{"id":"VARCHAR","change_id":"VARCHAR","tenant":"VARCHAR","phase":"VARCHAR","ts":"VARCHAR","actor":"VARCHAR",'
    '"source":"VARCHAR","visibility":"VARCHAR","prev_hash":"VARCHAR","hash":"VARCHAR","payload":"JSON"}'
)

_EVENTS = f"""
INSERT INTO events
SELECT seq, e.id, e.change_id, e.tenant, e.payload->>'$.type', e.phase, e.ts,
       try_cast(rtrim(e.ts, 'Z') AS TIMESTAMP), e.actor, e.source, coalesce(e.visibility, 'team'),
       coalesce(e.prev_hash, ''), coalesce(e.hash, ''), e.payload
FROM (SELECT seq, json_transform(doc, '{_ENVELOPE}') AS e
      FROM (SELECT unnest($seqs::BIGINT[]) AS seq, unnest($docs::VARCHAR[]) AS doc))
WHERE seq > $lo
ORDER BY seq
"""

_EXEC = ('execution.started', 'execution.completed', 'execution.failed', 'execution.paused', 'execution.resumed')
_EXEC_TYPES = f"{_EXEC}"  # the tuple's repr is SQL's list of strings
_IN_BATCH = "e.seq > $lo AND e.seq <= $hi"
_BATCH = f"FROM events e WHERE {_IN_BATCH}"

_INTENTS = f"""
INSERT INTO intents
SELECT e.seq, e.tenant, e.change_id, e.at_utc,
       md5(json_array(e.tenant, e.payload->>'$.request', e.payload->'$.spec', e.payload->>'$.initiator',
                      e.payload->>'$.reason', e.payload->>'$.window', e.payload->>'$.variant',
                      e.payload->>'$.environment')::VARCHAR),
       e.payload->>'$.request', e.payload->>'$.initiator'
{_BATCH} AND e.type = 'intent.submitted'
"""

_PLANS = f"""
INSERT INTO plans
SELECT e.seq, e.tenant, e.change_id, e.at_utc, (e.payload->>'$.revision')::BIGINT, e.payload->>'$.plan.hash',
       (e.payload->>'$.compile_ms')::DOUBLE, e.payload->>'$.plan.variant',
       json_array_length(e.payload->'$.plan.steps'),
       (SELECT arg_max(i.input_key, i.seq) FROM intents i
         WHERE i.tenant = e.tenant AND i.change_id = e.change_id AND i.seq < e.seq)
{_BATCH} AND e.type = 'plan.compiled'
UNION ALL  -- the auditor's determinism witness: the same input compiled again in a fresh process
SELECT e.seq, e.tenant, e.change_id, e.at_utc, NULL, e.payload->>'$.recompiled_hash', NULL, NULL, NULL,
       (SELECT arg_max(i.input_key, i.seq) FROM intents i
         WHERE i.tenant = e.tenant AND i.change_id = e.change_id AND i.seq < e.seq)
{_BATCH} AND e.type = 'plan.recompiled' AND coalesce(e.payload->>'$.recompiled_hash', '') <> ''
"""

_PLAN_STEPS = f"""
INSERT INTO plan_steps
SELECT e.seq, e.tenant, e.change_id, e.payload->>'$.plan.hash', s->>'$.id', (s->>'$.index')::BIGINT,
       s->>'$.resource.key', s->>'$.resource.type', s->>'$.resource.provider', s->>'$.action',
       s->>'$.command.display', s->>'$.rollback.display', (s->>'$.wave')::BIGINT
FROM events e, unnest(json_extract(e.payload, '$.plan.steps[*]')) AS u(s)
WHERE {_IN_BATCH} AND e.type = 'plan.compiled'
"""

_STEPS = f"""
INSERT INTO steps
SELECT e.seq, e.tenant, e.change_id, e.at_utc, split_part(e.type, '.', 2), e.payload->>'$.step_id',
       (e.payload->>'$.index')::BIGINT, e.payload->>'$.command', (e.payload->>'$.output.rc')::BIGINT,
       (e.payload->>'$.output.attempts')::BIGINT, (e.payload->>'$.output.duration_ms')::DOUBLE,
       (e.payload->>'$.output.stdout_trunc')::BOOLEAN, (e.payload->>'$.output.stderr_trunc')::BOOLEAN,
       coalesce(e.payload->>'$.error', e.payload->>'$.reason')
{_BATCH} AND e.type IN ('step.started', 'step.completed', 'step.skipped', 'step.failed')
"""

_COVERED = """
EXISTS (SELECT 1 FROM approvals a WHERE a.kind = 'change.approved' AND a.tenant = e.tenant
        AND a.change_id = e.change_id AND a.plan_hash = e.payload->>'$.plan_hash' AND a.seq < e.seq)
AND (SELECT count(DISTINCT g.approver) FROM approvals g WHERE g.kind = 'approval.granted' AND g.tenant = e.tenant
     AND g.change_id = e.change_id AND g.plan_hash = e.payload->>'$.plan_hash' AND g.seq < e.seq)
 >= coalesce((SELECT max(r.required) FROM approvals r WHERE r.kind = 'approval.requested' AND r.tenant = e.tenant
              AND r.change_id = e.change_id AND r.plan_hash = e.payload->>'$.plan_hash' AND r.seq < e.seq), 0)
"""

_EXECUTIONS = f"""
INSERT INTO executions
SELECT e.seq, e.tenant, e.change_id, e.at_utc, split_part(e.type, '.', 2), e.payload->>'$.plan_hash',
       (e.payload->>'$.steps')::BIGINT, (e.payload->>'$.duration_ms')::DOUBLE, e.payload->>'$.reason',
       CASE WHEN e.type = 'execution.started' THEN {_COVERED} END
{_BATCH} AND e.type IN {_EXEC_TYPES}
"""

_APPROVALS = f"""
INSERT INTO approvals
SELECT e.seq, e.tenant, e.change_id, e.at_utc, e.type, e.payload->>'$.plan_hash', e.payload->>'$.approver',
       e.payload->>'$.group', e.payload->>'$.lane', (e.payload->>'$.required')::BIGINT,
       e.payload->>'$.by_policy', coalesce(e.payload->>'$.reason', e.payload->>'$.rule')
{_BATCH} AND e.type IN ('approval.requested', 'approval.granted', 'approval.denied', 'change.approved',
                        'change.scheduled')
"""

_POLICY = f"""
INSERT INTO policy_decisions
WITH decisions AS (
    SELECT e.seq, 0 AS n, e.tenant, e.change_id, e.at_utc, e.payload AS p
    {_BATCH} AND e.type = 'policy.evaluated'
    UNION ALL  -- pre-flight records one decision per pack inside its passed / failed event
    SELECT e.seq, u.n, e.tenant, e.change_id, e.at_utc, u.p
    FROM events e, unnest(json_extract(e.payload, '$.policy[*]')) WITH ORDINALITY AS u(p, n)
    WHERE {_IN_BATCH} AND e.type IN ('preflight.passed', 'preflight.failed')
)
SELECT seq, n, tenant, change_id, at_utc, p->>'$.plan_hash', p->>'$.pack', p->>'$.pack_hash',
       p->>'$.input_digest', (p->>'$.allowed')::BOOLEAN, coalesce(json_array_length(p->'$.violations'), 0),
       (p->>'$.risk_score')::DOUBLE, p->>'$.lane', (p->>'$.required_approvals')::BIGINT
FROM decisions
"""

_CHECKS = f"""
INSERT INTO checks
SELECT e.seq, u.n, e.tenant, e.change_id, e.at_utc, e.type, coalesce(e.payload->>'$.scope', e.phase),
       u.c->>'$.name', u.c->>'$.target', (u.c->>'$.ok')::BOOLEAN, u.c->>'$.detail'
FROM events e, unnest(json_extract(e.payload, '$.checks[*]')) WITH ORDINALITY AS u(c, n)
WHERE {_IN_BATCH} AND e.type IN ('preflight.passed', 'preflight.failed', 'verification.passed',
                                 'verification.failed', 'wave.completed')
"""

_VERIFICATIONS = f"""
INSERT INTO verifications
SELECT e.seq, e.tenant, e.change_id, e.at_utc, coalesce(e.payload->>'$.scope', 'change'),
       e.type = 'verification.passed', (e.payload->>'$.duration_ms')::DOUBLE, e.payload->>'$.baseline_hash',
       e.payload->>'$.current_hash', coalesce(json_array_length(e.payload->'$.diff'), 0)
{_BATCH} AND e.type IN ('verification.passed', 'verification.failed')
"""

_DRIFT = f"""
INSERT INTO drift
SELECT e.seq, e.tenant, e.change_id, e.at_utc, split_part(e.type, '.', 2), e.payload->>'$.resource',
       e.payload->>'$.action', e.payload->>'$.baseline_hash', e.payload->>'$.current_hash',
       e.payload->'$.diff', e.payload->>'$.reconcile_change_id', e.payload->>'$.by_change_id'
{_BATCH} AND e.type IN ('drift.detected', 'drift.resolved')
"""

_ROLLBACKS = f"""
INSERT INTO rollbacks
SELECT e.seq, e.tenant, e.change_id, e.at_utc, split_part(e.type, '.', 2), e.payload->>'$.plan_hash',
       e.payload->>'$.lane', e.payload->>'$.by', e.payload->>'$.reason', (e.payload->>'$.automatic')::BOOLEAN,
       json_array_length(e.payload->'$.commands'), (e.payload->>'$.duration_ms')::DOUBLE
{_BATCH} AND e.type IN ('rollback.planned', 'rollback.approved', 'rollback.started', 'rollback.completed',
                        'rollback.failed')
"""

_EVIDENCE = f"""
INSERT INTO evidence
SELECT e.seq, e.tenant, e.change_id, e.at_utc, e.payload->>'$.permalink', e.payload->>'$.object_name',
       e.payload->>'$.manifest_sha256', e.payload->>'$.key_id'
{_BATCH} AND e.type = 'evidence.published'
"""

_LOG_HEADS = f"""
INSERT INTO log_heads
SELECT e.seq, e.at_utc, (e.payload->>'$.size')::BIGINT, e.payload->>'$.root', e.payload->>'$.signed_at',
       e.payload->>'$.key_id', e.payload->>'$.signature'
{_BATCH} AND e.type = 'log.head'
"""

_CHANGE_FIELDS = (
    '{"request":"VARCHAR","initiator":"VARCHAR","environment":"VARCHAR","plan":{"hash":"VARCHAR"},"lane":"VARCHAR",'
    '"scope":"VARCHAR","outcome":"VARCHAR","chain_head":"VARCHAR","permalink":"VARCHAR"}'
)
_VERIFY = ('verification.passed', 'verification.failed')
_VERIFY_TYPES = f"{_VERIFY}"
_CHANGE_SCOPE = f"e.type IN {_VERIFY_TYPES} AND coalesce(e.p.scope, 'change') = 'change'"

# Events only the drift loop's per-tenant log and the signed log heads hold: those logs are no
# change, so they get no row in `changes` (their events are in `events`, `drift` and `log_heads`).
_LOG_ONLY_TYPES = frozenset({'drift.detected', 'drift.resolved', 'drift.scanned', 'log.head'})
_LOG_ONLY = "('drift.detected', 'drift.resolved', 'drift.scanned', 'log.head')"

_CHANGES = f"""
INSERT INTO changes BY NAME
SELECT e.tenant, e.change_id,
       min(e.seq) AS first_seq, max(e.seq) AS last_seq, count(*) AS events,
       min(e.at_utc) AS first_at, max(e.at_utc) AS last_at,
       arg_min(e.source, e.seq) AS source, arg_min(e.visibility, e.seq) AS visibility,
       min(e.at_utc) FILTER (WHERE e.type = 'intent.submitted') AS submitted_at,
       arg_min(e.p.request, e.seq) FILTER (WHERE e.type = 'intent.submitted') AS request,
       arg_min(e.p.initiator, e.seq) FILTER (WHERE e.type = 'intent.submitted') AS initiator,
       arg_min(e.p.environment, e.seq) FILTER (WHERE e.type = 'intent.submitted') AS environment,
       count(*) FILTER (WHERE e.type IN ('plan.compiled', 'plan.rejected')) AS revisions,
       arg_max(e.p.plan.hash, e.seq) FILTER (WHERE e.type = 'plan.compiled') AS plan_hash,
       max(e.at_utc) FILTER (WHERE e.type = 'plan.compiled') AS compiled_at,
       arg_max(split_part(e.type, '.', 2), e.seq) FILTER (WHERE e.type IN ('preflight.passed', 'preflight.failed'))
           AS preflight,
       max(e.at_utc) FILTER (WHERE e.type IN ('preflight.passed', 'preflight.failed')) AS preflight_at,
       max(e.at_utc) FILTER (WHERE e.type = 'change.approved') AS approved_at,
       arg_max(e.p.lane, e.seq) FILTER (WHERE e.type = 'change.approved') AS approval_lane,
       min(e.at_utc) FILTER (WHERE e.type = 'execution.started') AS execution_started_at,
       arg_max(replace(split_part(e.type, '.', 2), 'resumed', 'started'), e.seq) FILTER (WHERE e.type IN {_EXEC_TYPES})
           AS execution,
       max(e.at_utc) FILTER (WHERE e.type IN ('execution.completed', 'execution.failed')) AS execution_ended_at,
       arg_max(split_part(e.type, '.', 2), e.seq) FILTER (WHERE {_CHANGE_SCOPE}) AS verification,
       max(e.at_utc) FILTER (WHERE {_CHANGE_SCOPE}) AS verified_at,
       arg_max(split_part(e.type, '.', 2), e.seq) FILTER (WHERE e.type LIKE 'rollback.%') AS rollback,
       max(e.at_utc) FILTER (WHERE e.type LIKE 'rollback.%') AS rollback_at,
       arg_max(e.p.outcome, e.seq) FILTER (WHERE e.type = 'change.closed') AS outcome,
       max(e.at_utc) FILTER (WHERE e.type = 'change.closed') AS closed_at,
       arg_max(e.p.chain_head, e.seq) FILTER (WHERE e.type = 'change.closed') AS chain_head,
       arg_max(e.p.permalink, e.seq) FILTER (WHERE e.type = 'evidence.published') AS permalink
FROM (SELECT e.*, json_transform(e.payload, '{_CHANGE_FIELDS}') AS p {_BATCH} AND e.type NOT IN {_LOG_ONLY}) e
GROUP BY e.tenant, e.change_id
ON CONFLICT (tenant, change_id) DO UPDATE SET
    last_seq = excluded.last_seq,
    events = changes.events + excluded.events,
    last_at = coalesce(excluded.last_at, changes.last_at),
    submitted_at = coalesce(changes.submitted_at, excluded.submitted_at),
    request = coalesce(changes.request, excluded.request),
    initiator = coalesce(changes.initiator, excluded.initiator),
    environment = coalesce(changes.environment, excluded.environment),
    revisions = changes.revisions + excluded.revisions,
    plan_hash = coalesce(excluded.plan_hash, changes.plan_hash),
    compiled_at = coalesce(excluded.compiled_at, changes.compiled_at),
    preflight = coalesce(excluded.preflight, changes.preflight),
    preflight_at = coalesce(excluded.preflight_at, changes.preflight_at),
    approved_at = coalesce(excluded.approved_at, changes.approved_at),
    approval_lane = coalesce(excluded.approval_lane, changes.approval_lane),
    execution_started_at = coalesce(changes.execution_started_at, excluded.execution_started_at),
    execution = coalesce(excluded.execution, changes.execution),
    execution_ended_at = coalesce(excluded.execution_ended_at, changes.execution_ended_at),
    verification = coalesce(excluded.verification, changes.verification),
    verified_at = coalesce(excluded.verified_at, changes.verified_at),
    rollback = coalesce(excluded.rollback, changes.rollback),
    rollback_at = coalesce(excluded.rollback_at, changes.rollback_at),
    outcome = coalesce(excluded.outcome, changes.outcome),
    closed_at = coalesce(excluded.closed_at, changes.closed_at),
    chain_head = coalesce(excluded.chain_head, changes.chain_head),
    permalink = coalesce(excluded.permalink, changes.permalink)
"""

_STEP_TYPES = ('step.started', 'step.completed', 'step.skipped', 'step.failed')
_CHECK_TYPES = ('preflight.passed', 'preflight.failed', 'verification.passed', 'verification.failed', 'wave.completed')
_APPROVAL_TYPES = ('approval.requested', 'approval.granted', 'approval.denied', 'change.approved', 'change.scheduled')
_ROLLBACK_TYPES = ('rollback.planned', 'rollback.approved', 'rollback.started', 'rollback.completed', 'rollback.failed')

DERIVED: tuple[tuple[frozenset[str] | None, str], ...] = (
    (frozenset({'intent.submitted'}), _INTENTS),
    (frozenset({'plan.compiled', 'plan.recompiled'}), _PLANS),
    (frozenset({'plan.compiled'}), _PLAN_STEPS),
    (frozenset(_STEP_TYPES), _STEPS),
    (frozenset(_APPROVAL_TYPES), _APPROVALS),
    (frozenset(_EXEC), _EXECUTIONS),
    (frozenset({'policy.evaluated', 'preflight.passed', 'preflight.failed'}), _POLICY),
    (frozenset(_CHECK_TYPES), _CHECKS),
    (frozenset(_VERIFY), _VERIFICATIONS),
    (frozenset({'drift.detected', 'drift.resolved'}), _DRIFT),
    (frozenset(_ROLLBACK_TYPES), _ROLLBACKS),
    (frozenset({'evidence.published'}), _EVIDENCE),
    (frozenset({'log.head'}), _LOG_HEADS),
    (None, _CHANGES),  # every type but the log-only ones (see wanted)
)
"""Each derived table's statement and the event types it reads (``None``: see :func:`wanted`): a batch
runs only the statements whose types it holds, so a batch of one ``step.completed`` runs two of the
fourteen, not all (each statement costs a plan and a pass over the batch even when it inserts nothing)."""


class _Payload(msgspec.Struct):
    type: str = ""


class _Typed(msgspec.Struct):
    payload: _Payload = msgspec.field(default_factory=_Payload)


_typed = msgspec.json.Decoder(_Typed).decode


def batch_types(docs: Sequence[bytes]) -> frozenset[str] | None:
    """The event types in ``docs``; ``None`` when one does not decode (then every statement runs)."""
    try:
        return frozenset(_typed(d).payload.type for d in docs)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def wanted(types: frozenset[str] | None, reads: frozenset[str] | None) -> bool:
    """Whether a batch holding ``types`` (``None``: unknown) needs the statement that reads ``reads``."""
    if types is None:
        return True
    if reads is None:  # the changes table: any event of a change
        return not types <= _LOG_ONLY_TYPES
    return not types.isdisjoint(reads)


def position(con: duckdb.DuckDBPyConnection) -> int:
    """The last stream sequence stored in this database (0 when empty)."""
    row = con.execute("SELECT last_seq FROM projector_position WHERE name = ?", [POSITION]).fetchone()
    return int(row[0]) if row else 0


def apply_batch(
    con: duckdb.DuckDBPyConnection, records: Sequence[tuple[int, bytes]], lifecycles: Lifecycles | None = None
) -> int:
    """Write ``records`` above the stored position and move the position; no transaction control.

    ``lifecycles`` holds this file's open changes across batches (:mod:`projections.lifecycle`;
    without one, open changes are loaded back from the file). Returns the new position. Callers
    run it inside a transaction (see :func:`ingest`).
    """
    lo = position(con)
    fresh = [(seq, data) for seq, data in records if seq > lo]
    if not fresh:
        return lo
    hi = max(seq for seq, _ in fresh)
    con.execute(_EVENTS, {"seqs": [s for s, _ in fresh], "docs": [d.decode() for _, d in fresh], "lo": lo})
    types = batch_types([d for _, d in fresh])
    for reads, sql in DERIVED:
        if wanted(types, reads):
            con.execute(sql, {"lo": lo, "hi": hi})
    lifecycle.write(con, (lifecycles or Lifecycles()).evolve(con, fresh, lo))
    con.execute("INSERT OR REPLACE INTO projector_position VALUES (?, ?)", [POSITION, hi])
    return hi


def ingest(
    con: duckdb.DuckDBPyConnection, records: Sequence[tuple[int, bytes]], lifecycles: Lifecycles | None = None
) -> int:
    """Apply one batch in one transaction (rows and position together); return the position."""
    con.execute("BEGIN TRANSACTION")
    try:
        seq = apply_batch(con, records, lifecycles)
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
    return seq
