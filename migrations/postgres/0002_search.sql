-- Search, near-duplicates, review state and correction history (Postgres).
-- Keep in step with migrations/sqlite.

-- Where an image is in review, and why it was routed there (e.g. "near-duplicate of …").
ALTER TABLE images ADD COLUMN review_state TEXT NOT NULL DEFAULT 'unreviewed'
    CHECK (review_state IN ('unreviewed', 'needs_review', 'approved', 'rejected'));
ALTER TABLE images ADD COLUMN review_reason TEXT;
CREATE INDEX images_review ON images (review_state, uploaded_at DESC);

-- Which model embedded an image and what it saw. The vectors live in the vector index (point
-- id = image id); this row says which model made them, so a model change re-embeds.
CREATE TABLE image_embeddings (
    image_id        UUID PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    model           TEXT NOT NULL,
    concepts        JSONB NOT NULL DEFAULT '[]'::jsonb,
    embedded_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX image_embeddings_model ON image_embeddings (model);

-- Near-duplicate pairs found at ingest, stored in both directions so either image lists the
-- other. method: 'phash' (distance = Hamming bits) or 'embedding' (distance = 1 - cosine).
CREATE TABLE image_duplicates (
    image_id        UUID NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    other_id        UUID NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    method          TEXT NOT NULL CHECK (method IN ('phash', 'embedding')),
    distance        DOUBLE PRECISION NOT NULL,
    owner           TEXT NOT NULL,
    found_at        TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (image_id, other_id, method)
);
CREATE INDEX image_duplicates_owner ON image_duplicates (owner, found_at DESC);

-- Corrections are history: every change to descriptive metadata or review state, who made
-- it and why, oldest first.
CREATE TABLE image_history (
    id              BIGSERIAL PRIMARY KEY,
    image_id        UUID NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    field           TEXT NOT NULL,
    old_value       JSONB,
    new_value       JSONB,
    actor           TEXT NOT NULL,
    reason          TEXT,
    at              TIMESTAMPTZ NOT NULL
);
CREATE INDEX image_history_image ON image_history (image_id, id);
