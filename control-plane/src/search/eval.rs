//! `flexphoto eval-search`: measures search quality instead of assuming it.
//!
//! It starts the service in-process on a scratch data directory, ingests a labelled photo set
//! through the HTTP API like any client, runs each text query of its `queries.json` and
//! reports recall@1/@5/@10 and mean reciprocal rank, overall and per query group (`group` of
//! each query: objects, people, scenes, textures), each MRR with its 95 % bootstrap interval
//! over the queries (how far another draw of such queries could move it), and the ingest
//! cost per image (process CPU-ms, peak RSS). Then it makes near-duplicates of real photos
//! ([`EDITS`]: half size, JPEG quality 30, 5 % and 10 % crops, a 3° turn), ingests them
//! beside their originals under another owner, and reports the precision and recall of the
//! pairs the pipeline recorded (every cross-photo pair is a negative). It also scores every
//! pair by each signal and chooses, on half of the photos, the loosest threshold keeping
//! precision ≥ 0.99, then reports that threshold on the other half.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::state::AppState;

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Reading the fixtures.
    #[error("{0}")]
    Fixtures(String),
    /// Starting the service.
    #[error("starting the service: {0}")]
    Start(String),
    /// A request failed.
    #[error("{0}")]
    Api(String),
}

/// `queries.json` of a labelled set.
#[derive(Debug, Deserialize)]
struct QueryFile {
    labelled_files: Vec<String>,
    queries: Vec<LabelledQuery>,
}

#[derive(Debug, Deserialize)]
struct LabelledQuery {
    query: String,
    relevant: Vec<String>,
    /// Query group (objects, people, scenes, textures); `all` when not given.
    #[serde(default)]
    group: Option<String>,
}

/// Ranking figures of one query group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupQuality {
    /// Queries in the group.
    pub queries: usize,
    /// Share with a relevant image first.
    pub recall_at_1: f64,
    /// In the top 5.
    pub recall_at_5: f64,
    /// In the top 10.
    pub recall_at_10: f64,
    /// Mean reciprocal rank (0 when none in the top 10).
    pub mrr: f64,
    /// 95 % bootstrap interval of `mrr` over the group's queries: `[low, high]`.
    pub mrr_interval_95: [f64; 2],
}

/// What ingesting the labelled photos cost this process.
#[derive(Debug, Clone, Serialize)]
pub struct IngestCost {
    /// Photos ingested.
    pub images: usize,
    /// Process CPU time (all threads: decoding, variants, embedding, database, HTTP) per
    /// photo, milliseconds.
    pub cpu_ms_per_image: f64,
    /// Peak resident set size of the process so far, MiB.
    pub peak_rss_mib: f64,
    /// Time of the embedding models alone per photo (the `embed` ingest stage, on a worker
    /// thread), milliseconds: steadier than the whole process's CPU on a shared machine.
    pub embed_ms_per_image: f64,
    /// Wall time per photo of every ingest stage (`decode`, `variant:{name}`, `embed` …) on
    /// its worker thread, milliseconds.
    pub stage_ms_per_image: BTreeMap<String, f64>,
}

/// Milliseconds per image of each stage between two snapshots of the stage totals; the
/// `embed` stage also fills `embed_ms_per_image`.
fn stage_costs(
    before: &BTreeMap<String, (u64, f64)>,
    after: &BTreeMap<String, (u64, f64)>,
) -> IngestCost {
    let stage_ms_per_image: BTreeMap<String, f64> = after
        .iter()
        .filter_map(|(stage, (n, secs))| {
            let (n0, secs0) = before.get(stage).copied().unwrap_or_default();
            let images = n.saturating_sub(n0);
            (images > 0).then(|| (stage.clone(), (secs - secs0) * 1000.0 / images as f64))
        })
        .collect();
    IngestCost {
        images: 0,
        cpu_ms_per_image: 0.0,
        peak_rss_mib: 0.0,
        embed_ms_per_image: stage_ms_per_image
            .get(crate::metrics::EMBED_STAGE)
            .copied()
            .unwrap_or_default(),
        stage_ms_per_image,
    }
}

