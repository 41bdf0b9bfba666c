//! Completing a presigned upload: the staged object must exist with the declared size and
//! type; its identity (ETag or version) is recorded, so the worker processes exactly these
//! bytes; then the image moves to `processing` and its job is queued in one transaction.
//! Shared by the complete endpoint, the S3 webhook and the sweeper; idempotent.

use flexphoto_storage::StorageError;

use super::UploadError;
use crate::blob;
use crate::domain::ImageStatus;
use crate::state::AppState;
use crate::store::images::{Completion, ImageRow};

/// Verifies the object behind an `uploading` image and enqueues processing.
pub async fn complete_image(state: &AppState, img: &ImageRow) -> Result<Completion, UploadError> {
    if img.status != ImageStatus::Uploading {
        return Ok(Completion::AlreadyCompleted(img.status));
    }
    let key = blob::key(img.source_key())?;
    let meta = match state.blobs.store().head(&key).await {
        Ok(m) => m,
        Err(StorageError::NotFound(_)) => {
            return Err(UploadError::Incomplete(
                "no uploaded object was found for this image yet".into(),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(declared) = img.declared_bytes {
        if meta.size != declared as u64 {
            return Err(UploadError::Incomplete(format!(
                "the uploaded object is {} bytes, but {declared} were declared",
                meta.size
            )));
        }
    }
    if let Some(ct) = &meta.content_type {
        let ct = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !ct.is_empty() && ct != img.declared_mime {
            return Err(UploadError::Incomplete(format!(
                "the uploaded object is {ct}, but {} was declared",
                img.declared_mime
            )));
        }
    }
    Ok(state
        .db
        .complete_and_enqueue(
            img.id,
            meta.size as i64,
            &meta.identity,
            state.cfg.max_attempts,
        )
        .await?)
}
