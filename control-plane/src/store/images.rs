//! The `images` table: creation, completion (which enqueues processing in the same
//! transaction), reads, keyset listing, descriptive edits and deletion.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use flexphoto_media::exif::ExifFacts;
use flexphoto_media::ImageFormat;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, FromRow};

use super::jobs::enqueue_job;
use super::{now, BeginWrite, Db, Result, StoreError};
use crate::domain::{ImageId, ImageStatus, JobKind, Owner, ReviewState};
use crate::filter::{ImageFilter, LifecycleBind};
use crate::on_db;
use crate::on_db_retrying;

/// One image row.
#[derive(Debug, Clone, FromRow)]
pub struct ImageRow {
    /// Id.
    pub id: ImageId,
    /// Owner.
    pub owner: Owner,
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
    pub status: ImageStatus,
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
    /// Review state.
    pub review_state: ReviewState,
    /// Why it was routed to review, or the reviewer's note.
    pub review_reason: Option<String>,
    /// The API key that created it.
    pub uploaded_by: Option<uuid::Uuid>,
    /// Private by its own flag (its owner's policy may make it private too: see
    /// [`crate::privacy`]).
    pub private: bool,
    /// When it was deleted (its row stays until its objects are gone).
    pub deleted_at: Option<DateTime<Utc>>,
    /// Where a presigned upload lands; processing copies it to `original_key`.
    pub upload_key: Option<String>,
    /// The staged object's identity when the upload was completed.
    pub upload_identity: Option<String>,
    /// When an edge last served it (any size or variant).
    pub last_accessed_at: Option<DateTime<Utc>>,
    /// When its storage tier last changed.
    pub tier_changed_at: Option<DateTime<Utc>>,
    /// `restoring` or `restored` while an archive restore is under way.
    pub restore_state: Option<String>,
    /// When the restore was asked for.
    pub restore_requested_at: Option<DateTime<Utc>>,
}

impl ImageRow {
    /// The key the original's bytes are read from before processing: the staging key of a
    /// presigned upload, else the original's own key.
    pub fn source_key(&self) -> &str {
        self.upload_key.as_deref().unwrap_or(&self.original_key)
    }
}

/// A new image as the upload flow creates it.
#[derive(Debug, Clone)]
pub struct NewImage {
    /// Id.
    pub id: ImageId,
    /// Owner.
    pub owner: Owner,
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
    /// The API key creating it.
    pub uploaded_by: Option<uuid::Uuid>,
    /// The staging key of a presigned upload.
    pub upload_key: Option<String>,
    /// Private (only signed, expiring URLs serve it).
    pub private: bool,
    /// Its catalog record (collection, checked metadata, lineage), written in the same
    /// transaction.
    pub catalog: Option<super::catalog::CatalogInsert>,
}

/// What processing found, written when an image becomes ready.
#[derive(Debug, Clone)]
pub struct Processed {
    /// Size.
    pub bytes: i64,
    /// SHA-256.
    pub sha256: String,
    /// The format the bytes are in.
    pub format: ImageFormat,
    /// Width after orientation.
    pub width: i32,
    /// Height after orientation.
    pub height: i32,
    /// Variant keys.
    pub variant_keys: BTreeMap<String, String>,
    /// Variant sizes, bytes.
    pub variant_bytes: BTreeMap<String, i64>,
    /// dHash.
    pub phash: Option<i64>,
    /// EXIF (typed fields and everything as JSON).
    pub exif: ExifFacts,
    /// Vectors written to the index (model, concepts, near-duplicates); `None` when search is
    /// off.
    pub index: Option<super::search::IndexRecord>,
}

/// Order of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOrder {
    /// Newest upload first (the default).
    NewestFirst,
    /// Oldest upload first.
    OldestFirst,
}

/// Caption, tags, review state and status, as read before an edit.
type EditableFields = (Option<String>, Json<Vec<String>>, ReviewState, ImageStatus);

/// A change to an image's descriptive metadata or review state; `None` leaves a field.
#[derive(Debug, Clone, Default)]
pub struct ImagePatch {
    /// New caption (`Some(None)` clears it).
    pub caption: Option<Option<String>>,
    /// New tags.
    pub tags: Option<Vec<String>>,
    /// New review state.
    pub review_state: Option<ReviewState>,
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
    AlreadyCompleted(ImageStatus),
    /// The image no longer exists.
    Gone,
}

