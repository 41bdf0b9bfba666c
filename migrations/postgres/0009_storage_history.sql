-- Storage history (Postgres): stored bytes and objects by tier and kind, one snapshot a UTC
-- day, recorded by the tiering pass and pruned after storage_history.retention_days.
-- Keep in step with migrations/sqlite.

-- A recorded day (a day with no objects stored still has its row, so it is not recorded
-- again).
CREATE TABLE storage_history_days (
    day         DATE PRIMARY KEY,
    recorded_at TIMESTAMPTZ NOT NULL
);

-- That day's figures by tier ('standard', 'cold') and kind ('original' or a variant's name).
CREATE TABLE storage_history (
    day         DATE NOT NULL REFERENCES storage_history_days (day) ON DELETE CASCADE,
    tier        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    objects     BIGINT NOT NULL,
    bytes       BIGINT NOT NULL,
    -- objects whose size was not known yet (counted as 0 bytes)
    unmeasured  BIGINT NOT NULL,
    PRIMARY KEY (day, tier, kind)
);
