//! Moving one image's objects between tiers without ever losing one.
//!
//! To a cold store: (1) copy each object that still has to move, (2) read the copy back and
//! check its length and SHA-256 against what was read, (3) switch the objects' and the
//! image's tier in one transaction, (4) delete the hot copies. A crash between any two steps
//! leaves the image servable: until (3) the row says hot and the hot copy is there; after
//! (3) both copies exist until (4), and readers look hot first, then cold. The next run
//! resumes: objects already switched are not copied again, and (4) is repeated until done.
//!
//! To a storage class (same bucket and key): S3 rewrites the object in place with its new
//! class; there is no second copy to verify or delete, so the size is checked and the tier
//! switched. Back to hot is the same in reverse (an archived object must be restored first).

use bytes::Bytes;
use flexphoto_media::fingerprint::sha256_hex;
use flexphoto_storage::{ArchiveState, ObjectStore, StorageError};

use super::policy::Direction;
use super::settings::ColdTarget;
use crate::blob;
use crate::domain::{ImageId, ImageStatus};
use crate::failpoint;
use crate::state::AppState;
use crate::store::lifecycle::ObjectRow;
use crate::store::StoreError;

/// Why a move stopped (each may pass on a later run).
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A copy did not match what was read.
    #[error("the copy of {key} does not match: {detail}")]
    Mismatch {
        /// Object key.
        key: String,
        /// What differed.
        detail: String,
    },
    /// An archived object has to be restored before it can move back.
    #[error("{0} is archived: restore it first (POST /v1/images/{{id}}/restore)")]
    NeedsRestore(String),
}

/// What a move did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Moved {
    /// Objects copied (or re-classed) in this run.
    pub objects: usize,
    /// Bytes copied.
    pub bytes: u64,
    /// Old copies deleted.
    pub deleted: usize,
    /// Whether the image's tier changed in this run.
    pub switched: bool,
}

fn target_tier(direction: Direction) -> &'static str {
    match direction {
        Direction::ToCold => "cold",
        Direction::ToHot => "standard",
    }
}

/// Copies `key` from `from` to `to` and checks the copy byte for byte (length and SHA-256).
async fn copy_verified(
    from: &dyn ObjectStore,
    to: &dyn ObjectStore,
    key: &str,
    max_bytes: u64,
) -> Result<u64, MoveError> {
    let k = blob::key(key).map_err(|e| MoveError::Mismatch {
        key: key.into(),
        detail: e.to_string(),
    })?;
    let obj = from.get(&k, max_bytes).await?;
    let want = sha256_hex(&obj.bytes);
    let len = obj.bytes.len() as u64;
    let ct = obj
        .meta
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".into());
    to.put(&k, Bytes::clone(&obj.bytes), &ct).await?;
    let back = to.get(&k, max_bytes).await?;
    if back.bytes.len() as u64 != len || sha256_hex(&back.bytes) != want {
        return Err(MoveError::Mismatch {
            key: key.into(),
            detail: format!(
                "{} bytes read back, {len} written, or a different SHA-256",
                back.bytes.len()
            ),
        });
    }
    Ok(len)
}

