//! Prometheus metrics for the edge, registered in one registry served at `/metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every metric the edge exports.
pub struct Metrics {
    registry: Registry,
    /// Responses by HTTP status.
    pub requests: IntCounterVec,
    /// Cache lookups by tier (`memory`, `disk`, `source`) and result (`hit`, `miss`).
    pub cache_lookups: IntCounterVec,
    /// Seconds spent in libvips per transform.
    pub transform_seconds: Histogram,
    /// Seconds per origin request.
    pub origin_seconds: Histogram,
    /// Whole-object reads from the origin.
    pub origin_fetches: IntCounter,
    /// Metadata-only (HEAD) requests to the origin.
    pub origin_heads: IntCounter,
    /// Body bytes sent to clients.
    pub bytes_out: IntCounter,
    /// Transforms running now.
    pub transforms_in_flight: IntGauge,
    /// Transforms waiting for a worker.
    pub queue_depth: IntGauge,
    /// Requests refused because the transform queue was full.
    pub queue_rejections: IntCounter,
    /// Transforms that waited for a memory budget, by budget.
    pub memory_budget_waits: IntCounterVec,
    /// Requests refused with 429 because their client had too many transforms in flight.
    pub client_rejections: IntCounter,
    /// Transforms submitted, by lane (`transform`, `transform-light`).
    pub transforms_by_lane: IntCounterVec,
    /// Requests that waited on another request's fetch or transform.
    pub coalesced_waiters: IntCounter,
    /// Responses served stale because the origin was unavailable.
    pub stale_served: IntCounter,
    /// Entries evicted, by tier.
    pub evictions: IntCounterVec,
    /// Bytes held by the disk tier.
    pub disk_bytes: IntGauge,
    /// Disk tier writes that failed (a full or failing disk; the edge serves on without it).
    pub disk_write_failures: IntCounter,
    /// Bytes held by the memory tier.
    pub memory_bytes: IntGauge,
    /// Bytes held by the source cache.
    pub source_bytes: IntGauge,
    /// Bytes held by working copies.
    pub working_bytes: IntGauge,
    /// Cache hits answered from ready responses (also counted as memory hits).
    pub ready_hits: IntCounter,
    /// Bytes held by ready responses (bodies shared with the memory tier counted again).
    pub ready_bytes: IntGauge,
    /// Access-statistics pushes by outcome (`sent`, `retry`, `refused`).
    pub access_pushes: IntCounterVec,
    /// Requests counted for access statistics but never delivered.
    pub access_dropped: IntCounter,
    /// Access-statistics batches waiting to be pushed.
    pub access_buffered: IntGauge,
    /// Connections the edge closed on its own, by reason (`slow_head`, `head_too_large`,
    /// `too_many`).
    pub connections_closed: IntCounterVec,
}

fn latency_buckets() -> Vec<f64> {
    vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
}

