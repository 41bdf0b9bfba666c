//! The embedded vector index is a single-node component: exactly one process per database
//! may own one. Ownership is a lease in the database (so a second process anywhere is
//! refused, naming the owner) held by the index directory's own id (so the owner restarting
//! on the same directory takes it straight back, while a process on another directory waits
//! for the lease to lapse and then rebuilds its index from SQL through reconciliation). A
//! file lock on the directory keeps two processes on one machine off the same files.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{Instance, Role};
use crate::state::AppState;
use crate::store::Db;

/// Why this process may not own the embedded index.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    /// Another process owns the embedded index on this database.
    #[error(
        "search.index = \"embedded\": the embedded vector index on this database is owned by \
         another process ({owner}, lease renewed {renewed_secs_ago:.0} s ago). Only one process \
         per database may hold an embedded index, or search results would depend on which \
         process answers. Either share a Qdrant server between all processes \
         (search.index = \"server\", search.qdrant_url), or run this process with \
         search.index = \"forward\" to serve the API and forward searches to the owner. If the \
         owner is gone for good, this process can take over once its lease lapses \
         (cluster.lease_secs) and will rebuild the index from the database."
    )]
    OwnedElsewhere {
        /// Who holds it.
        owner: String,
        /// How long ago it renewed.
        renewed_secs_ago: f64,
    },
    /// Another process on this machine has the directory open.
    #[error(
        "search.index_dir {0}: another process on this machine is using this embedded index \
         (its lock file is held); give each process its own directory or share a Qdrant server"
    )]
    DirectoryBusy(PathBuf),
    /// The directory or the database failed.
    #[error("search.index_dir {path}: {reason}")]
    Io {
        /// The index directory.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// Ownership of the embedded index, kept alive by renewing its lease; released on drop of
/// the renewal (a clean shutdown) or lapsed (a crash).
pub struct IndexOwnership {
    holder: String,
    info: String,
    ttl: Duration,
    db: Db,
    /// Held for the life of the process: the OS lock on the directory.
    _lock: File,
}

impl std::fmt::Debug for IndexOwnership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexOwnership")
            .field("holder", &self.holder)
            .finish()
    }
}

/// The directory's lasting id, made on first use.
fn directory_id(dir: &Path) -> std::io::Result<String> {
    let path = dir.join("owner.id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let t = text.trim();
        if !t.is_empty() {
            return Ok(t.to_owned());
        }
    }
    let id = format!("index-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(&path, format!("{id}\n"))?;
    Ok(id)
}

/// Describes a lease's holder for an error message.
fn describe(holder_info: &str) -> String {
    match Instance::from_json(holder_info) {
        Some(i) => format!(
            "process {} on host {} (pid {}, API {}, started {})",
            i.id,
            i.host,
            i.pid,
            i.url,
            i.started_at.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        None => "an unknown process".into(),
    }
}

/// Takes ownership of the embedded index in `dir` for `instance`, or says who has it.
pub async fn claim(
    db: &Db,
    dir: &Path,
    instance: &Instance,
    ttl: Duration,
) -> Result<IndexOwnership, OwnershipError> {
    let io = |reason: String| OwnershipError::Io {
        path: dir.to_owned(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(e.to_string()))?;
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("owner.lock"))
        .map_err(|e| io(e.to_string()))?;
    if lock.try_lock().is_err() {
        return Err(OwnershipError::DirectoryBusy(dir.to_owned()));
    }
    let holder = directory_id(dir).map_err(|e| io(e.to_string()))?;
    let info = instance.to_json();
    let name = Role::IndexOwner.as_str();
    let held = db
        .try_lease(name, &holder, &info, ttl)
        .await
        .map_err(|e| io(format!("taking the index lease: {e}")))?;
    if !held {
        let lease = db
            .lease(name)
            .await
            .map_err(|e| io(format!("reading the index lease: {e}")))?;
        let (owner, ago) = lease
            .map(|l| {
                (
                    describe(&l.holder_info),
                    (l.now - l.renewed_at) as f64 / 1000.0,
                )
            })
            .unwrap_or_else(|| ("an unknown process".into(), 0.0));
        return Err(OwnershipError::OwnedElsewhere {
            owner,
            renewed_secs_ago: ago,
        });
    }
    tracing::info!(holder = %holder, dir = %dir.display(), "this process owns the embedded vector index");
    Ok(IndexOwnership {
        holder,
        info,
        ttl,
        db: db.clone(),
        _lock: lock,
    })
}

impl IndexOwnership {
    /// Renews the lease every third of its length until `stop`, then releases it. Losing it
    /// to another process (only possible after this one failed to renew for a whole lease)
    /// stops this process at once: two owners would mean two diverging indexes.
    pub async fn keep(
        self: Arc<Self>,
        state: Arc<AppState>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let name = Role::IndexOwner.as_str();
        let gauge = state.metrics.role_held.with_label_values(&[name]);
        gauge.set(1);
        state
            .metrics
            .role_takeovers
            .with_label_values(&[name])
            .inc();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.ttl / 3) => {}
                _ = stop.wait_for(|v| *v) => break,
            }
            match self
                .db
                .try_lease(name, &self.holder, &self.info, self.ttl)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    gauge.set(0);
                    tracing::error!(
                        "another process took the embedded vector index's lease (this one could \
                         not renew it in time); stopping so that two indexes never diverge"
                    );
                    std::process::exit(75);
                }
                // The database is away: keep the index; nobody else can take the lease
                // without the database either, and renewal resumes when it is back.
                Err(e) => tracing::warn!(error = %e, "renewing the index lease failed"),
            }
        }
        gauge.set(0);
        self.release().await;
    }

    /// Gives ownership up at once, so another process may take it without waiting.
    pub async fn release(&self) {
        if let Err(e) = self
            .db
            .release_lease(Role::IndexOwner.as_str(), &self.holder)
            .await
        {
            tracing::warn!(error = %e, "releasing the index lease failed");
        }
    }
}
