//! The job runner: claim a job, run its kind's handler (image work off the async runtime)
//! while renewing the lease, then record the outcome in one short transaction.
//!
//! One file per job kind: [`process`] (a new original), [`embed`] (re-embedding),
//! [`duplicates`] (near-duplicate search), [`sync_payload`] (index filter fields). A job whose
//! kind this version does not know ends dead with a reason instead of running as another.
//!
//! Outcomes: success → image `ready`, job `done`; a bad image → image `failed` with the
//! reason at once (retrying cannot help); a transient failure → the job is queued again after
//! an exponential backoff, and after `max_attempts` it is dead and the image `failed`. A job
//! whose worker died is claimed again when its lease expires; one claimed more often than
//! `max_attempts` (a worker that keeps dying on it) ends dead.
//!
//! Shutdown: workers stop claiming; a running job gets `shutdown_grace` to finish, after which
//! its lease is released so another process picks it up at once.

mod delete;
mod duplicates;
mod embed;
mod process;
mod purge_private;
mod sync_payload;
mod tier;

use std::sync::Arc;
use std::time::Duration;

use flexphoto_storage::StorageError;
use tokio::sync::watch;
use tracing::{info, warn, Instrument};

use crate::domain::{JobKind, Owner};
use crate::ingest::IngestError;
use crate::search::indexing::IndexingError;
use crate::state::AppState;
use crate::store::images::Processed;
use crate::store::jobs::{ClaimedJob, ReadyCommit};
use crate::store::search::IndexRecord;
use crate::store::StoreError;

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JobError {
    /// The image is bad; the text is for people.
    #[error("{0}")]
    Rejected(String),
    /// May pass on retry.
    #[error("{0}")]
    Transient(String),
}

impl From<IngestError> for JobError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Rejected(m) => JobError::Rejected(m),
            IngestError::Transient(m) => JobError::Transient(m),
        }
    }
}

impl From<flexphoto_media::TransformError> for JobError {
    fn from(e: flexphoto_media::TransformError) -> Self {
        IngestError::from(e).into()
    }
}

impl From<IndexingError> for JobError {
    fn from(e: IndexingError) -> Self {
        JobError::Transient(e.to_string())
    }
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        JobError::Transient(e.to_string())
    }
}

impl From<StorageError> for JobError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound(_) => {
                JobError::Rejected("the original is missing from storage".into())
            }
            StorageError::TooLarge { size, limit } => JobError::Rejected(format!(
                "the original is {size} bytes, over the limit of {limit} bytes"
            )),
            other => JobError::Transient(format!("storage: {other}")),
        }
    }
}

/// The delay before attempt `attempts + 1`: `base · 2^(attempts-1)`, capped.
pub fn backoff(base: Duration, max: Duration, attempts: i32) -> Duration {
    let exp = attempts.clamp(1, 31) as u32 - 1;
    base.saturating_mul(2u32.saturating_pow(exp)).min(max)
}

/// Runs `state.cfg.workers` workers until `shutdown` turns true; returns when all have stopped.
pub async fn run_workers(state: Arc<AppState>, shutdown: watch::Receiver<bool>) {
    let n = state.cfg.workers;
    if n == 0 {
        return;
    }
    if let Err(e) = flexphoto_media::vips::init(1) {
        tracing::error!(error = %e, "libvips failed to start; workers not running");
        return;
    }
    let mut handles = Vec::new();
    for i in 0..n {
        let state = Arc::clone(&state);
        let shutdown = shutdown.clone();
        handles.push(tokio::spawn(
            worker_loop(state, shutdown).instrument(tracing::info_span!("worker", n = i)),
        ));
    }
    for h in handles {
        let _ = h.await;
    }
    info!("workers stopped");
}

