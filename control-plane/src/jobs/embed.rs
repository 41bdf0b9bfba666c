//! The `embed` job: re-embeds a ready image from a stored variant (after a model change or
//! index drift) and writes its vectors.

use super::{lower_thread_priority, JobError, Outcome};
use crate::blob;
use crate::domain::ImageStatus;
use crate::search::indexing;
use crate::state::AppState;
use crate::store::jobs::ClaimedJob;

/// Re-embeds a ready image from a stored variant (after a model change or index drift).
pub(super) async fn run(state: &AppState, job: &ClaimedJob) -> Result<Outcome, JobError> {
    let (Some(search), Some(side)) = (&state.search, state.ingest.embed_side) else {
        return Ok(Outcome::Nothing);
    };
    let Some(img) = state.db.get_image(job.image_id).await? else {
        return Ok(Outcome::Nothing);
    };
    if img.status != ImageStatus::Ready {
        return Ok(Outcome::Nothing);
    }
    let from = state
        .ingest
        .embed_variant()
        .and_then(|v| img.variant_keys.0.get(v))
        .unwrap_or(&img.original_key);
    let key = blob::key(from).map_err(|e| JobError::Rejected(e.to_string()))?;
    let bytes = state
        .blobs
        .store()
        .get(&key, state.cfg.max_upload_bytes)
        .await?
        .bytes;
    let deadline = std::time::Instant::now() + state.ingest.timeout();
    let limits = *state.ingest.limits();
    let rgb = state
        .pool
        .submit(Some(deadline), move |budget| {
            lower_thread_priority();
            flexphoto_media::pixels::rgb_for_embedding(&bytes, side, &limits, budget)
        })
        .map_err(|e| JobError::Transient(format!("worker threads busy: {e}")))?
        .await
        .map_err(|e| JobError::Transient(format!("embedding input failed: {e}")))??;
    let mut payload = indexing::payload_for(&img, &search.model_id, None, None);
    payload.catalog = indexing::catalog_payload(state, img.id).await?;
    let record = indexing::index_image(state, search, img.id, payload, rgb).await?;
    Ok(Outcome::Recorded {
        owner: img.owner,
        record,
    })
}
