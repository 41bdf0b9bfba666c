//! The `duplicates` job: looks for a ready image's near-duplicates among its owner's ready
//! images (perceptual hash and visual embedding) and records them.

use super::{JobError, Outcome};
use crate::domain::ImageStatus;
use crate::search::indexing::{self, IndexingError};
use crate::state::AppState;
use crate::store::jobs::ClaimedJob;
use crate::store::search::IndexRecord;

/// Looks for a ready image's near-duplicates among its owner's ready images.
pub(super) async fn run(state: &AppState, job: &ClaimedJob) -> Result<Outcome, JobError> {
    let Some(img) = state.db.get_image(job.image_id).await? else {
        return Ok(Outcome::Nothing);
    };
    if img.status != ImageStatus::Ready {
        return Ok(Outcome::Nothing);
    }
    let visual = match &state.search {
        Some(search) if state.cfg.search.min_similarity.is_some() => search
            .index
            .get(img.id.0)
            .await
            .map_err(IndexingError::from)?
            .map(|v| v.visual),
        _ => None,
    };
    let found = indexing::near_duplicates(
        state,
        state.search.as_ref(),
        img.id,
        &img.owner,
        img.phash,
        visual.as_deref(),
    )
    .await?;
    if found.is_empty() {
        return Ok(Outcome::Nothing);
    }
    Ok(Outcome::Recorded {
        owner: img.owner,
        record: IndexRecord {
            model: None,
            concepts: Vec::new(),
            faces: None,
            people: None,
            layout: None,
            duplicates: found,
        },
    })
}