/// Process CPU seconds so far (user + system, all threads), to the nanosecond.
pub(crate) fn process_cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) } != 0 {
        return 0.0;
    }
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// Peak resident set size (VmHWM), MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Search quality on the labelled set.
#[derive(Debug, Clone, Serialize)]
pub struct SearchQuality {
    /// Queries run.
    pub queries: usize,
    /// Images indexed.
    pub images: usize,
    /// Share of queries with a relevant image in the top 1 / 5 / 10.
    pub recall_at_1: f64,
    /// At 5.
    pub recall_at_5: f64,
    /// At 10.
    pub recall_at_10: f64,
    /// Mean reciprocal rank of the first relevant image (0 when none in the top 10).
    pub mrr: f64,
    /// 95 % bootstrap interval of `mrr` over the queries: `[low, high]`. With a few dozen
    /// queries one rank moves the MRR by a few hundredths; this says how much more.
    pub mrr_interval_95: [f64; 2],
    /// Per query: the rank of its first relevant image (1-based), if in the top 10.
    pub ranks: BTreeMap<String, Option<usize>>,
    /// Text query latency through the API, milliseconds, p50 / max.
    pub query_ms_p50: f64,
    /// Max.
    pub query_ms_max: f64,
    /// The same figures per query group.
    pub groups: BTreeMap<String, GroupQuality>,
    /// What ingesting the labelled photos cost.
    pub ingest: IngestCost,
}

/// Near-duplicate detection quality.
#[derive(Debug, Clone, Serialize)]
pub struct DuplicateQuality {
    /// Original photos used.
    pub photos: usize,
    /// Images ingested (originals and their edits).
    pub images: usize,
    /// True pairs (same photo).
    pub expected_pairs: usize,
    /// Per method (`phash`, `embedding`, `any`): pairs found, true among them, precision,
    /// recall; read once every job of the ingest (the duplicate searches) has run.
    pub methods: BTreeMap<String, MethodQuality>,
    /// The same, read as soon as every image was ready (duplicate searches still queued
    /// behind other images' processing are missing).
    pub methods_at_ready: BTreeMap<String, MethodQuality>,
    /// Per signal: a threshold chosen on half of the photos, reported on the other half.
    pub thresholds: Vec<ThresholdChoice>,
}

/// A threshold chosen on one half of the duplicate photos and reported on the other.
#[derive(Debug, Clone, Serialize)]
pub struct ThresholdChoice {
    /// `visual_cosine` (at least), `dhash_bits` (at most) or `layout_similarity` (at least,
    /// for pairs from the configured candidate cosine up; closer pairs always count).
    pub signal: String,
    /// The loosest threshold with precision ≥ 0.99 on the choosing half.
    pub threshold: f64,
    /// Figures on the half it was chosen on.
    pub chosen_on: SplitFigures,
    /// Figures on the other half.
    pub reported_on: SplitFigures,
}

/// Precision and recall of one threshold on one half.
#[derive(Debug, Clone, Serialize)]
pub struct SplitFigures {
    /// Photos in the half.
    pub photos: usize,
    /// True pairs among them.
    pub true_pairs: usize,
    /// Pairs at or past the threshold.
    pub found: usize,
    /// True / found.
    pub precision: f64,
    /// True found / true pairs.
    pub recall: f64,
}

/// One method's figures.
#[derive(Debug, Clone, Serialize)]
pub struct MethodQuality {
    /// Pairs recorded.
    pub found: usize,
    /// Of which true.
    pub true_positives: usize,
    /// true / found.
    pub precision: f64,
    /// true / expected.
    pub recall: f64,
}

/// Both reports.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Model that made the vectors.
    pub model: String,
    /// Search quality.
    pub search: SearchQuality,
    /// Duplicate quality.
    pub duplicates: Option<DuplicateQuality>,
}

struct Client {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Client {
    /// Sends the request `build` makes, waiting and sending it again while the service answers
    /// 429 (polling a hundred images can exceed the per-key rate limit).
    async fn send(
        &self,
        what: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, EvalError> {
        const TRIES: usize = 30;
        for _ in 0..TRIES {
            let r = build()
                .send()
                .await
                .map_err(|e| EvalError::Api(format!("{what}: {e}")))?;
            if r.status() != reqwest::StatusCode::TOO_MANY_REQUESTS {
                return Ok(r);
            }
            let wait = r
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait.clamp(1, 5))).await;
        }
        Err(EvalError::Api(format!(
            "{what}: still rate limited after {TRIES} tries"
        )))
    }

    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Result<Value, EvalError> {
        let r = self
            .send(path, || {
                let req = self
                    .http
                    .request(method.clone(), format!("{}{path}", self.base))
                    .bearer_auth(&self.key);
                if body.is_null() {
                    req
                } else {
                    req.json(&body)
                }
            })
            .await?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if status.as_u16() >= 400 {
            return Err(EvalError::Api(format!("{path}: HTTP {status}: {v}")));
        }
        Ok(v)
    }

