//! Access statistics: requests and bytes served per source object key (every size and
//! format of an object counts for its key), cache hits included, aggregated in memory and
//! pushed to the control plane in batches (`POST /v1/access/batches`, with an API key of
//! role `edge`).
//!
//! The hit path pays one hash and one uncontended lock of one of [`SHARDS`] maps. A pusher
//! thread swaps the maps out every interval, cuts batches with ids of their own (a retried
//! push carries the same id, so the control plane counts it once), and keeps unsent batches
//! in a bounded buffer while the control plane is away; when the buffer is full the oldest
//! batch is dropped and its requests are counted (`flexphoto_access_dropped_requests_total`,
//! and reported in the next batch's `dropped`).

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{IntCounter, IntCounterVec, IntGauge};

/// Maps the counts are spread over, so concurrent requests rarely share a lock.
pub const SHARDS: usize = 16;

/// Counts for one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests answered.
    pub requests: u64,
    /// Body bytes sent.
    pub bytes: u64,
    /// Requests answered from a cache tier.
    pub hits: u64,
}

/// The in-memory counters.
pub struct AccessCounter {
    shards: Vec<Mutex<HashMap<Arc<str>, Counts>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for AccessCounter {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl AccessCounter {
    /// Counts one answer for `key`: `bytes` sent, `hit` when a cache answered.
    pub fn record(&self, key: &Arc<str>, bytes: u64, hit: bool) {
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        if let Ok(mut map) = shard.lock() {
            let c = match map.get_mut(&**key) {
                Some(c) => c,
                None => map.entry(Arc::clone(key)).or_default(),
            };
            c.requests += 1;
            c.bytes += bytes;
            c.hits += u64::from(hit);
        }
    }

    /// Takes every count so far, leaving the counters empty.
    pub fn drain(&self) -> Vec<(Arc<str>, Counts)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            if let Ok(mut map) = shard.lock() {
                out.extend(std::mem::take(&mut *map));
            }
        }
        out
    }
}

/// Where and how the counts are pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushConfig {
    /// The control plane's base URL.
    pub url: String,
    /// An API key of role `edge`.
    pub key: String,
    /// This edge's name in the statistics.
    pub edge: String,
    /// This edge's own URL, reported for operators.
    pub edge_url: Option<String>,
    /// Between pushes.
    pub interval: Duration,
    /// Most keys per batch.
    pub max_items: usize,
    /// Most unsent batches kept while the control plane is away.
    pub buffer_batches: usize,
}

/// One batch as pushed.
#[derive(Debug, Clone, serde::Serialize)]
struct Batch {
    batch_id: String,
    edge: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    edge_url: Option<String>,
    period_start: String,
    period_end: String,
    items: Vec<Item>,
    dropped: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
struct Item {
    key: String,
    requests: u64,
    bytes: u64,
    hits: u64,
}

/// The pusher's metrics.
#[derive(Clone)]
pub struct PushMetrics {
    /// Pushes by outcome (`sent`, `retry`, `refused`).
    pub pushes: IntCounterVec,
    /// Requests counted but never delivered.
    pub dropped: IntCounter,
    /// Batches waiting to be sent.
    pub buffered: IntGauge,
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Days since 1970 → civil date (Howard Hinnant's algorithm), then the time of day.
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Cuts the counts into batches and keeps them until the control plane has them.
pub struct Pusher {
    cfg: PushConfig,
    counter: Arc<AccessCounter>,
    metrics: PushMetrics,
    buffer: VecDeque<Batch>,
    /// Requests dropped since the last batch that reported them.
    dropped_unreported: u64,
    period_start: SystemTime,
    seq: AtomicU64,
    /// Distinguishes this process's batches from a previous run's.
    run: String,
}

impl Pusher {
    /// A pusher of `counter`'s counts.
    pub fn new(cfg: PushConfig, counter: Arc<AccessCounter>, metrics: PushMetrics) -> Self {
        let now = SystemTime::now();
        Self {
            run: format!(
                "{:x}",
                now.duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            ),
            cfg,
            counter,
            metrics,
            buffer: VecDeque::new(),
            dropped_unreported: 0,
            period_start: now,
            seq: AtomicU64::new(0),
        }
    }

    /// Moves the counts so far into batches at the end of the buffer.
    pub fn cut(&mut self) {
        let now = SystemTime::now();
        let counts = self.counter.drain();
        let start = std::mem::replace(&mut self.period_start, now);
        if counts.is_empty() && self.dropped_unreported == 0 {
            return;
        }
        let edge: String = self
            .cfg
            .edge
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .take(40)
            .collect();
        let mut chunks: Vec<Vec<Item>> = counts
            .chunks(self.cfg.max_items.max(1))
            .map(|c| {
                c.iter()
                    .map(|(k, v)| Item {
                        key: k.to_string(),
                        requests: v.requests,
                        bytes: v.bytes,
                        hits: v.hits,
                    })
                    .collect()
            })
            .collect();
        if chunks.is_empty() {
            chunks.push(Vec::new());
        }
        for items in chunks {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            let batch = Batch {
                batch_id: format!("{edge}:{}:{seq}", self.run),
                edge: self.cfg.edge.clone(),
                edge_url: self.cfg.edge_url.clone(),
                period_start: rfc3339(start),
                period_end: rfc3339(now),
                items,
                dropped: std::mem::take(&mut self.dropped_unreported),
            };
            self.buffer.push_back(batch);
        }
        while self.buffer.len() > self.cfg.buffer_batches.max(1) {
            if let Some(old) = self.buffer.pop_front() {
                let lost: u64 = old.items.iter().map(|i| i.requests).sum();
                self.dropped_unreported += lost + old.dropped;
                self.metrics.dropped.inc_by(lost);
            }
        }
        self.metrics.buffered.set(self.buffer.len() as i64);
    }

    /// Sends buffered batches in order until one fails; returns how many went.
    pub async fn flush(&mut self, client: &reqwest::Client) -> usize {
        let url = format!("{}/v1/access/batches", self.cfg.url.trim_end_matches('/'));
        let mut sent = 0;
        while let Some(batch) = self.buffer.front() {
            let body = match serde_json::to_vec(batch) {
                Ok(b) => b,
                Err(_) => {
                    self.buffer.pop_front();
                    continue;
                }
            };
            let answer = client
                .post(&url)
                .bearer_auth(&self.cfg.key)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            match answer {
                Ok(r) if r.status().is_success() => {
                    self.buffer.pop_front();
                    self.metrics.pushes.with_label_values(&["sent"]).inc();
                    sent += 1;
                }
                Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                    // Retrying cannot help (a bad key or a batch it refuses): drop it, loudly.
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    tracing::error!(%status, answer = %text, "the control plane refused access statistics; dropping the batch");
                    if let Some(old) = self.buffer.pop_front() {
                        let lost: u64 = old.items.iter().map(|i| i.requests).sum();
                        self.metrics.dropped.inc_by(lost);
                    }
                    self.metrics.pushes.with_label_values(&["refused"]).inc();
                }
                Ok(r) => {
                    tracing::warn!(status = %r.status(), buffered = self.buffer.len(), "pushing access statistics failed; keeping them for the next try");
                    self.metrics.pushes.with_label_values(&["retry"]).inc();
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, buffered = self.buffer.len(), "the control plane is unreachable; keeping access statistics for the next try");
                    self.metrics.pushes.with_label_values(&["retry"]).inc();
                    break;
                }
            }
        }
        self.metrics.buffered.set(self.buffer.len() as i64);
        sent
    }

