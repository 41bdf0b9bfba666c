//! Images withheld by their rights: the control plane publishes the object keys every edge
//! must stop serving as one JSON object in the bucket the edges already read
//! (`withheld.list_key`, `{"keys": [...]}`). Each edge re-reads it every `withheld.poll_secs`
//! (a HEAD, and a GET only when it changed), answers 404 for listed keys because its origin
//! reads see them as missing ([`WithheldStore`]), so it never fetches them again, and drops
//! what it has cached of newly listed keys at once. A failed read keeps the last list.
//!
//! Bound: a key listed in the bucket stops being served by every edge within `poll_secs`
//! (plus a request already past its origin read), whether or not a purge reached the edge.
//! The same object lists the keys of private images (`"signed_only"`): the edge serves them
//! to signed requests only, never through unsigned presets, and drops what it has cached of
//! newly listed ones (unsigned answers above all).
//!
//! The module sits beside the request path: it only wraps the origin and runs a poller.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use flexphoto_storage::{Object, ObjectMeta, ObjectStore, StorageError};
use flexphoto_url::ImageKey;
use prometheus::{IntCounter, IntGauge, Registry};

use crate::edge::Edge;

/// Largest withheld list read, bytes.
const MAX_LIST_BYTES: u64 = 256 << 20;

/// The deny-list as the control plane writes it.
#[derive(Debug, serde::Deserialize)]
struct ListDoc {
    keys: Vec<String>,
    #[serde(default)]
    signed_only: Vec<String>,
}

/// The withheld keys an edge knows, shared by its origin wrapper and its poller.
#[derive(Clone)]
pub struct Withheld {
    list_key: Option<String>,
    poll: Option<Duration>,
    keys: Arc<RwLock<Arc<HashSet<String>>>>,
    signed_only: Arc<RwLock<Arc<HashSet<String>>>>,
    last_identity: Arc<Mutex<Option<String>>>,
    origin: Arc<OnceLock<Arc<dyn ObjectStore>>>,
    metrics: WithheldMetrics,
}

/// The withheld list's metrics.
#[derive(Clone)]
struct WithheldMetrics {
    keys: IntGauge,
    purged: IntCounter,
    read_errors: IntCounter,
}

impl WithheldMetrics {
    fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            keys: IntGauge::new(
                "flexphoto_withheld_keys",
                "Object keys this edge refuses because their rights withhold them",
            )?,
            purged: IntCounter::new(
                "flexphoto_withheld_purged_total",
                "Newly withheld keys dropped from this edge's caches",
            )?,
            read_errors: IntCounter::new(
                "flexphoto_withheld_read_errors_total",
                "Failed reads of the withheld list (the last list stays in force)",
            )?,
        })
    }
}

impl std::fmt::Debug for Withheld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Withheld")
            .field("list_key", &self.list_key)
            .field("keys", &self.len())
            .finish()
    }
}

impl Withheld {
    /// A list read from `list_key` every `poll` (`None`: off, nothing is withheld).
    pub fn new(
        list_key: Option<String>,
        poll: Option<Duration>,
    ) -> Result<Self, prometheus::Error> {
        Ok(Self {
            list_key: list_key.filter(|_| poll.is_some()),
            poll,
            keys: Arc::new(RwLock::new(Arc::new(HashSet::new()))),
            signed_only: Arc::new(RwLock::new(Arc::new(HashSet::new()))),
            last_identity: Arc::new(Mutex::new(None)),
            origin: Arc::new(OnceLock::new()),
            metrics: WithheldMetrics::new()?,
        })
    }

