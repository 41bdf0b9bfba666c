//! The `process` job: a new original's metadata, variants, fingerprints and vectors; the image
//! becomes `ready` when the runner records the outcome.

use bytes::Bytes;

use super::{lower_thread_priority, JobError, Outcome};
use crate::blob;
use crate::domain::ImageStatus;
use crate::ingest;
use crate::search::index::PointPayload;
use crate::search::indexing;
use crate::state::AppState;
use crate::store::images::Processed;
use crate::store::jobs::ClaimedJob;
use crate::store::search::IndexRecord;

/// Processes a new original: metadata, variants, fingerprints, vectors.
pub(super) async fn run(state: &AppState, job: &ClaimedJob) -> Result<Outcome, JobError> {
    let Some(img) = state.db.get_image(job.image_id).await? else {
        return Ok(Outcome::Nothing);
    };
    if img.status != ImageStatus::Processing {
        return Ok(Outcome::Nothing);
    }
    // Tests stand in for a file that crashes the process here (a decoder bug, an OOM kill).
    crate::failpoint::hit("process.start");
    let key = blob::key(img.source_key()).map_err(|e| JobError::Rejected(e.to_string()))?;
    let obj = state
        .blobs
        .store()
        .get(&key, state.cfg.max_upload_bytes)
        .await?;
    // A presigned URL can be used again until it expires: process only the object that was
    // there when the upload was completed.
    if let Some(expected) = &img.upload_identity {
        if *expected != obj.meta.identity {
            return Err(JobError::Rejected(
                "the uploaded object changed after the upload was completed; upload it again"
                    .into(),
            ));
        }
    }
    let source: Bytes = obj.bytes;
    let source_copy = source.clone();
    let settings = state.ingest.clone();
    // The time limit stops the image work itself (the pool's watchdog kills its libvips
    // evaluation), so a pathological original frees its thread instead of holding it.
    let deadline = std::time::Instant::now() + settings.timeout();
    let analysis = state
        .pool
        .submit(Some(deadline), move |budget| {
            lower_thread_priority();
            ingest::analyse(&source, &settings, budget)
        })
        .map_err(|e| JobError::Transient(format!("worker threads busy: {e}")))?
        .await
        .map_err(|e| match e {
            flexphoto_media::pool::PoolError::Expired => {
                JobError::Transient("processing took longer than the configured time limit".into())
            }
            other => JobError::Transient(format!("processing failed: {other}")),
        })??;
    state.metrics.observe_stages(&analysis.timings);
    if let Some(declared) = &img.sha256 {
        if !declared.eq_ignore_ascii_case(&analysis.sha256) {
            return Err(JobError::Rejected(format!(
                "the uploaded bytes do not match the declared sha256 (declared {declared}, got {})",
                analysis.sha256
            )));
        }
    }
    // A presigned upload had no bytes when it was validated: what the file embeds (IPTC,
    // XMP) is merged into its catalog record now. Metadata fails softly.
    if img.upload_key.is_some() {
        if let Err(e) = crate::catalog::ingest::apply_embedded(state, &img, &source_copy).await {
            tracing::warn!(image = %img.id, error = %e, "reading embedded metadata failed");
        }
    }
    crate::failpoint::pause("process.before_store").await;
    // Pin what was processed: a presigned upload's bytes are copied (the very bytes analysed)
    // to the original's key, which no presigned URL names; the edge serves that copy.
    let mut written = super::Written {
        staging: img.upload_key.clone(),
        original_copy: None,
    };
    if img.upload_key.is_some() {
        let original =
            blob::key(&img.original_key).map_err(|e| JobError::Transient(e.to_string()))?;
        let stored = state
            .blobs
            .store()
            .put(&original, source_copy, analysis.format.mime())
            .await?;
        written.original_copy = Some(img.original_key.clone());
        if stored.size != obj.meta.size {
            return Err(JobError::Transient(format!(
                "the original's copy is {} bytes, not {}",
                stored.size, obj.meta.size
            )));
        }
    }
    let mut variant_keys = std::collections::BTreeMap::new();
    let mut variant_bytes = std::collections::BTreeMap::new();
    for v in &analysis.variants {
        let k = blob::variant_key(img.id, img.uploaded_at, &v.name, &v.ext);
        let key = blob::key(&k).map_err(|e| JobError::Transient(e.to_string()))?;
        state
            .blobs
            .store()
            .put(&key, v.output.bytes.clone(), v.output.format.mime())
            .await?;
        variant_keys.insert(v.name.clone(), k);
        variant_bytes.insert(v.name.clone(), v.output.bytes.len() as i64);
    }
    let e = analysis.exif;
    let phash = Some(analysis.dhash as i64);
    let index = match (&state.search, analysis.embed_input) {
        (Some(search), Some(rgb)) => {
            let payload = PointPayload {
                owner: img.owner.as_str().to_owned(),
                uploaded_at: img.uploaded_at.timestamp_micros(),
                status: ImageStatus::Ready.as_str().to_owned(),
                tags: img.tags.0.clone(),
                camera_make: e.make.clone(),
                camera_model: e.model.clone(),
                review_state: img.review_state.as_str().to_owned(),
                model: search.model_id.clone(),
                faces: None,
                people: None,
                catalog: indexing::catalog_payload(state, img.id).await?,
            };
            indexing::index_image(state, search, img.id, payload, rgb).await?
        }
        _ => IndexRecord::default(),
    };
    // What the classifier saw can put the image in review (low confidence, suggested tags).
    let c = &state.cfg.catalog;
    let reasons = crate::catalog::ingest::model_reasons(
        &index.concepts,
        &img.tags.0,
        c.low_confidence_below,
        c.suggest_tags,
        c.suggest_min_weight,
    );
    if !reasons.is_empty() {
        state
            .db
            .add_reasons(img.id, &reasons, "model", state.cfg.max_attempts)
            .await?;
    }
    Ok(Outcome::Ready(
        Box::new(Processed {
            index: Some(index),
            bytes: obj.meta.size as i64,
            sha256: analysis.sha256,
            format: analysis.format,
            width: analysis.width as i32,
            height: analysis.height as i32,
            variant_keys,
            variant_bytes,
            phash,
            exif: e,
        }),
        written,
    ))
}
