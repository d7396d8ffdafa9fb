-- Typed fact tables derived from `events` at ingest (one row per fact, keyed by the event's
-- stream sequence), so KPI views never parse JSON at query time.

-- One row per change, upserted as its events arrive.
CREATE TABLE changes (
    tenant               VARCHAR NOT NULL,
    change_id            VARCHAR NOT NULL,
    first_seq            BIGINT NOT NULL,
    last_seq             BIGINT NOT NULL,
    events               BIGINT NOT NULL,
    first_at             TIMESTAMP,
    last_at              TIMESTAMP,
    source               VARCHAR,
    visibility           VARCHAR,
    submitted_at         TIMESTAMP,
    request              VARCHAR,
    initiator            VARCHAR,
    environment          VARCHAR,
    revisions            BIGINT NOT NULL,
    plan_hash            VARCHAR,
    compiled_at          TIMESTAMP,
    preflight            VARCHAR,
    preflight_at         TIMESTAMP,
    approved_at          TIMESTAMP,
    approval_lane        VARCHAR,
    execution_started_at TIMESTAMP,
    execution            VARCHAR,
    execution_ended_at   TIMESTAMP,
    verification         VARCHAR,
    verified_at          TIMESTAMP,
    rollback             VARCHAR,
    rollback_at          TIMESTAMP,
    outcome              VARCHAR,
    closed_at            TIMESTAMP,
    chain_head           VARCHAR,
    permalink            VARCHAR,
    PRIMARY KEY (tenant, change_id)
);

-- Each intent (revision) of a change; `input_key` identifies the input for plan determinism.
CREATE TABLE intents (
    seq        BIGINT PRIMARY KEY,
    tenant     VARCHAR NOT NULL,
    change_id  VARCHAR NOT NULL,
    at_utc         TIMESTAMP,
    input_key  VARCHAR NOT NULL,
    request    VARCHAR,
    initiator  VARCHAR
);

-- Each compiled plan, with the input it was compiled from.
CREATE TABLE plans (
    seq        BIGINT PRIMARY KEY,
    tenant     VARCHAR NOT NULL,
    change_id  VARCHAR NOT NULL,
    at_utc         TIMESTAMP,
    revision   BIGINT,
    plan_hash  VARCHAR NOT NULL,
    compile_ms DOUBLE,
    variant    VARCHAR,
    steps      BIGINT,
    input_key  VARCHAR
);

-- Each step of each compiled plan (what it acts on, and how to undo it).
CREATE TABLE plan_steps (
    seq           BIGINT NOT NULL,
    tenant        VARCHAR NOT NULL,
    change_id     VARCHAR NOT NULL,
    plan_hash     VARCHAR NOT NULL,
    step_id       VARCHAR NOT NULL,
    idx           BIGINT,
    resource_key  VARCHAR,
    resource_type VARCHAR,
    provider      VARCHAR,
    action        VARCHAR,
    command       VARCHAR,
    rollback      VARCHAR,
    wave          BIGINT,
    PRIMARY KEY (seq, step_id)
);

-- step.started / completed / skipped / failed (execution and rollback runs alike).
CREATE TABLE steps (
    seq          BIGINT PRIMARY KEY,
    tenant       VARCHAR NOT NULL,
    change_id    VARCHAR NOT NULL,
    at_utc           TIMESTAMP,
    status       VARCHAR NOT NULL,
    step_id      VARCHAR NOT NULL,
    idx          BIGINT,
    command      VARCHAR,
    rc           BIGINT,
    attempts     BIGINT,
    duration_ms  DOUBLE,
    stdout_trunc BOOLEAN,
    stderr_trunc BOOLEAN,
    error        VARCHAR
);