async fn worker_loop(state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        match state.db.claim_job(state.cfg.lease).await {
            Ok(Some(job)) => {
                let span = tracing::info_span!("job", id = job.id, image = %job.image_id, attempt = job.attempts);
                handle(&state, job, &mut shutdown).instrument(span).await;
            }
            Ok(None) => {
                tokio::select! {
                    _ = tokio::time::sleep(state.cfg.poll) => {}
                    _ = shutdown.changed() => {}
                }
            }
            Err(e) => {
                warn!(error = %e, "claiming a job failed");
                tokio::select! {
                    _ = tokio::time::sleep(state.cfg.poll * 5) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}

async fn handle(state: &Arc<AppState>, job: ClaimedJob, shutdown: &mut watch::Receiver<bool>) {
    if job.attempts > job.max_attempts {
        let reason = format!(
            "processing gave up after {} attempts: the worker stopped before finishing each time",
            job.max_attempts
        );
        log_store(
            state.db.finish_dead(&job, &reason).await,
            "recording a dead job",
        );
        record(state, &job, std::time::Instant::now(), "dead");
        return;
    }
    // Renew the lease while the work runs; stop when the work ends.
    let (done_tx, mut done_rx) = watch::channel(false);
    let hb_state = Arc::clone(state);
    let hb_job = job.clone();
    let heartbeat = tokio::spawn(async move {
        let every = hb_state.cfg.lease / 3;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = done_rx.changed() => return,
            }
            match hb_state.db.renew_lease(&hb_job, hb_state.cfg.lease).await {
                Ok(true) => {}
                Ok(false) => {
                    warn!(
                        job = hb_job.id,
                        "lease lost; the result of this attempt will be discarded"
                    );
                    return;
                }
                Err(e) => warn!(job = hb_job.id, error = %e, "lease renewal failed"),
            }
        }
    });

    let started = std::time::Instant::now();
    let in_progress = state
        .metrics
        .jobs_in_progress
        .with_label_values(&[job.kind.as_str()]);
    in_progress.inc();
    let work = run(state, &job);
    tokio::pin!(work);
    let result = tokio::select! {
        r = &mut work => Some(r),
        _ = wait_shutdown(shutdown) => {
            tokio::time::timeout(state.cfg.shutdown_grace, &mut work).await.ok()
        }
    };
    in_progress.dec();
    let _ = done_tx.send(true);
    let _ = heartbeat.await;

    let Some(result) = result else {
        info!("shutdown: releasing the job's lease");
        log_store(state.db.release_job(&job).await, "releasing a job");
        record(state, &job, started, "released");
        return;
    };
    let outcome = match result {
        Ok(Outcome::Ready(processed, written)) => {
            match state.db.finish_ready(&job, &processed).await {
                Ok(ReadyCommit::Ready) => {
                    info!(image = %job.image_id, "image ready");
                    if let Some(k) = written.staging {
                        // The original is pinned under its own key now; the staging copy goes.
                        if let Ok(key) = crate::blob::key(&k) {
                            if let Err(e) = state.blobs.store().delete(&key).await {
                                warn!(key = %k, error = %e, "removing a staged upload failed");
                            }
                        }
                    }
                    "done"
                }
                Ok(ReadyCommit::ImageDeleted) => {
                    discard_result(state, &job, &processed, &written).await;
                    "done"
                }
                Ok(ReadyCommit::LeaseLost) => {
                    // Another worker may own the job and write the same keys: keep them
                    // unless the image is gone (then nobody else cleans up after this one).
                    match state.db.get_image_any(job.image_id).await {
                        Ok(Some(img)) if img.deleted_at.is_none() => {
                            warn!("lease lost before finishing; another worker owns the job");
                        }
                        Ok(_) => discard_result(state, &job, &processed, &written).await,
                        Err(e) => {
                            warn!(error = %e, "lease lost, and whether the image still exists is unknown")
                        }
                    }
                    "lost"
                }
                Err(StoreError::Conflict(_)) => {
                    // The vectors were written for an image that will not become ready.
                    if let Some(search) = &state.search {
                        if let Err(e) = search.index.delete(&[job.image_id.0]).await {
                            warn!(error = %e, "removing the vectors of a duplicate failed; reconcile will");
                        }
                    }
                    let dup: Option<Owner> = state
                        .db
                        .get_image(job.image_id)
                        .await
                        .ok()
                        .flatten()
                        .map(|img| img.owner);
                    let other = match dup {
                        Some(owner) => state
                            .db
                            .find_duplicate(&owner, &processed.sha256)
                            .await
                            .ok()
                            .flatten(),
                        None => None,
                    };
                    let reason = match other {
                        Some(id) => format!("exact duplicate of image {id} of the same owner"),
                        None => "exact duplicate of another image of the same owner".to_owned(),
                    };
                    log_store(
                        state.db.finish_dead(&job, &reason).await,
                        "recording a duplicate",
                    );
                    "failed"
                }
                Err(e) => {
                    warn!(error = %e, "recording the result failed; retrying later");
                    retry(state, &job, &e.to_string()).await
                }
            }
        }
        Ok(Outcome::Recorded { owner, record }) => {
            match state.db.finish_embedded(&job, &owner, &record).await {
                Ok(true) => {
                    info!(image = %job.image_id, kind = %job.kind, "recorded");
                    "done"
                }
                Ok(false) => {
                    warn!("lease lost before finishing; another worker owns the job");
                    "lost"
                }
                Err(e) => {
                    warn!(error = %e, "recording the embedding failed; retrying later");
                    retry(state, &job, &e.to_string()).await
                }
            }
        }
        Ok(Outcome::Nothing) => {
            log_store(state.db.finish_done(&job).await, "finishing a no-op job");
            "done"
        }
        Ok(Outcome::Later(delay)) => {
            log_store(state.db.postpone(&job, delay).await, "postponing a job");
            "postponed"
        }
        Ok(Outcome::Removed) => "done",
        Err(JobError::Rejected(reason)) => {
            info!(%reason, "image rejected");
            log_store(
                state.db.finish_dead(&job, &reason).await,
                "recording a rejected image",
            );
            "failed"
        }
        Err(JobError::Transient(err)) => {
            warn!(error = %err, "attempt failed");
            retry(state, &job, &err).await
        }
    };
    record(state, &job, started, outcome);
}

/// Counts a finished attempt in the metrics.
fn record(state: &AppState, job: &ClaimedJob, started: std::time::Instant, outcome: &str) {
    let m = &state.metrics;
    m.jobs
        .with_label_values(&[job.kind.as_str(), outcome])
        .inc();
    m.job_seconds
        .with_label_values(&[job.kind.as_str()])
        .observe(started.elapsed().as_secs_f64());
}

/// Schedules another attempt, or ends the job dead after the last one; says which.
async fn retry(state: &AppState, job: &ClaimedJob, err: &str) -> &'static str {
    if job.attempts >= job.max_attempts {
        let reason = format!("processing failed after {} attempts: {err}", job.attempts);
        log_store(
            state.db.finish_dead(job, &reason).await,
            "recording a dead job",
        );
        "dead"
    } else {
        let delay = backoff(state.cfg.backoff_base, state.cfg.backoff_max, job.attempts);
        log_store(
            state.db.retry_later(job, err, delay).await,
            "scheduling a retry",
        );
        "retry"
    }
}

