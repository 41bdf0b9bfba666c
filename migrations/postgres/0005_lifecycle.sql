-- Lifecycle (Postgres): access statistics from the edges, hot/cold tiering, archive restores.
-- Keep in step with migrations/sqlite.

-- When any edge last served the image (any size or variant), and its tier history.
ALTER TABLE images ADD COLUMN last_accessed_at TIMESTAMPTZ;
ALTER TABLE images ADD COLUMN tier_changed_at TIMESTAMPTZ;
-- Archive restores: NULL, 'restoring' (asked of the store) or 'restored' (readable copy made,
-- the move back to hot storage queued).
ALTER TABLE images ADD COLUMN restore_state TEXT
    CHECK (restore_state IS NULL OR restore_state IN ('restoring', 'restored'));
ALTER TABLE images ADD COLUMN restore_requested_at TIMESTAMPTZ;
CREATE INDEX images_tier_age ON images (storage_tier, uploaded_at) WHERE deleted_at IS NULL;
CREATE INDEX images_last_accessed ON images (last_accessed_at);

-- Every stored object of an image (the original and each variant) with its size and tier, so
-- that objects move one by one and the bill can be counted by tier and kind.
CREATE TABLE image_objects (
    image_id    UUID NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    -- 'original' or the variant's name
    kind        TEXT NOT NULL,
    key         TEXT NOT NULL,
    -- NULL until known (rows from before this migration are measured by the tiering pass)
    bytes       BIGINT,
    -- 'standard' (hot) or 'cold'
    tier        TEXT NOT NULL DEFAULT 'standard' CHECK (tier IN ('standard', 'cold')),
    PRIMARY KEY (image_id, kind)
);
CREATE INDEX image_objects_key ON image_objects (key);
CREATE INDEX image_objects_tier ON image_objects (tier, kind);
INSERT INTO image_objects (image_id, kind, key, bytes)
    SELECT id, 'original', original_key, bytes FROM images
    WHERE status = 'ready' AND deleted_at IS NULL;
INSERT INTO image_objects (image_id, kind, key)
    SELECT i.id, v.key, v.value FROM images i, jsonb_each_text(i.variant_keys) v
    WHERE i.status = 'ready' AND i.deleted_at IS NULL
    ON CONFLICT DO NOTHING;

-- Requests and bytes the edges served per image and UTC day (every size and variant rolled
-- up to its image); edge_hits were answered from an edge cache.
CREATE TABLE access_daily (
    image_id    UUID NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    day         DATE NOT NULL,
    requests    BIGINT NOT NULL,
    bytes       BIGINT NOT NULL,
    edge_hits   BIGINT NOT NULL,
    PRIMARY KEY (image_id, day)
);
CREATE INDEX access_daily_day ON access_daily (day);

-- Batches already counted (an edge retrying a push is not counted twice); pruned after a week.
CREATE TABLE access_batches (
    batch_id    TEXT PRIMARY KEY,
    edge        TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX access_batches_received ON access_batches (received_at);

-- Edges known by their pushes: name, where they said they are, and what they reported.
CREATE TABLE edges (
    name            TEXT PRIMARY KEY,
    url             TEXT,
    first_seen_at   TIMESTAMPTZ NOT NULL,
    last_push_at    TIMESTAMPTZ NOT NULL,
    requests        BIGINT NOT NULL DEFAULT 0,
    bytes           BIGINT NOT NULL DEFAULT 0,
    edge_hits       BIGINT NOT NULL DEFAULT 0,
    dropped         BIGINT NOT NULL DEFAULT 0
);

-- Edges push access statistics with a key of their own role, which can do nothing else.
ALTER TABLE api_keys DROP CONSTRAINT api_keys_role_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_check
    CHECK (role IN ('admin', 'reviewer', 'uploader', 'viewer', 'edge'));
