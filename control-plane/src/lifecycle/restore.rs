//! Archive classes (S3 Glacier Flexible Retrieval, Deep Archive) cannot be read until a
//! temporary copy is restored, which takes minutes to hours. The workflow: `POST
//! /v1/images/{id}/restore` asks the store for every archived object of the image and sets
//! the image `restoring`; the `tiering` pass watches restores and, once every object is
//! readable, queues the move back to hot storage (`tier_hot`), which ends the restore. Until
//! then the edges answer the image's original with 503 and `Retry-After` (its hot variants
//! keep being served).

use flexphoto_storage::ArchiveState;
use serde::Serialize;
use utoipa::ToSchema;

use super::settings::{is_archive_class, ColdTarget};
use crate::blob;
use crate::domain::{ImageId, JobKind};
use crate::state::AppState;
use crate::store::StoreError;

/// Where an image's restore stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestoreStatus {
    /// Nothing of the image is archived: it is readable now.
    NotArchived,
    /// The store is restoring; the move back follows.
    Restoring,
    /// Readable again; the move back to hot storage is queued.
    Restored,
}

/// Why a restore could not be asked for.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store failed.
    #[error("storage: {0}")]
    Storage(#[from] flexphoto_storage::StorageError),
    /// A key did not parse.
    #[error("{0}")]
    Key(String),
}

/// Whether cold objects sit in an archive class.
pub fn archives(state: &AppState) -> bool {
    matches!(&state.cfg.tiering.cold, ColdTarget::StorageClass(c) if is_archive_class(c))
}

/// Asks for the restore of every archived object of image `id`.
pub async fn request(state: &AppState, id: ImageId) -> Result<RestoreStatus, RestoreError> {
    check(state, id, true).await
}

/// Where image `id`'s restore stands, asking the store for the objects not yet asked for;
/// `fresh` says a person asked (counted in the metrics).
async fn check(state: &AppState, id: ImageId, fresh: bool) -> Result<RestoreStatus, RestoreError> {
    if !archives(state) {
        return Ok(RestoreStatus::NotArchived);
    }
    let store = state.blobs.hot();
    let mut any = false;
    let mut all_ready = true;
    for o in state.db.objects_of(id).await? {
        if o.tier != "cold" {
            continue;
        }
        let k = blob::key(&o.key).map_err(|e| RestoreError::Key(e.to_string()))?;
        match store.archive_state(&k).await? {
            ArchiveState::Online => {}
            ArchiveState::Archived => {
                any = true;
                all_ready &= matches!(
                    store.restore(&k, state.cfg.tiering.restore_days).await?,
                    ArchiveState::Restored { .. } | ArchiveState::Online
                );
            }
            ArchiveState::Restoring => {
                any = true;
                all_ready = false;
            }
            ArchiveState::Restored { .. } => any = true,
        }
    }
    if !any {
        return Ok(RestoreStatus::NotArchived);
    }
    let now = state.clock.now();
    if all_ready {
        state
            .db
            .set_restore_state(id, Some("restored"), now)
            .await?;
        state
            .db
            .enqueue_jobs(&[id], JobKind::TierHot, state.cfg.max_attempts)
            .await?;
        state
            .metrics
            .restores
            .with_label_values(&["restored"])
            .inc();
        Ok(RestoreStatus::Restored)
    } else {
        state
            .db
            .set_restore_state(id, Some("restoring"), now)
            .await?;
        if fresh {
            state
                .metrics
                .restores
                .with_label_values(&["requested"])
                .inc();
        }
        Ok(RestoreStatus::Restoring)
    }
}

/// Checks restores under way (a batch); queues the move back for each image whose objects
/// are all readable. Returns how many finished.
pub async fn poll(state: &AppState) -> Result<usize, RestoreError> {
    let mut finished = 0;
    for id in state.db.restoring_images(200).await? {
        if check(state, id, false).await? != RestoreStatus::Restoring {
            finished += 1;
        }
    }
    Ok(finished)
}
