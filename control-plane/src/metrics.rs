//! Prometheus metrics of the control plane, served at `GET /metrics` to admin keys: API
//! requests by route and status, job outcomes and durations by kind, where ingest time goes
//! stage by stage, and the queue's depth read from the database at scrape time.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::ingest::StageTimings;
use crate::store::jobs::QueueStats;

/// Stage label of the embedding models' time per image.
pub const EMBED_STAGE: &str = "embed";

/// Every metric the control plane exports.
pub struct Metrics {
    registry: Registry,
    /// API responses by route template, method and status.
    pub requests: IntCounterVec,
    /// API latency by route template, seconds.
    pub request_seconds: HistogramVec,
    /// Finished job attempts by kind and outcome (`done`, `retry`, `failed`, `dead`, `lost`).
    pub jobs: IntCounterVec,
    /// Job attempt duration by kind, seconds.
    pub job_seconds: HistogramVec,
    /// Time per image in each processing stage (`decode`, `variant:{name}` …, `embed`), seconds.
    pub stage_seconds: HistogramVec,
    /// Jobs by kind and state, read at scrape time.
    pub queue_jobs: IntGaugeVec,
    /// Images by status, read at scrape time.
    pub images: IntGaugeVec,
    /// Running jobs whose lease expired (a worker died), read at scrape time.
    pub expired_leases: IntGauge,
    /// Jobs this process's workers are running now, by kind.
    pub jobs_in_progress: IntGaugeVec,
    /// Seconds the oldest due queued job has waited, read at scrape time.
    pub oldest_queued_seconds: IntGauge,
    /// 1 for each deployment-wide role this process holds now (`sweeper`, `reconcile`,
    /// `reembed`, `index-owner` …), else 0.
    pub role_held: IntGaugeVec,
    /// Times this process took a role over (at start or from a holder that died).
    pub role_takeovers: IntCounterVec,
    /// Images waiting in the review queue by reason, read at scrape time.
    pub review_waiting: IntGaugeVec,
    /// Seconds the oldest image waiting for each reason has waited, read at scrape time.
    pub review_oldest_seconds: IntGaugeVec,
    /// Object keys in the withheld list this process last published.
    pub withheld_keys: IntGauge,
    /// Objects moved between tiers, by direction (`to_cold`, `to_hot`).
    pub tier_moves: IntCounterVec,
    /// Archive restores by outcome (`requested`, `restored`).
    pub restores: IntCounterVec,
    /// Access batches pushed by edges, by outcome (`recorded`, `duplicate`, `refused`).
    pub access_batches: IntCounterVec,
    /// Stored bytes by tier and kind, read at scrape time.
    pub storage_bytes: IntGaugeVec,
    /// Stored objects by tier and kind, read at scrape time.
    pub storage_objects: IntGaugeVec,
    /// Requests refused unread because their network made too many failed authentications.
    pub failed_auth_refused: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    /// Creates and registers every metric, plus `extra` gauges owned elsewhere (the image
    /// worker pool's).
    pub fn new(extra: &[IntGauge]) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let hist = |name: &str, help: &str, labels: &[&str]| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )
        };
        let m = Metrics {
            requests: IntCounterVec::new(
                Opts::new("flexphoto_api_requests_total", "API responses"),
                &["route", "method", "status"],
            )?,
            failed_auth_refused: IntCounter::new(
                "flexphoto_failed_auth_refused_total",
                "Requests refused (429) because their network failed to authenticate too often",
            )?,
            request_seconds: hist(
                "flexphoto_api_request_seconds",
                "API latency, seconds",
                &["route"],
            )?,
            jobs: IntCounterVec::new(
                Opts::new("flexphoto_jobs_finished_total", "Finished job attempts"),
                &["kind", "outcome"],
            )?,
            job_seconds: hist(
                "flexphoto_job_seconds",
                "Job attempt duration, seconds",
                &["kind"],
            )?,
            stage_seconds: hist(
                "flexphoto_ingest_stage_seconds",
                "Processing time per image and stage, seconds",
                &["stage"],
            )?,
            queue_jobs: IntGaugeVec::new(
                Opts::new("flexphoto_queue_jobs", "Jobs by kind and state"),
                &["kind", "state"],
            )?,
            images: IntGaugeVec::new(
                Opts::new("flexphoto_images", "Images by status"),
                &["status"],
            )?,
            expired_leases: IntGauge::new(
                "flexphoto_queue_expired_leases",
                "Running jobs whose lease expired",
            )?,
            jobs_in_progress: IntGaugeVec::new(
                Opts::new(
                    "flexphoto_jobs_in_progress",
                    "Jobs this process's workers are running now",
                ),
                &["kind"],
            )?,
            oldest_queued_seconds: IntGauge::new(
                "flexphoto_queue_oldest_queued_seconds",
                "Seconds the oldest due queued job has waited",
            )?,
            role_held: IntGaugeVec::new(
                Opts::new(
                    "flexphoto_cluster_role_held",
                    "1 for each deployment-wide role this process holds",
                ),
                &["role"],
            )?,
            role_takeovers: IntCounterVec::new(
                Opts::new(
                    "flexphoto_cluster_role_acquired_total",
                    "Times this process took a role",
                ),
                &["role"],
            )?,
            review_waiting: IntGaugeVec::new(
                Opts::new(
                    "flexphoto_review_waiting",
                    "Images in the review queue by reason",
                ),
                &["reason"],
            )?,
            review_oldest_seconds: IntGaugeVec::new(
                Opts::new(
                    "flexphoto_review_oldest_seconds",
                    "Seconds the oldest image in the review queue has waited, by reason",
                ),
                &["reason"],
            )?,
            withheld_keys: IntGauge::new(
                "flexphoto_withheld_keys",
                "Object keys in the last published withheld list",
            )?,
            tier_moves: IntCounterVec::new(
                Opts::new(
                    "flexphoto_tier_moves_total",
                    "Objects moved between storage tiers",
                ),
                &["direction"],
            )?,
            restores: IntCounterVec::new(
                Opts::new("flexphoto_restores_total", "Archive restores"),
                &["outcome"],
            )?,
            access_batches: IntCounterVec::new(
                Opts::new(
                    "flexphoto_access_batches_total",
                    "Access statistics batches pushed by edges",
                ),
                &["outcome"],
            )?,
            storage_bytes: IntGaugeVec::new(
                Opts::new("flexphoto_storage_bytes", "Stored bytes by tier and kind"),
                &["tier", "kind"],
            )?,
            storage_objects: IntGaugeVec::new(
                Opts::new(
                    "flexphoto_storage_objects",
                    "Stored objects by tier and kind",
                ),
                &["tier", "kind"],
            )?,
            registry,
        };
        m.registry.register(Box::new(m.requests.clone()))?;
        m.registry.register(Box::new(m.request_seconds.clone()))?;
        m.registry
            .register(Box::new(m.failed_auth_refused.clone()))?;
        m.registry.register(Box::new(m.jobs.clone()))?;
        m.registry.register(Box::new(m.job_seconds.clone()))?;
        m.registry.register(Box::new(m.stage_seconds.clone()))?;
        m.registry.register(Box::new(m.queue_jobs.clone()))?;
        m.registry.register(Box::new(m.images.clone()))?;
        m.registry.register(Box::new(m.expired_leases.clone()))?;
        m.registry.register(Box::new(m.jobs_in_progress.clone()))?;
        m.registry
            .register(Box::new(m.oldest_queued_seconds.clone()))?;
        m.registry.register(Box::new(m.role_held.clone()))?;
        m.registry.register(Box::new(m.role_takeovers.clone()))?;
        m.registry.register(Box::new(m.review_waiting.clone()))?;
        m.registry
            .register(Box::new(m.review_oldest_seconds.clone()))?;
        m.registry.register(Box::new(m.withheld_keys.clone()))?;
        m.registry.register(Box::new(m.tier_moves.clone()))?;
        m.registry.register(Box::new(m.restores.clone()))?;
        m.registry.register(Box::new(m.access_batches.clone()))?;
        m.registry.register(Box::new(m.storage_bytes.clone()))?;
        m.registry.register(Box::new(m.storage_objects.clone()))?;
        for g in extra {
            m.registry.register(Box::new(g.clone()))?;
        }
        Ok(m)
    }

    /// Records one image's stage times.
    pub fn observe_stages(&self, t: &StageTimings) {
        for (stage, d) in t.stages() {
            self.stage_seconds
                .with_label_values(&[stage.as_str()])
                .observe(d.as_secs_f64());
        }
    }

    /// Records one image's embedding (at ingest or a re-embed) as the `embed` stage.
    pub fn observe_embedding(&self, took: std::time::Duration) {
        self.stage_seconds
            .with_label_values(&[EMBED_STAGE])
            .observe(took.as_secs_f64());
    }

    /// Every ingest stage recorded so far: its name, images timed and their total seconds.
    pub fn stage_totals(&self) -> std::collections::BTreeMap<String, (u64, f64)> {
        let mut out = std::collections::BTreeMap::new();
        for family in prometheus::core::Collector::collect(&self.stage_seconds) {
            for m in family.get_metric() {
                let Some(stage) = m.get_label().iter().find(|l| l.name() == "stage") else {
                    continue;
                };
                let h = m.get_histogram();
                out.insert(
                    stage.value().to_owned(),
                    (h.get_sample_count(), h.get_sample_sum()),
                );
            }
        }
        out
    }

    /// Sets the scrape-time gauges from the database's view of the queue.
    pub fn set_queue(&self, s: &QueueStats) {
        self.queue_jobs.reset();
        for (kind, states) in &s.by_kind {
            for (state, n) in states {
                self.queue_jobs.with_label_values(&[kind, state]).set(*n);
            }
        }
        self.images.reset();
        for (status, n) in &s.images {
            self.images.with_label_values(&[status]).set(*n);
        }
        self.expired_leases.set(s.expired_leases);
        self.oldest_queued_seconds
            .set(s.oldest_queued_secs.unwrap_or(0.0).round() as i64);
    }

    /// Sets the review queue gauges: `(reason, waiting, oldest age in seconds)`.
    pub fn set_review(&self, by_reason: &[(String, i64, i64)]) {
        self.review_waiting.reset();
        self.review_oldest_seconds.reset();
        for (reason, n, age) in by_reason {
            self.review_waiting.with_label_values(&[reason]).set(*n);
            self.review_oldest_seconds
                .with_label_values(&[reason])
                .set(*age);
        }
    }

    /// Sets the storage gauges from the catalog's counts.
    pub fn set_storage(&self, usage: &[crate::store::lifecycle::StorageUsage]) {
        self.storage_bytes.reset();
        self.storage_objects.reset();
        for u in usage {
            let l = [u.tier.as_str(), u.kind.as_str()];
            self.storage_bytes.with_label_values(&l).set(u.bytes);
            self.storage_objects.with_label_values(&l).set(u.objects);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    #[test]
    fn stages_and_queue_show_up_in_the_exposition() {
        let pool = IntGauge::new("flexphoto_worker_running", "running").unwrap();
        let m = Metrics::new(&[pool]).unwrap();
        let t = StageTimings {
            decode: Duration::from_millis(80),
            variants: vec![("thumb".into(), Duration::from_millis(10))],
            ..Default::default()
        };
        m.observe_stages(&t);
        m.observe_embedding(Duration::from_millis(30));
        m.observe_embedding(Duration::from_millis(20));
        let totals = m.stage_totals();
        assert_eq!(totals["embed"].0, 2);
        assert!((totals["embed"].1 - 0.05).abs() < 1e-9);
        assert_eq!(totals["variant:thumb"].0, 1);
        let mut by_kind = BTreeMap::new();
        by_kind.insert(
            "process".to_owned(),
            BTreeMap::from([("queued".to_owned(), 3i64)]),
        );
        m.set_queue(&QueueStats {
            jobs: BTreeMap::new(),
            by_kind,
            expired_leases: 1,
            oldest_queued_secs: Some(4.4),
            images: BTreeMap::from([("ready".to_owned(), 7i64)]),
        });
        let text = m.render();
        assert!(text.contains("flexphoto_ingest_stage_seconds_count{stage=\"decode\"} 1"));
        assert!(text.contains("stage=\"variant:thumb\""));
        assert!(text.contains("flexphoto_ingest_stage_seconds_count{stage=\"embed\"} 2"));
        assert!(text.contains("flexphoto_queue_jobs{kind=\"process\",state=\"queued\"} 3"));
        assert!(text.contains("flexphoto_images{status=\"ready\"} 7"));
        assert!(text.contains("flexphoto_queue_oldest_queued_seconds 4"));
        assert!(text.contains("flexphoto_worker_running 0"));
    }
}
