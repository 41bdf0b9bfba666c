-- Search, near-duplicates, review state and correction history (SQLite).
-- Keep in step with migrations/postgres.

-- Where an image is in review, and why it was routed there (e.g. "near-duplicate of …").
ALTER TABLE images ADD COLUMN review_state TEXT NOT NULL DEFAULT 'unreviewed'
    CHECK (review_state IN ('unreviewed', 'needs_review', 'approved', 'rejected'));
ALTER TABLE images ADD COLUMN review_reason TEXT;
CREATE INDEX images_review ON images (review_state, uploaded_at DESC);

-- Which model embedded an image and what it saw. The vectors live in the vector index (point
-- id = image id); this row says which model made them, so a model change re-embeds.
CREATE TABLE image_embeddings (
    image_id        BLOB PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    model           TEXT NOT NULL,
    concepts        TEXT NOT NULL DEFAULT '[]',
    embedded_at     TEXT NOT NULL
);
CREATE INDEX image_embeddings_model ON image_embeddings (model);

-- Near-duplicate pairs found at ingest, stored in both directions so either image lists the
-- other. method: 'phash' (distance = Hamming bits) or 'embedding' (distance = 1 - cosine).
CREATE TABLE image_duplicates (
    image_id        BLOB NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    other_id        BLOB NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    method          TEXT NOT NULL CHECK (method IN ('phash', 'embedding')),
    distance        REAL NOT NULL,
    owner           TEXT NOT NULL,
    found_at        TEXT NOT NULL,
    PRIMARY KEY (image_id, other_id, method)
);
CREATE INDEX image_duplicates_owner ON image_duplicates (owner, found_at DESC);

-- Corrections are history: every change to descriptive metadata or review state, who made
-- it and why, oldest first.
CREATE TABLE image_history (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id        BLOB NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    field           TEXT NOT NULL,
    old_value       TEXT,
    new_value       TEXT,
    actor           TEXT NOT NULL,
    reason          TEXT,
    at              TEXT NOT NULL
);
CREATE INDEX image_history_image ON image_history (image_id, id);
