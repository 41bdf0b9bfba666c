//! The `images` table: creation, completion (which enqueues processing in the same
//! transaction), reads, keyset listing, descriptive edits and deletion.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, FromRow};
use uuid::Uuid;

use super::{now, BeginWrite, Db, Result, StoreError};
use crate::on_db;

/// Workflow states of an image.
pub mod status {
    /// Created; the bytes are not in storage yet.
    pub const UPLOADING: &str = "uploading";
    /// Bytes are safe; a job will process them.
    pub const PROCESSING: &str = "processing";
    /// Variants and metadata are in place.
    pub const READY: &str = "ready";
    /// Processing gave up; `error` says why.
    pub const FAILED: &str = "failed";
}

/// One image row.
#[derive(Debug, Clone, FromRow)]
pub struct ImageRow {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub owner: String,
    /// When the upload was accepted.
    pub uploaded_at: DateTime<Utc>,
    /// Stored size of the original.
    pub bytes: Option<i64>,
    /// SHA-256 of the original, hex.
    pub sha256: Option<String>,
    /// Content type of the original.
    pub mime: Option<String>,
    /// Decoded format (`jpeg`, `heif` …).
    pub format: Option<String>,
    /// Width after orientation.
    pub width: Option<i32>,
    /// Height after orientation.
    pub height: Option<i32>,
    /// Object key of the original.
    pub original_key: String,
    /// Object keys of the variants by name.
    pub variant_keys: Json<BTreeMap<String, String>>,
    /// Storage tier.
    pub storage_tier: String,
    /// 64-bit difference hash.
    pub phash: Option<i64>,
    /// Size the client declared.
    pub declared_bytes: Option<i64>,
    /// Content type the client declared.
    pub declared_mime: String,
    /// When a presigned upload expires.
    pub upload_expires_at: Option<DateTime<Utc>>,
    /// Caption.
    pub caption: Option<String>,
    /// Tags.
    pub tags: Json<Vec<String>>,
    /// All EXIF fields as JSON.
    pub exif: Option<Json<serde_json::Value>>,
    /// Camera make.
    pub camera_make: Option<String>,
    /// Camera model.
    pub camera_model: Option<String>,
    /// Lens.
    pub lens: Option<String>,
    /// When the photo was taken.
    pub taken_at: Option<DateTime<Utc>>,
    /// ISO.
    pub iso: Option<i32>,
    /// Exposure, seconds.
    pub exposure_time: Option<f64>,
    /// Aperture.
    pub f_number: Option<f64>,
    /// Focal length, mm.
    pub focal_length: Option<f64>,
    /// Latitude.
    pub gps_lat: Option<f64>,
    /// Longitude.
    pub gps_lon: Option<f64>,
    /// Raw EXIF orientation tag.
    pub orientation: Option<i32>,
    /// Workflow status.
    pub status: String,
    /// Failure reason.
    pub error: Option<String>,
    /// Processing attempts.
    pub attempts: i32,
    /// Row creation.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When the bytes were confirmed.
    pub completed_at: Option<DateTime<Utc>>,
    /// When processing finished.
    pub processed_at: Option<DateTime<Utc>>,
    /// Review state (`unreviewed`, `needs_review`, `approved`, `rejected`).
    pub review_state: String,
    /// Why it was routed to review, or the reviewer's note.
    pub review_reason: Option<String>,
}

/// A new image as the upload flow creates it.
#[derive(Debug, Clone)]
pub struct NewImage {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub owner: String,
    /// Declared or measured content type.
    pub mime: String,
    /// Declared or measured size.
    pub bytes: Option<i64>,
    /// Declared or measured SHA-256.
    pub sha256: Option<String>,
    /// Caption.
    pub caption: Option<String>,
    /// Key of the original.
    pub original_key: String,
    /// Acceptance time.
    pub uploaded_at: DateTime<Utc>,
    /// Presigned upload expiry (two-step only).
    pub upload_expires_at: Option<DateTime<Utc>>,
}