impl Metrics {
    /// Creates and registers all metrics.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("flexphoto_requests_total", "Responses by HTTP status"),
            &["status"],
        )?;
        let cache_lookups = IntCounterVec::new(
            Opts::new(
                "flexphoto_cache_lookups_total",
                "Cache lookups by tier and result",
            ),
            &["tier", "result"],
        )?;
        let transform_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "flexphoto_transform_seconds",
                "Time in libvips per transform",
            )
            .buckets(latency_buckets()),
        )?;
        let origin_seconds = Histogram::with_opts(
            HistogramOpts::new("flexphoto_origin_seconds", "Time per origin request")
                .buckets(latency_buckets()),
        )?;
        let origin_fetches = IntCounter::new(
            "flexphoto_origin_fetches_total",
            "Whole-object reads from the origin",
        )?;
        let origin_heads = IntCounter::new(
            "flexphoto_origin_heads_total",
            "Metadata requests to the origin",
        )?;
        let bytes_out = IntCounter::new("flexphoto_bytes_out_total", "Body bytes sent")?;
        let transforms_in_flight =
            IntGauge::new("flexphoto_transforms_in_flight", "Transforms running now")?;
        let queue_depth = IntGauge::new(
            "flexphoto_transform_queue_depth",
            "Transforms waiting for a worker",
        )?;
        let queue_rejections = IntCounter::new(
            "flexphoto_queue_rejections_total",
            "Requests refused with 503 because the transform queue was full",
        )?;
        let memory_budget_waits = IntCounterVec::new(
            Opts::new(
                "flexphoto_memory_budget_waits_total",
                "Transforms that waited for a memory budget: decode (transform.decode_memory_mb) \
                 or queued_sources (transform.queued_source_mb)",
            ),
            &["budget"],
        )?;
        let client_rejections = IntCounter::new(
            "flexphoto_client_rejections_total",
            "Requests refused with 429 because their client had too many transforms in flight",
        )?;
        let transforms_by_lane = IntCounterVec::new(
            Opts::new(
                "flexphoto_transforms_by_lane_total",
                "Transforms submitted, by lane",
            ),
            &["lane"],
        )?;
        let coalesced_waiters = IntCounter::new(
            "flexphoto_coalesced_waiters_total",
            "Requests that waited on another request's fetch or transform",
        )?;
        let stale_served = IntCounter::new(
            "flexphoto_stale_served_total",
            "Responses served stale because the origin was unavailable",
        )?;
        let evictions = IntCounterVec::new(
            Opts::new("flexphoto_cache_evictions_total", "Entries evicted by tier"),
            &["tier"],
        )?;
        let disk_bytes =
            IntGauge::new("flexphoto_disk_cache_bytes", "Bytes held by the disk tier")?;
        let disk_write_failures = IntCounter::new(
            "flexphoto_disk_cache_write_failures_total",
            "Disk tier writes that failed (full or failing disk); responses are still served",
        )?;
        let memory_bytes = IntGauge::new(
            "flexphoto_memory_cache_bytes",
            "Bytes held by the memory tier",
        )?;
        let source_bytes = IntGauge::new(
            "flexphoto_source_cache_bytes",
            "Bytes held by the source cache",
        )?;
        let working_bytes = IntGauge::new(
            "flexphoto_working_copy_bytes",
            "Bytes held by working copies",
        )?;
        let ready_hits = IntCounter::new(
            "flexphoto_ready_hits_total",
            "Cache hits answered from ready responses (also counted as memory hits)",
        )?;
        let ready_bytes = IntGauge::new(
            "flexphoto_ready_response_bytes",
            "Bytes held by ready responses",
        )?;
        let connections_closed = IntCounterVec::new(
            Opts::new(
                "flexphoto_connections_closed_total",
                "Connections the edge closed on its own, by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(connections_closed.clone()))?;
        registry.register(Box::new(ready_hits.clone()))?;
        registry.register(Box::new(ready_bytes.clone()))?;
        registry.register(Box::new(source_bytes.clone()))?;
        registry.register(Box::new(working_bytes.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(cache_lookups.clone()))?;
        registry.register(Box::new(transform_seconds.clone()))?;
        registry.register(Box::new(origin_seconds.clone()))?;
        registry.register(Box::new(origin_fetches.clone()))?;
        registry.register(Box::new(origin_heads.clone()))?;
        registry.register(Box::new(bytes_out.clone()))?;
        registry.register(Box::new(transforms_in_flight.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        let access_pushes = IntCounterVec::new(
            Opts::new(
                "flexphoto_access_pushes_total",
                "Access statistics pushes to the control plane, by outcome",
            ),
            &["outcome"],
        )?;
        let access_dropped = IntCounter::new(
            "flexphoto_access_dropped_requests_total",
            "Requests counted for access statistics but never delivered",
        )?;
        let access_buffered = IntGauge::new(
            "flexphoto_access_buffered_batches",
            "Access statistics batches waiting to be pushed",
        )?;
        registry.register(Box::new(access_pushes.clone()))?;
        registry.register(Box::new(access_dropped.clone()))?;
        registry.register(Box::new(access_buffered.clone()))?;
        registry.register(Box::new(queue_rejections.clone()))?;
        registry.register(Box::new(memory_budget_waits.clone()))?;
        registry.register(Box::new(client_rejections.clone()))?;
        registry.register(Box::new(transforms_by_lane.clone()))?;
        registry.register(Box::new(coalesced_waiters.clone()))?;
        registry.register(Box::new(stale_served.clone()))?;
        registry.register(Box::new(evictions.clone()))?;
        registry.register(Box::new(disk_bytes.clone()))?;
        registry.register(Box::new(disk_write_failures.clone()))?;
        registry.register(Box::new(memory_bytes.clone()))?;
        Ok(Self {
            registry,
            requests,
            cache_lookups,
            transform_seconds,
            origin_seconds,
            origin_fetches,
            origin_heads,
            bytes_out,
            transforms_in_flight,
            queue_depth,
            queue_rejections,
            memory_budget_waits,
            client_rejections,
            transforms_by_lane,
            coalesced_waiters,
            stale_served,
            evictions,
            disk_bytes,
            disk_write_failures,
            memory_bytes,
            source_bytes,
            working_bytes,
            ready_hits,
            ready_bytes,
            access_pushes,
            access_dropped,
            access_buffered,
            connections_closed,
        })
    }

    /// Records a cache lookup.
    pub fn lookup(&self, tier: &str, hit: bool) {
        self.cache_lookups
            .with_label_values(&[tier, if hit { "hit" } else { "miss" }])
            .inc();
    }

    /// The registry, for modules that register metrics of their own.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        if enc.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
