//! `flexphoto eval-search`: measures search quality instead of assuming it.
//!
//! It starts the service in-process on a scratch data directory, ingests a labelled photo set
//! through the HTTP API like any client, runs each text query of its `queries.json` and
//! reports recall@1/@5/@10 and mean reciprocal rank. Then it makes near-duplicates of real
//! photos (resized to half, recompressed at low quality, cropped by 5 % on each side), ingests
//! them beside their originals under another owner, and reports the precision and recall of
//! the pairs the pipeline recorded (every cross-photo pair is a negative).

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
    /// Per query: the rank of its first relevant image (1-based), if in the top 10.
    pub ranks: BTreeMap<String, Option<usize>>,
    /// Text query latency through the API, milliseconds, p50 / max.
    pub query_ms_p50: f64,
    /// Max.
    pub query_ms_max: f64,
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
    /// recall.
    pub methods: BTreeMap<String, MethodQuality>,
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
    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Result<Value, EvalError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if !body.is_null() {
            req = req.json(&body);
        }
        let r = req
            .send()
            .await
            .map_err(|e| EvalError::Api(format!("{path}: {e}")))?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if status.as_u16() >= 400 {
            return Err(EvalError::Api(format!("{path}: HTTP {status}: {v}")));
        }
        Ok(v)
    }

    /// Uploads one file; returns its id (also for a 409 duplicate).
    async fn upload(&self, owner: &str, name: &str, data: &[u8]) -> Result<String, EvalError> {
        let part = reqwest::multipart::Part::bytes(data.to_vec())
            .file_name(name.to_owned())
            .mime_str("application/octet-stream")
            .map_err(|e| EvalError::Api(e.to_string()))?;
        let form = reqwest::multipart::Form::new()
            .text("owner", owner.to_owned())
            .part("file", part);
        let r = self
            .http
            .post(format!("{}/v1/images", self.base))
            .bearer_auth(&self.key)
            .multipart(form)
            .send()
            .await
            .map_err(|e| EvalError::Api(format!("upload of {name}: {e}")))?;
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
        let search = eval_queries(&client, fixtures, &qf).await?;
        let duplicates = eval_duplicates(&client, fixtures).await?;
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
    client: &Client,
    fixtures: &Path,
    qf: &QueryFile,
) -> Result<SearchQuality, EvalError> {
    let owner = "eval-search";
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
    let file_of: HashMap<&str, &str> = id_of
        .iter()
        .map(|(f, i)| (i.as_str(), f.as_str()))
        .collect();
    let mut ranks = BTreeMap::new();
    let (mut r1, mut r5, mut r10, mut rr) = (0usize, 0usize, 0usize, 0f64);
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
        if let Some(r) = rank {
            r1 += usize::from(r <= 1);
            r5 += usize::from(r <= 5);
            r10 += usize::from(r <= 10);
            rr += 1.0 / r as f64;
        }
        ranks.insert(q.query.clone(), rank);
    }
    times.sort_by(f64::total_cmp);
    let n = qf.queries.len().max(1) as f64;
    Ok(SearchQuality {
        queries: qf.queries.len(),
        images: qf.labelled_files.len(),
        recall_at_1: r1 as f64 / n,
        recall_at_5: r5 as f64 / n,
        recall_at_10: r10 as f64 / n,
        mrr: rr / n,
        ranks,
        query_ms_p50: times.get(times.len() / 2).copied().unwrap_or(0.0),
        query_ms_max: times.last().copied().unwrap_or(0.0),
    })
}

/// The edits made of each photo for the duplicate set.
fn edits(data: &Bytes) -> Result<Vec<(&'static str, Bytes)>, String> {
    use flexphoto_media::vips::{Image, Interesting, Size};
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
    .map_err(|e| e.to_string())?;
    let (w, h, bands) = (decoded.width(), decoded.height(), decoded.bands());
    let pixels = decoded.pixels().map_err(|e| e.to_string())?;
    let full = Image::from_pixel_bytes(pixels, w, h, bands).map_err(|e| e.to_string())?;
    let half = Image::thumbnail(
        data,
        (w / 2).max(1),
        (h / 2).max(1),
        Size::Down,
        Interesting::None,
        true,
        false,
    )
    .map_err(|e| e.to_string())?;
    let (mx, my) = (w / 20, h / 20);
    let cropped = full
        .extract(mx, my, w - 2 * mx, h - 2 * my)
        .map_err(|e| e.to_string())?;
    Ok(vec![
        ("half", half.save(".jpg[Q=85]").map_err(|e| e.to_string())?),
        ("q30", full.save(".jpg[Q=30]").map_err(|e| e.to_string())?),
        (
            "crop5",
            cropped.save(".jpg[Q=85]").map_err(|e| e.to_string())?,
        ),
    ])
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
    let per_group = 4usize;
    let expected = photos * per_group * (per_group - 1) / 2;
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
    Ok(Some(DuplicateQuality {
        photos,
        images: ids.len(),
        expected_pairs: expected,
        methods,
    }))
}
