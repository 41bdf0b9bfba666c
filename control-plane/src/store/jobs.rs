//! The `jobs` table: a durable queue in the metadata database.
//!
//! A claim is one short transaction: pick the oldest runnable job (queued and due, or running
//! with an expired lease), mark it running with a fresh lease token and a lease deadline, and
//! commit. No lock is held while the image work runs. Every later write names the lease token,
//! so a worker whose lease expired and was taken over cannot overwrite the new owner's result.
//!
//! Postgres picks with `FOR UPDATE SKIP LOCKED`; SQLite has one writer at a time, and the claim
//! runs inside `BEGIN IMMEDIATE`, so the select and the update see the same snapshot.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::FromRow;
use uuid::Uuid;

use super::images::Processed;
use super::{now, BeginWrite, Db, Result, StoreError};
use crate::domain::{DomainError, ImageId, JobKind};
use crate::on_db;
use crate::on_db_retrying;

/// A claimed job.
#[derive(Debug, Clone, FromRow)]
pub struct ClaimedJob {
    /// Job id.
    pub id: i64,
    /// Image it works on.
    pub image_id: ImageId,
    /// Kind as stored; [`ClaimedJob::kind`] parses it.
    pub kind: String,
    /// Attempts including this one.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// This claim's token.
    pub lease_token: Uuid,
}

impl ClaimedJob {
    /// The job's kind, or why it is not one this version knows (such a job ends dead).
    pub fn kind(&self) -> std::result::Result<JobKind, DomainError> {
        self.kind.parse()
    }
}

const CLAIM_PG: &str = "UPDATE jobs SET state = 'running', attempts = attempts + 1, \
    lease_until = $2, lease_token = $3, updated_at = $1 \
    WHERE id = (SELECT id FROM jobs \
        WHERE (state = 'queued' AND run_at <= $1) OR (state = 'running' AND lease_until < $1) \
        ORDER BY run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
    RETURNING id, image_id, kind, attempts, max_attempts, lease_token";

const CLAIM_SQLITE: &str = "UPDATE jobs SET state = 'running', attempts = attempts + 1, \
    lease_until = $2, lease_token = $3, updated_at = $1 \
    WHERE id = (SELECT id FROM jobs \
        WHERE (state = 'queued' AND run_at <= $1) OR (state = 'running' AND lease_until < $1) \
        ORDER BY run_at, id LIMIT 1) \
    RETURNING id, image_id, kind, attempts, max_attempts, lease_token";

/// Queues a job of `$kind` (a [`JobKind`]) for `$image` inside an open transaction `$tx`
/// (either backend), runnable at `$t` with `$max_attempts` (an `i32`) attempts: the outbox
/// insert every enqueueing path shares.
macro_rules! enqueue_job {
    ($tx:expr, $image:expr, $kind:expr, $max_attempts:expr, $t:expr) => {{
        let kind: $crate::domain::JobKind = $kind;
        sqlx::query(
            "INSERT INTO jobs (image_id, kind, state, attempts, max_attempts, run_at, created_at, updated_at) \
             VALUES ($1, $2, 'queued', 0, $3, $4, $4, $4)",
        )
        .bind($image)
        .bind(kind)
        .bind($max_attempts)
        .bind($t)
        .execute(&mut *$tx)
        .await?;
    }};
}
pub(crate) use enqueue_job;

/// Updates the job `$job` (a [`ClaimedJob`]) only while this worker still holds its lease:
/// `UPDATE jobs SET {$set} WHERE id = $1 AND lease_token = $2 AND state = 'running'`, with
/// `$binds` as `$3`, `$4`…, on `$exec` (a pool or an open transaction). Evaluates to the
/// number of rows changed: 0 means the lease was lost and nothing was written. Every write a
/// worker makes to its job goes through this fence.
macro_rules! fenced {
    ($exec:expr, $job:expr, $set:literal $(, $bind:expr)* $(,)?) => {{
        sqlx::query(concat!(
            "UPDATE jobs SET ",
            $set,
            " WHERE id = $1 AND lease_token = $2 AND state = 'running'"
        ))
        .bind($job.id)
        .bind($job.lease_token)
        $(.bind($bind))*
        .execute($exec)
        .await?
        .rows_affected()
    }};
}
pub(crate) use fenced;

