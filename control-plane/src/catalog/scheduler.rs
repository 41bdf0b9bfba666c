//! The catalog's deployment-wide passes, each run by one process at a time under its role's
//! lease (`cluster::singleton`):
//!
//! - [`rights_pass`] (role `rights`): applies rights windows as they open and close (with a
//!   history entry each), publishes the deny-list of withheld objects the edges read (with
//!   the keys of private images, which the edges serve to signed requests only), purges
//!   newly withheld images from every edge and the CDN once the edges have had time to read
//!   the list (retrying until the purge succeeds), and lists images whose rights end within
//!   `catalog.rights_ending_days` for review.
//! - [`revalidate_pass`] (role `revalidate`): re-validates images against their collection's
//!   newer schema in batches, routing new failures to review.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::corrections::changes_between;
use super::load;
use super::record::Record;
use super::review::NewReason;
use super::rights::WithheldList;
use super::sources::Source;
use super::CatalogError;
use crate::state::AppState;
use crate::store::catalog::DescriptiveWrite;

/// Images handled per query.
const BATCH: u32 = 500;
/// The deny-list is written again at least this often, even when nothing changed.
const REPUBLISH: Duration = Duration::from_secs(600);

/// What this process last published: the list's digest and when.
fn published() -> &'static Mutex<Option<(String, Instant)>> {
    static P: OnceLock<Mutex<Option<(String, Instant)>>> = OnceLock::new();
    P.get_or_init(|| Mutex::new(None))
}

/// One pass of the rights scheduler.
pub async fn rights_pass(state: Arc<AppState>) {
    if let Err(e) = rights_once(&state).await {
        tracing::warn!(error = %e, "rights pass failed; retrying on the next one");
    }
}

/// Set once the first deny-list was written by this process.
static PUBLISHED_ONCE: AtomicBool = AtomicBool::new(false);

async fn rights_once(state: &AppState) -> Result<(), CatalogError> {
    let now = crate::store::now();
    let mut changed = 0usize;
    loop {
        let rows = state.db.rights_to_apply(now, BATCH).await?;
        if rows.is_empty() {
            break;
        }
        for (id, withheld) in &rows {
            let why = if *withheld {
                "outside its rights window: withheld"
            } else {
                "inside its rights window: released"
            };
            state
                .db
                .apply_rights(*id, *withheld, why, state.cfg.max_attempts)
                .await?;
            tracing::info!(image = %id, withheld, "rights window applied");
        }
        changed += rows.len();
        if rows.len() < BATCH as usize {
            break;
        }
    }
    publish(state, changed > 0).await?;
    purge_withheld(state, now).await?;
    flag_rights_ending(state, now).await?;
    Ok(())
}

/// Writes the deny-list object when it changed, on a new holder's first pass, and at least
/// every [`REPUBLISH`].
async fn publish(state: &AppState, changed: bool) -> Result<(), CatalogError> {
    let keys = state.db.withheld_keys().await?;
    let signed_only = state
        .db
        .private_keys(&state.cfg.privacy.private_owners)
        .await?;
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        format!("{}\n\n{}", keys.join("\n"), signed_only.join("\n")).as_bytes(),
    ));
    let due = {
        let p = published().lock().unwrap_or_else(|e| e.into_inner());
        match &*p {
            Some((d, at)) => changed || *d != digest || at.elapsed() > REPUBLISH,
            None => true,
        }
    };
    if !due {
        return Ok(());
    }
    let doc = WithheldList {
        version: 1,
        generated_at: Some(crate::store::now()),
        keys,
        signed_only,
    };
    let body = serde_json::to_vec(&doc).map_err(|e| CatalogError::Invalid(e.to_string()))?;
    let key = crate::blob::key(&state.cfg.catalog.withheld_list_key)
        .map_err(|e| CatalogError::Invalid(e.to_string()))?;
    if let Err(e) = state
        .blobs
        .store()
        .put(&key, Bytes::from(body), "application/json")
        .await
    {
        tracing::warn!(error = %e, "writing the withheld list failed; retrying on the next pass");
        return Ok(());
    }
    tracing::info!(
        keys = doc.keys.len(),
        signed_only = doc.signed_only.len(),
        "withheld list published"
    );
    PUBLISHED_ONCE.store(true, Ordering::Relaxed);
    *published().lock().unwrap_or_else(|e| e.into_inner()) = Some((digest, Instant::now()));
    state.metrics.withheld_keys.set(doc.keys.len() as i64);
    Ok(())
}

