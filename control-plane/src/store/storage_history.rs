//! Storage history: one snapshot a UTC day of what [`Db::storage_usage`] returns (stored
//! bytes and objects by tier and kind). `storage_history_days` marks a recorded day (so a
//! day with nothing stored is not recorded again), `storage_history` holds its figures.

use chrono::{DateTime, NaiveDate, Utc};

use super::lifecycle::StorageUsage;
use super::{BeginWrite, Db, Result};
use crate::on_db;
use crate::on_db_retrying;

/// One day's snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageSnapshot {
    /// The UTC day it stands for.
    pub day: NaiveDate,
    /// When it was taken.
    pub recorded_at: DateTime<Utc>,
    /// The figures by tier and kind, ordered by tier then kind (empty: nothing stored).
    pub usage: Vec<StorageUsage>,
}

/// A row of the join of a day and its figures (a day without figures has `None`s).
type SnapshotRow = (
    NaiveDate,
    DateTime<Utc>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

impl Db {
    /// Whether `day` has a snapshot.
    pub async fn has_storage_snapshot(&self, day: NaiveDate) -> Result<bool> {
        let row: Option<(NaiveDate,)> = on_db!(self, |p, _pg| {
            sqlx::query_as("SELECT day FROM storage_history_days WHERE day = $1")
                .bind(day)
                .fetch_optional(p)
                .await?
        });
        Ok(row.is_some())
    }

    /// Records `usage` as `day`'s snapshot, taken at `at`, unless the day has one already;
    /// true when this call recorded it. Safe to race: the day's row decides, in one
    /// transaction with the figures.
    pub async fn record_storage_snapshot(
        &self,
        day: NaiveDate,
        at: DateTime<Utc>,
        usage: &[StorageUsage],
    ) -> Result<bool> {
        let at = super::trunc(at);
        Ok(on_db_retrying!(self, |p, _pg| {
            let mut tx = p.begin_write().await?;
            let fresh = sqlx::query(
                "INSERT INTO storage_history_days (day, recorded_at) VALUES ($1, $2) \
                 ON CONFLICT (day) DO NOTHING",
            )
            .bind(day)
            .bind(at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if fresh == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            for u in usage {
                sqlx::query(
                    "INSERT INTO storage_history (day, tier, kind, objects, bytes, unmeasured) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(day)
                .bind(&u.tier)
                .bind(&u.kind)
                .bind(u.objects)
                .bind(u.bytes)
                .bind(u.unmeasured)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            true
        }))
    }

    /// Snapshots of `since` (inclusive) and later, oldest first.
    pub async fn storage_snapshots_since(&self, since: NaiveDate) -> Result<Vec<StorageSnapshot>> {
        let rows: Vec<SnapshotRow> = on_db!(self, |p, _pg| {
            sqlx::query_as(
                "SELECT d.day, d.recorded_at, h.tier, h.kind, h.objects, h.bytes, h.unmeasured \
                 FROM storage_history_days d LEFT JOIN storage_history h ON h.day = d.day \
                 WHERE d.day >= $1 ORDER BY d.day, h.tier, h.kind",
            )
            .bind(since)
            .fetch_all(p)
            .await?
        });
        let mut out: Vec<StorageSnapshot> = Vec::new();
        for (day, recorded_at, tier, kind, objects, bytes, unmeasured) in rows {
            if out.last().map(|s| s.day) != Some(day) {
                out.push(StorageSnapshot {
                    day,
                    recorded_at,
                    usage: Vec::new(),
                });
            }
            if let (Some(tier), Some(kind), Some(last)) = (tier, kind, out.last_mut()) {
                last.usage.push(StorageUsage {
                    tier,
                    kind,
                    objects: objects.unwrap_or(0),
                    bytes: bytes.unwrap_or(0),
                    unmeasured: unmeasured.unwrap_or(0),
                });
            }
        }
        Ok(out)
    }

    /// Deletes the snapshots of days before `before`; returns how many days went.
    pub async fn prune_storage_snapshots(&self, before: NaiveDate) -> Result<u64> {
        Ok(on_db_retrying!(self, |p, _pg| {
            let mut tx = p.begin_write().await?;
            // The figures first: the cascade needs SQLite's foreign keys on, this does not.
            sqlx::query("DELETE FROM storage_history WHERE day < $1")
                .bind(before)
                .execute(&mut *tx)
                .await?;
            let days = sqlx::query("DELETE FROM storage_history_days WHERE day < $1")
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            days
        }))
    }
}
