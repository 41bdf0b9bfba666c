-- Catalog governance (SQLite): collections with versioned metadata schemas and vocabularies,
-- each image's descriptive metadata (with the source of every value), rights, review
-- workflow, lineage, review reasons, and correction history with sources.
-- Keep in step with migrations/postgres.

-- A project, campaign or archive. Every owner has one default collection.
CREATE TABLE collections (
    id              BLOB PRIMARY KEY,
    owner           TEXT NOT NULL,
    name            TEXT NOT NULL,
    description     TEXT,
    is_default      BOOLEAN NOT NULL DEFAULT FALSE,
    -- What an upload that fails validation gets: 'refuse' (422) or 'review' (accepted and
    -- routed to review with the failures recorded).
    on_invalid      TEXT NOT NULL DEFAULT 'review' CHECK (on_invalid IN ('refuse', 'review')),
    -- Publishing needs an approved image.
    publish_requires_approval BOOLEAN NOT NULL DEFAULT TRUE,
    -- The current version of collection_schemas (0: none yet, no rules).
    schema_version  INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    UNIQUE (owner, name)
);
CREATE UNIQUE INDEX collections_default ON collections (owner) WHERE is_default;

-- Every version of a collection's schema: its fields with their rules, and its vocabulary
-- (hierarchical terms with synonyms). Never changed once written.
CREATE TABLE collection_schemas (
    collection_id   BLOB NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    version         INTEGER NOT NULL,
    fields          TEXT NOT NULL DEFAULT '[]',
    terms           TEXT NOT NULL DEFAULT '[]',
    created_by      TEXT NOT NULL,
    reason          TEXT,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (collection_id, version)
);

-- Field names and types each collection's current schema declares (filters check types).
CREATE TABLE collection_fields (
    collection_id   BLOB NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    field           TEXT NOT NULL,
    kind            TEXT NOT NULL,
    PRIMARY KEY (collection_id, field)
);
CREATE INDEX collection_fields_field ON collection_fields (field);

-- One row per image: its collection, descriptive metadata beyond caption and tags (which stay
-- on images), where each value came from, rights, workflow, validation and lineage.
CREATE TABLE image_catalog (
    image_id        BLOB PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    owner           TEXT NOT NULL,
    collection_id   BLOB NOT NULL REFERENCES collections (id),
    -- {"title": "...", "credit": "...", "<schema field>": ...}
    fields          TEXT NOT NULL DEFAULT '{}',
    -- {"title": {"source": "sidecar", "at": "..."}}: upload, embedded, sidecar, csv, person,
    -- model, restore.
    sources         TEXT NOT NULL DEFAULT '{}',
    -- Vocabulary terms the image carries (from keywords and term fields), without ancestors.
    terms           TEXT NOT NULL DEFAULT '[]',
    -- Rights window (NULL: open on that side); outside it the image is withheld.
    rights_from     TEXT,
    rights_until    TEXT,
    -- What the rights scheduler last applied: 'clear' or 'withheld', when, and whether the
    -- edges and the CDN were purged since the image became withheld.
    rights_applied  TEXT NOT NULL DEFAULT 'clear' CHECK (rights_applied IN ('clear', 'withheld')),
    rights_purged   BOOLEAN NOT NULL DEFAULT TRUE,
    rights_applied_at TEXT,
    workflow_state  TEXT NOT NULL DEFAULT 'draft' CHECK (workflow_state IN
        ('draft', 'in_review', 'approved', 'published', 'rejected', 'changes_requested', 'withdrawn')),
    -- Optimistic concurrency: bumped by every change; a stale version gets 409.
    version         INTEGER NOT NULL DEFAULT 1,
    -- Since when the image has had open review reasons (NULL: not in the review queue), and
    -- the highest priority among them.
    queued_at       TEXT,
    review_priority INTEGER NOT NULL DEFAULT 0,
    -- The validation failures of the last check, and the schema version it checked against.
    validation      TEXT NOT NULL DEFAULT '[]',
    validated_version INTEGER NOT NULL DEFAULT 0,
    -- Lineage: a derivative or a new version of another image.
    derived_from    BLOB REFERENCES images (id) ON DELETE SET NULL,
    relation        TEXT CHECK (relation IN ('derivative', 'version')),
    lineage_root    BLOB,
    version_number  INTEGER NOT NULL DEFAULT 1,
    is_current      BOOLEAN NOT NULL DEFAULT TRUE,
    updated_at      TEXT NOT NULL
);
CREATE INDEX image_catalog_collection ON image_catalog (collection_id, validated_version);
CREATE INDEX image_catalog_queue ON image_catalog (owner, queued_at, image_id)
    WHERE queued_at IS NOT NULL;
