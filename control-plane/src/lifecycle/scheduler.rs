//! The `tiering` role's pass (one process per deployment runs it, every
//! `tiering.interval_secs`): measure objects whose size is unknown, follow archive restores,
//! queue the moves the policy asks for (a batch per pass, each a job on the durable queue),
//! and drop traffic older than `access.retention_days`; then take the day's storage snapshot.

use std::sync::Arc;

use super::policy::{self, Direction};
use super::restore;
use crate::blob;
use crate::domain::JobKind;
use crate::state::AppState;

/// Objects measured per pass.
const MEASURE_BATCH: u32 = 500;

/// One pass; errors are logged and the next pass tries again.
pub async fn tiering_pass(state: Arc<AppState>) {
    if let Err(e) = run(&state).await {
        tracing::warn!(error = %e, "tiering pass failed");
    }
    super::history::record_daily(&state).await;
}

async fn run(state: &AppState) -> Result<(), String> {
    let now = state.clock.now();
    // Sizes of objects recorded before sizes were kept.
    for (id, kind, key) in state
        .db
        .unmeasured_objects(MEASURE_BATCH)
        .await
        .map_err(|e| e.to_string())?
    {
        let Ok(k) = blob::key(&key) else { continue };
        match state.blobs.store().head(&k).await {
            Ok(meta) => state
                .db
                .set_object_bytes(id, &kind, meta.size as i64)
                .await
                .map_err(|e| e.to_string())?,
            Err(e) => tracing::debug!(key, error = %e, "measuring an object failed"),
        }
    }
    let restored = restore::poll(state).await.map_err(|e| e.to_string())?;
    if restored > 0 {
        tracing::info!(
            restored,
            "archive restores finished; moving the images back"
        );
    }
    let cfg = &state.cfg.tiering;
    if cfg.enabled {
        let plan = policy::plan(&state.db, cfg, now, Some(cfg.batch as usize))
            .await
            .map_err(|e| e.to_string())?;
        let ids = |d: Direction| -> Vec<_> {
            plan.moves
                .iter()
                .filter(|m| m.direction == d)
                .map(|m| m.id)
                .collect()
        };
        let to_cold = ids(Direction::ToCold);
        let to_hot = ids(Direction::ToHot);
        let max = state.cfg.max_attempts;
        let queued_cold = state
            .db
            .enqueue_jobs(&to_cold, JobKind::TierCold, max)
            .await
            .map_err(|e| e.to_string())?;
        let queued_hot = if restore::archives(state) {
            // Archived objects come back through a restore first.
            for id in &to_hot {
                if let Err(e) = restore::request(state, *id).await {
                    tracing::warn!(image = %id, error = %e, "asking for a restore failed");
                }
            }
            0
        } else {
            state
                .db
                .enqueue_jobs(&to_hot, JobKind::TierHot, max)
                .await
                .map_err(|e| e.to_string())?
        };
        if queued_cold + queued_hot > 0 {
            tracing::info!(
                to_cold = queued_cold,
                to_hot = queued_hot,
                more = plan.truncated,
                "tiering: moves queued"
            );
        }
    }
    let keep = chrono::Duration::days(i64::from(state.cfg.access_retention_days));
    state
        .db
        .prune_access((now - keep).date_naive(), now - chrono::Duration::days(7))
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}
