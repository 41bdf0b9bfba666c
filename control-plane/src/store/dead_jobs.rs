//! Listing jobs by state and kind, and putting dead jobs back in the queue (operators' retry).

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::{now, BeginWrite, Db, Result};
use crate::domain::ImageId;
use crate::on_db;
use crate::on_db_retrying;

/// A job as operators see it.
#[derive(Debug, Clone, FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct JobRow {
    /// Job id.
    pub id: i64,
    /// The image it works on.
    #[schema(value_type = String, format = Uuid)]
    pub image_id: ImageId,
    /// Its kind (`process`, `embed`, …).
    pub kind: String,
    /// `queued`, `running`, `done` or `dead`.
    pub state: String,
    /// Attempts made.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// What a retry found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Queued again.
    Queued,
    /// No such job.
    NotFound,
    /// The job is not dead.
    NotDead,
}

impl Db {
    /// Jobs in `state` (and of `kind`), most recently changed first, with ids below `before`.
    pub async fn list_jobs(
        &self,
        state: &str,
        kind: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<JobRow>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as::<_, JobRow>(
                "SELECT id, image_id, kind, state, attempts, max_attempts, last_error, created_at, \
                 updated_at FROM jobs WHERE state = $1 AND ($2 IS NULL OR kind = $2) \
                 AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
            )
            .bind(state)
            .bind(kind)
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?
        }))
    }

    /// Puts a dead job back in the queue with fresh attempts; a dead `process` job's failed
    /// image goes back to `processing`.
    pub async fn retry_dead_job(&self, id: i64) -> Result<Retry> {
        let t = now();
        Ok(on_db_retrying!(self, |p, _pg| {
            let mut tx = p.begin_write().await?;
            let job: Option<(ImageId, String, String)> =
                sqlx::query_as("SELECT image_id, kind, state FROM jobs WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some((image_id, kind, state)) = job else {
                tx.rollback().await?;
                return Ok(Retry::NotFound);
            };
            if state != "dead" {
                tx.rollback().await?;
                return Ok(Retry::NotDead);
            }
            sqlx::query(
                "UPDATE jobs SET state = 'queued', attempts = 0, run_at = $2, lease_until = NULL, \
                 lease_token = NULL, updated_at = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(t)
            .execute(&mut *tx)
            .await?;
            if kind == "process" {
                sqlx::query(
                    "UPDATE images SET status = 'processing', error = NULL, updated_at = $2 \
                     WHERE id = $1 AND status = 'failed' AND deleted_at IS NULL",
                )
                .bind(image_id)
                .bind(t)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Retry::Queued
        }))
    }
}
