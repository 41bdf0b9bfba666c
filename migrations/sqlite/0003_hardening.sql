-- Hardening (SQLite): who uploaded an image, tombstones, pinned uploads, a reviewer role.
-- Keep in step with migrations/postgres.

-- The API key that created an image (NULL for rows from before this migration): nobody
-- approves an image their own key uploaded.
ALTER TABLE images ADD COLUMN uploaded_by BLOB;
-- A deleted image keeps its row until its objects, vectors and edge caches are gone; it is
-- invisible to every read from the moment it is deleted.
ALTER TABLE images ADD COLUMN deleted_at TEXT;
-- Where a presigned upload lands (a staging key the presigned URL names). The worker copies
-- what it processed to original_key, which no presigned URL can write. NULL: the bytes were
-- written to original_key by the service itself (one-shot uploads, older rows).
ALTER TABLE images ADD COLUMN upload_key TEXT;
-- The staged object's identity (ETag or version) when the upload was completed; the worker
-- refuses an object that changed since.
ALTER TABLE images ADD COLUMN upload_identity TEXT;

-- Exact duplicates are per live image.
DROP INDEX images_owner_sha256;
CREATE UNIQUE INDEX images_owner_sha256 ON images (owner, sha256)
    WHERE sha256 IS NOT NULL AND status <> 'failed' AND deleted_at IS NULL;
CREATE INDEX images_deleted ON images (deleted_at) WHERE deleted_at IS NOT NULL;

-- Reviewers approve and reject; keys remember which key made them. SQLite cannot change a
-- CHECK in place: the table (which nothing references) is rebuilt.
CREATE TABLE api_keys_new (
    id              BLOB PRIMARY KEY,
    name            TEXT NOT NULL,
    key_hash        TEXT NOT NULL UNIQUE,
    role            TEXT NOT NULL CHECK (role IN ('admin', 'reviewer', 'uploader', 'viewer')),
    -- NULL: every owner.
    owner_scope     TEXT,
    created_at      TEXT NOT NULL,
    revoked_at      TEXT,
    created_by      BLOB
);
INSERT INTO api_keys_new (id, name, key_hash, role, owner_scope, created_at, revoked_at)
    SELECT id, name, key_hash, role, owner_scope, created_at, revoked_at FROM api_keys;
DROP TABLE api_keys;
ALTER TABLE api_keys_new RENAME TO api_keys;
