//! Shared state behind every request and worker.

use std::sync::Arc;

use flexphoto_media::pool::{ImagePool, PoolGauges};
use flexphoto_url::Signer;
use uuid::Uuid;

use crate::blob::Blobs;
use crate::cluster::index_owner::{self, IndexOwnership};
use crate::cluster::Instance;
use crate::config::Config;
use crate::ingest::IngestSettings;
use crate::metrics::Metrics;
use crate::search::Search;
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
    pub ingest: IngestSettings,
    /// Signs edge URLs when the edges have signing keys.
    pub edge_signer: Signer,
    /// Dedicated threads for image work (bounded, survives panics).
    pub pool: ImagePool,
    /// Embedder and vector index; `None` when `search.model = "none"`.
    pub search: Option<Search>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Pooled HTTP client for calls out (edge purges).
    pub http: reqwest::Client,
    /// Per-key request budgets.
    pub rate_limits: crate::rate_limit::RateLimits,
    /// This process, as the others see it.
    pub instance: Instance,
    /// Ownership of the embedded vector index, when this process has one.
    pub index_owner: Option<Arc<IndexOwnership>>,
    /// The time lifecycle decisions are made at.
    pub clock: Arc<dyn crate::clock::Clock>,
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
    /// Variant settings, models or the index.
    #[error("{0}")]
    Config(String),
    /// Another process owns the embedded index.
    #[error(transparent)]
    Ownership(#[from] index_owner::OwnershipError),
}

impl AppState {
    /// Connects to the database (applying migrations), builds the object store, loads the
    /// search model and index, and starts the image threads.
    pub async fn build(cfg: Config) -> Result<Arc<Self>, StateError> {
        Self::build_with_clock(cfg, Arc::new(crate::clock::SystemClock)).await
    }

    /// [`AppState::build`] with lifecycle decisions made at `clock`'s time (tests move it).
    pub async fn build_with_clock(
        cfg: Config,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> Result<Arc<Self>, StateError> {
        let db = Db::connect(&cfg.database, cfg.max_connections).await?;
        let secret = match &cfg.signing_secret {
            Some(s) => s.clone(),
            None => {
                let fresh = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
                db.setting_or_insert("upload_signing_secret", &fresh)
                    .await?
            }
        };
        let mut blobs = Blobs::new(&cfg.storage, secret.as_bytes(), &cfg.public_url).await?;
        if let crate::lifecycle::settings::ColdTarget::Store(cold) = &cfg.tiering.cold {
            let store = flexphoto_storage::open(cold)
                .await
                .map_err(|e| StateError::Config(format!("tiering.cold: {e}")))?;
            blobs = blobs.with_cold(store);
        }
        // Workers and query-image search both decode with libvips.
        flexphoto_media::vips::init(1)
            .map_err(|e| StateError::Config(format!("libvips failed to start: {e}")))?;
        let mut ingest = IngestSettings::new(&cfg);
        let instance = Instance::current(cfg.advertise_url.as_deref().unwrap_or(&cfg.public_url));
        // The embedded index is claimed before it is opened: one owner per database.
        let index_owner = match (&cfg.search.model, &cfg.search.index) {
            (crate::config::ModelChoice::None, _) => None,
            (_, crate::config::IndexChoice::Embedded { dir }) => Some(Arc::new(
                index_owner::claim(&db, dir, &instance, cfg.cluster_lease).await?,
            )),
            _ => None,
        };
        let search = crate::search::open(&cfg.search)
            .await
            .map_err(StateError::Config)?
            .map(|(s, _recreated)| s);
        ingest.embed_side = search.as_ref().map(|s| s.embedder.input_size());
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
        let pool = ImagePool::new(threads, queue, gauges)
            .map_err(|e| StateError::Config(format!("starting worker threads: {e}")))?;
        let http = crate::http_client::client()
            .map_err(|e| StateError::Config(format!("HTTP client: {e}")))?;
        let rate_per_key = cfg.rate_per_key;
        Ok(Arc::new(Self {
            edge_signer: Signer::new(cfg.edge_signing_keys.clone()),
            cfg,
            db,
            blobs,
            ingest,
            pool,
            search,
            metrics,
            http,
            rate_limits: crate::rate_limit::RateLimits::new(rate_per_key),
            instance,
            index_owner,
            clock,
        }))
    }
}
