-- Private images: only signed, expiring URLs serve them (see [privacy] in the config).
ALTER TABLE images ADD COLUMN private BOOLEAN NOT NULL DEFAULT FALSE;
-- The edges' signed-only list reads the few private images without scanning the rest.
CREATE INDEX images_private ON images (original_key) WHERE private AND deleted_at IS NULL;
