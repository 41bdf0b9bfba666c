-- FlexPhotoDB control plane schema (SQLite: UUIDs as 16-byte BLOBs, times as RFC 3339 UTC text, JSON as text). Keep in step with migrations/postgres.

-- One row per image: identity and technical facts, descriptive metadata, workflow state.
CREATE TABLE images (
    -- identity and technical facts
    id              BLOB PRIMARY KEY,
    owner           TEXT NOT NULL,
    uploaded_at     TEXT NOT NULL,
    bytes           BIGINT,
    sha256          TEXT,
    mime            TEXT,
    format          TEXT,
    width           INTEGER,
    height          INTEGER,
    original_key    TEXT NOT NULL,
    variant_keys    TEXT NOT NULL DEFAULT '{}',
    storage_tier    TEXT NOT NULL DEFAULT 'standard',
    phash           BIGINT,
    -- what the client declared at upload time
    declared_bytes  BIGINT,
    declared_mime   TEXT NOT NULL,
    upload_expires_at TEXT,
    -- descriptive metadata
    caption         TEXT,
    tags            TEXT NOT NULL DEFAULT '[]',
    exif            TEXT,
    camera_make     TEXT,
    camera_model    TEXT,
    lens            TEXT,
    taken_at        TEXT,
    iso             INTEGER,
    exposure_time   REAL,
    f_number        REAL,
    focal_length    REAL,
    gps_lat         REAL,
    gps_lon         REAL,
    orientation     INTEGER,
    -- workflow state
    status          TEXT NOT NULL CHECK (status IN ('uploading', 'processing', 'ready', 'failed')),
    error           TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    completed_at    TEXT,
    processed_at    TEXT
);

-- An owner's recent images (keyset pagination on uploaded_at, id).
CREATE INDEX images_owner_recent ON images (owner, uploaded_at DESC, id DESC);
-- Images since a time.
CREATE INDEX images_uploaded_at ON images (uploaded_at);
-- By status (the sweeper and dashboards).
CREATE INDEX images_status ON images (status, updated_at);
-- Exact duplicates per owner, race-free; failed images do not block a retry.
CREATE UNIQUE INDEX images_owner_sha256 ON images (owner, sha256)
    WHERE sha256 IS NOT NULL AND status <> 'failed';

-- The durable queue (transactional outbox): a job row is written in the transaction that
-- makes the work necessary.
CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id        BLOB NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    kind            TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    run_at          TEXT NOT NULL,
    lease_until     TEXT,
    lease_token     BLOB,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX jobs_queued ON jobs (run_at, id) WHERE state = 'queued';
CREATE INDEX jobs_running ON jobs (lease_until) WHERE state = 'running';
CREATE INDEX jobs_image ON jobs (image_id);

-- API keys, stored as SHA-256 of the secret.
CREATE TABLE api_keys (
    id              BLOB PRIMARY KEY,
    name            TEXT NOT NULL,
    key_hash        TEXT NOT NULL UNIQUE,
    role            TEXT NOT NULL CHECK (role IN ('admin', 'uploader', 'viewer')),
    -- NULL: every owner.
    owner_scope     TEXT,
    created_at      TEXT NOT NULL,
    revoked_at      TEXT
);

-- Small process-wide settings (the generated upload-URL signing key).
CREATE TABLE settings (
    name            TEXT PRIMARY KEY,
    value           TEXT NOT NULL
);
