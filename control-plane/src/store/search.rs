//! What search adds to the database: which model embedded each image and what it saw,
//! near-duplicate pairs, review routing, correction history, and the reads search needs
//! (hydrating hits, phash candidates, re-embed backlog).

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, FromRow};

use super::images::ImageRow;
use super::jobs::{enqueue_job, fenced, ClaimedJob};
use super::{now, BeginWrite, Db, Result};
use crate::domain::{ImageId, JobKind, Owner};
use crate::on_db;
use crate::on_db_retrying;
use crate::search::embed::Concept;

/// A near-duplicate found for an image.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NearDuplicate {
    /// The other image.
    pub other: ImageId,
    /// `phash` (distance in differing bits) or `embedding` (distance = 1 − cosine).
    pub method: &'static str,
    /// How far apart the two are.
    pub distance: f64,
}

/// What indexing an image produced, written with the image's state in one transaction.
#[derive(Debug, Clone, Default)]
pub struct IndexRecord {
    /// `ModelInfo::id()` of the model that made the vectors; `None` when no vectors were made
    /// (search off: only perceptual-hash duplicates are recorded).
    pub model: Option<String>,
    /// Concepts behind the semantic vector.
    pub concepts: Vec<Concept>,
    /// Frontal faces the embedder found (`None`: not counted).
    pub faces: Option<u32>,
    /// People the embedder found in any pose (`None`: not counted).
    pub people: Option<u32>,
    /// The grey layout near-duplicate checks compare (`None`: not made).
    pub layout: Option<Vec<u8>>,
    /// Near-duplicates among the owner's images.
    pub duplicates: Vec<NearDuplicate>,
}

/// What is recorded about an image's vectors: which model made them and what it saw.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingRow {
    /// The image.
    pub image_id: ImageId,
    /// `ModelInfo::id()` of the model.
    pub model: String,
    /// Concepts behind the semantic vector, strongest first.
    pub concepts: Vec<Concept>,
    /// Frontal faces found (`None`: not counted).
    pub faces: Option<u32>,
    /// People found in any pose (`None`: not counted).
    pub people: Option<u32>,
}

/// A stored near-duplicate pair, seen from one image.
#[derive(Debug, Clone, FromRow, serde::Serialize)]
pub struct DuplicateRow {
    /// The image asked about.
    pub image_id: ImageId,
    /// Its near-duplicate.
    pub other_id: ImageId,
    /// `phash` or `embedding`.
    pub method: String,
    /// Distance (bits for phash, 1 − cosine for embeddings).
    pub distance: f64,
    /// Owner of both.
    pub owner: Owner,
    /// When the pair was found.
    pub found_at: DateTime<Utc>,
}

/// One recorded change to an image.
#[derive(Debug, Clone, FromRow, serde::Serialize)]
pub struct HistoryRow {
    /// Sequence number.
    pub id: i64,
    /// Which field changed (`caption`, `tags`, `review_state` …).
    pub field: String,
    /// Value before.
    pub old_value: Option<Json<serde_json::Value>>,
    /// Value after.
    pub new_value: Option<Json<serde_json::Value>>,
    /// Who changed it (API key name, or `ingest`).
    pub actor: String,
    /// Why, when given.
    pub reason: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Writes an [`IndexRecord`] inside an open transaction `$tx` (either backend): the embedding
/// row, the duplicate pairs in both directions, and review routing when pairs were found
/// (with a job copying the new review state to the index).
macro_rules! write_index_record {
    ($tx:expr, $image:expr, $owner:expr, $rec:expr, $t:expr, $max_attempts:expr) => {{
        if let Some(model) = &$rec.model {
            sqlx::query(
                "INSERT INTO image_embeddings (image_id, model, concepts, embedded_at, faces, layout, people) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (image_id) DO UPDATE SET model = excluded.model, concepts = excluded.concepts, \
                 embedded_at = excluded.embedded_at, faces = excluded.faces, layout = excluded.layout, people = excluded.people",
            )
            .bind($image)
            .bind(model)
            .bind(Json(&$rec.concepts))
            .bind($t)
            .bind($rec.faces.map(|f| f as i32))
            .bind($rec.layout.as_deref())
            .bind($rec.people.map(|f| f as i32))
            .execute(&mut *$tx)
            .await?;
        }
        for d in &$rec.duplicates {
            for (a, b) in [($image, d.other), (d.other, $image)] {
                sqlx::query(
                    "INSERT INTO image_duplicates (image_id, other_id, method, distance, owner, found_at) \
                     SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM images WHERE id = $2) \
                     ON CONFLICT (image_id, other_id, method) DO UPDATE SET distance = excluded.distance",
                )
                .bind(a)
                .bind(b)
                .bind(d.method)
                .bind(d.distance)
                .bind($owner)
                .bind($t)
                .execute(&mut *$tx)
                .await?;
            }
        }
        if let Some(first) = $rec.duplicates.first() {
            let reason = format!(
                "near-duplicate of {} ({} distance {:.3})",
                first.other, first.method, first.distance
            );
            let routed = sqlx::query(
                "UPDATE images SET review_state = $3, review_reason = $2 \
                 WHERE id = $1 AND review_state = $4",
            )
            .bind($image)
            .bind(&reason)
            .bind($crate::domain::ReviewState::NeedsReview)
            .bind($crate::domain::ReviewState::Unreviewed)
            .execute(&mut *$tx)
            .await?
            .rows_affected();
            if routed > 0 {
                sqlx::query(
                    "INSERT INTO image_history (image_id, field, old_value, new_value, actor, reason, at) \
                     VALUES ($1, 'review_state', $2, $3, 'ingest', $4, $5)",
                )
                .bind($image)
                .bind(Json(serde_json::json!("unreviewed")))
                .bind(Json(serde_json::json!("needs_review")))
                .bind(&reason)
                .bind($t)
                .execute(&mut *$tx)
                .await?;
                // The review state is a search filter: copy it to the index.
                $crate::store::jobs::enqueue_job!(
                    $tx,
                    $image,
                    $crate::domain::JobKind::SyncPayload,
                    $max_attempts,
                    $t
                );
            }
        }
        // The review queue says why: the closest pair, the others listed.
        $crate::store::catalog::route_near_duplicates!($tx, $image, &$rec.duplicates, $t);
    }};
}
pub(crate) use write_index_record;

impl Db {
    /// Finishes an `embed` or `duplicates` job: records the model and concepts of an image
    /// whose vectors were written (then queues a near-duplicate search), or the near-duplicates
    /// found. False when the lease was lost.
    pub async fn finish_embedded(
        &self,
        job: &ClaimedJob,
        owner: &Owner,
        rec: &IndexRecord,
    ) -> Result<bool> {
        let t = now();
        Ok(on_db_retrying!(self, |p, _pg| {
            let mut tx = p.begin_write().await?;
            let n = fenced!(
                &mut *tx,
                job,
                "state = 'done', lease_until = NULL, last_error = NULL, updated_at = $3",
                t
            );
            if n == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            write_index_record!(tx, job.image_id, owner, rec, t, job.max_attempts);
            if rec.model.is_some() {
                enqueue_job!(tx, job.image_id, JobKind::Duplicates, job.max_attempts, t);
            }
            tx.commit().await?;
            true
        }))
    }