    /// Batches waiting.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Cuts and pushes every interval, forever (on a thread of its own).
    pub fn spawn(mut self) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("access-push".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "access statistics: no runtime; not pushing");
                        return;
                    }
                };
                let client = match reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .connect_timeout(Duration::from_secs(5))
                    .build()
                {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "access statistics: no HTTP client; not pushing");
                        return;
                    }
                };
                rt.block_on(async move {
                    loop {
                        tokio::time::sleep(self.cfg.interval).await;
                        self.cut();
                        self.flush(&client).await;
                    }
                });
            })
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> PushMetrics {
        PushMetrics {
            pushes: IntCounterVec::new(prometheus::Opts::new("p", "p"), &["outcome"]).unwrap(),
            dropped: IntCounter::new("d", "d").unwrap(),
            buffered: IntGauge::new("b", "b").unwrap(),
        }
    }

    fn cfg(buffer: usize, max_items: usize) -> PushConfig {
        PushConfig {
            url: "http://127.0.0.1:9".into(),
            key: "k".into(),
            edge: "edge one".into(),
            edge_url: None,
            interval: Duration::from_secs(60),
            max_items,
            buffer_batches: buffer,
        }
    }

    #[test]
    fn counts_roll_up_per_key_and_drain_once() {
        let c = AccessCounter::default();
        let a: Arc<str> = Arc::from("a.jpg");
        let b: Arc<str> = Arc::from("b.jpg");
        c.record(&a, 100, false);
        c.record(&a, 50, true);
        c.record(&b, 7, true);
        let mut got = c.drain();
        got.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            got,
            vec![
                (
                    a.clone(),
                    Counts {
                        requests: 2,
                        bytes: 150,
                        hits: 1
                    }
                ),
                (
                    b,
                    Counts {
                        requests: 1,
                        bytes: 7,
                        hits: 1
                    }
                )
            ]
        );
        assert!(c.drain().is_empty());
    }

    #[test]
    fn batches_are_cut_bounded_and_overflow_is_counted() {
        let counter = Arc::new(AccessCounter::default());
        let m = metrics();
        let mut p = Pusher::new(cfg(2, 2), counter.clone(), m.clone());
        for k in ["a", "b", "c"] {
            counter.record(&Arc::from(k), 10, false);
        }
        p.cut();
        // Three keys, two per batch: two batches with distinct ids.
        assert_eq!(p.buffered(), 2);
        let ids: Vec<&str> = p.buffer.iter().map(|b| b.batch_id.as_str()).collect();
        assert_ne!(ids[0], ids[1]);
        assert!(ids[0].starts_with("edge-one:"));
        // A third batch overflows the buffer of two: the oldest goes and is counted.
        counter.record(&Arc::from("d"), 10, false);
        p.cut();
        assert_eq!(p.buffered(), 2);
        assert_eq!(m.dropped.get(), 2, "the oldest batch held two requests");
        // The next batch reports what was lost.
        p.cut();
        assert_eq!(p.buffer.back().map(|b| b.dropped), Some(2));
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_767_225_600 + 3661)),
            "2026-01-01T01:01:01Z"
        );
    }
}
