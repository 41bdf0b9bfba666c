//! The edge's request logic without HTTP types: URL → signature → canonical transform →
//! source identity → cache tiers → origin → transform, and purge.
//!
//! Coalescing: a miss fills the memory tier through `moka`'s `or_try_insert_with`, so
//! concurrent requests for one cache key run one disk lookup, one fetch and one transform,
//! and all receive the leader's result or error. Source bytes load through the source cache
//! the same way, so different sizes of one photo share one origin fetch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use moka::future::Cache;
use tokio::sync::Semaphore;

use crate::cache::disk::DiskTier;
use crate::cache::memory::MemoryTier;
use crate::cache::source::{source_cache_key, SourceCache};
use crate::cache::{cache_key, CachedImage, Tier};
use crate::config::{EdgeConfig, OriginConfig};
use crate::error::EdgeError;
use crate::metrics::Metrics;
use crate::origin::local::LocalDirStore;
use crate::origin::s3::S3Store;
use crate::origin::ObjectStore;
use crate::sign::Signer;
use crate::transform::pool::{PoolError, PoolGauges, TransformPool};
use crate::transform::{self, EncodeSettings, Limits, WorkingCopy};
use crate::url::canonical::{resolve, ResolveContext};
use crate::url::{parse_path, ImageKey, RequestOptions};

/// What the HTTP layer passes in for an image request.
#[derive(Debug, Clone, Copy)]
pub struct ImageRequest<'a> {
    /// Raw path.
    pub path: &'a str,
    /// Raw query string.
    pub query: Option<&'a str>,
    /// `Accept` header.
    pub accept: Option<&'a str>,
    /// `If-None-Match` header.
    pub if_none_match: Option<&'a str>,
}

