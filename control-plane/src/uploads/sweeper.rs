//! The sweeper: two-step uploads whose URL expired are completed when their object is there,
//! and failed with a reason when it is not, so no upload waits forever.

use std::sync::Arc;

use super::complete::complete_image;
use super::UploadError;
use crate::state::AppState;
use crate::store::{now, StoreError};

/// Reconciles two-step uploads whose URL expired; returns how many were handled.
pub async fn sweep_once(state: &AppState) -> Result<usize, StoreError> {
    // A little grace: a PUT that started just before expiry may still be finishing.
    let grace = state
        .cfg
        .upload_url_ttl
        .min(std::time::Duration::from_secs(30));
    let before = now() - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::seconds(30));
    let rows = state.db.expired_uploads(before, 100).await?;
    let n = rows.len();
    for img in rows {
        match complete_image(state, &img).await {
            Ok(_) => tracing::info!(id = %img.id, "sweeper completed an upload"),
            Err(UploadError::Incomplete(reason)) => {
                let reason =
                    format!("the upload was not completed before its URL expired ({reason})");
                state.db.fail_image(img.id, &reason).await?;
                tracing::info!(id = %img.id, "sweeper failed an abandoned upload");
            }
            Err(e) => tracing::warn!(id = %img.id, error = %e, "sweeper could not check an upload"),
        }
    }
    Ok(n)
}

/// One sweep, logged; the `sweeper` role runs it every `upload.sweep_interval_secs`.
pub async fn sweep_pass(state: Arc<AppState>) {
    if let Err(e) = sweep_once(&state).await {
        tracing::warn!(error = %e, "sweep failed");
    }
}