    /// Reads images by id (any order; missing ids are skipped).
    pub async fn get_images(&self, ids: &[ImageId]) -> Result<Vec<ImageRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT * FROM images WHERE deleted_at IS NULL AND id IN ({})",
            marks.join(", ")
        );
        Ok(on_db!(self, |p, _pg| {
            let mut q = sqlx::query_as::<_, ImageRow>(AssertSqlSafe(sql));
            for id in ids {
                q = q.bind(*id);
            }
            q.fetch_all(p).await?
        }))
    }

    /// Model, concepts and face count recorded for each of `ids` that has them.
    pub async fn embeddings_of(&self, ids: &[ImageId]) -> Result<Vec<EmbeddingRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT image_id, model, concepts, faces, people FROM image_embeddings WHERE image_id IN ({})",
            marks.join(", ")
        );
        type Row = (
            ImageId,
            String,
            Json<Vec<Concept>>,
            Option<i32>,
            Option<i32>,
        );
        let rows: Vec<Row> = on_db!(self, |p, _pg| {
            let mut q = sqlx::query_as(AssertSqlSafe(sql));
            for id in ids {
                q = q.bind(*id);
            }
            q.fetch_all(p).await?
        });
        Ok(rows
            .into_iter()
            .map(|(image_id, model, concepts, faces, people)| EmbeddingRow {
                image_id,
                model,
                concepts: concepts.0,
                faces: faces.and_then(|f| u32::try_from(f).ok()),
                people: people.and_then(|f| u32::try_from(f).ok()),
            })
            .collect())
    }

    /// The grey layouts recorded for each of `ids` that has one (near-duplicate checks).
    pub async fn layouts_of(&self, ids: &[ImageId]) -> Result<Vec<(ImageId, Vec<u8>)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT image_id, layout FROM image_embeddings WHERE layout IS NOT NULL \
             AND image_id IN ({})",
            marks.join(", ")
        );
        Ok(on_db!(self, |p, _pg| {
            let mut q = sqlx::query_as(AssertSqlSafe(sql));
            for id in ids {
                q = q.bind(*id);
            }
            q.fetch_all(p).await?
        }))
    }

    /// An owner's ready images with a perceptual hash, except `except` (near-duplicate
    /// candidates). Hamming distance is computed by the caller.
    pub async fn phash_candidates(
        &self,
        owner: &Owner,
        except: ImageId,
    ) -> Result<Vec<(ImageId, i64)>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as(
                "SELECT id, phash FROM images WHERE owner = $1 AND status = 'ready' \
                 AND phash IS NOT NULL AND id <> $2 AND deleted_at IS NULL",
            )
            .bind(owner)
            .bind(except)
            .fetch_all(p)
            .await?
        }))
    }

    /// Near-duplicates recorded for one image, closest first.
    pub async fn duplicates_of(&self, id: ImageId) -> Result<Vec<DuplicateRow>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as::<_, DuplicateRow>(
                "SELECT * FROM image_duplicates d WHERE image_id = $1 AND NOT EXISTS \
                 (SELECT 1 FROM images i WHERE i.id = d.other_id AND i.deleted_at IS NOT NULL) \
                 ORDER BY method DESC, distance, other_id",
            )
            .bind(id)
            .fetch_all(p)
            .await?
        }))
    }

    /// Near-duplicate pairs for review, newest first, each pair once; `owner` narrows it;
    /// `after` is the `(found_at, image_id, other_id)` of the last pair of the previous page.
    pub async fn list_duplicates(
        &self,
        owner: Option<&Owner>,
        limit: u32,
        after: Option<(DateTime<Utc>, uuid::Uuid, uuid::Uuid)>,
    ) -> Result<Vec<DuplicateRow>> {
        let mut sql = String::from(
            "SELECT * FROM image_duplicates d WHERE image_id < other_id AND NOT EXISTS \
             (SELECT 1 FROM images i WHERE i.id IN (d.image_id, d.other_id) \
             AND i.deleted_at IS NOT NULL)",
        );
        let mut n = 0;
        if owner.is_some() {
            n += 1;
            sql += &format!(" AND owner = ${n}");
        }
        if after.is_some() {
            let (t, a, b) = (n + 1, n + 2, n + 3);
            n += 3;
            sql += &format!(
                " AND (found_at < ${t} OR (found_at = ${t} AND (image_id > ${a} \
                 OR (image_id = ${a} AND other_id > ${b}))))"
            );
        }
        let _ = n;
        sql += &format!(
            " ORDER BY found_at DESC, image_id, other_id LIMIT {}",
            limit.clamp(1, 1001)
        );
        Ok(on_db!(self, |p, _pg| {
            let mut q = sqlx::query_as::<_, DuplicateRow>(AssertSqlSafe(sql));
            if let Some(o) = owner {
                q = q.bind(o.clone());
            }
            if let Some((t, a, b)) = after {
                q = q.bind(t).bind(a).bind(b);
            }
            q.fetch_all(p).await?
        }))
    }

    /// The change history of one image, oldest first.
    pub async fn history_of(&self, id: ImageId) -> Result<Vec<HistoryRow>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as::<_, HistoryRow>(
                "SELECT id, field, old_value, new_value, actor, reason, at FROM image_history \
                 WHERE image_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(p)
            .await?
        }))
    }

    /// Ready images whose vectors were made by another model than `model` (or never made),
    /// without an open job: the re-embed backlog, oldest first.
    pub async fn needing_embedding(&self, model: &str, limit: u32) -> Result<Vec<ImageId>> {
        let rows: Vec<(ImageId,)> = on_db!(self, |p, _pg| {
            sqlx::query_as(
                "SELECT i.id FROM images i LEFT JOIN image_embeddings e ON e.image_id = i.id \
                 WHERE i.status = 'ready' AND i.deleted_at IS NULL \
                 AND (e.model IS NULL OR e.model <> $1) \
                 AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.image_id = i.id AND j.state IN ('queued', 'running')) \
                 ORDER BY i.uploaded_at, i.id LIMIT $2",
            )
            .bind(model)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?
        });
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// Queues a job of `kind` for each image that has no open job of that kind; returns how
    /// many were queued.
    pub async fn enqueue_jobs(
        &self,
        ids: &[ImageId],
        kind: JobKind,
        max_attempts: u32,
    ) -> Result<u64> {
        let t = now();
        Ok(on_db_retrying!(self, |p, _pg| {
            let mut queued = 0;
            let mut tx = p.begin_write().await?;
            for id in ids {
                queued += sqlx::query(
                    "INSERT INTO jobs (image_id, kind, state, attempts, max_attempts, run_at, created_at, updated_at) \
                     SELECT $1, $2, 'queued', 0, $3, $4, $4, $4 WHERE EXISTS (SELECT 1 FROM images WHERE id = $1) \
                     AND NOT EXISTS (SELECT 1 FROM jobs WHERE image_id = $1 AND kind = $2 AND state IN ('queued', 'running'))",
                )
                .bind(*id)
                .bind(kind)
                .bind(max_attempts as i32)
                .bind(t)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            tx.commit().await?;
            queued
        }))
    }

    /// Ready image ids in id order after `after` with the model that embedded each
    /// (reconciliation against the index).
    pub async fn ready_ids(
        &self,
        after: Option<ImageId>,
        limit: u32,
    ) -> Result<Vec<(ImageId, Option<String>)>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as(
                "SELECT i.id, e.model FROM images i LEFT JOIN image_embeddings e ON e.image_id = i.id \
                 WHERE i.status = 'ready' AND i.deleted_at IS NULL AND ($1 IS NULL OR i.id > $1) \
                 ORDER BY i.id LIMIT $2",
            )
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?
        }))
    }
}
