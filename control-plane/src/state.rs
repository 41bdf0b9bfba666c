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
    /// Failed authentications by client network (`server.failed_auth_per_minute`).
    pub failed_auth: crate::failed_auth::FailedAuthLimiter,
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
        let threads = cfg.processing_threads.max(1) as usize;
        let queue = pool_queue(cfg.workers as usize, threads);
        let pool = ImagePool::new(threads, queue, gauges)
            .map_err(|e| StateError::Config(format!("starting worker threads: {e}")))?;
        let http = crate::http_client::client()
            .map_err(|e| StateError::Config(format!("HTTP client: {e}")))?;
        let rate_per_key = cfg.rate_per_key;
        let failed_auth_per_minute = cfg.failed_auth_per_minute;
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
            failed_auth: crate::failed_auth::FailedAuthLimiter::new(failed_auth_per_minute),
            instance,
            index_owner,
            clock,
        }))
    }
}

/// Queue slots each image thread adds for requests' own image work (upload probes, query
/// images), beyond the job workers' share.
const REQUEST_SLOTS_PER_THREAD: usize = 4;

/// The image pool's queue bound for `workers` job workers on `threads` threads. Each job
/// worker has at most one piece of image work queued or running; requests get room of their
/// own, so that uploads arriving while every worker is busy wait their turn instead of being
/// refused (a queued request holds its path or bounded query bytes, not decoded pixels).
fn pool_queue(workers: usize, threads: usize) -> usize {
    workers.max(threads) + REQUEST_SLOTS_PER_THREAD * threads
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::channel;

    use flexphoto_media::pool::{ImagePool, PoolGauges};

    use super::{pool_queue, REQUEST_SLOTS_PER_THREAD};

    #[tokio::test]
    async fn uploads_are_queued_while_every_job_worker_has_image_work() {
        let (workers, threads) = (4, 2);
        let gauges = PoolGauges {
            queued: prometheus::IntGauge::new("q", "q").unwrap(),
            running: prometheus::IntGauge::new("r", "r").unwrap(),
        };
        let pool = ImagePool::new(threads, pool_queue(workers, threads), gauges).unwrap();
        // Every job worker's image work: two running (held until released), two queued.
        let (release_tx, release_rx) = channel::<()>();
        let release_rx = std::sync::Arc::new(std::sync::Mutex::new(release_rx));
        let (started_tx, started_rx) = channel::<()>();
        let mut jobs = Vec::new();
        for i in 0..workers {
            let (rx, started) = (release_rx.clone(), started_tx.clone());
            jobs.push(
                pool.submit(None, move |_| {
                    started.send(()).unwrap();
                    rx.lock().unwrap().recv().unwrap();
                    i
                })
                .unwrap(),
            );
        }
        for _ in 0..threads {
            started_rx.recv().unwrap();
        }
        // Concurrent uploads' probes still find room.
        let probes: Vec<_> = (0..REQUEST_SLOTS_PER_THREAD * threads)
            .map(|i| pool.submit(None, move |_| 100 + i).unwrap())
            .collect();
        for _ in 0..workers {
            release_tx.send(()).unwrap();
        }
        for (i, job) in jobs.into_iter().enumerate() {
            assert_eq!(job.await, Ok(i));
        }
        for (i, probe) in probes.into_iter().enumerate() {
            assert_eq!(probe.await, Ok(100 + i));
        }
    }
}