/// What recording a processed image came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyCommit {
    /// The image is ready with the result.
    Ready,
    /// The image was deleted while it was processed; the job is done, the result unused.
    ImageDeleted,
    /// The job's lease was lost (it expired and the job was claimed again, or its row is
    /// gone); nothing was written.
    LeaseLost,
}

/// Queue counts by state, plus the oldest due job's age.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct QueueStats {
    /// Jobs per state.
    pub jobs: BTreeMap<String, i64>,
    /// Jobs per kind (`process`, `embed`, `duplicates`, `sync_payload`), then per state.
    pub by_kind: BTreeMap<String, BTreeMap<String, i64>>,
    /// Running jobs whose lease has expired (their worker died).
    pub expired_leases: i64,
    /// Seconds the oldest due queued job has waited.
    pub oldest_queued_secs: Option<f64>,
    /// Images per status.
    pub images: BTreeMap<String, i64>,
}

impl Db {
    /// Claims the next runnable job with a lease of `lease`, if any.
    pub async fn claim_job(&self, lease: Duration) -> Result<Option<ClaimedJob>> {
        let t = now();
        let until = t + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(60));
        let token = Uuid::new_v4();
        Ok(on_db_retrying!(self, |p, pg| {
            let mut tx = p.begin_write().await?;
            let job = sqlx::query_as::<_, ClaimedJob>(if pg { CLAIM_PG } else { CLAIM_SQLITE })
                .bind(t)
                .bind(until)
                .bind(token)
                .fetch_optional(&mut *tx)
                .await?;
            tx.commit().await?;
            job
        }))
    }

    /// Extends a lease; false when the lease was lost (another worker owns the job now).
    pub async fn renew_lease(&self, job: &ClaimedJob, lease: Duration) -> Result<bool> {
        let t = now();
        let until = t + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(60));
        let n = on_db!(self, |p, _pg| {
            fenced!(p, job, "lease_until = $3, updated_at = $4", until, t)
        });
        Ok(n > 0)
    }

    /// Finishes a job and marks its image ready with what processing found, in one
    /// transaction; when the lease was lost or the image deleted meanwhile, nothing about the
    /// image is written and the caller owns what it stored.
    pub async fn finish_ready(&self, job: &ClaimedJob, r: &Processed) -> Result<ReadyCommit> {
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
                return Ok(ReadyCommit::LeaseLost);
            }
            let e = &r.exif;
            let updated = sqlx::query(
                "UPDATE images SET status = 'ready', error = NULL, attempts = $2, bytes = $3, sha256 = $4, \
                 mime = $5, format = $6, width = $7, height = $8, variant_keys = $9, phash = $10, \
                 exif = $11, camera_make = $12, camera_model = $13, lens = $14, taken_at = $15, \
                 iso = $16, exposure_time = $17, f_number = $18, focal_length = $19, gps_lat = $20, \
                 gps_lon = $21, orientation = $22, processed_at = $23, updated_at = $23 \
                 WHERE id = $1 AND deleted_at IS NULL",
            )
            .bind(job.image_id)
            .bind(job.attempts)
            .bind(r.bytes)
            .bind(&r.sha256)
            .bind(r.format.mime())
            .bind(r.format.name())
            .bind(r.width)
            .bind(r.height)
            .bind(Json(&r.variant_keys))
            .bind(r.phash)
            .bind(e.all.as_ref().map(Json))
            .bind(&e.make)
            .bind(&e.model)
            .bind(&e.lens)
            .bind(e.taken_at)
            .bind(e.iso)
            .bind(e.exposure_time)
            .bind(e.f_number)
            .bind(e.focal_length)
            .bind(e.gps_lat)
            .bind(e.gps_lon)
            .bind(e.orientation)
            .bind(t)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::classify)?
            .rows_affected();
            if updated == 0 {
                // Deleted while it was processed: the job is done, and what it stored is
                // the caller's to remove (the delete job may have run already).
                tx.commit().await?;
                return Ok(ReadyCommit::ImageDeleted);
            }
            // Every stored object, with its size, for tiering and the bill.
            let original: (String,) =
                sqlx::query_as("SELECT original_key FROM images WHERE id = $1")
                    .bind(job.image_id)
                    .fetch_one(&mut *tx)
                    .await?;
            let objects = std::iter::once(("original", original.0.as_str(), Some(r.bytes))).chain(
                r.variant_keys.iter().map(|(name, key)| {
                    (
                        name.as_str(),
                        key.as_str(),
                        r.variant_bytes.get(name).copied(),
                    )
                }),
            );
            for (kind, key, bytes) in objects {
                sqlx::query(
                    "INSERT INTO image_objects (image_id, kind, key, bytes, tier) VALUES ($1, $2, $3, $4, 'standard') \
                     ON CONFLICT (image_id, kind) DO UPDATE SET key = excluded.key, bytes = excluded.bytes, tier = 'standard'",
                )
                .bind(job.image_id)
                .bind(kind)
                .bind(key)
                .bind(bytes)
                .execute(&mut *tx)
                .await?;
            }
            if let Some(rec) = &r.index {
                let owner: (String,) = sqlx::query_as("SELECT owner FROM images WHERE id = $1")
                    .bind(job.image_id)
                    .fetch_one(&mut *tx)
                    .await?;
                super::search::write_index_record!(
                    tx,
                    job.image_id,
                    &owner.0,
                    rec,
                    t,
                    job.max_attempts
                );
            }
            // The duplicate search is one index query, and its pairs are what a client reads
            // next: it takes the upload's place in the queue (this job's creation), ahead of
            // later uploads' processing, instead of waiting behind the whole backlog.
            sqlx::query(
                "INSERT INTO jobs (image_id, kind, state, attempts, max_attempts, run_at, created_at, updated_at) \
                 SELECT $1, $2, 'queued', 0, $3, created_at, $4, $4 FROM jobs WHERE id = $5",
            )
            .bind(job.image_id)
            .bind(JobKind::Duplicates)
            .bind(job.max_attempts)
            .bind(t)
            .bind(job.id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            ReadyCommit::Ready
        }))
    }

    /// Ends a job for good and marks its image failed with `reason`, in one transaction.
    /// False when the lease was lost.
    pub async fn finish_dead(&self, job: &ClaimedJob, reason: &str) -> Result<bool> {
        let t = now();
        Ok(on_db_retrying!(self, |p, _pg| {
            let mut tx = p.begin_write().await?;
            let n = fenced!(
                &mut *tx,
                job,
                "state = 'dead', lease_until = NULL, last_error = $3, updated_at = $4",
                reason,
                t
            );
            if n == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            sqlx::query(
                "UPDATE images SET status = 'failed', error = $2, attempts = $3, processed_at = $4, \
                 updated_at = $4 WHERE id = $1 AND status <> 'ready' AND deleted_at IS NULL",
            )
            .bind(job.image_id)
            .bind(reason)
            .bind(job.attempts)
            .bind(t)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            true
        }))
    }

    /// Finishes a job that found nothing to do (its image is no longer waiting).
    pub async fn finish_done(&self, job: &ClaimedJob) -> Result<bool> {
        let t = now();
        let n = on_db!(self, |p, _pg| {
            fenced!(
                p,
                job,
                "state = 'done', lease_until = NULL, updated_at = $3",
                t
            )
        });
        Ok(n > 0)
    }

    /// Puts a job back in the queue to run again after `delay`, keeping the error.
    pub async fn retry_later(
        &self,
        job: &ClaimedJob,
        error: &str,
        delay: Duration,
    ) -> Result<bool> {
        let t = now();
        let at = t + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(60));
        let n = on_db_retrying!(self, |p, _pg| {
            let mut tx = p.begin_write().await?;
            let n = fenced!(
                &mut *tx,
                job,
                "state = 'queued', lease_until = NULL, lease_token = NULL, last_error = $3, \
                 run_at = $4, updated_at = $5",
                error,
                at,
                t
            );
            sqlx::query("UPDATE images SET attempts = $2, updated_at = $3 WHERE id = $1")
                .bind(job.image_id)
                .bind(job.attempts)
                .bind(t)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            n
        });
        Ok(n > 0)
    }

    /// Puts a job back to run after `delay` without counting the attempt (it waited on
    /// something else, e.g. another job of its image).
    pub async fn postpone(&self, job: &ClaimedJob, delay: Duration) -> Result<bool> {
        let t = now();
        let at = t + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(5));
        let n = on_db!(self, |p, _pg| {
            fenced!(
                p,
                job,
                "state = 'queued', lease_until = NULL, lease_token = NULL, \
                 attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, run_at = $3, \
                 updated_at = $4",
                at,
                t
            )
        });
        Ok(n > 0)
    }

    /// Whether an image has a job other than `job` running under a live lease.
    pub async fn has_other_running_job(&self, job: &ClaimedJob) -> Result<bool> {
        let t = now();
        let r: Option<(i64,)> = on_db!(self, |p, _pg| {
            sqlx::query_as(
                "SELECT id FROM jobs WHERE image_id = $1 AND id <> $2 AND state = 'running' \
                 AND lease_until >= $3 LIMIT 1",
            )
            .bind(job.image_id)
            .bind(job.id)
            .bind(t)
            .fetch_optional(p)
            .await?
        });
        Ok(r.is_some())
    }

    /// Gives a claimed job back without counting the attempt (graceful shutdown).
    pub async fn release_job(&self, job: &ClaimedJob) -> Result<bool> {
        let t = now();
        let n = on_db!(self, |p, _pg| {
            fenced!(
                p,
                job,
                "state = 'queued', lease_until = NULL, lease_token = NULL, \
                 attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, run_at = $3, \
                 updated_at = $3",
                t
            )
        });
        Ok(n > 0)
    }

    /// Whether an image already has a job that is not finished.
    pub async fn has_open_job(&self, image_id: ImageId) -> Result<bool> {
        let r: Option<(i64,)> = on_db!(self, |p, _pg| {
            sqlx::query_as("SELECT id FROM jobs WHERE image_id = $1 AND state IN ('queued', 'running') LIMIT 1")
                .bind(image_id)
                .fetch_optional(p)
                .await?
        });
        Ok(r.is_some())
    }

    /// Queue and image counts.
    pub async fn queue_stats(&self) -> Result<QueueStats> {
        let t = now();
        let rows: Vec<(String, String, i64)> = on_db!(self, |p, _pg| {
            sqlx::query_as("SELECT kind, state, COUNT(*) FROM jobs GROUP BY kind, state")
                .fetch_all(p)
                .await?
        });
        let mut jobs: BTreeMap<String, i64> = BTreeMap::new();
        let mut by_kind: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        for (kind, state, n) in rows {
            *jobs.entry(state.clone()).or_default() += n;
            by_kind.entry(kind).or_default().insert(state, n);
        }
        let (expired,): (i64,) = on_db!(self, |p, _pg| {
            sqlx::query_as("SELECT COUNT(*) FROM jobs WHERE state = 'running' AND lease_until < $1")
                .bind(t)
                .fetch_one(p)
                .await?
        });
        let oldest: Option<(DateTime<Utc>,)> = on_db!(self, |p, _pg| {
            sqlx::query_as(
                "SELECT run_at FROM jobs WHERE state = 'queued' AND run_at <= $1 ORDER BY run_at LIMIT 1",
            )
            .bind(t)
            .fetch_optional(p)
            .await?
        });
        Ok(QueueStats {
            jobs,
            by_kind,
            expired_leases: expired,
            oldest_queued_secs: oldest.map(|(r,)| (t - r).num_milliseconds() as f64 / 1000.0),
            images: self.image_counts().await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseUrl;
    use crate::store::images::NewImage;

    async fn db() -> (Db, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("fp-queue-{}", Uuid::new_v4().simple()));
        let db = Db::connect(&DatabaseUrl::Sqlite(dir.join("q.db")), 4)
            .await
            .unwrap();
        (db, dir)
    }

    async fn enqueue(db: &Db, owner: &str) -> ImageId {
        let id = ImageId::new();
        let img = NewImage {
            id,
            owner: crate::domain::Owner::parse(owner).unwrap(),
            mime: "image/jpeg".into(),
            bytes: Some(1),
            sha256: None,
            caption: None,
            original_key: format!("k/{id}"),
            uploaded_at: now(),
            upload_expires_at: None,
            uploaded_by: None,
            upload_key: None,
            private: false,
            catalog: None,
        };
        db.insert_stored_and_enqueue(&img, 3).await.unwrap();
        id
    }

    /// What processing a 1×1 JPEG found.
    fn processed() -> Processed {
        Processed {
            bytes: 1,
            sha256: "00".repeat(32),
            format: flexphoto_media::ImageFormat::Jpeg,
            width: 1,
            height: 1,
            variant_keys: Default::default(),
            variant_bytes: Default::default(),
            phash: None,
            exif: Default::default(),
            index: None,
        }
    }

    #[tokio::test]
    async fn a_job_is_claimed_once_and_fenced_by_its_lease() {
        let (db, dir) = db().await;
        let id = enqueue(&db, "o").await;
        let long = Duration::from_secs(60);
        let a = db.claim_job(long).await.unwrap().expect("a job");
        assert_eq!(a.image_id, id);
        assert_eq!(a.attempts, 1);
        assert!(
            db.claim_job(long).await.unwrap().is_none(),
            "a leased job must not be claimed twice"
        );
        assert!(db.renew_lease(&a, long).await.unwrap());
        db.retry_later(&a, "boom", Duration::from_secs(3600))
            .await
            .unwrap();
        assert!(
            db.claim_job(long).await.unwrap().is_none(),
            "backoff must delay the retry"
        );
        assert!(
            !db.finish_done(&a).await.unwrap(),
            "a released claim cannot finish"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over() {
        let (db, dir) = db().await;
        enqueue(&db, "o").await;
        let a = db
            .claim_job(Duration::from_millis(1))
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let b = db
            .claim_job(Duration::from_secs(60))
            .await
            .unwrap()
            .expect("expired lease reclaimed");
        assert_eq!(a.id, b.id);
        assert_eq!(b.attempts, 2);
        // The first worker's late result is discarded; the new owner's counts.
        let processed = processed();
        assert_eq!(
            db.finish_ready(&a, &processed).await.unwrap(),
            ReadyCommit::LeaseLost
        );
        assert!(db.finish_dead(&b, "bad image").await.unwrap());
        let img = db.get_image(b.image_id).await.unwrap().unwrap();
        assert_eq!(img.status, crate::domain::ImageStatus::Failed);
        assert_eq!(img.error.as_deref(), Some("bad image"));
        let s = db.queue_stats().await.unwrap();
        assert_eq!(s.jobs.get("dead"), Some(&1));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A processed image's duplicate search runs before the processing of images uploaded
    /// after it (its pairs do not wait behind the whole backlog).
    #[tokio::test]
    async fn a_duplicate_search_keeps_its_uploads_place_in_the_queue() {
        let (db, dir) = db().await;
        let first = enqueue(&db, "o").await;
        let later = enqueue(&db, "o").await;
        let long = Duration::from_secs(60);
        let a = db.claim_job(long).await.unwrap().expect("a job");
        assert_eq!(a.image_id, first);
        let processed = processed();
        assert_eq!(
            db.finish_ready(&a, &processed).await.unwrap(),
            ReadyCommit::Ready
        );
        let next = db.claim_job(long).await.unwrap().expect("a job");
        assert_eq!(
            (next.image_id, next.kind().unwrap()),
            (first, JobKind::Duplicates)
        );
        let last = db.claim_job(long).await.unwrap().expect("a job");
        assert_eq!(
            (last.image_id, last.kind().unwrap()),
            (later, JobKind::Process)
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn concurrent_claims_never_share_a_job() {
        let (db, dir) = db().await;
        for i in 0..20 {
            enqueue(&db, &format!("o{i}")).await;
        }
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(j) = db.claim_job(Duration::from_secs(60)).await.unwrap() {
                    got.push(j.id);
                }
                got
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort();
        let n = all.len();
        all.dedup();
        assert_eq!(n, 20);
        assert_eq!(all.len(), 20);
        let _ = std::fs::remove_dir_all(dir);
    }
}