-- execution.started / completed / failed / paused / resumed (the change's forward run).
CREATE TABLE executions (
    seq         BIGINT PRIMARY KEY,
    tenant      VARCHAR NOT NULL,
    change_id   VARCHAR NOT NULL,
    at_utc      TIMESTAMP,
    kind        VARCHAR NOT NULL,
    plan_hash   VARCHAR,
    steps       BIGINT,
    duration_ms DOUBLE,
    reason      VARCHAR
);

-- approval.requested / granted / denied, change.approved, change.scheduled.
CREATE TABLE approvals (
    seq       BIGINT PRIMARY KEY,
    tenant    VARCHAR NOT NULL,
    change_id VARCHAR NOT NULL,
    at_utc        TIMESTAMP,
    kind      VARCHAR NOT NULL,
    plan_hash VARCHAR,
    approver  VARCHAR,
    grp       VARCHAR,
    lane      VARCHAR,
    required  BIGINT,
    by_policy VARCHAR,
    reason    VARCHAR
);

-- policy.evaluated: one decision of one policy pack on one plan.
CREATE TABLE policy_decisions (
    seq                BIGINT NOT NULL,
    n                  BIGINT NOT NULL,   -- which pack of the event (pre-flight records one per pack)
    tenant             VARCHAR NOT NULL,
    change_id          VARCHAR NOT NULL,
    at_utc                 TIMESTAMP,
    plan_hash          VARCHAR,
    pack               VARCHAR,
    pack_hash          VARCHAR,
    input_digest       VARCHAR,
    allowed            BOOLEAN,
    violations         BIGINT,
    risk_score         DOUBLE,
    lane               VARCHAR,
    required_approvals BIGINT,
    PRIMARY KEY (seq, n)
);

-- Every check of pre-flight, verification and wave health gates.
CREATE TABLE checks (
    seq       BIGINT NOT NULL,
    n         BIGINT NOT NULL,
    tenant    VARCHAR NOT NULL,
    change_id VARCHAR NOT NULL,
    at_utc        TIMESTAMP,
    kind      VARCHAR NOT NULL,
    scope     VARCHAR,
    name      VARCHAR,
    target    VARCHAR,
    ok        BOOLEAN,
    detail    VARCHAR,
    PRIMARY KEY (seq, n)
);

-- verification.passed / failed, with its scope (the change, or its rollback).
CREATE TABLE verifications (
    seq           BIGINT PRIMARY KEY,
    tenant        VARCHAR NOT NULL,
    change_id     VARCHAR NOT NULL,
    at_utc            TIMESTAMP,
    scope         VARCHAR NOT NULL,
    passed        BOOLEAN NOT NULL,
    duration_ms   DOUBLE,
    baseline_hash VARCHAR,
    current_hash  VARCHAR,
    diffs         BIGINT
);

-- drift.detected / drift.resolved.
CREATE TABLE drift (
    seq                 BIGINT PRIMARY KEY,
    tenant              VARCHAR NOT NULL,
    change_id           VARCHAR NOT NULL,
    at_utc                  TIMESTAMP,
    kind                VARCHAR NOT NULL,
    resource            VARCHAR,
    action              VARCHAR,
    baseline_hash       VARCHAR,
    current_hash        VARCHAR,
    diff                JSON,
    reconcile_change_id VARCHAR,
    by_change_id        VARCHAR
);

-- rollback.planned / approved / started / completed / failed.
CREATE TABLE rollbacks (
    seq         BIGINT PRIMARY KEY,
    tenant      VARCHAR NOT NULL,
    change_id   VARCHAR NOT NULL,
    at_utc          TIMESTAMP,
    kind        VARCHAR NOT NULL,
    plan_hash   VARCHAR,
    lane        VARCHAR,
    actor_by    VARCHAR,
    reason      VARCHAR,
    automatic   BOOLEAN,
    commands    BIGINT,
    duration_ms DOUBLE
);

-- evidence.published: where a change's evidence pack is.
CREATE TABLE evidence (
    seq             BIGINT PRIMARY KEY,
    tenant          VARCHAR NOT NULL,
    change_id       VARCHAR NOT NULL,
    at_utc              TIMESTAMP,
    permalink       VARCHAR,
    object_name     VARCHAR,
    manifest_sha256 VARCHAR,
    key_id          VARCHAR
);

-- log.head: the auditor's signed Merkle tree heads.
CREATE TABLE log_heads (
    seq       BIGINT PRIMARY KEY,
    at_utc        TIMESTAMP,
    size      BIGINT NOT NULL,
    root      VARCHAR NOT NULL,
    signed_at VARCHAR,
    key_id    VARCHAR,
    signature VARCHAR
);