/// What processing found, written when an image becomes ready.
#[derive(Debug, Clone, Default)]
pub struct Processed {
    /// Size.
    pub bytes: i64,
    /// SHA-256.
    pub sha256: String,
    /// Detected content type.
    pub mime: String,
    /// Detected format.
    pub format: String,
    /// Width after orientation.
    pub width: i32,
    /// Height after orientation.
    pub height: i32,
    /// Variant keys.
    pub variant_keys: BTreeMap<String, String>,
    /// dHash.
    pub phash: Option<i64>,
    /// EXIF as JSON.
    pub exif: Option<serde_json::Value>,
    /// Camera make.
    pub camera_make: Option<String>,
    /// Camera model.
    pub camera_model: Option<String>,
    /// Lens.
    pub lens: Option<String>,
    /// Capture time.
    pub taken_at: Option<DateTime<Utc>>,
    /// ISO.
    pub iso: Option<i32>,
    /// Exposure seconds.
    pub exposure_time: Option<f64>,
    /// Aperture.
    pub f_number: Option<f64>,
    /// Focal length mm.
    pub focal_length: Option<f64>,
    /// Latitude.
    pub gps_lat: Option<f64>,
    /// Longitude.
    pub gps_lon: Option<f64>,
    /// EXIF orientation.
    pub orientation: Option<i32>,
    /// Vectors written to the index (model, concepts, near-duplicates); `None` when search is
    /// off.
    pub index: Option<super::search::IndexRecord>,
}

/// Filters for listing an owner's images.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this status.
    pub status: Option<String>,
    /// Uploaded at or after.
    pub since: Option<DateTime<Utc>>,
    /// Uploaded before.
    pub until: Option<DateTime<Utc>>,
    /// Camera make or model, case-insensitive exact match.
    pub camera: Option<String>,
    /// Continue after this `(uploaded_at, id)`.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    /// Page size.
    pub limit: u32,
}

/// Caption, tags, review state and status, as read before an edit.
type EditableFields = (Option<String>, Json<Vec<String>>, String, String);

/// A change to an image's descriptive metadata or review state; `None` leaves a field.
#[derive(Debug, Clone, Default)]
pub struct ImagePatch {
    /// New caption (`Some(None)` clears it).
    pub caption: Option<Option<String>>,
    /// New tags.
    pub tags: Option<Vec<String>>,
    /// New review state.
    pub review_state: Option<String>,
    /// Why (kept in history; becomes the review reason when the review state changes).
    pub reason: Option<String>,
    /// Attempts for the payload-sync job this may queue.
    pub max_attempts: u32,
}

/// How a completion request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// The image moved to `processing` and a job was enqueued.
    Enqueued,
    /// It had already been completed; nothing changed (idempotent repeat).
    AlreadyCompleted(String),
}

/// The job kind that processes a new original.
pub const JOB_PROCESS: &str = "process";

impl Db {
    /// Inserts an image in `uploading` state (two-step flow).
    pub async fn insert_uploading(&self, img: &NewImage) -> Result<()> {
        let t = now();
        on_db!(self, |p, _pg| {
            sqlx::query(
                "INSERT INTO images (id, owner, uploaded_at, sha256, original_key, declared_bytes, \
                 declared_mime, upload_expires_at, caption, status, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'uploading', $10, $10)",
            )
            .bind(img.id)
            .bind(&img.owner)
            .bind(img.uploaded_at)
            .bind(&img.sha256)
            .bind(&img.original_key)
            .bind(img.bytes)
            .bind(&img.mime)
            .bind(img.upload_expires_at)
            .bind(&img.caption)
            .bind(t)
            .execute(p)
            .await
            .map_err(StoreError::classify)?
            .rows_affected()
        });
        Ok(())
    }

