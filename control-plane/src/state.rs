//! Shared state behind every request and worker.

use std::sync::Arc;

use flexphoto_edge::config::EdgeConfig;
use flexphoto_edge::sign::Signer;
use flexphoto_edge::transform::pool::{PoolGauges, TransformPool};
use uuid::Uuid;

use crate::blob::Blobs;
use crate::config::Config;
use crate::indexing::Search;
use crate::media::MediaSettings;
use crate::metrics::Metrics;
use crate::store::Db;

/// What handlers and workers share.
pub struct AppState {
    /// Validated configuration.
    pub cfg: Config,
    /// Metadata database.
    pub db: Db,
    /// Object storage.
    pub blobs: Blobs,
    /// Variant specs and limits.
    pub media: MediaSettings,
    /// Signs edge URLs when the edge has signing keys.
    pub edge_signer: Signer,
    /// Bearer token for the edge's purge endpoint, if it has one.
    pub edge_admin_token: Option<String>,
    /// Dedicated threads for image work (the edge's pool: bounded, survives panics).
    pub pool: TransformPool,
    /// Embedder and vector index; `None` when `search.model = "none"`.
    pub search: Option<Search>,
    /// Prometheus metrics.
    pub metrics: Metrics,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("db", &self.db.backend())
            .field("blobs", &self.blobs)
            .finish()
    }
}

/// Why the state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Database.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Object storage.
    #[error(transparent)]
    Blob(#[from] crate::blob::BlobError),
    /// Variant settings or edge configuration.
    #[error("{0}")]
    Config(String),
}

impl AppState {
    /// Connects to the database (applying migrations), builds the object store and resolves
    /// the variants. `edge` is the edge's configuration (for URL signing and purge).
    pub async fn build(cfg: Config, edge: &EdgeConfig) -> Result<Arc<Self>, StateError> {
        let db = Db::connect(&cfg.database, cfg.max_connections).await?;
        let secret = match &cfg.signing_secret {
            Some(s) => s.clone(),
            None => {
                let fresh = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
                db.setting_or_insert("upload_signing_secret", &fresh)
                    .await?
            }
        };
        let blobs = Blobs::new(&cfg.storage, secret.as_bytes(), &cfg.public_url)?;
        // Workers and query-image search both decode with libvips.
        flexphoto_edge::vips::init(1)
            .map_err(|e| StateError::Config(format!("libvips failed to start: {e}")))?;
        let mut media = MediaSettings::new(&cfg).map_err(StateError::Config)?;
        let search = crate::indexing::open(&cfg.search)
            .await
            .map_err(StateError::Config)?
            .map(|(s, _recreated)| s);
        media.embed_side = search.as_ref().map(|s| s.embedder.input_size());
        let gauge = |n: &str, help: &str| {
            prometheus::IntGauge::new(n, help).map_err(|e| StateError::Config(e.to_string()))
        };
        let gauges = PoolGauges {
            queued: gauge(
                "flexphoto_worker_queued",
                "Image work waiting for a processing thread",
            )?,
            running: gauge("flexphoto_worker_running", "Image work running")?,
        };
        let metrics = Metrics::new(&[gauges.queued.clone(), gauges.running.clone()])
            .map_err(|e| StateError::Config(format!("metrics: {e}")))?;
        // Every running job can have one piece of image work queued or running.
        let threads = cfg.processing_threads.max(1) as usize;
        let queue = (cfg.workers as usize).max(threads);
        let pool = TransformPool::new(threads, queue, gauges)
            .map_err(|e| StateError::Config(format!("starting worker threads: {e}")))?;
        Ok(Arc::new(Self {
            edge_signer: Signer::new(edge.signing_keys.clone()),
            edge_admin_token: edge.admin_token.clone(),
            cfg,
            db,
            blobs,
            media,
            pool,
            search,
            metrics,
        }))
    }
}
