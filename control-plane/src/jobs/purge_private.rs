//! The `purge_private` job: once an image became private and the edges have read the new
//! signed-only list, purges what every edge and the CDN cached of it while it was public
//! (unsigned preset URLs above all). Retried with backoff until every purge succeeds.

use super::{JobError, Outcome};
use crate::state::AppState;
use crate::store::jobs::ClaimedJob;

pub(super) async fn run(state: &AppState, job: &ClaimedJob) -> Result<Outcome, JobError> {
    let Some(img) = state.db.get_image(job.image_id).await? else {
        return Ok(Outcome::Nothing);
    };
    if !state.cfg.privacy.is_private(img.private, &img.owner) {
        // Made public again before the purge ran: nothing to hide.
        return Ok(Outcome::Nothing);
    }
    let mut keys: Vec<String> = vec![img.original_key.clone()];
    keys.extend(img.variant_keys.0.values().cloned());
    crate::purge::purge_everywhere(state, &keys)
        .await
        .map_err(JobError::Transient)?;
    tracing::info!(image = %img.id, objects = keys.len(), "private image purged from the edges");
    Ok(Outcome::Nothing)
}
