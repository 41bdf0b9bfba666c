-- A listing in upload order with an equality on a field (usage = editorial) walks that value's
-- rows in upload order instead of every image of the owner: the field rows carry their
-- image's owner and upload time (both fixed for an image's life), and one index serves the
-- condition, the owner and the order.
-- Keep in step with migrations/sqlite.
ALTER TABLE image_fields ADD COLUMN img_owner TEXT;
ALTER TABLE image_fields ADD COLUMN img_uploaded_at TIMESTAMPTZ;
UPDATE image_fields f SET img_owner = i.owner, img_uploaded_at = i.uploaded_at
    FROM images i WHERE i.id = f.image_id;
CREATE INDEX image_fields_walk
    ON image_fields (field, text_value, img_owner, img_uploaded_at, image_id);