/// What the HTTP layer sends back for an image request.
#[derive(Debug, Clone)]
pub struct ImageResponse {
    /// `None` means 304 Not Modified.
    pub image: Option<Arc<CachedImage>>,
    /// Strong ETag, quoted.
    pub etag: String,
    /// Whether `Vary: Accept` applies.
    pub vary_accept: bool,
    /// The tier that answered.
    pub tier: Tier,
    /// Whether this request waited on another's work.
    pub coalesced: bool,
    /// Whether the source could not be revalidated and a cached result was served anyway.
    pub stale: bool,
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct PurgeReport {
    /// Disk entries deleted.
    pub disk_entries: usize,
}

/// What the edge knows about a source from its last HEAD.
#[derive(Debug)]
struct SourceFacts {
    identity: String,
    size: u64,
}

/// The shared state of one edge node.
pub struct Edge {
    cfg: Arc<EdgeConfig>,
    store: Arc<dyn ObjectStore>,
    memory: MemoryTier,
    disk: Option<Arc<DiskTier>>,
    sources: SourceCache,
    working: Option<moka::sync::Cache<String, Arc<WorkingCopy>>>,
    identities: Cache<ImageKey, Arc<SourceFacts>>,
    last_known: Cache<ImageKey, Arc<SourceFacts>>,
    inflight: Arc<Semaphore>,
    inflight_kib: u32,
    pool: TransformPool,
    admission: Arc<Semaphore>,
    signer: Signer,
    metrics: Arc<Metrics>,
    limits: Limits,
    enc: EncodeSettings,
    presets: HashMap<String, RequestOptions>,
}

/// Builds the configured object store.
pub fn open_store(origin: &OriginConfig) -> Result<Arc<dyn ObjectStore>, String> {
    Ok(match origin {
        OriginConfig::Local { dir } => Arc::new(
            LocalDirStore::new(dir).map_err(|e| format!("origin.dir {}: {e}", dir.display()))?,
        ),
        OriginConfig::S3(s3) => Arc::new(S3Store::new(s3).map_err(|e| e.to_string())?),
    })
}

fn kib_of(bytes: u64) -> u32 {
    bytes.div_ceil(1024).min(u32::MAX as u64 >> 3) as u32
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether an `If-None-Match` header value matches `etag`.
pub fn etag_matches(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

impl Edge {
    /// Builds the edge from validated config: store, caches, worker pool. Starts libvips.
    pub fn new(cfg: EdgeConfig, metrics: Arc<Metrics>) -> Result<Self, String> {
        crate::vips::init(cfg.vips_concurrency)?;
        let store = open_store(&cfg.origin)?;
        Self::with_store(cfg, store, metrics)
    }

    /// Builds the edge over a given store.
    pub fn with_store(
        cfg: EdgeConfig,
        store: Arc<dyn ObjectStore>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        crate::vips::init(cfg.vips_concurrency)?;
        let memory = MemoryTier::new(
            cfg.memory_bytes,
            metrics.evictions.with_label_values(&["memory"]),
            metrics.memory_bytes.clone(),
        );
        let disk = match &cfg.disk_dir {
            Some(dir) => Some(
                DiskTier::open(
                    dir,
                    cfg.disk_bytes,
                    metrics.evictions.with_label_values(&["disk"]),
                    metrics.disk_bytes.clone(),
                )
                .map_err(|e| format!("cache.disk_dir {}: {e}", dir.display()))?,
            ),
            None => None,
        };
        let pool = TransformPool::new(
            cfg.workers,
            cfg.queue + cfg.workers,
            PoolGauges {
                queued: metrics.queue_depth.clone(),
                running: metrics.transforms_in_flight.clone(),
            },
        )
        .map_err(|e| format!("cannot start transform workers: {e}"))?;
        let identities = Cache::builder()
            .max_capacity(1_000_000)
            .time_to_live(cfg.revalidate_after.max(Duration::from_millis(1)))
            .build();
        let last_known = Cache::builder()
            .max_capacity(1_000_000)
            .time_to_live(cfg.stale_if_error.max(Duration::from_millis(1)))
            .build();
        Ok(Self {
            store,
            memory,
            disk,
            sources: SourceCache::new(cfg.source_bytes),
            working: (cfg.working_bytes > 0).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(cfg.working_bytes)
                    .weigher(|_k: &String, v: &Arc<WorkingCopy>| {
                        v.byte_size().min(u32::MAX as usize) as u32
                    })
                    .support_invalidation_closures()
                    .build()
            }),
            identities,
            last_known,
            inflight: Arc::new(Semaphore::new(kib_of(cfg.inflight_source_bytes) as usize)),
            inflight_kib: kib_of(cfg.inflight_source_bytes),
            admission: Arc::new(Semaphore::new(cfg.workers + cfg.queue)),
            pool,
            signer: Signer::new(cfg.signing_keys.clone()),
            limits: Limits {
                max_source_pixels: cfg.max_source_pixels,
                max_dimension: cfg.max_dimension,
            },
            enc: EncodeSettings {
                quality: cfg.quality,
                webp_effort: cfg.webp_effort,
                avif_effort: cfg.avif_effort,
                png_compression: cfg.png_compression,
            },
            presets: cfg.presets.clone(),
            metrics,
            cfg: Arc::new(cfg),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &EdgeConfig {
        &self.cfg
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The origin, for logs.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Brings the cache-size gauges up to date (called before metrics are rendered).
    pub fn refresh_cache_gauges(&self) {
        self.metrics
            .source_bytes
            .set(self.sources.cache().weighted_size() as i64);
        if let Some(w) = &self.working {
            self.metrics.working_bytes.set(w.weighted_size() as i64);
        }
    }

    /// Whether the disk tier's index is rebuilt (always true without a disk tier).
    pub fn is_ready(&self) -> bool {
        self.disk.as_ref().is_none_or(|d| d.is_ready())
    }

    fn check_signature(&self, key: &ImageKey, opts: &RequestOptions) -> Result<(), EdgeError> {
        if !self.signer.enabled() {
            return Ok(());
        }
        if opts.signature.is_none() && opts.is_preset_only() {
            if let Some(p) = &opts.preset {
                if self.cfg.unsigned_presets.iter().any(|u| u == p) {
                    return Ok(());
                }
            }
        }
        self.signer
            .verify(key, opts, now_unix())
            .map_err(|e| EdgeError::Forbidden(e.to_string()))
    }

    /// Serves one image request.
    pub async fn serve(&self, req: ImageRequest<'_>) -> Result<ImageResponse, EdgeError> {
        let started = Instant::now();
        let deadline = started + self.cfg.request_timeout;
        let parsed = parse_path(req.path, req.query, self.cfg.max_dimension)?;
        self.check_signature(&parsed.key, &parsed.options)?;
        let ctx = ResolveContext {
            presets: &self.presets,
            max_dimension: self.cfg.max_dimension,
            quality: self.cfg.quality,
            accept: req.accept,
        };
        let spec =
            resolve(&parsed.options, &ctx).map_err(|e| EdgeError::BadRequest(e.to_string()))?;
        let (facts, stale) = self.identity(&parsed.key).await?;
        let ckey = cache_key(&parsed.key, &facts.identity, &spec.canonical());
        let etag = format!("\"{}\"", hex::encode(&ckey[..16]));
        let vary_accept = spec.varies_on_accept();
        let respond = |image, tier, coalesced| ImageResponse {
            image,
            etag: etag.clone(),
            vary_accept,
            tier,
            coalesced,
            stale,
        };
        if req.if_none_match.is_some_and(|h| etag_matches(h, &etag)) {
            return Ok(respond(None, Tier::Memory, false));
        }
        if let Some(hit) = self.memory.get(&ckey).await {
            self.metrics.lookup("memory", true);
            return Ok(respond(Some(hit), Tier::Memory, false));
        }
        self.metrics.lookup("memory", false);

        let key = parsed.key.clone();
        let fill = self.fill(ckey, key, facts, spec, deadline);
        let remaining = deadline.saturating_duration_since(Instant::now());
        let entry = tokio::time::timeout(
            remaining,
            self.memory.cache().entry(ckey).or_try_insert_with(fill),
        )
        .await
        .map_err(|_| {
            EdgeError::Timeout("the image could not be made before the request deadline".into())
        })?
        .map_err(|e: Arc<EdgeError>| (*e).clone())?;
        let fresh = entry.is_fresh();
        let img = entry.into_value();
        if fresh {
            self.metrics.memory_bytes.add(img.body.len() as i64);
        } else {
            self.metrics.coalesced_waiters.inc();
        }
        let tier = img.filled_from;
        Ok(respond(Some(img), tier, !fresh))
    }

    /// Fills one cache entry: disk tier, else source + transform.
    async fn fill(
        &self,
        ckey: crate::cache::CacheKey,
        key: ImageKey,
        facts: Arc<SourceFacts>,
        spec: crate::url::TransformSpec,
        deadline: Instant,
    ) -> Result<Arc<CachedImage>, EdgeError> {
        if let Some(disk) = &self.disk {
            if let Some(img) = disk.get(&ckey).await {
                self.metrics.lookup("disk", true);
                return Ok(Arc::new(img));
            }
            self.metrics.lookup("disk", false);
        }
        // Admission before the fetch bounds the source bytes held by waiting requests.
        let _permit = self.admission.clone().try_acquire_owned().map_err(|_| {
            self.metrics.queue_rejections.inc();
            EdgeError::Overloaded {
                retry_after: Duration::from_secs(1),
            }
        })?;
        let identity = facts.identity.as_str();
        if facts.size > self.cfg.max_source_bytes {
            return Err(EdgeError::SourceTooLarge(format!(
                "the source image is {} bytes, over the limit of {} bytes",
                facts.size, self.cfg.max_source_bytes
            )));
        }
        // Bytes fetched for queued work count against a budget, so a storm of large misses
        // is refused (503) instead of growing memory; cached sources are already counted.
        let wkey = source_cache_key(key.as_str(), identity);
        let source_was_cached = self.sources.cache().contains_key(&wkey);
        let _budget = if source_was_cached {
            None
        } else {
            let kib = kib_of(facts.size).clamp(1, self.inflight_kib.max(1));
            Some(
                self.inflight
                    .clone()
                    .try_acquire_many_owned(kib)
                    .map_err(|_| {
                        self.metrics.queue_rejections.inc();
                        EdgeError::Overloaded {
                            retry_after: Duration::from_secs(1),
                        }
                    })?,
            )
        };
        let source = self.source(&key, identity).await?;
        // The working copy is looked up when a worker takes the job, not when it is queued,
        // so queued requests for one photo use the copy the first of them made.
        let working = self
            .working
            .clone()
            .filter(|_| WorkingCopy::eligible(&spec));
        // A working copy is made only for a source asked for again (its bytes were cached),
        // so one-off requests do not pay for a copy nobody reuses.
        let working_side = if self.working.is_some() && source_was_cached {
            self.cfg.working_side
        } else {
            0
        };
        let (limits, enc) = (self.limits, self.enc);
        let hist = self.metrics.transform_seconds.clone();
        let lookups = self.metrics.cache_lookups.clone();
        let job = self
            .pool
            .submit(Some(deadline), move || {
                let _t = hist.start_timer();
                let copy = working.as_ref().and_then(|c| c.get(&wkey));
                let (out, made) = transform::run_with(
                    &source,
                    copy.as_deref(),
                    working_side,
                    &spec,
                    &limits,
                    &enc,
                    Some(deadline),
                )?;
                if copy.is_some() {
                    let result = if out.from_working_copy { "hit" } else { "miss" };
                    lookups.with_label_values(&["working", result]).inc();
                }
                if let (Some(cache), Some(m)) = (&working, made) {
                    cache.insert(wkey, Arc::new(m));
                }
                Ok::<_, transform::TransformError>(out)
            })
            .map_err(|_| {
                self.metrics.queue_rejections.inc();
                EdgeError::Overloaded {
                    retry_after: Duration::from_secs(1),
                }
            })?;
        let out = match job.await {
            Ok(r) => r?,
            Err(PoolError::Expired) => {
                return Err(EdgeError::Timeout(
                    "the request deadline passed while queued".into(),
                ))
            }
            Err(e) => return Err(EdgeError::Internal(e.to_string())),
        };
        let img = Arc::new(CachedImage {
            body: out.bytes,
            format: out.format,
            width: out.width,
            height: out.height,
            source_key: Arc::from(key.as_str()),
            filled_from: Tier::Origin,
        });
        if let Some(disk) = &self.disk {
            let disk = Arc::clone(disk);
            let img = Arc::clone(&img);
            tokio::spawn(async move {
                if let Err(e) = disk.put(ckey, &img).await {
                    tracing::warn!(error = %e, "disk cache write failed");
                }
            });
        }
        Ok(img)
    }

    /// The source's identity: trusted for `revalidate_after`, then checked with a HEAD.
    /// When the origin fails, the last known identity serves (stale) for `stale_if_error`.
    async fn identity(&self, key: &ImageKey) -> Result<(Arc<SourceFacts>, bool), EdgeError> {
        if let Some(id) = self.identities.get(key).await {
            return Ok((id, false));
        }
        let head = async {
            self.metrics.origin_heads.inc();
            let _t = self.metrics.origin_seconds.start_timer();
            let meta = tokio::time::timeout(self.cfg.origin_timeout, self.store.head(key))
                .await
                .map_err(|_| EdgeError::Timeout("the origin did not answer in time".into()))??;
            Ok::<Arc<SourceFacts>, EdgeError>(Arc::new(SourceFacts {
                identity: meta.identity,
                size: meta.size,
            }))
        };
        match self.identities.try_get_with(key.clone(), head).await {
            Ok(id) => {
                self.last_known.insert(key.clone(), Arc::clone(&id)).await;
                Ok((id, false))
            }
            Err(e) => match &*e {
                EdgeError::OriginFailed(_) | EdgeError::Timeout(_) => {
                    match self.last_known.get(key).await {
                        Some(id) => {
                            tracing::warn!(key = %key, error = %e.log_detail(), "origin unavailable; serving stale");
                            self.metrics.stale_served.inc();
                            Ok((id, true))
                        }
                        None => Err((*e).clone()),
                    }
                }
                _ => Err((*e).clone()),
            },
        }
    }

    /// The source's bytes, from the source cache or one coalesced origin fetch.
    async fn source(&self, key: &ImageKey, identity: &str) -> Result<Bytes, EdgeError> {
        let skey = source_cache_key(key.as_str(), identity);
        if let Some(b) = self.sources.cache().get(&skey).await {
            self.metrics.lookup("source", true);
            return Ok(b);
        }
        let fetch = async {
            self.metrics.lookup("source", false);
            self.metrics.origin_fetches.inc();
            let _t = self.metrics.origin_seconds.start_timer();
            let obj = tokio::time::timeout(
                self.cfg.origin_timeout,
                self.store.get(key, self.cfg.max_source_bytes),
            )
            .await
            .map_err(|_| EdgeError::Timeout("the origin did not answer in time".into()))??;
            if *obj.meta.identity != *identity {
                // Changed since the HEAD: look again next time.
                self.identities.invalidate(key).await;
            }
            Ok::<Bytes, EdgeError>(obj.bytes)
        };
        self.sources
            .cache()
            .try_get_with(skey, fetch)
            .await
            .map_err(|e| (*e).clone())
    }

    /// Drops every cached result and the cached source of `key` on this node.
    pub async fn purge(&self, key: &ImageKey) -> PurgeReport {
        self.identities.invalidate(key).await;
        self.last_known.invalidate(key).await;
        self.sources.purge_source(key.as_str());
        if let Some(w) = &self.working {
            let prefix = format!("{}\0", key.as_str());
            let _ = w.invalidate_entries_if(move |k, _| k.starts_with(&prefix));
        }
        self.memory.purge_source(key.as_str());
        let disk_entries = self
            .disk
            .as_ref()
            .map(|d| d.purge_source(key.as_str()))
            .unwrap_or(0);
        PurgeReport { disk_entries }
    }

    /// Signs an image path with the first configured key.
    pub fn sign_path(&self, path: &str) -> Result<String, crate::sign::SignError> {
        self.signer.sign_path(path, self.cfg.max_dimension)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_forms() {
        let e = "\"abc\"";
        assert!(etag_matches("\"abc\"", e));
        assert!(etag_matches("\"x\", W/\"abc\"", e));
        assert!(etag_matches("*", e));
        assert!(!etag_matches("\"abd\"", e));
        assert!(!etag_matches("abc", e));
    }
}
