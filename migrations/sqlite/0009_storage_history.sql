-- Storage history (SQLite): stored bytes and objects by tier and kind, one snapshot a UTC
-- day, recorded by the tiering pass and pruned after storage_history.retention_days.
-- Keep in step with migrations/postgres.

CREATE TABLE storage_history_days (
    -- YYYY-MM-DD
    day         TEXT PRIMARY KEY,
    recorded_at TEXT NOT NULL
);

CREATE TABLE storage_history (
    day         TEXT NOT NULL REFERENCES storage_history_days (day) ON DELETE CASCADE,
    tier        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    objects     INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    unmeasured  INTEGER NOT NULL,
    PRIMARY KEY (day, tier, kind)
);
