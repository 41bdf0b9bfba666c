-- Catalog listings and review metrics at scale (Postgres). Keep in step with migrations/sqlite.

-- Listings walk an owner's live images newest (or oldest) first and check each; this index
-- holds only live images, so the walk reads an image's row only when it is returned.
CREATE INDEX images_owner_live ON images (owner, uploaded_at DESC, id DESC) WHERE deleted_at IS NULL;

-- Superseded versions, read as one set with the withheld images when a listing leaves both
-- out (with image_catalog_rights and image_catalog_rights_from).
CREATE INDEX image_catalog_superseded ON image_catalog (image_id) WHERE is_current = FALSE;

-- Each open reason's owner, so that queue metrics by reason are counted from an index alone.
ALTER TABLE review_reasons ADD COLUMN owner TEXT;
UPDATE review_reasons SET owner = (SELECT i.owner FROM images i WHERE i.id = review_reasons.image_id);
CREATE INDEX review_reasons_open_owner ON review_reasons (owner, kind, created_at) WHERE resolved_at IS NULL;
