//! The `sync_payload` job: copies a ready image's current filter fields (tags, review state,
//! and the catalog's: collection, terms, workflow, rights window, superseded versions) to its
//! point in the vector index after an edit.

use super::{JobError, Outcome};
use crate::domain::ImageStatus;
use crate::search::indexing::{self, IndexingError};
use crate::state::AppState;
use crate::store::jobs::ClaimedJob;

/// Copies a ready image's current filter fields to its point (after an edit).
pub(super) async fn run(state: &AppState, job: &ClaimedJob) -> Result<Outcome, JobError> {
    let Some(search) = &state.search else {
        return Ok(Outcome::Nothing);
    };
    let Some(img) = state.db.get_image(job.image_id).await? else {
        return Ok(Outcome::Nothing);
    };
    if img.status == ImageStatus::Ready {
        let recorded = state.db.embeddings_of(&[img.id]).await?.pop();
        let model = recorded
            .as_ref()
            .map_or_else(|| search.model_id.clone(), |e| e.model.clone());
        let (faces, people) = recorded.map_or((None, None), |e| (e.faces, e.people));
        let mut payload = indexing::payload_for(&img, &model, faces, people);
        payload.catalog = indexing::catalog_payload(state, img.id).await?;
        search
            .index
            .set_payload(img.id.0, &payload)
            .await
            .map_err(IndexingError::from)?;
    }
    Ok(Outcome::Nothing)
}