/// Moves the image's `tiering.objects` in `direction`; `why` goes into its history. Safe to
/// run again after a crash at any step, and a no-op when there is nothing left to do.
pub async fn move_image(
    state: &AppState,
    id: ImageId,
    direction: Direction,
    why: &str,
) -> Result<Moved, MoveError> {
    let Some(img) = state.db.get_image(id).await? else {
        return Ok(Moved::default());
    };
    if img.status != ImageStatus::Ready {
        return Ok(Moved::default());
    }
    let cfg = &state.cfg.tiering;
    let objects: Vec<ObjectRow> = state
        .db
        .objects_of(id)
        .await?
        .into_iter()
        .filter(|o| match direction {
            Direction::ToCold => cfg.objects.contains(&o.kind),
            // Everything cold comes back, whatever the configuration says now.
            Direction::ToHot => true,
        })
        .collect();
    let (from_tier, to_tier) = match direction {
        Direction::ToCold => ("standard", "cold"),
        Direction::ToHot => ("cold", "standard"),
    };
    let pending: Vec<&ObjectRow> = objects.iter().filter(|o| o.tier == from_tier).collect();
    let max = state.cfg.max_upload_bytes.saturating_mul(4).max(1 << 30);
    let mut moved = Moved::default();
    match &cfg.cold {
        ColdTarget::Store(_) => {
            let cold = state.blobs.cold().ok_or_else(|| {
                MoveError::Storage(StorageError::Unsupported(
                    "the cold store is not open".into(),
                ))
            })?;
            let hot = state.blobs.hot();
            let (from, to) = match direction {
                Direction::ToCold => (hot.as_ref(), cold.as_ref()),
                Direction::ToHot => (cold.as_ref(), hot.as_ref()),
            };
            for o in &pending {
                let n = match copy_verified(from, to, &o.key, max).await {
                    Ok(n) => n,
                    // Moved before a crash and deleted since: only the new copy is left.
                    Err(MoveError::Storage(StorageError::NotFound(_))) => {
                        copy_verified(to, to, &o.key, max).await?
                    }
                    Err(e) => return Err(e),
                };
                if o.bytes != Some(n as i64) {
                    state.db.set_object_bytes(id, &o.kind, n as i64).await?;
                }
                moved.objects += 1;
                moved.bytes += n;
            }
        }
        ColdTarget::StorageClass(class) => {
            let store = state.blobs.hot();
            let to_class = match direction {
                Direction::ToCold => class.as_str(),
                Direction::ToHot => "STANDARD",
            };
            for o in &pending {
                let k = blob::key(&o.key).map_err(|e| MoveError::Mismatch {
                    key: o.key.clone(),
                    detail: e.to_string(),
                })?;
                if direction == Direction::ToHot
                    && store.archive_state(&k).await? == ArchiveState::Archived
                {
                    return Err(MoveError::NeedsRestore(o.key.clone()));
                }
                let before = store.head(&k).await?;
                let after = store.set_storage_class(&k, to_class).await?;
                if after.size != before.size {
                    return Err(MoveError::Mismatch {
                        key: o.key.clone(),
                        detail: format!("{} bytes before, {} after", before.size, after.size),
                    });
                }
                if o.bytes != Some(after.size as i64) {
                    state
                        .db
                        .set_object_bytes(id, &o.kind, after.size as i64)
                        .await?;
                }
                moved.objects += 1;
                moved.bytes += after.size;
            }
        }
    }
    failpoint::hit("tier.after_copy");
    let kinds: Vec<String> = pending.iter().map(|o| o.kind.clone()).collect();
    if !kinds.is_empty() {
        if !state
            .db
            .switch_tier(id, &kinds, to_tier, why, state.clock.now())
            .await?
        {
            return Ok(moved);
        }
        moved.switched = true;
    }
    failpoint::hit("tier.after_switch");
    // The old copies of every object now in the target tier (including ones switched by an
    // earlier run that stopped before deleting).
    if let (ColdTarget::Store(_), Some(cold)) = (&cfg.cold, state.blobs.cold()) {
        let old = match direction {
            Direction::ToCold => state.blobs.hot(),
            Direction::ToHot => cold,
        };
        for o in state.db.objects_of(id).await? {
            if o.tier == target_tier(direction)
                && (direction == Direction::ToHot || cfg.objects.contains(&o.kind))
            {
                let k = blob::key(&o.key).map_err(|e| MoveError::Mismatch {
                    key: o.key.clone(),
                    detail: e.to_string(),
                })?;
                old.delete(&k).await?;
                moved.deleted += 1;
            }
        }
    }
    let label = match direction {
        Direction::ToCold => "to_cold",
        Direction::ToHot => "to_hot",
    };
    state
        .metrics
        .tier_moves
        .with_label_values(&[label])
        .inc_by(moved.objects as u64);
    tracing::info!(image = %id, direction = label, objects = moved.objects, bytes = moved.bytes, "moved");
    Ok(moved)
}