/// Purges images withheld at least `catalog.purge_delay_secs` ago (so every edge has read
/// the list and will not fetch them again for the CDN) from the edges and the CDN.
async fn purge_withheld(
    state: &AppState,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), CatalogError> {
    if !PUBLISHED_ONCE.load(Ordering::Relaxed) {
        return Ok(());
    }
    let cutoff = now
        - chrono::Duration::from_std(state.cfg.catalog.purge_delay)
            .unwrap_or(chrono::Duration::zero());
    let rows = state.db.unpurged_withheld(cutoff, BATCH).await?;
    let mut done = Vec::new();
    for (id, keys) in rows {
        match crate::purge::purge_everywhere(state, &keys).await {
            Ok(()) => done.push(id),
            Err(e) => {
                tracing::warn!(image = %id, error = %e, "purging a withheld image failed; retrying")
            }
        }
    }
    if !done.is_empty() {
        state.db.mark_purged(&done).await?;
    }
    Ok(())
}

/// Routes images whose rights end soon to review.
async fn flag_rights_ending(
    state: &AppState,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), CatalogError> {
    let days = state.cfg.catalog.rights_ending_days;
    if days == 0 {
        return Ok(());
    }
    let until = now + chrono::Duration::days(i64::from(days));
    for (id, end) in state.db.rights_ending(now, until, BATCH).await? {
        let left = (end - now).num_days();
        state
            .db
            .add_reasons(
                id,
                &[NewReason::rights_ending(end, left)],
                "rights-scheduler",
                state.cfg.max_attempts,
            )
            .await?;
    }
    Ok(())
}

/// Most batches one pass re-validates (the next pass goes on).
const MAX_BATCHES: usize = 200;

/// One pass of re-validation after schema changes.
pub async fn revalidate_pass(state: Arc<AppState>) {
    for _ in 0..MAX_BATCHES {
        match revalidate_batch(&state).await {
            Ok(0) => return,
            Ok(n) => tracing::info!(images = n, "re-validated against newer schemas"),
            Err(e) => {
                tracing::warn!(error = %e, "re-validation failed; retrying on the next pass");
                return;
            }
        }
    }
}

/// Re-validates one batch; returns how many images it did.
pub async fn revalidate_batch(state: &AppState) -> Result<usize, CatalogError> {
    let rows = state
        .db
        .needing_validation(state.cfg.catalog.revalidate_batch)
        .await?;
    let n = rows.len();
    let ids: Vec<_> = rows.iter().map(|r| r.0).collect();
    let images = state.db.get_images(&ids).await?;
    let cats = state.db.catalogs_of(&ids).await?;
    for img in &images {
        let Some(cat) = cats.iter().find(|c| c.image_id == img.id) else {
            continue;
        };
        let (_, schema) = load::schema_of(&state.db, cat.collection_id).await?;
        let current = load::stored_record(img, Some(cat));
        let record = Record::build(
            &schema,
            current.values.clone(),
            &Default::default(),
            Some(&current),
            crate::store::now(),
        );
        let mut changes = changes_between(&current.values, &record.values, Source::System);
        if cat.validation.0 != record.report.failures {
            changes.push(crate::store::catalog::FieldChange {
                field: "validation".into(),
                old: Some(serde_json::to_value(&cat.validation.0).unwrap_or_default()),
                new: Some(serde_json::to_value(&record.report.failures).unwrap_or_default()),
                source: Source::System.as_str().into(),
            });
        }
        let w = DescriptiveWrite::of(&record, &schema);
        state
            .db
            .write_revalidation(img.id, &w, &changes, state.cfg.max_attempts)
            .await?;
    }
    Ok(n)
}
