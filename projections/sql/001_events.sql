-- Every stored event, one row each: all envelope fields, the parsed time, the JSON payload.
-- `seq` is the stream sequence; `at_utc` is `ts` parsed as UTC (NULL if it does not parse).
CREATE TABLE events (
    seq        BIGINT PRIMARY KEY,
    id         VARCHAR NOT NULL,
    change_id  VARCHAR NOT NULL,
    tenant     VARCHAR NOT NULL,
    type       VARCHAR NOT NULL,
    phase      VARCHAR NOT NULL,
    ts         VARCHAR NOT NULL,
    at_utc         TIMESTAMP,
    actor      VARCHAR NOT NULL,
    source     VARCHAR NOT NULL,
    visibility VARCHAR NOT NULL,
    prev_hash  VARCHAR NOT NULL,
    hash       VARCHAR NOT NULL,
    payload    JSON NOT NULL
);

-- The projector's tracking position: the last stream sequence whose rows are in this file.
-- Written in the same transaction as the rows (exactly-once, resumable).
CREATE TABLE projector_position (
    name     VARCHAR PRIMARY KEY,
    last_seq BIGINT NOT NULL
);