    /// Inserts an image whose bytes are already stored, as `processing`, and its job, in one
    /// transaction (one-shot flow).
    pub async fn insert_stored_and_enqueue(&self, img: &NewImage, max_attempts: u32) -> Result<()> {
        let t = now();
        on_db!(self, |p, _pg| {
            let mut tx = p.begin_write().await?;
            sqlx::query(
                "INSERT INTO images (id, owner, uploaded_at, bytes, sha256, mime, original_key, \
                 declared_bytes, declared_mime, caption, status, created_at, updated_at, completed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $4, $6, $8, 'processing', $9, $9, $9)",
            )
            .bind(img.id)
            .bind(&img.owner)
            .bind(img.uploaded_at)
            .bind(img.bytes)
            .bind(&img.sha256)
            .bind(&img.mime)
            .bind(&img.original_key)
            .bind(&img.caption)
            .bind(t)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::classify)?;
            super::jobs::enqueue_job!(tx, img.id, JOB_PROCESS, max_attempts as i32, t);
            tx.commit().await?;
        });
        Ok(())
    }

    /// Moves an `uploading` image to `processing` with its measured size and enqueues its job,
    /// in one transaction. Repeating it is harmless.
    pub async fn complete_and_enqueue(
        &self,
        id: Uuid,
        bytes: i64,
        max_attempts: u32,
    ) -> Result<Completion> {
        let t = now();
        on_db!(self, |p, _pg| {
            let mut tx = p.begin_write().await?;
            let done = sqlx::query(
                "UPDATE images SET status = 'processing', bytes = $2, mime = declared_mime, \
                 completed_at = $3, updated_at = $3 WHERE id = $1 AND status = 'uploading'",
            )
            .bind(id)
            .bind(bytes)
            .bind(t)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::classify)?
            .rows_affected();
            if done == 0 {
                let st: Option<(String,)> =
                    sqlx::query_as("SELECT status FROM images WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                tx.rollback().await?;
                return Ok(Completion::AlreadyCompleted(
                    st.map(|s| s.0).unwrap_or_default(),
                ));
            }
            super::jobs::enqueue_job!(tx, id, JOB_PROCESS, max_attempts as i32, t);
            tx.commit().await?;
        });
        Ok(Completion::Enqueued)
    }

    /// The id of an owner's live image with this SHA-256, if any.
    pub async fn find_duplicate(&self, owner: &str, sha256: &str) -> Result<Option<Uuid>> {
        let r: Option<(Uuid,)> = on_db!(self, |p, _pg| {
            sqlx::query_as(
                "SELECT id FROM images WHERE owner = $1 AND sha256 = $2 AND status <> 'failed' LIMIT 1",
            )
            .bind(owner)
            .bind(sha256)
            .fetch_optional(p)
            .await?
        });
        Ok(r.map(|r| r.0))
    }

    /// Reads one image.
    pub async fn get_image(&self, id: Uuid) -> Result<Option<ImageRow>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as::<_, ImageRow>("SELECT * FROM images WHERE id = $1")
                .bind(id)
                .fetch_optional(p)
                .await?
        }))
    }

    /// An owner's images, newest first, after the cursor in `filter`.
    pub async fn list_images(&self, owner: &str, filter: &ListFilter) -> Result<Vec<ImageRow>> {
        let mut sql = String::from("SELECT * FROM images WHERE owner = $1");
        let mut n = 1;
        let mut next = || {
            n += 1;
            n
        };
        if filter.status.is_some() {
            sql += &format!(" AND status = ${}", next());
        }
        if filter.since.is_some() {
            sql += &format!(" AND uploaded_at >= ${}", next());
        }
        if filter.until.is_some() {
            sql += &format!(" AND uploaded_at < ${}", next());
        }
        if filter.camera.is_some() {
            let a = next();
            sql += &format!(
                " AND (LOWER(camera_model) = LOWER(${a}) OR LOWER(camera_make) = LOWER(${a}))"
            );
        }
        if filter.after.is_some() {
            let (a, b) = (next(), next());
            sql += &format!(" AND (uploaded_at < ${a} OR (uploaded_at = ${a} AND id < ${b}))");
        }
        sql += &format!(
            " ORDER BY uploaded_at DESC, id DESC LIMIT {}",
            filter.limit.clamp(1, 1000)
        );
        Ok(on_db!(self, |p, _pg| {
            let mut q = sqlx::query_as::<_, ImageRow>(AssertSqlSafe(sql)).bind(owner);
            if let Some(s) = &filter.status {
                q = q.bind(s.clone());
            }
            if let Some(s) = filter.since {
                q = q.bind(s);
            }
            if let Some(u) = filter.until {
                q = q.bind(u);
            }
            if let Some(c) = &filter.camera {
                q = q.bind(c.clone());
            }
            if let Some((t, id)) = filter.after {
                q = q.bind(t).bind(id);
            }
            q.fetch_all(p).await?
        }))
    }

    /// Changes descriptive metadata and review state; `None` leaves a field as it is. Each
    /// change is recorded in the image's history with `actor` and `reason`, and a change to a
    /// field the vector index filters on queues a payload sync, all in one transaction.
    /// Returns false when the image does not exist.
    pub async fn patch_image(&self, id: Uuid, patch: &ImagePatch, actor: &str) -> Result<bool> {
        let t = now();
        on_db!(self, |p, _pg| {
            let mut tx = p.begin_write().await?;
            let cur: Option<EditableFields> = sqlx::query_as(
                "SELECT caption, tags, review_state, status FROM images WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((caption, tags, review_state, img_status)) = cur else {
                tx.rollback().await?;
                return Ok(false);
            };
            let mut changes: Vec<(&str, serde_json::Value, serde_json::Value)> = Vec::new();
            if let Some(c) = &patch.caption {
                if *c != caption {
                    changes.push(("caption", serde_json::json!(caption), serde_json::json!(c)));
                }
            }
            if let Some(tg) = &patch.tags {
                if *tg != tags.0 {
                    changes.push(("tags", serde_json::json!(tags.0), serde_json::json!(tg)));
                }
            }
            if let Some(r) = &patch.review_state {
                if *r != review_state {
                    changes.push((
                        "review_state",
                        serde_json::json!(review_state),
                        serde_json::json!(r),
                    ));
                }
            }
            if changes.is_empty() {
                tx.rollback().await?;
                return Ok(true);
            }
            sqlx::query(
                "UPDATE images SET \
                 caption = CASE WHEN $2 THEN $3 ELSE caption END, \
                 tags = CASE WHEN $4 THEN $5 ELSE tags END, \
                 review_state = COALESCE($6, review_state), \
                 review_reason = CASE WHEN $6 IS NULL THEN review_reason ELSE $7 END, \
                 updated_at = $8 WHERE id = $1",
            )
            .bind(id)
            .bind(patch.caption.is_some())
            .bind(patch.caption.clone().flatten())
            .bind(patch.tags.is_some())
            .bind(Json(patch.tags.clone().unwrap_or_default()))
            .bind(patch.review_state.clone())
            .bind(patch.reason.clone())
            .bind(t)
            .execute(&mut *tx)
            .await?;
            let mut sync = false;
            for (field, old, new) in &changes {
                sync |= *field != "caption";
                sqlx::query(
                    "INSERT INTO image_history (image_id, field, old_value, new_value, actor, reason, at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(id)
                .bind(*field)
                .bind(Json(old))
                .bind(Json(new))
                .bind(actor)
                .bind(&patch.reason)
                .bind(t)
                .execute(&mut *tx)
                .await?;
            }
            if sync && img_status == status::READY {
                super::jobs::enqueue_job!(
                    tx,
                    id,
                    super::search::JOB_SYNC_PAYLOAD,
                    patch.max_attempts as i32,
                    t
                );
            }
            tx.commit().await?;
        });
        Ok(true)
    }

    /// Deletes an image row (its jobs go with it); returns the row as it was.
    pub async fn delete_image(&self, id: Uuid) -> Result<Option<ImageRow>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as::<_, ImageRow>("DELETE FROM images WHERE id = $1 RETURNING *")
                .bind(id)
                .fetch_optional(p)
                .await?
        }))
    }

    /// Marks an image failed with a reason, whatever state it is in short of `ready`.
    pub async fn fail_image(&self, id: Uuid, reason: &str) -> Result<()> {
        let t = now();
        on_db!(self, |p, _pg| {
            sqlx::query(
                "UPDATE images SET status = 'failed', error = $2, updated_at = $3, processed_at = $3 \
                 WHERE id = $1 AND status <> 'ready'",
            )
            .bind(id)
            .bind(reason)
            .bind(t)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Two-step uploads still `uploading`: those whose URL expired before `before`.
    pub async fn expired_uploads(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<ImageRow>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as::<_, ImageRow>(
                "SELECT * FROM images WHERE status = 'uploading' AND upload_expires_at < $1 \
                 ORDER BY upload_expires_at LIMIT $2",
            )
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?
        }))
    }

    /// Counts images by status.
    pub async fn image_counts(&self) -> Result<BTreeMap<String, i64>> {
        let rows: Vec<(String, i64)> = on_db!(self, |p, _pg| {
            sqlx::query_as("SELECT status, COUNT(*) FROM images GROUP BY status")
                .fetch_all(p)
                .await?
        });
        Ok(rows.into_iter().collect())
    }
}
