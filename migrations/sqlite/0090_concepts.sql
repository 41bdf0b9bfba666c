-- Search concepts beyond ImageNet (issue 17): how many frontal faces the embedder found in an
-- image, so "faces" filters work on listings as they do inside vector searches (NULL: not
-- counted: embedded before this model version, or by a model without a face detector); and
-- the image's 32x32 grey layout, which near-duplicate checks compare across crops and small
-- turns (NULL until the image is embedded again).
-- Keep in step with migrations/postgres.
ALTER TABLE image_embeddings ADD COLUMN faces INTEGER;
CREATE INDEX image_embeddings_faces ON image_embeddings (faces);
ALTER TABLE image_embeddings ADD COLUMN layout BLOB;