impl Db {
    /// Inserts an image in `uploading` state (two-step flow).
    pub async fn insert_uploading(&self, img: &NewImage) -> Result<()> {
        let t = now();
        on_db_retrying!(self, |p, _pg| {
            let mut tx = p.begin_write().await?;
            sqlx::query(
                "INSERT INTO images (id, owner, uploaded_at, sha256, original_key, declared_bytes, \
                 declared_mime, upload_expires_at, caption, status, created_at, updated_at, \
                 uploaded_by, upload_key, private) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'uploading', $10, $10, $11, $12, $13)",
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
            .bind(img.uploaded_by)
            .bind(&img.upload_key)
            .bind(img.private)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::classify)?;
            if let Some(c) = &img.catalog {
                super::catalog::insert_catalog!(tx, img.id, &img.owner, c, t);
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Inserts an image whose bytes are already stored, as `processing`, and its job, in one
    /// transaction (one-shot flow).
    pub async fn insert_stored_and_enqueue(&self, img: &NewImage, max_attempts: u32) -> Result<()> {
        let t = now();
        on_db_retrying!(self, |p, _pg| {
            let mut tx = p.begin_write().await?;
            sqlx::query(
                "INSERT INTO images (id, owner, uploaded_at, bytes, sha256, mime, original_key, \
                 declared_bytes, declared_mime, caption, status, created_at, updated_at, completed_at, \
                 uploaded_by, private) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $4, $6, $8, 'processing', $9, $9, $9, $10, $11)",
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
            .bind(img.uploaded_by)
            .bind(img.private)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::classify)?;
            if let Some(c) = &img.catalog {
                super::catalog::insert_catalog!(tx, img.id, &img.owner, c, t);
            }
            enqueue_job!(tx, img.id, JobKind::Process, max_attempts as i32, t);
            tx.commit().await?;
        });
        Ok(())
    }

    /// Moves an `uploading` image to `processing` with its measured size and the staged
    /// object's identity, and enqueues its job, in one transaction. Repeating it is harmless.
    pub async fn complete_and_enqueue(
        &self,
        id: ImageId,
        bytes: i64,
        identity: &str,
        max_attempts: u32,
    ) -> Result<Completion> {
        let t = now();
        Ok(on_db_retrying!(self, |p, _pg| {
            let mut tx = p.begin_write().await?;
            let done = sqlx::query(
                "UPDATE images SET status = 'processing', bytes = $2, mime = declared_mime, \
                 completed_at = $3, updated_at = $3, upload_identity = $4 \
                 WHERE id = $1 AND status = 'uploading' AND deleted_at IS NULL",
            )
            .bind(id)
            .bind(bytes)
            .bind(t)
            .bind(identity)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::classify)?
            .rows_affected();
            if done == 0 {
                let st: Option<(ImageStatus,)> = sqlx::query_as(
                    "SELECT status FROM images WHERE id = $1 AND deleted_at IS NULL",
                )
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                tx.rollback().await?;
                return Ok(match st {
                    Some((s,)) => Completion::AlreadyCompleted(s),
                    None => Completion::Gone,
                });
            }
            enqueue_job!(tx, id, JobKind::Process, max_attempts as i32, t);
            tx.commit().await?;
            Completion::Enqueued
        }))
    }

    /// The id of an owner's live image with this SHA-256, if any.
    pub async fn find_duplicate(&self, owner: &Owner, sha256: &str) -> Result<Option<ImageId>> {
        let r: Option<(ImageId,)> = on_db!(self, |p, _pg| {
            sqlx::query_as(
                "SELECT id FROM images WHERE owner = $1 AND sha256 = $2 AND status <> 'failed' \
                 AND deleted_at IS NULL LIMIT 1",
            )
            .bind(owner)
            .bind(sha256)
            .fetch_optional(p)
            .await?
        });
        Ok(r.map(|r| r.0))
    }

    /// Reads one live (not deleted) image.
    pub async fn get_image(&self, id: ImageId) -> Result<Option<ImageRow>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as::<_, ImageRow>(
                "SELECT * FROM images WHERE id = $1 AND deleted_at IS NULL",
            )
            .bind(id)
            .fetch_optional(p)
            .await?
        }))
    }

    /// Reads one image, deleted or not (for the jobs that clean up after a delete).
    pub async fn get_image_any(&self, id: ImageId) -> Result<Option<ImageRow>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as::<_, ImageRow>("SELECT * FROM images WHERE id = $1")
                .bind(id)
                .fetch_optional(p)
                .await?
        }))
    }

    /// Images matching `filter` in `order`, after a `(uploaded_at, id)` keyset position.
    pub async fn list_images(
        &self,
        filter: &ImageFilter,
        order: ListOrder,
        after: Option<(DateTime<Utc>, uuid::Uuid)>,
        limit: u32,
    ) -> Result<Vec<ImageRow>> {
        let mut plan = self.catalog_plan(&filter.catalog).await?;
        // One owner's images with an equality on a text field and no driver: walk that
        // value's index rows in upload order.
        if plan.driver.is_none() && filter.owner.is_some() {
            plan.walk = crate::catalog::query::walk_field(&filter.catalog);
        }
        self.list_images_planned(filter, &plan, order, after, limit)
            .await
    }

    /// [`Db::list_images`] with its catalog conditions run as `plan` says.
    pub(crate) async fn list_images_planned(
        &self,
        filter: &ImageFilter,
        plan: &crate::catalog::query::Plan,
        order: ListOrder,
        after: Option<(DateTime<Utc>, uuid::Uuid)>,
        limit: u32,
    ) -> Result<Vec<ImageRow>> {
        let mut sql = String::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        let pg = matches!(self, Db::Pg(_));
        if filter.owner.is_some() {
            sql += &format!(" AND owner = ${}", next());
        }
        if filter.uploaded_after.is_some() {
            sql += &format!(" AND uploaded_at >= ${}", next());
        }
        if filter.uploaded_before.is_some() {
            sql += &format!(" AND uploaded_at < ${}", next());
        }
        if filter.camera_make.is_some() {
            sql += &format!(" AND LOWER(camera_make) = LOWER(${})", next());
        }
        if filter.camera_model.is_some() {
            sql += &format!(" AND LOWER(camera_model) = LOWER(${})", next());
        }
        for _ in &filter.tags {
            let a = next();
            if pg {
                sql += &format!(" AND tags ? ${a}");
            } else {
                sql += &format!(
                    " AND EXISTS (SELECT 1 FROM json_each(images.tags) WHERE value = ${a})"
                );
            }
        }
        if filter.status.is_some() {
            sql += &format!(" AND status = ${}", next());
        }
        if filter.review_state.is_some() {
            sql += &format!(" AND review_state = ${}", next());
        }
        // Face and people counts live with the embedding (migrations 0090, 0092).
        for (col, lo, hi) in filter.count_ranges() {
            for (bound, op) in [(lo, ">="), (hi, "<=")] {
                if bound.is_some() {
                    sql += &format!(
                        " AND EXISTS (SELECT 1 FROM image_embeddings e WHERE e.image_id = images.id \
                         AND e.{col} {op} ${})",
                        next()
                    );
                }
            }
        }
        // Catalog conditions (collection, terms, rights, versions, fields), bound after the
        // filters above.
        let catalog = crate::catalog::query::planned(&filter.catalog, plan, &mut next)
            .map_err(StoreError::Conflict)?;
        sql = format!(
            "SELECT images.* FROM {}images WHERE deleted_at IS NULL{sql}",
            catalog.from
        );
        sql += &catalog.text;
        sql += &filter.lifecycle.sql(&mut next);
        let (cmp, dir) = match order {
            ListOrder::OldestFirst => (">", "ASC"),
            ListOrder::NewestFirst => ("<", "DESC"),
        };
        // The walked rows carry the image's upload time: ordering by theirs keeps the walk in
        // its index's order.
        let (at, id) = if plan.walked().is_some() {
            ("wk.img_uploaded_at", "wk.image_id")
        } else {
            ("uploaded_at", "id")
        };
        if after.is_some() {
            let (a, b) = (next(), next());
            sql += &format!(" AND ({at}, {id}) {cmp} (${a}, ${b})");
        }
        sql += &format!(
            " ORDER BY {at} {dir}, {id} {dir} LIMIT {}",
            limit.clamp(1, 1001)
        );
        Ok(on_db!(self, |p, _pg| {
            let mut q = sqlx::query_as::<_, ImageRow>(AssertSqlSafe(sql));
            if let Some(o) = &filter.owner {
                q = q.bind(o.clone());
            }
            if let Some(s) = filter.uploaded_after {
                q = q.bind(s);
            }
            if let Some(u) = filter.uploaded_before {
                q = q.bind(u);
            }
            for v in [&filter.camera_make, &filter.camera_model]
                .into_iter()
                .flatten()
            {
                q = q.bind(v.clone());
            }
            for t in &filter.tags {
                q = q.bind(t.clone());
            }
            if let Some(s) = filter.status {
                q = q.bind(s);
            }
            if let Some(r) = filter.review_state {
                q = q.bind(r);
            }
            let counts = filter
                .count_ranges()
                .into_iter()
                .flat_map(|(_, lo, hi)| [lo, hi]);
            for n in counts.flatten() {
                q = q.bind(n as i32);
            }
            q = crate::bind_catalog!(q, &catalog.binds);
            for b in filter.lifecycle.binds() {
                q = match b {
                    LifecycleBind::Time(t) => q.bind(t),
                    LifecycleBind::Day(d) => q.bind(d),
                    LifecycleBind::Int(n) => q.bind(n),
                    LifecycleBind::Text(t) => q.bind(t),
                };
            }
            if let Some((t, id)) = after {
                q = q.bind(t).bind(id);
            }
            q.fetch_all(p).await?
        }))
    }

    /// Changes descriptive metadata and review state; `None` leaves a field as it is. Each
    /// change is recorded in the image's history with `actor` and `reason`, and a change to a
    /// field the vector index filters on queues a payload sync, all in one transaction.
    /// Returns false when the image does not exist.
    pub async fn patch_image(&self, id: ImageId, patch: &ImagePatch, actor: &str) -> Result<bool> {
        let t = now();
        Ok(on_db_retrying!(self, |p, _pg| {
            let mut tx = p.begin_write().await?;
            let cur: Option<EditableFields> = sqlx::query_as(
                "SELECT caption, tags, review_state, status FROM images \
                 WHERE id = $1 AND deleted_at IS NULL",
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
            .bind(patch.review_state)
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
            if sync && img_status == ImageStatus::Ready {
                enqueue_job!(tx, id, JobKind::SyncPayload, patch.max_attempts as i32, t);
            }
            tx.commit().await?;
            true
        }))
    }

    /// Deletes an image: tombstones it (every read stops seeing it at once) and queues the
    /// job that removes its vectors, objects and edge caches, then the row, in one
    /// transaction. Returns the row as it was, or `None` when there is no live image.
    pub async fn delete_image(&self, id: ImageId, max_attempts: u32) -> Result<Option<ImageRow>> {
        let t = now();
        Ok(on_db_retrying!(self, |p, _pg| {
            let mut tx = p.begin_write().await?;
            let row = sqlx::query_as::<_, ImageRow>(
                "UPDATE images SET deleted_at = $2, updated_at = $2 \
                 WHERE id = $1 AND deleted_at IS NULL RETURNING *",
            )
            .bind(id)
            .bind(t)
            .fetch_optional(&mut *tx)
            .await?;
            if row.is_some() {
                enqueue_job!(tx, id, JobKind::Delete, max_attempts as i32, t);
            }
            tx.commit().await?;
            row
        }))
    }

    /// Removes a deleted image's row for good (its jobs, history and pairs go with it), once
    /// the `delete` job `job` has removed everything else. False when the lease was lost.
    pub async fn purge_deleted_image(&self, job: &super::jobs::ClaimedJob) -> Result<bool> {
        Ok(on_db_retrying!(self, |p, _pg| {
            let mut tx = p.begin_write().await?;
            // The fence: only the lease holder removes the row (which removes the job row too).
            let held = super::jobs::fenced!(&mut *tx, job, "updated_at = $3", now());
            if held == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            sqlx::query("DELETE FROM images WHERE id = $1 AND deleted_at IS NOT NULL")
                .bind(job.image_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            true
        }))
    }

    /// Marks an image failed with a reason, whatever state it is in short of `ready`.
    pub async fn fail_image(&self, id: ImageId, reason: &str) -> Result<()> {
        let t = now();
        on_db!(self, |p, _pg| {
            sqlx::query(
                "UPDATE images SET status = 'failed', error = $2, updated_at = $3, processed_at = $3 \
                 WHERE id = $1 AND status <> 'ready' AND deleted_at IS NULL",
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
                 AND deleted_at IS NULL ORDER BY upload_expires_at LIMIT $2",
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
            sqlx::query_as(
                "SELECT status, COUNT(*) FROM images WHERE deleted_at IS NULL GROUP BY status",
            )
            .fetch_all(p)
            .await?
        });
        Ok(rows.into_iter().collect())
    }
}
