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
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::cache::disk::DiskTier;
use crate::cache::identity::{Identities, SourceFacts};
use crate::cache::memory::MemoryTier;
use crate::cache::source::{source_cache_key, SourceCache};
use crate::cache::working::WorkingCopies;
use crate::cache::{cache_key, CachedImage, Tier};
use crate::clients::ClientLimiter;
use crate::config::EdgeConfig;
use crate::error::EdgeError;
use crate::memory_budget::{MemoryBudget, DECODE_COUNTED_FROM};
use crate::metrics::Metrics;
use crate::ready::ReadyResponses;
use flexphoto_media::pool::{ImagePool, PoolError, PoolGauges};
use flexphoto_media::transform::{self, EncodeSettings, Limits, WorkingCopy};
use flexphoto_storage::ObjectStore;
use flexphoto_url::sign::Signer;
use flexphoto_url::{parse_path, ImageKey, RequestOptions};
use flexphoto_url::{resolve, ResolveContext, TransformSpec};

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
    /// The client's address, for per-client limits.
    pub client: Option<std::net::IpAddr>,
}

/// What the HTTP layer sends back for an image request.
#[derive(Debug, Clone)]
pub struct ImageResponse {
    /// `None` means 304 Not Modified.
    pub image: Option<Arc<CachedImage>>,
    /// The source object's key (what access statistics count under).
    pub key: Arc<str>,
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
    /// When a signed URL stops working (Unix seconds): no cache may keep the answer longer.
    pub expires: Option<u64>,
    /// Until when the source identity behind the answer is trusted without asking the
    /// origin; `None` for stale answers.
    pub trusted_until: Option<Instant>,
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct PurgeReport {
    /// Disk entries deleted.
    pub disk_entries: usize,
}

/// The shared state of one edge node.
pub struct Edge {
    cfg: Arc<EdgeConfig>,
    store: Arc<dyn ObjectStore>,
    memory: MemoryTier,
    disk: Option<Arc<DiskTier>>,
    sources: SourceCache,
    working: Option<WorkingCopies>,
    ready: Option<ReadyResponses>,
    identities: Identities,
    /// Source bytes being fetched or queued (`limits.inflight_source_mb`): refused past it.
    inflight: MemoryBudget,
    heavy: Lane,
    light: Option<Lane>,
    /// Large decodes held at once (`transform.decode_memory_mb`).
    decode_memory: MemoryBudget,
    /// Source bytes of main-lane transforms queued or running (`transform.queued_source_mb`).
    queued_sources: MemoryBudget,
    clients: Arc<ClientLimiter>,
    signer: Signer,
    metrics: Arc<Metrics>,
    /// Requests and bytes per source key, when they are pushed to the control plane.
    access: Option<Arc<crate::access::AccessCounter>>,
    limits: Limits,
    enc: EncodeSettings,
    presets: HashMap<String, RequestOptions>,
    withheld: crate::withheld::Withheld,
}

/// A transform pool and the admission slots in front of it. A slot is taken before the source
/// is fetched and released only when the worker is done with the job.
struct Lane {
    name: &'static str,
    pool: ImagePool,
    /// One permit per worker and per queue place.
    admission: Arc<Semaphore>,
    queue: usize,
}

impl Lane {
    fn new(
        name: &'static str,
        workers: usize,
        queue: usize,
        gauges: PoolGauges,
        nice: i32,
    ) -> Result<Self, String> {
        let pool = ImagePool::named_nice(name, workers, queue + workers, gauges, nice)
            .map_err(|e| format!("cannot start transform workers: {e}"))?;
        Ok(Self {
            name,
            pool,
            admission: Arc::new(Semaphore::new(workers + queue)),
            queue,
        })
    }