    /// Registers the list's metrics (`flexphoto_withheld_*`) in `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.metrics.keys.clone()))?;
        registry.register(Box::new(self.metrics.purged.clone()))?;
        registry.register(Box::new(self.metrics.read_errors.clone()))
    }

    /// Wraps the origin so that withheld keys (and the list itself) read as missing.
    pub fn wrap(&self, inner: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        if self.list_key.is_none() {
            return inner;
        }
        let _ = self.origin.set(Arc::clone(&inner));
        Arc::new(WithheldStore {
            inner,
            withheld: self.clone(),
        })
    }

    /// Keys withheld now.
    pub fn len(&self) -> usize {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing is withheld.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `key` must not be served.
    pub fn denies(&self, key: &str) -> bool {
        self.list_key.as_deref() == Some(key)
            || self
                .keys
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(key)
    }

    /// Whether `key` is a private image's: only signed requests may have it.
    pub fn requires_signature(&self, key: &str) -> bool {
        self.signed_only
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(key)
    }

    /// Reads the list again when it changed; returns the keys newly withheld and released.
    pub async fn refresh(&self) -> Result<Changes, String> {
        let (Some(list_key), Some(origin)) = (&self.list_key, self.origin.get()) else {
            return Ok(Changes::default());
        };
        let key = ImageKey::parse(list_key).map_err(|e| format!("withheld.list_key: {e}"))?;
        let meta = match origin.head(&key).await {
            Ok(m) => m,
            // No list: nothing is withheld.
            Err(StorageError::NotFound(_)) => {
                let old = std::mem::replace(
                    &mut *self.keys.write().unwrap_or_else(|e| e.into_inner()),
                    Arc::new(HashSet::new()),
                );
                *self.signed_only.write().unwrap_or_else(|e| e.into_inner()) =
                    Arc::new(HashSet::new());
                *self.last_identity.lock().unwrap_or_else(|e| e.into_inner()) = None;
                return Ok(Changes {
                    released: old.iter().cloned().collect(),
                    ..Changes::default()
                });
            }
            Err(e) => return Err(format!("reading the withheld list: {e}")),
        };
        if self
            .last_identity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            == Some(meta.identity.as_str())
        {
            return Ok(Changes::default());
        }
        let obj = origin
            .get(&key, MAX_LIST_BYTES)
            .await
            .map_err(|e| format!("reading the withheld list: {e}"))?;
        let doc: ListDoc = serde_json::from_slice(&obj.bytes)
            .map_err(|e| format!("the withheld list is not valid: {e}"))?;
        let new: HashSet<String> = doc.keys.into_iter().collect();
        let old = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        let new_private: HashSet<String> = doc.signed_only.into_iter().collect();
        let old_private = self
            .signed_only
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let changes = Changes {
            added: new.difference(&old).cloned().collect(),
            released: old.difference(&new).cloned().collect(),
            made_private: new_private.difference(&old_private).cloned().collect(),
        };
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
        *self.signed_only.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new_private);
        *self.last_identity.lock().unwrap_or_else(|e| e.into_inner()) = Some(obj.meta.identity);
        Ok(changes)
    }
}

/// How one read of the list changed it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Keys newly withheld.
    pub added: Vec<String>,
    /// Keys no longer withheld.
    pub released: Vec<String>,
    /// Keys newly listed as private (signed requests only).
    pub made_private: Vec<String>,
}

/// The origin with withheld keys missing.
struct WithheldStore {
    inner: Arc<dyn ObjectStore>,
    withheld: Withheld,
}

#[async_trait]
impl ObjectStore for WithheldStore {
    async fn head(&self, key: &ImageKey) -> Result<ObjectMeta, StorageError> {
        if self.withheld.denies(key.as_str()) {
            return Err(StorageError::NotFound(key.as_str().to_owned()));
        }
        self.inner.head(key).await
    }

    async fn get(&self, key: &ImageKey, max_bytes: u64) -> Result<Object, StorageError> {
        if self.withheld.denies(key.as_str()) {
            return Err(StorageError::NotFound(key.as_str().to_owned()));
        }
        self.inner.get(key, max_bytes).await
    }

    async fn put(
        &self,
        key: &ImageKey,
        body: Bytes,
        content_type: &str,
    ) -> Result<ObjectMeta, StorageError> {
        self.inner.put(key, body, content_type).await
    }

    async fn put_file(
        &self,
        key: &ImageKey,
        path: &Path,
        content_type: &str,
    ) -> Result<ObjectMeta, StorageError> {
        self.inner.put_file(key, path, content_type).await
    }

    async fn delete(&self, key: &ImageKey) -> Result<(), StorageError> {
        self.inner.delete(key).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Longest wait for the first read of the list before the edge starts serving anyway.
const FIRST_READ_WAIT: Duration = Duration::from_secs(10);

/// Starts the poller of `edge`'s withheld list on a thread of its own (when it is on): it
/// reads the list every `withheld.poll_secs` and purges newly withheld keys from the caches.
/// Returns after the first read (or [`FIRST_READ_WAIT`]), so a restarted edge does not serve
/// what its disk cache kept of withheld keys.
pub fn spawn(edge: Arc<Edge>) {
    let w = edge.withheld().clone();
    let Some(every) = w.poll.filter(|_| w.list_key.is_some()) else {
        return;
    };
    let (first_tx, first_rx) = std::sync::mpsc::channel::<()>();
    let started = std::thread::Builder::new()
        .name("withheld".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "the withheld-list poller could not start");
                    return;
                }
            };
            rt.block_on(async move {
                let mut first = Some(first_tx);
                loop {
                    poll_once(&edge, &w).await;
                    if let Some(tx) = first.take() {
                        let _ = tx.send(());
                    }
                    tokio::time::sleep(every).await;
                }
            });
        });
    match started {
        Ok(_) => {
            if first_rx.recv_timeout(FIRST_READ_WAIT).is_err() {
                tracing::warn!("serving before the withheld list could be read");
            }
        }
        Err(e) => tracing::error!(error = %e, "the withheld-list poller could not start"),
    }
}

