-- Search concepts (issue 17, round 3): how many people the embedder's object detector found
-- in an image, in any pose or distance, so "people" filters work on listings as they do
-- inside vector searches (NULL: not counted: embedded before this model version, or by a
-- model without the detector).
-- Keep in step with migrations/postgres.
ALTER TABLE image_embeddings ADD COLUMN people INTEGER;
CREATE INDEX image_embeddings_people ON image_embeddings (people);