    /// Whether a transform admitted now would start at once (a worker is free).
    fn has_idle_worker(&self) -> bool {
        self.admission.available_permits() > self.queue
    }
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
        flexphoto_media::vips::init(cfg.vips_concurrency)?;
        // Opening an S3 store reads the AWS provider chain, which is async; the server's own
        // runtimes do not exist yet.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime to open the origin: {e}"))?;
        let mut store = rt
            .block_on(flexphoto_storage::open(&cfg.origin))
            .map_err(|e| format!("origin: {e}"))?;
        if let Some(cold) = &cfg.origin_cold {
            let cold = rt
                .block_on(flexphoto_storage::open(cold))
                .map_err(|e| format!("origin.cold: {e}"))?;
            store = Arc::new(flexphoto_storage::tiered::TieredStore::new(store, cold));
        }
        Self::with_store(cfg, store, metrics)
    }

    /// Builds the edge over a given store.
    pub fn with_store(
        cfg: EdgeConfig,
        store: Arc<dyn ObjectStore>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        flexphoto_media::vips::init(cfg.vips_concurrency)?;
        // Keys withheld by their rights read as missing from the origin.
        let withheld =
            crate::withheld::Withheld::new(cfg.withheld_list_key.clone(), cfg.withheld_poll)
                .and_then(|w| w.register(metrics.registry()).map(|()| w))
                .map_err(|e| format!("withheld-list metrics: {e}"))?;
        let store = withheld.wrap(store);
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
        let gauges = PoolGauges {
            queued: metrics.queue_depth.clone(),
            running: metrics.transforms_in_flight.clone(),
        };
        let heavy = Lane::new(
            "transform",
            cfg.workers,
            cfg.queue,
            gauges.clone(),
            cfg.worker_nice,
        )?;
        // Cheap work has a lane of its own, so a queue full of expensive transforms does not
        // hold up small ones.
        let light = match cfg.light_workers {
            0 => None,
            n => Some(Lane::new(
                "transform-light",
                n,
                cfg.queue,
                gauges,
                cfg.worker_nice,
            )?),
        };
        if cfg.signing_keys.is_empty() {
            tracing::warn!(
                "signing is off (no signing.keys): any client may ask for any size; outputs are \
                 still bounded by limits.max_output_pixels and limits.max_filter_cost"
            );
        }
        let access = match &cfg.access {
            Some(push) => {
                let counter = Arc::new(crate::access::AccessCounter::default());
                let pusher = crate::access::Pusher::new(
                    push.clone(),
                    Arc::clone(&counter),
                    crate::access::PushMetrics {
                        pushes: metrics.access_pushes.clone(),
                        dropped: metrics.access_dropped.clone(),
                        buffered: metrics.access_buffered.clone(),
                    },
                );
                pusher
                    .spawn()
                    .map_err(|e| format!("starting the access statistics pusher: {e}"))?;
                tracing::info!(to = %push.url, edge = %push.edge, every = ?push.interval, "pushing access statistics");
                Some(counter)
            }
            None => None,
        };
        Ok(Self {
            access,
            store,
            memory,
            disk,
            sources: SourceCache::new(cfg.source_bytes),
            working: WorkingCopies::new(cfg.working_bytes),
            ready: ReadyResponses::new(cfg.ready_bytes),
            identities: Identities::new(
                cfg.revalidate_after,
                cfg.stale_if_error,
                cfg.disk_dir.as_ref().map(|d| d.join("identities")),
            ),
            inflight: MemoryBudget::new("source bytes in flight", cfg.inflight_source_bytes, None),
            heavy,
            light,
            decode_memory: MemoryBudget::new(
                "memory to decode the source",
                cfg.decode_memory_bytes,
                Some(metrics.memory_budget_waits.with_label_values(&["decode"])),
            ),
            queued_sources: MemoryBudget::new(
                "room for the source among queued transforms",
                cfg.queued_source_bytes,
                Some(
                    metrics
                        .memory_budget_waits
                        .with_label_values(&["queued_sources"]),
                ),
            ),
            clients: ClientLimiter::new(cfg.per_client_transforms),
            signer: Signer::new(cfg.signing_keys.clone()),
            limits: Limits {
                max_source_pixels: cfg.max_source_pixels,
                max_dimension: cfg.max_dimension,
                max_output_pixels: cfg.max_output_pixels,
                max_filter_cost: cfg.max_filter_cost as f64,
                max_avif_pixels: cfg.max_avif_pixels,
                max_webp_pixels: cfg.max_webp_pixels,
                max_gif_pixels: cfg.max_gif_pixels,
                formats: cfg.formats,
            },
            enc: EncodeSettings {
                quality: cfg.quality,
                webp_effort: cfg.webp_effort,
                avif_effort: cfg.avif_effort,
                png_compression: cfg.png_compression,
            },
            presets: cfg.presets.clone(),
            withheld,
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

    /// The keys withheld by their rights.
    pub fn withheld(&self) -> &crate::withheld::Withheld {
        &self.withheld
    }

    /// The access counters, when access statistics are pushed.
    pub fn access(&self) -> Option<&crate::access::AccessCounter> {
        self.access.as_deref()
    }

    /// The origin, for logs.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Ready responses for repeated hits; `None` when the fast path is off.
    pub fn ready(&self) -> Option<&ReadyResponses> {
        self.ready.as_ref()
    }

    /// Brings the cache-size gauges up to date (called before metrics are rendered).
    pub fn refresh_cache_gauges(&self) {
        if let Some(r) = &self.ready {
            self.metrics.ready_bytes.set(r.weighted_size() as i64);
        }
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
        // A private image is served to signed requests only, and never by an edge that cannot
        // check signatures.
        let private = self.withheld.requires_signature(key.as_str());
        if !self.signer.enabled() {
            if private {
                return Err(EdgeError::Forbidden(
                    "the image is private and this edge has no signing keys to check a \
                     signature with"
                        .into(),
                ));
            }
            return Ok(());
        }
        if private && opts.signature.is_none() {
            return Err(EdgeError::Forbidden(
                "the image is private: its URLs must be signed (ask the control plane for one)"
                    .into(),
            ));
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
        if self
            .cfg
            .hidden_prefixes
            .iter()
            .any(|p| parsed.key.as_str().starts_with(p.as_str()))
        {
            return Err(EdgeError::NotFound(format!(
                "no image with key {:?}",
                parsed.key.as_str()
            )));
        }
        self.check_signature(&parsed.key, &parsed.options)?;
        let ctx = ResolveContext {
            presets: &self.presets,
            max_dimension: self.cfg.max_dimension,
            quality: self.cfg.quality,
            accept: req.accept,
            default_meta: self.cfg.default_meta,
            allow_meta_keep: self.cfg.allow_meta_keep,
        };
        let spec =
            resolve(&parsed.options, &ctx).map_err(|e| EdgeError::BadRequest(e.to_string()))?;
        let (facts, stale) = self.identity(&parsed.key).await?;
        let ckey = cache_key(&parsed.key, &facts.identity, &spec.canonical());
        let etag = format!("\"{}\"", hex::encode(&ckey[..16]));
        let vary_accept = spec.varies_on_accept();
        let expires = parsed.options.expires;
        let trusted_until = (!stale).then(|| facts.checked_at + self.cfg.revalidate_after);
        let source: Arc<str> = Arc::from(parsed.key.as_str());
        let respond = |image, tier, coalesced| ImageResponse {
            image,
            key: Arc::clone(&source),
            etag: etag.clone(),
            vary_accept,
            tier,
            coalesced,
            stale,
            expires,
            trusted_until,
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
        let fill = self.fill(ckey, key, facts, spec, deadline, req.client);
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

    /// The lane for a transform and an admission slot on it; 503 when both are full. A light
    /// transform takes a free worker of the main lane first (so cheap work uses every core
    /// while the main lane is idle), else the light lane's, else a place in the main queue.
    fn admit(&self, light: bool) -> Result<(&Lane, OwnedSemaphorePermit), EdgeError> {
        let light_lane = self.light.as_ref().filter(|_| light);
        let idle_main = light_lane.is_some() && self.heavy.has_idle_worker();
        let lanes = [
            Some(&self.heavy).filter(|_| idle_main),
            light_lane,
            Some(&self.heavy),
        ];
        for lane in lanes.into_iter().flatten() {
            if let Ok(p) = lane.admission.clone().try_acquire_owned() {
                return Ok((lane, p));
            }
        }
        self.metrics.queue_rejections.inc();
        Err(EdgeError::Overloaded {
            retry_after: Duration::from_secs(1),
        })
    }

    /// Fills one cache entry: disk tier, else source + transform.
    async fn fill(
        &self,
        ckey: crate::cache::CacheKey,
        key: ImageKey,
        facts: Arc<SourceFacts>,
        spec: TransformSpec,
        deadline: Instant,
        client: Option<std::net::IpAddr>,
    ) -> Result<Arc<CachedImage>, EdgeError> {
        if let Some(disk) = &self.disk {
            if let Some(img) = disk.get(&ckey).await {
                self.metrics.lookup("disk", true);
                return Ok(Arc::new(img));
            }
            self.metrics.lookup("disk", false);
        }
        let identity = facts.identity.as_str();
        if facts.size > self.cfg.max_source_bytes {
            return Err(EdgeError::SourceTooLarge(format!(
                "the source image is {} bytes, over the limit of {} bytes",
                facts.size, self.cfg.max_source_bytes
            )));
        }
        // One client's transforms in flight are bounded, so a handful of clients cannot fill
        // the queue everyone shares.
        let client_permit = self.clients.try_acquire(client).ok_or_else(|| {
            self.metrics.client_rejections.inc();
            EdgeError::TooManyRequests {
                retry_after: Duration::from_secs(2),
            }
        })?;
        let wkey = WorkingCopies::key(key.as_str(), identity);
        let has_copy = WorkingCopy::eligible(&spec)
            && self
                .working
                .as_ref()
                .is_some_and(|w| w.get(&wkey).is_some());
        // Admission before the fetch bounds the source bytes held by waiting requests; the
        // slot goes with the job and is freed when its worker is.
        let light = crate::lanes::is_light(
            &spec,
            &key,
            facts.size,
            has_copy,
            crate::lanes::LightBounds {
                max_source_bytes: self.cfg.light_max_source_bytes,
                max_output_pixels: self.cfg.light_max_output_pixels,
            },
        );
        let (lane, permit) = self.admit(light)?;
        // Bytes fetched for queued work count against a budget, so a storm of large misses
        // is refused (503) instead of growing memory; cached sources are already counted.
        let source_was_cached = self.sources.cache().contains_key(&wkey);
        let byte_budget = if source_was_cached {
            None
        } else {
            Some(self.inflight.try_reserve(facts.size).ok_or_else(|| {
                self.metrics.queue_rejections.inc();
                EdgeError::Overloaded {
                    retry_after: Duration::from_secs(1),
                }
            })?)
        };
        // Main-lane work waits, holding no bytes, while queued and running sources fill their
        // budget; cheap work in the light lane is bounded by its slots and source size.
        let queued_bytes = match (source_was_cached, std::ptr::eq(lane, &self.heavy)) {
            (false, true) => Some(self.queued_sources.reserve(facts.size, deadline).await?),
            _ => None,
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
        // A large decode waits here, not on a worker, while others hold the memory budget.
        let decode_permit = if has_copy {
            None
        } else {
            let want = if working_side > 0 {
                (working_side, working_side)
            } else {
                (spec.width.unwrap_or(0), spec.height.unwrap_or(0))
            };
            match flexphoto_media::decode_memory::estimate(&source, want) {
                Some(bytes) if bytes >= DECODE_COUNTED_FROM => {
                    Some(self.decode_memory.reserve(bytes, deadline).await?)
                }
                _ => None,
            }
        };
        let (limits, enc) = (self.limits, self.enc);
        let hist = self.metrics.transform_seconds.clone();
        let lookups = self.metrics.cache_lookups.clone();
        let lane_name = lane.name;
        let job = lane
            .pool
            .submit(Some(deadline), move |budget| {
                // Held until the worker is done, whatever happens to the request.
                let _slots = (permit, byte_budget, queued_bytes, client_permit);
                let _t = hist.start_timer();
                let copy = working.as_ref().and_then(|c| c.get(&wkey));
                let result = transform::run_with(
                    &source,
                    copy.as_deref(),
                    working_side,
                    &spec,
                    &limits,
                    &enc,
                    budget,
                );
                if let Some(reserved) = decode_permit {
                    // glibc keeps what a large decode freed; give it back before the next.
                    flexphoto_media::malloc::release_free_memory();
                    drop(reserved);
                }
                let (out, made) = result?;
                if copy.is_some() {
                    let result = if out.from_working_copy { "hit" } else { "miss" };
                    lookups.with_label_values(&["working", result]).inc();
                }
                if let (Some(cache), Some(m)) = (&working, made) {
                    cache.insert(wkey, m);
                }
                Ok::<_, transform::TransformError>(out)
            })
            .map_err(|_| {
                self.metrics.queue_rejections.inc();
                EdgeError::Overloaded {
                    retry_after: Duration::from_secs(1),
                }
            })?;
        self.metrics
            .transforms_by_lane
            .with_label_values(&[lane_name])
            .inc();
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
            let failures = self.metrics.disk_write_failures.clone();
            tokio::spawn(async move {
                if let Err(e) = disk.put(ckey, &img).await {
                    disk.report_write_failure(&e);
                    failures.inc();
                }
            });
        }
        Ok(img)
    }

    /// The source's identity: trusted for `revalidate_after`, then checked with a HEAD.
    /// When the origin fails, the last known identity serves (stale) for `stale_if_error`.
    async fn identity(&self, key: &ImageKey) -> Result<(Arc<SourceFacts>, bool), EdgeError> {
        if let Some(id) = self.identities.fresh().get(key).await {
            return Ok((id, false));
        }
        if self.identities.is_missing(key).await {
            return Err(EdgeError::NotFound(format!(
                "no image with key {:?}",
                key.as_str()
            )));
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
                checked_at: Instant::now(),
            }))
        };
        match self
            .identities
            .fresh()
            .try_get_with(key.clone(), head)
            .await
        {
            Ok(id) => {
                self.identities.confirmed(key, Arc::clone(&id)).await;
                Ok((id, false))
            }
            Err(e) => match &*e {
                EdgeError::OriginFailed(_) | EdgeError::Timeout(_) => {
                    match self.identities.last_known(key).await {
                        Some(id) => {
                            tracing::warn!(key = %key, error = %e.log_detail(), "origin unavailable; serving stale");
                            self.metrics.stale_served.inc();
                            Ok((id, true))
                        }
                        None => Err((*e).clone()),
                    }
                }
                EdgeError::NotFound(_) => {
                    // The origin says the source is gone: nothing made from it is served again.
                    if self.identities.last_known(key).await.is_some() {
                        self.purge(key).await;
                    }
                    self.identities.mark_missing(key).await;
                    Err((*e).clone())
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
                self.identities.expire(key).await;
                if let Some(r) = &self.ready {
                    r.purge_source(key.as_str());
                }
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
        self.identities.purge(key).await;
        self.sources.purge_source(key.as_str());
        if let Some(w) = &self.working {
            w.purge_source(key.as_str());
        }
        if let Some(r) = &self.ready {
            r.purge_source(key.as_str());
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
    pub fn sign_path(&self, path: &str) -> Result<String, flexphoto_url::sign::SignError> {
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