/// One read of the list; drops what this edge cached of newly withheld keys.
async fn poll_once(edge: &Edge, w: &Withheld) {
    match w.refresh().await {
        Ok(Changes {
            added,
            released,
            made_private,
        }) => {
            // Newly withheld keys lose what was cached of them; released ones lose the
            // "missing" the origin wrapper made the edge remember, so they serve at once;
            // newly private ones lose the unsigned answers kept of them.
            for k in added.iter().chain(&released).chain(&made_private) {
                if let Ok(key) = ImageKey::parse(k) {
                    edge.purge(&key).await;
                }
            }
            if !added.is_empty() {
                w.metrics.purged.inc_by(added.len() as u64);
                tracing::info!(
                    new = added.len(),
                    total = w.len(),
                    "withheld list read; new keys purged"
                );
            }
            w.metrics.keys.set(w.len() as i64);
        }
        Err(e) => {
            w.metrics.read_errors.inc();
            tracing::warn!(error = %e, "keeping the last withheld list");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listed_keys_read_as_missing_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = flexphoto_storage::StorageConfig::Local {
            dir: dir.path().to_owned(),
        };
        let origin = flexphoto_storage::open(&cfg).await.unwrap();
        let k = |s: &str| ImageKey::parse(s).unwrap();
        origin
            .put(&k("a/1.jpg"), Bytes::from_static(b"one"), "image/jpeg")
            .await
            .unwrap();
        origin
            .put(&k("a/2.jpg"), Bytes::from_static(b"two"), "image/jpeg")
            .await
            .unwrap();
        let w = Withheld::new(
            Some("_flexphoto/withheld.json".into()),
            Some(Duration::from_secs(1)),
        )
        .unwrap();
        let store = w.wrap(Arc::clone(&origin));
        // No list: everything serves, the list key never does.
        assert!(w.refresh().await.unwrap().added.is_empty());
        assert!(store.head(&k("a/1.jpg")).await.is_ok());
        let list = |keys: &[&str]| {
            Bytes::from(serde_json::json!({"version": 1, "keys": keys}).to_string())
        };
        origin
            .put(
                &k("_flexphoto/withheld.json"),
                list(&["a/1.jpg"]),
                "application/json",
            )
            .await
            .unwrap();
        assert_eq!(w.refresh().await.unwrap().added, ["a/1.jpg"]);
        assert!(matches!(
            store.head(&k("a/1.jpg")).await,
            Err(StorageError::NotFound(_))
        ));
        assert!(matches!(
            store.get(&k("a/1.jpg"), 100).await,
            Err(StorageError::NotFound(_))
        ));
        assert!(matches!(
            store.head(&k("_flexphoto/withheld.json")).await,
            Err(StorageError::NotFound(_))
        ));
        assert!(store.get(&k("a/2.jpg"), 100).await.is_ok());
        // Unchanged: nothing new. A bad list keeps the last one.
        assert!(w.refresh().await.unwrap().added.is_empty());
        tokio::time::sleep(Duration::from_millis(20)).await;
        origin
            .put(
                &k("_flexphoto/withheld.json"),
                Bytes::from_static(b"{not json"),
                "application/json",
            )
            .await
            .unwrap();
        assert!(w.refresh().await.is_err());
        assert!(w.denies("a/1.jpg"));
        // Released when the list no longer names it.
        tokio::time::sleep(Duration::from_millis(20)).await;
        origin
            .put(
                &k("_flexphoto/withheld.json"),
                list(&[]),
                "application/json",
            )
            .await
            .unwrap();
        assert!(w.refresh().await.unwrap().added.is_empty());
        assert!(store.head(&k("a/1.jpg")).await.is_ok());
        // Private keys: still served (to signed requests), newly listed ones reported once.
        assert!(!w.requires_signature("a/2.jpg"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let private = serde_json::json!({"version": 1, "keys": [], "signed_only": ["a/2.jpg"]});
        origin
            .put(
                &k("_flexphoto/withheld.json"),
                Bytes::from(private.to_string()),
                "application/json",
            )
            .await
            .unwrap();
        let ch = w.refresh().await.unwrap();
        assert_eq!(ch.made_private, ["a/2.jpg"]);
        assert!(ch.added.is_empty());
        assert!(w.requires_signature("a/2.jpg"));
        assert!(!w.requires_signature("a/1.jpg"));
        assert!(store.get(&k("a/2.jpg"), 100).await.is_ok());
        // Off: no wrapper.
        let off = Withheld::new(Some("x.json".into()), None).unwrap();
        assert!(!off.denies("a/1.jpg"));
    }
}