CREATE INDEX image_catalog_queue_priority ON image_catalog (owner, review_priority DESC, queued_at, image_id)
    WHERE queued_at IS NOT NULL;
CREATE INDEX image_catalog_queue_all ON image_catalog (queued_at, image_id) WHERE queued_at IS NOT NULL;
CREATE INDEX image_catalog_rights ON image_catalog (rights_until) WHERE rights_until IS NOT NULL;
CREATE INDEX image_catalog_rights_from ON image_catalog (rights_from) WHERE rights_from IS NOT NULL;
CREATE INDEX image_catalog_withheld ON image_catalog (rights_applied) WHERE rights_applied = 'withheld';
CREATE INDEX image_catalog_lineage ON image_catalog (lineage_root);
CREATE INDEX image_catalog_derived ON image_catalog (derived_from);

-- Descriptive values as rows, for filters and sorting on any field: one row per value (a list
-- has one per item). Numbers and dates (epoch seconds) in num_value, everything as text too.
CREATE TABLE image_fields (
    image_id        BLOB NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    field           TEXT NOT NULL,
    item            INTEGER NOT NULL DEFAULT 0,
    text_value      TEXT,
    num_value       REAL,
    PRIMARY KEY (image_id, field, item)
);
CREATE INDEX image_fields_text ON image_fields (field, text_value, image_id);
CREATE INDEX image_fields_num ON image_fields (field, num_value, image_id);

-- The vocabulary terms an image carries, each with its ancestors (a filter on `animals` finds
-- images tagged `dogs`); direct marks the term the image was given.
CREATE TABLE image_terms (
    image_id        BLOB NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    term            TEXT NOT NULL,
    direct          BOOLEAN NOT NULL,
    PRIMARY KEY (image_id, term)
);
CREATE INDEX image_terms_term ON image_terms (term, image_id);

-- Why an image is in the review queue: one row per reason, open until a decision resolves it.
CREATE TABLE review_reasons (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id        BLOB NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    kind            TEXT NOT NULL CHECK (kind IN ('validation', 'near_duplicate', 'low_confidence',
        'rights_ending', 'suggested_tags', 'submitted', 'legacy')),
    detail          TEXT NOT NULL DEFAULT '{}',
    priority        INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    resolved_at     TEXT,
    resolved_by     TEXT
);
CREATE INDEX review_reasons_image ON review_reasons (image_id) WHERE resolved_at IS NULL;
CREATE INDEX review_reasons_kind ON review_reasons (kind, created_at) WHERE resolved_at IS NULL;

-- Corrections keep where a value came from and which change it belonged to.
ALTER TABLE image_history ADD COLUMN source TEXT;
ALTER TABLE image_history ADD COLUMN change_id TEXT;

-- Existing images: a default collection per owner, a catalog row each (workflow from the review
-- state), the review reason of those waiting, and a payload sync so the vector index learns the
-- new filter fields.
INSERT INTO collections (id, owner, name, is_default, created_at, updated_at)
    SELECT randomblob(16), owner, 'default', TRUE,
           strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'), strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')
    FROM (SELECT DISTINCT owner FROM images) AS owners;
INSERT INTO image_catalog (image_id, owner, collection_id, workflow_state, queued_at, updated_at)
    SELECT i.id, i.owner, c.id,
           CASE i.review_state WHEN 'needs_review' THEN 'in_review' WHEN 'approved' THEN 'approved'
                WHEN 'rejected' THEN 'rejected' ELSE 'draft' END,
           CASE WHEN i.review_state = 'needs_review' THEN i.updated_at END,
           i.updated_at
    FROM images i JOIN collections c ON c.owner = i.owner AND c.is_default;
INSERT INTO review_reasons (image_id, kind, detail, priority, created_at)
    SELECT id, 'legacy', json_object('note', COALESCE(review_reason, 'routed to review')), 50, updated_at
    FROM images WHERE review_state = 'needs_review';
INSERT INTO jobs (image_id, kind, state, attempts, max_attempts, run_at, created_at, updated_at)
    SELECT id, 'sync_payload', 'queued', 0, 5, strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'),
           strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'), strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')
    FROM images WHERE status = 'ready' AND deleted_at IS NULL;