    /// Uploads one file; returns its id (also for a 409 duplicate).
    async fn upload(&self, owner: &str, name: &str, data: &[u8]) -> Result<String, EvalError> {
        let r = self
            .send(&format!("upload of {name}"), || {
                let part = reqwest::multipart::Part::bytes(data.to_vec())
                    .file_name(name.to_owned())
                    .mime_str("application/octet-stream")
                    .unwrap_or_else(|_| reqwest::multipart::Part::bytes(data.to_vec()));
                let form = reqwest::multipart::Form::new()
                    .text("owner", owner.to_owned())
                    .part("file", part);
                self.http
                    .post(format!("{}/v1/images", self.base))
                    .bearer_auth(&self.key)
                    .multipart(form)
            })
            .await?;
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        match status {
            201 => v["id"].as_str(),
            409 => v["existing_id"].as_str(),
            s => return Err(EvalError::Api(format!("upload of {name}: HTTP {s}: {v}"))),
        }
        .map(str::to_owned)
        .ok_or_else(|| EvalError::Api(format!("upload of {name}: no id in {v}")))
    }

    /// Waits until no job is queued or running (the duplicate searches and payload syncs that
    /// follow an image's processing).
    async fn wait_idle(&self, limit: Duration) -> Result<(), EvalError> {
        let start = Instant::now();
        loop {
            let v = self
                .json(reqwest::Method::GET, "/v1/jobs/stats", Value::Null)
                .await?;
            let jobs = &v["queue"]["jobs"];
            if jobs["queued"].is_null() && jobs["running"].is_null() {
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(EvalError::Api(format!(
                    "jobs still queued after {limit:?}: {jobs}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every image is ready or failed; returns the failed ones with reasons.
    async fn wait_all(&self, ids: &[String], limit: Duration) -> Result<Vec<String>, EvalError> {
        let start = Instant::now();
        let mut pending: Vec<&String> = ids.iter().collect();
        let mut failed = Vec::new();
        while !pending.is_empty() {
            if start.elapsed() > limit {
                return Err(EvalError::Api(format!(
                    "{} images still processing after {limit:?}",
                    pending.len()
                )));
            }
            let mut still = Vec::new();
            for id in pending {
                let v = self
                    .json(
                        reqwest::Method::GET,
                        &format!("/v1/images/{id}"),
                        Value::Null,
                    )
                    .await?;
                match v["status"].as_str() {
                    Some("ready") => {}
                    Some("failed") => failed.push(format!("{id}: {}", v["error"])),
                    _ => still.push(id),
                }
            }
            pending = still;
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(failed)
    }
}

/// Runs both evaluations. `cfg` should point at a scratch data directory; `fixtures` is the
/// folder holding `labelled/queries.json` (its paths are relative to it) and, optionally,
/// `photos/` for the duplicate set.
pub async fn run(cfg: Config, fixtures: &Path) -> Result<EvalReport, EvalError> {
    let qpath = fixtures.join("labelled").join("queries.json");
    let text = std::fs::read_to_string(&qpath)
        .map_err(|e| EvalError::Fixtures(format!("cannot read {}: {e}", qpath.display())))?;
    let qf: QueryFile = serde_json::from_str(&text)
        .map_err(|e| EvalError::Fixtures(format!("{}: {e}", qpath.display())))?;

    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| EvalError::Start(e.to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| EvalError::Start(e.to_string()))?;
    let mut cfg = cfg;
    cfg.public_url = format!("http://{addr}");
    let state = AppState::build(cfg)
        .await
        .map_err(|e| EvalError::Start(e.to_string()))?;
    let model = state
        .search
        .as_ref()
        .map(|s| s.model_id.clone())
        .ok_or_else(|| EvalError::Start("search.model is \"none\": nothing to evaluate".into()))?;
    let key = crate::auth::generate_key();
    crate::auth::seed_admin_key(&state.db, Some(&key))
        .await
        .map_err(|e| EvalError::Start(e.to_string()))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::app::serve(
        Arc::clone(&state),
        listener,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let client = Client {
        base: format!("http://{addr}"),
        key,
        http: crate::http_client::client_with_timeout(Duration::from_secs(120))
            .map_err(|e| EvalError::Start(e.to_string()))?,
    };
    let result = async {
        let search = eval_queries(&state, &client, fixtures, &qf).await?;
        let duplicates = eval_duplicates(&state, &client, fixtures).await?;
        Ok(EvalReport {
            model,
            search,
            duplicates,
        })
    }
    .await;
    let _ = stop_tx.send(());
    let _ = server.await;
    result
}

async fn eval_queries(
    state: &AppState,
    client: &Client,
    fixtures: &Path,
    qf: &QueryFile,
) -> Result<SearchQuality, EvalError> {
    let owner = "eval-search";
    let cpu_before = process_cpu_seconds();
    let stages_before = state.metrics.stage_totals();
    let mut id_of: HashMap<String, String> = HashMap::new();
    for rel in &qf.labelled_files {
        let path = fixtures.join(rel);
        let data = std::fs::read(&path)
            .map_err(|e| EvalError::Fixtures(format!("cannot read {}: {e}", path.display())))?;
        let id = client.upload(owner, rel, &data).await?;
        id_of.insert(rel.clone(), id);
    }
    let ids: Vec<String> = id_of.values().cloned().collect();
    let failed = client.wait_all(&ids, Duration::from_secs(600)).await?;
    if !failed.is_empty() {
        return Err(EvalError::Api(format!(
            "labelled images failed: {failed:?}"
        )));
    }
    let ingest = IngestCost {
        images: qf.labelled_files.len(),
        cpu_ms_per_image: (process_cpu_seconds() - cpu_before) * 1000.0
            / qf.labelled_files.len().max(1) as f64,
        peak_rss_mib: peak_rss_mib(),
        ..stage_costs(&stages_before, &state.metrics.stage_totals())
    };
    let file_of: HashMap<&str, &str> = id_of
        .iter()
        .map(|(f, i)| (i.as_str(), f.as_str()))
        .collect();
    let mut ranks = BTreeMap::new();
    // Every query's rank, and each group's, in query order.
    let mut all_ranks: Vec<Option<usize>> = Vec::new();
    let mut group_ranks: BTreeMap<String, Vec<Option<usize>>> = BTreeMap::new();
    let mut times = Vec::new();
    for q in &qf.queries {
        let t = Instant::now();
        let v = client
            .json(
                reqwest::Method::POST,
                "/v1/search",
                json!({ "text": q.query, "owner": owner, "limit": 10 }),
            )
            .await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        let got: Vec<&str> = v["items"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r["id"].as_str()).collect())
            .unwrap_or_default();
        let relevant: HashSet<&str> = q.relevant.iter().map(String::as_str).collect();
        let rank = got
            .iter()
            .position(|id| file_of.get(id).is_some_and(|f| relevant.contains(f)))
            .map(|p| p + 1);
        group_ranks
            .entry(q.group.clone().unwrap_or_else(|| "all".into()))
            .or_default()
            .push(rank);
        all_ranks.push(rank);
        ranks.insert(q.query.clone(), rank);
    }
    times.sort_by(f64::total_cmp);
    let all = group_quality(&all_ranks);
    Ok(SearchQuality {
        queries: qf.queries.len(),
        images: qf.labelled_files.len(),
        recall_at_1: all.recall_at_1,
        recall_at_5: all.recall_at_5,
        recall_at_10: all.recall_at_10,
        mrr: all.mrr,
        mrr_interval_95: all.mrr_interval_95,
        ranks,
        query_ms_p50: times.get(times.len() / 2).copied().unwrap_or(0.0),
        query_ms_max: times.last().copied().unwrap_or(0.0),
        groups: group_ranks
            .into_iter()
            .map(|(k, r)| (k, group_quality(&r)))
            .collect(),
        ingest,
    })
}

/// The ranking figures of queries whose first relevant images came at `ranks` (1-based;
/// `None` when not in the top 10).
fn group_quality(ranks: &[Option<usize>]) -> GroupQuality {
    let n = ranks.len().max(1) as f64;
    let share = |k: usize| ranks.iter().filter(|r| r.is_some_and(|r| r <= k)).count() as f64 / n;
    let rr: Vec<f64> = ranks
        .iter()
        .map(|r| r.map_or(0.0, |r| 1.0 / r as f64))
        .collect();
    GroupQuality {
        queries: ranks.len(),
        recall_at_1: share(1),
        recall_at_5: share(5),
        recall_at_10: share(10),
        mrr: rr.iter().sum::<f64>() / n,
        mrr_interval_95: super::bootstrap::mean_interval_95(&rr),
    }
}

/// The edits made of each photo for the duplicate set, in this order.
pub const EDITS: [&str; 5] = ["half", "q30", "crop5", "crop10", "rot3"];

/// The edits of one photo for the duplicate set: half size, JPEG quality 30, 5 % and 10 %
/// cropped from every side, and turned by 3° (then cropped to the picture). All but `q30`
/// are saved as JPEG at quality 85.
pub fn edits(data: &Bytes) -> Result<Vec<(&'static str, Bytes)>, String> {
    use flexphoto_media::vips::{Image, Interesting, Size};
    let e = |e: flexphoto_media::vips::VipsError| e.to_string();
    // Decoded once into memory: the loader reads sequentially, and the edits read it twice.
    let decoded = Image::thumbnail(
        data,
        100_000,
        100_000,
        Size::Down,
        Interesting::None,
        true,
        false,
    )
    .and_then(|i| i.to_srgb())
    .map_err(e)?;
    let decoded = if decoded.has_alpha() {
        decoded.flatten([255.0; 3]).map_err(e)?
    } else {
        decoded
    };
    let (w, h, bands) = (decoded.width(), decoded.height(), decoded.bands());
    let pixels = decoded.pixels().map_err(e)?;
    let full = Image::from_pixel_bytes(pixels.clone(), w, h, bands).map_err(e)?;
    let half = full
        .thumbnail_image(
            (w / 2).max(1),
            (h / 2).max(1),
            Size::Down,
            Interesting::None,
        )
        .map_err(e)?;
    let crop = |pct: u32| {
        let (mx, my) = (w * pct / 100, h * pct / 100);
        full.extract(mx, my, w - 2 * mx, h - 2 * my)
    };
    let rotated = rotate_small(&pixels, w, h, bands, 3.0);
    let rotated =
        Image::from_pixel_bytes(Bytes::from(rotated.0), rotated.1, rotated.2, bands).map_err(e)?;
    Ok(vec![
        ("half", half.save(".jpg[Q=85]").map_err(e)?),
        ("q30", full.save(".jpg[Q=30]").map_err(e)?),
        (
            "crop5",
            crop(5).and_then(|c| c.save(".jpg[Q=85]")).map_err(e)?,
        ),
        (
            "crop10",
            crop(10).and_then(|c| c.save(".jpg[Q=85]")).map_err(e)?,
        ),
        ("rot3", rotated.save(".jpg[Q=85]").map_err(e)?),
    ])
}

/// Turns packed 8-bit pixels by `degrees` (bilinear) about the centre and crops the result to
/// the part the picture covers; returns pixels, width and height.
fn rotate_small(px: &[u8], w: u32, h: u32, bands: u32, degrees: f32) -> (Vec<u8>, u32, u32) {
    let (sin, cos) = degrees.to_radians().sin_cos();
    let (wf, hf) = (w as f32, h as f32);
    // Margin that keeps the corners out: (longer side / 2) · sin θ, plus a pixel or two.
    let m = ((wf.max(hf) / 2.0) * sin.abs()).ceil() as u32 + 2;
    let (ow, oh) = (
        w.saturating_sub(2 * m).max(1),
        h.saturating_sub(2 * m).max(1),
    );
    let (cx, cy) = (wf / 2.0, hf / 2.0);
    let b = bands as usize;
    let mut out = vec![0u8; ow as usize * oh as usize * b];
    for y in 0..oh {
        for x in 0..ow {
            let (dx, dy) = ((x + m) as f32 + 0.5 - cx, (y + m) as f32 + 0.5 - cy);
            let sx = (cos * dx + sin * dy + cx - 0.5).clamp(0.0, wf - 1.001);
            let sy = (-sin * dx + cos * dy + cy - 0.5).clamp(0.0, hf - 1.001);
            let (x0, y0) = (sx as usize, sy as usize);
            let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
            let at = |xx: usize, yy: usize, c: usize| f32::from(px[(yy * w as usize + xx) * b + c]);
            for c in 0..b {
                let v = at(x0, y0, c) * (1.0 - fx) * (1.0 - fy)
                    + at(x0 + 1, y0, c) * fx * (1.0 - fy)
                    + at(x0, y0 + 1, c) * (1.0 - fx) * fy
                    + at(x0 + 1, y0 + 1, c) * fx * fy;
                out[(y as usize * ow as usize + x as usize) * b + c] = v.round() as u8;
            }
        }
    }
    (out, ow, oh)
}

fn photo_files(fixtures: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["photos", "labelled"] {
        if let Ok(rd) = std::fs::read_dir(fixtures.join(dir)) {
            for e in rd.flatten() {
                let p = e.path();
                let ext = p
                    .extension()
                    .and_then(|e| e.to_str())
                    .unwrap_or("")
                    .to_ascii_lowercase();
                if ["jpg", "jpeg", "png"].contains(&ext.as_str()) {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

async fn eval_duplicates(
    state: &AppState,
    client: &Client,
    fixtures: &Path,
) -> Result<Option<DuplicateQuality>, EvalError> {
    let owner = "eval-duplicates";
    let files = photo_files(fixtures);
    if files.len() < 2 {
        return Ok(None);
    }
    let mut group_of: HashMap<String, usize> = HashMap::new();
    let mut ids = Vec::new();
    let mut photos = 0;
    for (g, path) in files.iter().enumerate() {
        let data = Bytes::from(
            std::fs::read(path)
                .map_err(|e| EvalError::Fixtures(format!("{}: {e}", path.display())))?,
        );
        let d = data.clone();
        let made = tokio::task::spawn_blocking(move || edits(&d))
            .await
            .map_err(|e| EvalError::Api(e.to_string()))?;
        let made = match made {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(photo = %path.display(), error = %e, "cannot make edits; skipped");
                continue;
            }
        };
        photos += 1;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let id = client.upload(owner, &name, &data).await?;
        group_of.insert(id.clone(), g);
        ids.push(id);
        for (kind, bytes) in made {
            let id = client
                .upload(owner, &format!("{kind}-{name}"), &bytes)
                .await?;
            group_of.insert(id.clone(), g);
            ids.push(id);
        }
    }
    client.wait_all(&ids, Duration::from_secs(900)).await?;
    let per_group = 1 + EDITS.len();
    let expected = photos * per_group * (per_group - 1) / 2;
    let methods_at_ready =
        method_quality(recorded_pairs(client, owner).await?, &group_of, expected);
    client.wait_idle(Duration::from_secs(900)).await?;
    let methods = method_quality(recorded_pairs(client, owner).await?, &group_of, expected);
    let thresholds = choose_thresholds(state, &ids, &group_of).await?;
    Ok(Some(DuplicateQuality {
        photos,
        images: ids.len(),
        expected_pairs: expected,
        methods,
        methods_at_ready,
        thresholds,
    }))
}

/// Pairs recorded for `owner`, per method (`phash`, `embedding`, `any`), each once.
async fn recorded_pairs(
    client: &Client,
    owner: &str,
) -> Result<HashMap<&'static str, HashSet<(String, String)>>, EvalError> {
    let mut found: HashMap<&'static str, HashSet<(String, String)>> = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/duplicates?owner={owner}&limit=500&cursor={c}"),
            None => format!("/v1/duplicates?owner={owner}&limit=500"),
        };
        let v = client
            .json(reqwest::Method::GET, &path, Value::Null)
            .await?;
        let pairs = v["items"].as_array().cloned().unwrap_or_default();
        for p in &pairs {
            let (Some(a), Some(b), Some(m)) = (
                p["image_id"].as_str(),
                p["other_id"].as_str(),
                p["method"].as_str(),
            ) else {
                continue;
            };
            let key = if a < b {
                (a.to_owned(), b.to_owned())
            } else {
                (b.to_owned(), a.to_owned())
            };
            let m: &'static str = if m == "phash" { "phash" } else { "embedding" };
            found.entry(m).or_default().insert(key.clone());
            found.entry("any").or_default().insert(key);
        }
        match v["next_cursor"].as_str() {
            Some(c) if !pairs.is_empty() => cursor = Some(c.to_owned()),
            _ => break,
        }
    }
    Ok(found)
}

/// Precision and recall of the recorded pairs per method; a pair is true when both images
/// are edits of one photo.
fn method_quality(
    mut found: HashMap<&'static str, HashSet<(String, String)>>,
    group_of: &HashMap<String, usize>,
    expected: usize,
) -> BTreeMap<String, MethodQuality> {
    let mut methods = BTreeMap::new();
    for m in ["phash", "embedding", "any"] {
        let set = found.remove(m).unwrap_or_default();
        let tp = set
            .iter()
            .filter(|(a, b)| group_of.contains_key(a) && group_of.get(a) == group_of.get(b))
            .count();
        methods.insert(
            m.to_owned(),
            MethodQuality {
                found: set.len(),
                true_positives: tp,
                precision: if set.is_empty() {
                    1.0
                } else {
                    tp as f64 / set.len() as f64
                },
                recall: if expected == 0 {
                    0.0
                } else {
                    tp as f64 / expected as f64
                },
            },
        );
    }
    methods
}

/// One image of the duplicate set: photo group, visual vector, dHash and grey layout.
type DuplicateItem<'a> = (usize, Vec<f32>, Option<i64>, Option<&'a Vec<u8>>);

/// One scored pair: photo groups of both images and the score.
type ScoredPair = (usize, usize, f64);

/// Scores every pair of `ids` by visual cosine, by dHash distance and by the layout rule the
/// pipeline applies (layout similarity of pairs whose cosine is at least the configured
/// candidate floor; pairs at `min_similarity` and up always count), then chooses each
/// threshold on the photos of even rank and reports it on the odd ones (and the reverse).
async fn choose_thresholds(
    state: &AppState,
    ids: &[String],
    group_of: &HashMap<String, usize>,
) -> Result<Vec<ThresholdChoice>, EvalError> {
    let Some(search) = &state.search else {
        return Ok(Vec::new());
    };
    let image_ids: Vec<crate::domain::ImageId> = ids
        .iter()
        .filter_map(|id| id.parse::<uuid::Uuid>().ok())
        .map(crate::domain::ImageId)
        .collect();
    let layouts: HashMap<uuid::Uuid, Vec<u8>> = state
        .db
        .layouts_of(&image_ids)
        .await
        .map_err(|e| EvalError::Api(e.to_string()))?
        .into_iter()
        .map(|(id, l)| (id.0, l))
        .collect();
    let cfg = &state.cfg.search;
    let mut items: Vec<DuplicateItem> = Vec::new();
    for id in ids {
        let Ok(uuid) = id.parse::<uuid::Uuid>() else {
            continue;
        };
        let (Some(&g), Some(v)) = (
            group_of.get(id),
            search
                .index
                .get(uuid)
                .await
                .map_err(|e| EvalError::Api(e.to_string()))?,
        ) else {
            continue;
        };
        let phash = state
            .db
            .get_image(crate::domain::ImageId(uuid))
            .await
            .map_err(|e| EvalError::Api(e.to_string()))?
            .and_then(|r| r.phash);
        items.push((g, v.visual, phash, layouts.get(&uuid)));
    }
    let (mut cosines, mut bits, mut layout): (Vec<ScoredPair>, Vec<ScoredPair>, Vec<ScoredPair>) =
        (Vec::new(), Vec::new(), Vec::new());
    for i in 0..items.len() {
        for j in i + 1..items.len() {
            let (a, b) = (&items[i], &items[j]);
            let cos: f32 = a.1.iter().zip(&b.1).map(|(x, y)| x * y).sum();
            cosines.push((a.0, b.0, f64::from(cos)));
            if let (Some(floor), Some(x), Some(y)) = (cfg.layout_candidate_similarity, a.3, b.3) {
                let score = if cfg.min_similarity.is_some_and(|m| cos >= m) {
                    f64::INFINITY
                } else if cos >= floor {
                    f64::from(flexphoto_media::fingerprint::layout_similarity(x, y))
                } else {
                    f64::NEG_INFINITY
                };
                layout.push((a.0, b.0, score));
            }
            if let (Some(x), Some(y)) = (a.2, b.2) {
                // Negated so that larger is closer for both signals.
                bits.push((a.0, b.0, -f64::from((x ^ y).count_ones())));
            }
        }
    }
    let mut groups: Vec<usize> = items.iter().map(|i| i.0).collect();
    groups.sort_unstable();
    groups.dedup();
    let half = |parity: usize| -> HashSet<usize> {
        groups
            .iter()
            .enumerate()
            .filter(|(k, _)| k % 2 == parity)
            .map(|(_, g)| *g)
            .collect()
    };
    let mut out = Vec::new();
    for (signal, pairs, sign) in [
        ("visual_cosine", &cosines, 1.0),
        ("dhash_bits", &bits, -1.0),
        ("layout_similarity", &layout, 1.0),
    ] {
        for (choose, report) in [(half(0), half(1)), (half(1), half(0))] {
            let within = |set: &HashSet<usize>| -> Vec<ScoredPair> {
                pairs
                    .iter()
                    .filter(|p| set.contains(&p.0) && set.contains(&p.1))
                    .copied()
                    .collect()
            };
            let (a, b) = (within(&choose), within(&report));
            let t = loosest_threshold(&a, 0.99);
            out.push(ThresholdChoice {
                signal: signal.to_owned(),
                threshold: t * sign,
                chosen_on: figures(&a, t, choose.len()),
                reported_on: figures(&b, t, report.len()),
            });
        }
    }
    Ok(out)
}

/// The lowest score whose pairs at or above it keep `min_precision`, maximising recall.
fn loosest_threshold(pairs: &[ScoredPair], min_precision: f64) -> f64 {
    let mut sorted: Vec<&ScoredPair> = pairs.iter().collect();
    sorted.sort_by(|x, y| y.2.total_cmp(&x.2));
    let (mut tp, mut best) = (0usize, f64::INFINITY);
    for (k, p) in sorted.iter().enumerate() {
        tp += usize::from(p.0 == p.1);
        let next_differs = sorted.get(k + 1).is_none_or(|n| n.2 < p.2);
        if next_differs && p.0 == p.1 && tp as f64 / (k + 1) as f64 >= min_precision {
            best = p.2;
        }
    }
    best
}

fn figures(pairs: &[ScoredPair], threshold: f64, photos: usize) -> SplitFigures {
    let true_pairs = pairs.iter().filter(|p| p.0 == p.1).count();
    let found: Vec<&ScoredPair> = pairs.iter().filter(|p| p.2 >= threshold).collect();
    let tp = found.iter().filter(|p| p.0 == p.1).count();
    SplitFigures {
        photos,
        true_pairs,
        found: found.len(),
        precision: if found.is_empty() {
            1.0
        } else {
            tp as f64 / found.len() as f64
        },
        recall: if true_pairs == 0 {
            0.0
        } else {
            tp as f64 / true_pairs as f64
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_cpu_time_advances_with_work() {
        let start = process_cpu_seconds();
        let wall = Instant::now();
        let mut x = 0u64;
        while process_cpu_seconds() - start < 0.002 && wall.elapsed() < Duration::from_secs(5) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        assert!(start > 0.0 && process_cpu_seconds() - start >= 0.002);
    }

    #[test]
    fn stage_costs_are_per_image_between_snapshots() {
        let before = BTreeMap::from([("decode".to_owned(), (2u64, 0.2))]);
        let after = BTreeMap::from([
            ("decode".to_owned(), (6u64, 0.6)),
            ("embed".to_owned(), (4u64, 0.2)),
            ("idle".to_owned(), (0u64, 0.0)),
        ]);
        let c = stage_costs(&before, &after);
        assert!((c.stage_ms_per_image["decode"] - 100.0).abs() < 1e-9);
        assert!((c.embed_ms_per_image - 50.0).abs() < 1e-9);
        assert!(!c.stage_ms_per_image.contains_key("idle"));
    }

    #[test]
    fn group_figures_come_from_the_ranks() {
        let g = group_quality(&[Some(1), Some(2), None, Some(6)]);
        assert_eq!(g.queries, 4);
        assert_eq!(
            (g.recall_at_1, g.recall_at_5, g.recall_at_10),
            (0.25, 0.5, 0.75)
        );
        assert!((g.mrr - (1.0 + 0.5 + 1.0 / 6.0) / 4.0).abs() < 1e-12);
        let [lo, hi] = g.mrr_interval_95;
        assert!(lo < g.mrr && g.mrr < hi, "{lo} {hi}");
        assert_eq!(group_quality(&[]).mrr, 0.0);
    }

    #[test]
    fn threshold_keeps_precision() {
        // Same-photo pairs (g, g) and cross pairs; scores descending: T T F T T T.
        let pairs = vec![
            (0, 0, 0.99),
            (1, 1, 0.97),
            (0, 1, 0.95),
            (2, 2, 0.90),
            (3, 3, 0.80),
            (4, 4, 0.70),
        ];
        // 100 % precision only down to 0.97; 0.7 keeps 5/6.
        assert_eq!(loosest_threshold(&pairs, 0.99), 0.97);
        assert_eq!(loosest_threshold(&pairs, 0.8), 0.70);
        let f = figures(&pairs, 0.90, 5);
        assert_eq!((f.found, f.true_pairs), (4, 5));
        assert!((f.precision - 0.75).abs() < 1e-9 && (f.recall - 0.6).abs() < 1e-9);
    }

    #[test]
    fn small_turns_keep_the_picture() {
        // A 40×20 picture, left half black, right half white, turned by 3°.
        let (w, h) = (40u32, 20u32);
        let px: Vec<u8> = (0..w * h)
            .map(|i| if i % w < w / 2 { 0 } else { 255 })
            .collect();
        let (out, ow, oh) = rotate_small(&px, w, h, 1, 3.0);
        assert!(ow < w && oh < h && out.len() == (ow * oh) as usize);
        // Corners stay inside the picture: the top-left is black, the bottom-right white.
        assert_eq!(out[0], 0);
        assert_eq!(*out.last().unwrap(), 255);
    }
}
