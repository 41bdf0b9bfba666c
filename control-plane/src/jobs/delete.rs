//! The `delete` job: after an image was tombstoned (invisible to every read), removes its
//! vectors, every object it can have (original, staged upload, recorded and configured
//! variants), and what the edges and the CDN cache of them, then its row. Each step is
//! idempotent; a failure retries the whole job with backoff, so a crash at any point leaves
//! nothing servable and, once a run gets through, nothing orphaned.

use std::time::Duration;

use super::{JobError, Outcome};
use crate::blob;
use crate::state::AppState;
use crate::store::jobs::ClaimedJob;

pub(super) async fn run(state: &AppState, job: &ClaimedJob) -> Result<Outcome, JobError> {
    let Some(img) = state.db.get_image_any(job.image_id).await? else {
        return Ok(Outcome::Nothing);
    };
    if img.deleted_at.is_none() {
        return Ok(Outcome::Nothing);
    }
    // A job still processing the image may write variants after this one deleted them:
    // wait for it to end (it finds the image deleted and records nothing).
    if state.db.has_other_running_job(job).await? {
        return Ok(Outcome::Later(Duration::from_secs(2)));
    }
    if let Some(search) = &state.search {
        search
            .index
            .delete(&[img.id.0])
            .await
            .map_err(|e| JobError::Transient(format!("deleting vectors: {e}")))?;
    }
    let recorded: Vec<String> = img.variant_keys.0.values().cloned().collect();
    let configured: Vec<(String, &'static str)> = state
        .cfg
        .variants
        .iter()
        .map(|v| (v.name.clone(), v.extension()))
        .collect();
    let keys = blob::all_keys(
        img.id,
        img.uploaded_at,
        &img.original_key,
        img.upload_key.as_deref(),
        &recorded,
        &configured,
    );
    for k in &keys {
        let key = blob::key(k).map_err(|e| JobError::Transient(e.to_string()))?;
        state.blobs.store().delete(&key).await?;
    }
    crate::purge::purge_everywhere(state, &keys)
        .await
        .map_err(JobError::Transient)?;
    if state.db.purge_deleted_image(job).await? {
        tracing::info!(image = %img.id, objects = keys.len(), "image deleted");
        Ok(Outcome::Removed)
    } else {
        Err(JobError::Transient(
            "the lease was lost before the row could be removed".into(),
        ))
    }
}
