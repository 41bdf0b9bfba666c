//! Storage by tier over time: the tiering pass records, once a UTC day, what
//! [`Db::storage_usage`] returns (stored bytes and objects by tier and kind), and drops
//! snapshots older than `[storage_history] retention_days`. `GET /v1/storage/history` and the
//! admin UI's operations chart read them.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::state::AppState;
use crate::store::lifecycle::StorageUsage;
use crate::store::{Db, StoreError};

/// `[storage_history]`: how long daily snapshots of stored bytes are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageHistorySettings {
    /// Days of snapshots kept; older ones are deleted by the tiering pass.
    pub retention_days: u32,
}

impl Default for StorageHistorySettings {
    fn default() -> Self {
        Self {
            retention_days: 730,
        }
    }
}

/// Most days kept or asked for (ten years).
pub const MAX_DAYS: u32 = 3650;

impl StorageHistorySettings {
    /// Checks values; the error names the key.
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        if !(1..=MAX_DAYS).contains(&self.retention_days) {
            return Err(crate::config::ConfigError::Invalid {
                key: "storage_history.retention_days".into(),
                reason: format!("must be between 1 and {MAX_DAYS}"),
            });
        }
        Ok(())
    }
}

/// What one [`record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// Today's snapshot was taken by this call (false: it was there already).
    pub recorded: bool,
    /// Days of snapshots deleted for being older than the retention.
    pub pruned: u64,
}

/// The tiering pass's step: records today's snapshot when it is missing and prunes; errors
/// are logged (the next pass tries again).
pub async fn record_daily(state: &AppState) {
    match record(&state.db, state.clock.now(), &state.cfg.storage_history).await {
        Ok(r) if r.recorded || r.pruned > 0 => {
            tracing::info!(
                recorded = r.recorded,
                pruned_days = r.pruned,
                "storage history"
            )
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "recording the storage history failed"),
    }
}

/// Records the snapshot of `now`'s UTC day unless it has one (one row set per day, however
/// often it runs), then deletes snapshots more than `retention_days` days older than it.
pub async fn record(
    db: &Db,
    now: DateTime<Utc>,
    cfg: &StorageHistorySettings,
) -> Result<Recorded, StoreError> {
    let today = now.date_naive();
    // The usage query scans every object: only run it when the day still needs it.
    let recorded = if db.has_storage_snapshot(today).await? {
        false
    } else {
        let usage = db.storage_usage().await?;
        db.record_storage_snapshot(today, now, &usage).await?
    };
    let pruned = db
        .prune_storage_snapshots(today - Duration::days(i64::from(cfg.retention_days)))
        .await?;
    Ok(Recorded { recorded, pruned })
}

/// Bytes and objects of one tier, all kinds together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TierTotal {
    /// `standard` or `cold`.
    pub tier: String,
    /// Objects.
    pub objects: i64,
    /// Bytes (objects of unknown size count 0).
    pub bytes: i64,
}

/// Sums figures by tier, in the order tiers first appear.
pub fn by_tier(usage: &[StorageUsage]) -> Vec<TierTotal> {
    let mut out: Vec<TierTotal> = Vec::new();
    for u in usage {
        match out.iter_mut().find(|t| t.tier == u.tier) {
            Some(t) => {
                t.objects += u.objects;
                t.bytes += u.bytes;
            }
            None => out.push(TierTotal {
                tier: u.tier.clone(),
                objects: u.objects,
                bytes: u.bytes,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests;
