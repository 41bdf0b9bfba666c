//! Source identities: what the edge last learned about a source object (the token that
//! changes with its bytes, and its size). A cache entry's key includes the identity, so a
//! changed original is never served from an old variant once the identity is rechecked.
//!
//! Two maps: the fresh one, trusted for `revalidate_after` before the origin is asked again,
//! and the last known one, kept for `stale_if_error` so cached results keep serving (stale)
//! while the origin fails. With a disk tier, last known identities are also written beside
//! it, so an edge restarted while its origin is down still serves what its disk holds.
//!
//! A third, short-lived map remembers keys the origin said do not exist, so a client asking
//! for many missing keys costs the origin one HEAD per key per [`MISSING_TTL`], not one per
//! request.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flexphoto_url::ImageKey;
use moka::future::Cache;
use sha2::{Digest, Sha256};

/// How long a key the origin reported missing is answered 404 without asking again (never
/// longer than `revalidate_after`).
pub const MISSING_TTL: Duration = Duration::from_secs(10);

/// What the edge knows about a source from its last HEAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFacts {
    /// Changes whenever the object's bytes change (ETag, version, mtime + size).
    pub identity: String,
    /// Size in bytes.
    pub size: u64,
    /// When the origin last confirmed it (or when it was read back from disk).
    pub checked_at: Instant,
}

/// Fresh and last-known identities by key.
#[derive(Clone)]
pub struct Identities {
    fresh: Cache<ImageKey, Arc<SourceFacts>>,
    last_known: Cache<ImageKey, Arc<SourceFacts>>,
    /// Keys the origin recently said do not exist.
    missing: Cache<ImageKey, ()>,
    /// Where last known identities are kept across restarts.
    dir: Option<PathBuf>,
    stale_if_error: Duration,
}

/// A last known identity as written on disk.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    key: String,
    identity: String,
    size: u64,
    /// Unix seconds of the last confirmation by the origin.
    confirmed_at: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Identities {
    /// Identities trusted for `revalidate_after`, remembered for `stale_if_error` in memory
    /// and, with `dir`, on disk.
    pub fn new(revalidate_after: Duration, stale_if_error: Duration, dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            stale_if_error,
            fresh: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(revalidate_after.max(Duration::from_millis(1)))
                .build(),
            last_known: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(stale_if_error.max(Duration::from_millis(1)))
                .build(),
            missing: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(
                    MISSING_TTL
                        .min(revalidate_after)
                        .max(Duration::from_millis(1)),
                )
                .build(),
        }
    }

    /// Whether the origin said `key` does not exist, within the last [`MISSING_TTL`].
    pub async fn is_missing(&self, key: &ImageKey) -> bool {
        self.missing.contains_key(key)
    }

    /// Remembers that the origin said `key` does not exist.
    pub async fn mark_missing(&self, key: &ImageKey) {
        self.missing.insert(key.clone(), ()).await;
    }

    /// The fresh map, for coalesced lookups (one HEAD per key at a time).
    pub fn fresh(&self) -> &Cache<ImageKey, Arc<SourceFacts>> {
        &self.fresh
    }

    fn path_of(&self, key: &ImageKey) -> Option<PathBuf> {
        let h = hex::encode(Sha256::digest(key.as_str().as_bytes()));
        self.dir.as_ref().map(|d| d.join(&h[..2]).join(h))
    }

    /// Remembers a confirmed identity as the last known one.
    pub async fn confirmed(&self, key: &ImageKey, facts: Arc<SourceFacts>) {
        if let Some(path) = self.path_of(key) {
            let stored = Stored {
                key: key.as_str().to_owned(),
                identity: facts.identity.clone(),
                size: facts.size,
                confirmed_at: unix_now(),
            };
            if let Ok(text) = serde_json::to_vec(&stored) {
                // Best effort: written atomically, a failure only loses restart-time staleness.
                let tmp = path.with_extension("tmp");
                if let Some(parent) = path.parent() {
                    let _ = tokio::fs::create_dir_all(parent).await;
                }
                if tokio::fs::write(&tmp, &text).await.is_ok() {
                    let _ = tokio::fs::rename(&tmp, &path).await;
                }
            }
        }
        self.last_known.insert(key.clone(), facts).await;
    }

    /// The last identity the origin confirmed, within `stale_if_error`: from memory, else
    /// from disk (after a restart).
    pub async fn last_known(&self, key: &ImageKey) -> Option<Arc<SourceFacts>> {
        if let Some(f) = self.last_known.get(key).await {
            return Some(f);
        }
        let path = self.path_of(key)?;
        let text = tokio::fs::read(&path).await.ok()?;
        let stored: Stored = serde_json::from_slice(&text).ok()?;
        let fresh_enough =
            unix_now().saturating_sub(stored.confirmed_at) <= self.stale_if_error.as_secs();
        if stored.key != key.as_str() || !fresh_enough {
            return None;
        }
        let facts = Arc::new(SourceFacts {
            identity: stored.identity,
            size: stored.size,
            checked_at: Instant::now(),
        });
        self.last_known
            .insert(key.clone(), Arc::clone(&facts))
            .await;
        Some(facts)
    }

    /// Forgets the fresh identity, so the next request asks the origin.
    pub async fn expire(&self, key: &ImageKey) {
        self.fresh.invalidate(key).await;
    }

    /// Forgets everything about `key`, on disk too.
    pub async fn purge(&self, key: &ImageKey) {
        self.missing.invalidate(key).await;
        self.fresh.invalidate(key).await;
        self.last_known.invalidate(key).await;
        if let Some(path) = self.path_of(key) {
            let _ = tokio::fs::remove_file(path).await;
        }
    }
}
