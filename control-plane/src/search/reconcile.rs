//! Keeping SQL and the vector index in agreement.
//!
//! SQL is the truth. [`reconcile`] walks both: a point whose image is gone or not ready is
//! deleted; a ready image without a point, or with vectors from another model, gets an
//! `embed` job. [`reconcile_pass`] and [`reembed_pass`] are the service's scheduled passes
//! (one process per deployment runs each): drift repair, and `embed` jobs for images
//! embedded by another model than the configured one (after a model change), a batch at a time.

use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

use crate::domain::{ImageId, ImageStatus, JobKind};
use crate::search::index::IndexError;
use crate::state::AppState;
use crate::store::StoreError;

/// Why reconciliation failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Index.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// Search is off.
    #[error("search is off (search.model = \"none\"): there is no index to reconcile")]
    Off,
}

/// What a reconciliation found (and fixed, unless it was a dry run).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReconcileReport {
    /// Points in the index.
    pub points: u64,
    /// Ready images in SQL.
    pub ready_images: u64,
    /// Points whose image is missing or not ready (deleted).
    pub orphan_points: u64,
    /// Ready images without a point (queued for embedding).
    pub missing_points: u64,
    /// Ready images whose vectors come from another model (queued for embedding).
    pub stale_model: u64,
    /// `embed` jobs queued.
    pub queued: u64,
}

/// Compares SQL and the index; with `fix`, deletes orphan points and queues `embed` jobs.
pub async fn reconcile(state: &AppState, fix: bool) -> Result<ReconcileReport, ReconcileError> {
    let search = state.search.as_ref().ok_or(ReconcileError::Off)?;
    let mut report = ReconcileReport::default();
    let mut points: HashMap<Uuid, String> = HashMap::new();
    let mut after = None;
    loop {
        let page = search.index.list(after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.0);
        report.points += page.len() as u64;
        let ids: Vec<Uuid> = page.iter().map(|(id, _)| *id).collect();
        let image_ids: Vec<ImageId> = ids.iter().map(|id| ImageId(*id)).collect();
        let rows = state.db.get_images(&image_ids).await?;
        let orphans: Vec<Uuid> = ids
            .iter()
            .copied()
            .filter(|id| {
                !rows
                    .iter()
                    .any(|r| r.id.0 == *id && r.status == ImageStatus::Ready)
            })
            .collect();
        report.orphan_points += orphans.len() as u64;
        if fix && !orphans.is_empty() {
            search.index.delete(&orphans).await?;
        }
        for (id, model) in page {
            if !orphans.contains(&id) {
                points.insert(id, model);
            }
        }
    }
    let mut after = None;
    loop {
        let page = state.db.ready_ids(after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.0);
        report.ready_images += page.len() as u64;
        let mut todo = Vec::new();
        for (id, sql_model) in page {
            match points.get(&id.0) {
                None => {
                    report.missing_points += 1;
                    todo.push(id);
                }
                Some(m) if *m != search.model_id || sql_model.as_deref() != Some(m.as_str()) => {
                    report.stale_model += 1;
                    todo.push(id);
                }
                Some(_) => {}
            }
        }
        if fix && !todo.is_empty() {
            report.queued += state
                .db
                .enqueue_jobs(&todo, JobKind::Embed, state.cfg.max_attempts)
                .await?;
        }
    }
    Ok(report)
}

/// One reconciliation pass, logged; the `reconcile` role runs it (see `cluster::singleton`).
pub async fn reconcile_pass(state: Arc<AppState>) {
    if state.search.is_none() {
        return;
    }
    match reconcile(&state, true).await {
        Ok(r) if r.orphan_points + r.missing_points + r.stale_model > 0 => {
            tracing::info!(report = ?r, "reconciled the vector index with the database")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "reconciling the vector index failed"),
    }
}

/// Queues one batch of re-embedding for images made by another model than the configured
/// one; the `reembed` role runs it every few seconds.
pub async fn reembed_pass(state: Arc<AppState>) {
    let Some(search) = state.search.clone() else {
        return;
    };
    match state
        .db
        .needing_embedding(&search.model_id, state.cfg.search.reembed_batch)
        .await
    {
        Ok(ids) if !ids.is_empty() => {
            match state
                .db
                .enqueue_jobs(&ids, JobKind::Embed, state.cfg.max_attempts)
                .await
            {
                Ok(n) => {
                    tracing::info!(queued = n, model = %search.model_id, "queued images for re-embedding")
                }
                Err(e) => tracing::warn!(error = %e, "queueing re-embedding failed"),
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "looking for images to re-embed failed"),
    }
}