async fn wait_shutdown(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            // The sender is gone: nobody can ask for shutdown any more.
            std::future::pending::<()>().await;
        }
    }
}

fn log_store<T>(r: Result<T, StoreError>, what: &str) {
    if let Err(e) = r {
        warn!(error = %e, "{what} failed");
    }
}

/// Runs image work below the API's priority, so reads and uploads stay fast while the workers
/// saturate the CPU. Applies to the calling thread only (Linux threads have their own nice
/// value); done once per thread.
pub(crate) fn lower_thread_priority() {
    thread_local! {
        static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    DONE.with(|d| {
        if !d.get() {
            d.set(true);
            #[cfg(target_os = "linux")]
            // SAFETY: a plain syscall on the calling thread; failure only leaves the priority as is.
            unsafe {
                let _ = libc::setpriority(libc::PRIO_PROCESS, 0, 10);
            }
        }
    });
}

/// What one attempt produced.
pub(crate) enum Outcome {
    /// A new image was processed: record it and make it ready.
    Ready(Box<Processed>, Written),
    /// Vectors or near-duplicates of a ready image to record.
    Recorded {
        /// Its owner.
        owner: Owner,
        /// What to record.
        record: IndexRecord,
    },
    /// Nothing to do (the image is gone or no longer waiting).
    Nothing,
    /// Not yet: run again after this long without counting an attempt.
    Later(Duration),
    /// The image's row was removed (the job's row with it).
    Removed,
}

/// Objects a process attempt dealt with besides its variants.
#[derive(Debug, Clone, Default)]
pub(crate) struct Written {
    /// The staged upload it read, removed once the image is ready.
    pub staging: Option<String>,
    /// The copy of the original it pinned (presigned uploads), removed with the variants
    /// when the result is discarded.
    pub original_copy: Option<String>,
}

/// Removes what a process attempt stored for an image that was deleted meanwhile (its
/// variants, its pinned original, its vectors): the delete job may have run before these
/// were written, so nothing else would. Failures are logged; each removal is idempotent.
async fn discard_result(
    state: &AppState,
    job: &ClaimedJob,
    processed: &Processed,
    written: &Written,
) {
    let keys = processed
        .variant_keys
        .values()
        .chain(written.original_copy.iter());
    let mut removed = 0usize;
    for k in keys {
        match crate::blob::key(k) {
            Ok(key) => match state.blobs.store().delete(&key).await {
                Ok(()) => removed += 1,
                Err(e) => {
                    warn!(key = %k, error = %e, "removing the output of a deleted image failed")
                }
            },
            Err(e) => warn!(key = %k, error = %e, "an output key does not parse"),
        }
    }
    if processed.index.is_some() {
        if let Some(search) = &state.search {
            if let Err(e) = search.index.delete(&[job.image_id.0]).await {
                warn!(error = %e, "removing the vectors of a deleted image failed; reconcile will");
            }
        }
    }
    info!(image = %job.image_id, removed, "the image was deleted while it was processed; its output was removed");
}

/// One attempt of a job, by kind.
async fn run(state: &AppState, job: &ClaimedJob) -> Result<Outcome, JobError> {
    let kind = job
        .kind()
        .map_err(|e| JobError::Rejected(format!("this version cannot run the job: {e}")))?;
    match kind {
        JobKind::Process => process::run(state, job).await,
        JobKind::Embed => embed::run(state, job).await,
        JobKind::Duplicates => duplicates::run(state, job).await,
        JobKind::SyncPayload => sync_payload::run(state, job).await,
        JobKind::Delete => delete::run(state, job).await,
        JobKind::TierCold => {
            tier::run(state, job, crate::lifecycle::policy::Direction::ToCold).await
        }
        JobKind::TierHot => tier::run(state, job, crate::lifecycle::policy::Direction::ToHot).await,
        JobKind::PurgePrivate => purge_private::run(state, job).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Duration::from_millis(100);
        let m = Duration::from_secs(1);
        assert_eq!(backoff(b, m, 1), Duration::from_millis(100));
        assert_eq!(backoff(b, m, 2), Duration::from_millis(200));
        assert_eq!(backoff(b, m, 4), Duration::from_millis(800));
        assert_eq!(backoff(b, m, 5), m);
        assert_eq!(backoff(b, m, 40), m);
    }
}
