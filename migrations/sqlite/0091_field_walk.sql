-- A listing in upload order with an equality on a field (usage = editorial) walks that value's
-- rows in upload order instead of every image of the owner: the field rows carry their
-- image's owner and upload time (both fixed for an image's life), and one index serves the
-- condition, the owner and the order.
-- Keep in step with migrations/postgres.
ALTER TABLE image_fields ADD COLUMN img_owner TEXT;
ALTER TABLE image_fields ADD COLUMN img_uploaded_at TEXT;
UPDATE image_fields SET
    img_owner = (SELECT owner FROM images WHERE images.id = image_fields.image_id),
    img_uploaded_at = (SELECT uploaded_at FROM images WHERE images.id = image_fields.image_id);
CREATE INDEX image_fields_walk
    ON image_fields (field, text_value, img_owner, img_uploaded_at, image_id);
