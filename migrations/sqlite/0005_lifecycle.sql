-- Lifecycle (SQLite): access statistics from the edges, hot/cold tiering, archive restores.
-- Keep in step with migrations/postgres.

ALTER TABLE images ADD COLUMN last_accessed_at TEXT;
ALTER TABLE images ADD COLUMN tier_changed_at TEXT;
ALTER TABLE images ADD COLUMN restore_state TEXT
    CHECK (restore_state IS NULL OR restore_state IN ('restoring', 'restored'));
ALTER TABLE images ADD COLUMN restore_requested_at TEXT;
CREATE INDEX images_tier_age ON images (storage_tier, uploaded_at) WHERE deleted_at IS NULL;
CREATE INDEX images_last_accessed ON images (last_accessed_at);

CREATE TABLE image_objects (
    image_id    BLOB NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    key         TEXT NOT NULL,
    bytes       INTEGER,
    tier        TEXT NOT NULL DEFAULT 'standard' CHECK (tier IN ('standard', 'cold')),
    PRIMARY KEY (image_id, kind)
);
CREATE INDEX image_objects_key ON image_objects (key);
CREATE INDEX image_objects_tier ON image_objects (tier, kind);
INSERT INTO image_objects (image_id, kind, key, bytes)
    SELECT id, 'original', original_key, bytes FROM images
    WHERE status = 'ready' AND deleted_at IS NULL;
INSERT OR IGNORE INTO image_objects (image_id, kind, key)
    SELECT i.id, v.key, v.value FROM images i, json_each(i.variant_keys) v
    WHERE i.status = 'ready' AND i.deleted_at IS NULL;

CREATE TABLE access_daily (
    image_id    BLOB NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    -- YYYY-MM-DD
    day         TEXT NOT NULL,
    requests    INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    edge_hits   INTEGER NOT NULL,
    PRIMARY KEY (image_id, day)
);
CREATE INDEX access_daily_day ON access_daily (day);

CREATE TABLE access_batches (
    batch_id    TEXT PRIMARY KEY,
    edge        TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE INDEX access_batches_received ON access_batches (received_at);

CREATE TABLE edges (
    name            TEXT PRIMARY KEY,
    url             TEXT,
    first_seen_at   TEXT NOT NULL,
    last_push_at    TEXT NOT NULL,
    requests        INTEGER NOT NULL DEFAULT 0,
    bytes           INTEGER NOT NULL DEFAULT 0,
    edge_hits       INTEGER NOT NULL DEFAULT 0,
    dropped         INTEGER NOT NULL DEFAULT 0
);

-- The edge role: SQLite cannot change a CHECK in place, so the table is rebuilt.
CREATE TABLE api_keys_new (
    id              BLOB PRIMARY KEY,
    name            TEXT NOT NULL,
    key_hash        TEXT NOT NULL UNIQUE,
    role            TEXT NOT NULL CHECK (role IN ('admin', 'reviewer', 'uploader', 'viewer', 'edge')),
    owner_scope     TEXT,
    created_at      TEXT NOT NULL,
    revoked_at      TEXT,
    created_by      BLOB
);
INSERT INTO api_keys_new SELECT id, name, key_hash, role, owner_scope, created_at, revoked_at, created_by FROM api_keys;
DROP TABLE api_keys;
ALTER TABLE api_keys_new RENAME TO api_keys;
