//! Vector search benchmark of the embedded index (`cargo bench -p flexphoto-control-plane
//! --bench vector_search`).
//!
//! For each N (`BENCH_N`, comma-separated, default `10000,100000`) and each storage mode of the
//! visual vectors (`BENCH_MODES`, default `ram,quantized`), a child process (so RSS is its own)
//! builds an index of N synthetic points (semantic 384-d and visual 1280-d random unit vectors;
//! ~100 owners, uploads over two years, a few cameras, tags), optimizes it, then measures
//! `BENCH_QUERIES` (default 1000) searches of each kind, recall@10 against brute force, upsert
//! throughput, single-point durable upsert latency and RSS. Prints a table and writes
//! `loadtest/results/vector-search-<timestamp>.json`.

use std::time::{Duration, Instant};

use flexphoto_control_plane::rng::SplitMix64;
use flexphoto_control_plane::search::index::{
    open_embedded_index, EmbeddedOptions, Hit, IndexPoint, PointPayload, SearchFilter, VectorIndex,
    VectorName, VectorQuery, VectorSpace, VisualStorage,
};
use serde_json::json;
use uuid::Uuid;

const SPACE: VectorSpace = VectorSpace {
    semantic_dims: 384,
    visual_dims: 1280,
};
const T0: i64 = 1_700_000_000_000_000;
const TWO_YEARS_US: i64 = 2 * 365 * 24 * 3_600 * 1_000_000;
const DAY_US: i64 = 24 * 3_600 * 1_000_000;
const OWNERS: u64 = 100;
const BATCH: usize = 500;

/// A deterministic generator for `seed`, so any point can be regenerated instead of kept in
/// memory.
fn rng(seed: u64) -> SplitMix64 {
    SplitMix64::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x1234_5678)
}

const CAMERAS: [(&str, &str); 5] = [
    ("Canon", "EOS R5"),
    ("Nikon", "Z 6II"),
    ("Sony", "ILCE-7M4"),
    ("Apple", "iPhone 15 Pro"),
    ("Fujifilm", "X-T5"),
];
const TAGS: [&str; 12] = [
    "beach", "city", "night", "portrait", "food", "family", "mountain", "snow", "dog", "cat",
    "sunset", "street",
];

/// The cheap, filterable part of point `i`.
fn meta(i: u64) -> (u64, i64) {
    let mut r = rng(i);
    (
        r.below(OWNERS),
        T0 + (r.next_u64() % TWO_YEARS_US as u64) as i64,
    )
}

fn point(i: u64) -> IndexPoint {
    let (owner, uploaded_at) = meta(i);
    let mut r = rng(i ^ 0xABCD_EF01_2345_6789);
    let camera = (r.below(10) < 8).then(|| CAMERAS[r.below(CAMERAS.len() as u64) as usize]);
    let tags = (0..r.below(4))
        .map(|_| TAGS[r.below(TAGS.len() as u64) as usize].to_owned())
        .collect();
    IndexPoint {
        id: Uuid::from_u64_pair(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), i),
        semantic: r.unit_vector(SPACE.semantic_dims),
        visual: r.unit_vector(SPACE.visual_dims),
        payload: PointPayload {
            owner: format!("user-{owner:03}"),
            uploaded_at,
            status: "ready".into(),
            tags,
            camera_make: camera.map(|c| c.0.to_owned()),
            camera_model: camera.map(|c| c.1.to_owned()),
            review_state: if r.below(5) == 0 {
                "unreviewed"
            } else {
                "approved"
            }
            .into(),
            model: "clip-vit-b32@1".into(),
            faces: None,
            people: None,
            catalog: Default::default(),
        },
    }
}

fn id_of(i: u64) -> Uuid {
    Uuid::from_u64_pair(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), i)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let k = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[k].as_secs_f64() * 1_000.0
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// One kind of query: its filter per query number, and which vector.
struct Kind {
    name: &'static str,
    using: VectorName,
    filter: fn(&mut SplitMix64) -> SearchFilter,
}

fn kinds() -> Vec<Kind> {
    vec![
        Kind {
            name: "semantic, no filter",
            using: VectorName::Semantic,
            filter: |_| SearchFilter::default(),
        },
        Kind {
            name: "semantic, owner (1%)",
            using: VectorName::Semantic,
            filter: |r| SearchFilter {
                owner: Some(format!("user-{:03}", r.below(OWNERS))),
                ..Default::default()
            },
        },
        Kind {
            name: "visual, owner + 6 months",
            using: VectorName::Visual,
            filter: |r| {
                let from = T0 + (r.next_u64() % (TWO_YEARS_US - 180 * DAY_US) as u64) as i64;
                SearchFilter {
                    owner: Some(format!("user-{:03}", r.below(OWNERS))),
                    uploaded_from: Some(from),
                    uploaded_to: Some(from + 180 * DAY_US),
                    ..Default::default()
                }
            },
        },
    ]
}

/// Exact top 10 over points regenerated on demand (only those passing the filter).
fn brute_force(
    n: u64,
    metas: &[(u64, i64)],
    q: &[f32],
    f: &SearchFilter,
    using: VectorName,
) -> Vec<Uuid> {
    let owner: Option<u64> = f
        .owner
        .as_ref()
        .and_then(|o| o.trim_start_matches("user-").parse().ok());
    let mut scored: Vec<(f32, Uuid)> = (0..n)
        .filter(|&i| {
            let (o, at) = metas[i as usize];
            owner.is_none_or(|w| w == o)
                && f.uploaded_from.is_none_or(|v| at >= v)
                && f.uploaded_to.is_none_or(|v| at < v)
        })
        .map(|i| {
            let p = point(i);
            let v = match using {
                VectorName::Semantic => p.semantic,
                VectorName::Visual => p.visual,
            };
            (dot(q, &v), id_of(i))
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().take(10).map(|(_, id)| id).collect()
}

async fn run_child(n: u64, mode: &str) -> serde_json::Value {
    let queries: usize = env_or("BENCH_QUERIES", "1000").parse().unwrap_or(1000);
    let recall_queries: usize = env_or("BENCH_RECALL_QUERIES", "50").parse().unwrap_or(50);
    let dir = std::env::temp_dir().join(format!("flexphoto-bench-{}", Uuid::new_v4()));
    let options = EmbeddedOptions {
        visual_storage: if mode == "quantized" {
            VisualStorage::QuantizedOnDisk
        } else {
            VisualStorage::Ram
        },
        optimize_after_writes: 0,
        ..Default::default()
    };
    let (index, _) = open_embedded_index(&dir, SPACE, options)
        .await
        .expect("open index");

    // Build: durable batches of BATCH points.
    let started = Instant::now();
    let mut next = 0u64;
    while next < n {
        let end = (next + BATCH as u64).min(n);
        let batch: Vec<IndexPoint> = (next..end).map(point).collect();
        index.upsert(batch).await.expect("upsert");
        next = end;
    }
    let upsert_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    index.optimize().await.expect("optimize");
    let optimize_s = started.elapsed().as_secs_f64();
    let (points, indexed, segments) = index.stats().await.expect("stats");

    // Durable single-point upserts (flush each) on the optimized index.
    let mut single = Vec::new();
    for i in 0..200u64 {
        let p = point(i);
        let t = Instant::now();
        index.upsert(vec![p]).await.expect("upsert");
        single.push(t.elapsed());
    }
    single.sort();

    let metas: Vec<(u64, i64)> = (0..n).map(meta).collect();
    let mut results = Vec::new();
    for (k, kind) in kinds().into_iter().enumerate() {
        let mut rng = rng(1_000 + k as u64);
        let dims = match kind.using {
            VectorName::Semantic => SPACE.semantic_dims,
            VectorName::Visual => SPACE.visual_dims,
        };
        let work: Vec<(Vec<f32>, SearchFilter)> = (0..queries)
            .map(|_| (rng.unit_vector(dims), (kind.filter)(&mut rng)))
            .collect();
        // Warm-up.
        for (q, f) in work.iter().take(50) {
            search(&index, kind.using, q, f).await;
        }
        let mut lat = Vec::with_capacity(queries);
        let mut short_pages = 0;
        for (q, f) in &work {
            let t = Instant::now();
            let hits = search(&index, kind.using, q, f).await;
            lat.push(t.elapsed());
            if hits.len() < 10 {
                short_pages += 1;
            }
        }
        lat.sort();
        let mut found = 0usize;
        let mut wanted = 0usize;
        for (q, f) in work.iter().take(recall_queries) {
            let exact = brute_force(n, &metas, q, f, kind.using);
            let hits = search(&index, kind.using, q, f).await;
            wanted += exact.len();
            found += hits.iter().filter(|h| exact.contains(&h.id)).count();
        }
        results.push(json!({
            "kind": kind.name,
            "queries": queries,
            "p50_ms": percentile(&lat, 0.50),
            "p99_ms": percentile(&lat, 0.99),
            "max_ms": percentile(&lat, 1.0),
            "short_pages": short_pages,
            "recall_at_10": if wanted == 0 { 1.0 } else { found as f64 / wanted as f64 },
            "recall_queries": recall_queries.min(queries),
        }));
    }
    let out = json!({
        "n": n,
        "visual_storage": mode,
        "points": points,
        "indexed_vectors": indexed,
        "segments": segments,
        "upsert_s": upsert_s,
        "upsert_points_per_s": n as f64 / upsert_s,
        "upsert_batch": BATCH,
        "single_upsert_p50_ms": percentile(&single, 0.5),
        "single_upsert_p99_ms": percentile(&single, 0.99),
        "optimize_s": optimize_s,
        "rss_mb": status_kb("VmRSS:") as f64 / 1024.0,
        "rss_anon_mb": status_kb("RssAnon:") as f64 / 1024.0,
        "rss_file_mb": status_kb("RssFile:") as f64 / 1024.0,
        "vm_hwm_mb": status_kb("VmHWM:") as f64 / 1024.0,
        "searches": results,
    });
    drop(index);
    let _ = std::fs::remove_dir_all(&dir);
    out
}

async fn search(
    index: &dyn VectorIndex,
    using: VectorName,
    q: &[f32],
    f: &SearchFilter,
) -> Vec<Hit> {
    index
        .search(VectorQuery {
            using,
            vector: q,
            filter: f,
            limit: 10,
            offset: 0,
            score_threshold: None,
        })
        .await
        .expect("search")
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is read from the arguments.
    if let Ok(spec) = std::env::var("BENCH_CHILD") {
        let (n, mode) = spec.split_once(':').expect("BENCH_CHILD=N:mode");
        let n: u64 = n.parse().expect("N");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let out = runtime.block_on(run_child(n, mode));
        println!("BENCH_RESULT {out}");
        return;
    }

    let ns = env_or("BENCH_N", "10000,100000");
    let modes = env_or("BENCH_MODES", "ram,quantized");
    let exe = std::env::current_exe().expect("current exe");
    let mut runs = Vec::new();
    for n in ns.split(',').filter(|s| !s.is_empty()) {
        for mode in modes.split(',').filter(|s| !s.is_empty()) {
            eprintln!("vector_search: N={n} visual={mode} …");
            let output = std::process::Command::new(&exe)
                .env("BENCH_CHILD", format!("{n}:{mode}"))
                .stderr(std::process::Stdio::inherit())
                .output()
                .expect("run child");
            let stdout = String::from_utf8_lossy(&output.stdout);
            let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("BENCH_RESULT ")) else {
                eprintln!("child N={n} {mode} failed: {}", output.status);
                continue;
            };
            runs.push(serde_json::from_str::<serde_json::Value>(line).expect("child json"));
        }
    }

    println!(
        "\n{:>7} {:>9} {:<26} {:>8} {:>8} {:>8} {:>7}",
        "N", "visual", "query", "p50 ms", "p99 ms", "recall", "short"
    );
    for r in &runs {
        for s in r["searches"].as_array().into_iter().flatten() {
            println!(
                "{:>7} {:>9} {:<26} {:>8.3} {:>8.3} {:>8.3} {:>7}",
                r["n"],
                r["visual_storage"].as_str().unwrap_or(""),
                s["kind"].as_str().unwrap_or(""),
                s["p50_ms"].as_f64().unwrap_or(0.0),
                s["p99_ms"].as_f64().unwrap_or(0.0),
                s["recall_at_10"].as_f64().unwrap_or(0.0),
                s["short_pages"],
            );
        }
    }
    println!(
        "\n{:>7} {:>9} {:>10} {:>10} {:>11} {:>11} {:>9} {:>9} {:>9}",
        "N",
        "visual",
        "upsert/s",
        "optimize s",
        "1-upsert p50",
        "1-upsert p99",
        "RSS MB",
        "anon MB",
        "file MB"
    );
    for r in &runs {
        println!(
            "{:>7} {:>9} {:>10.0} {:>10.1} {:>11.2} {:>11.2} {:>9.0} {:>9.0} {:>9.0}",
            r["n"],
            r["visual_storage"].as_str().unwrap_or(""),
            r["upsert_points_per_s"].as_f64().unwrap_or(0.0),
            r["optimize_s"].as_f64().unwrap_or(0.0),
            r["single_upsert_p50_ms"].as_f64().unwrap_or(0.0),
            r["single_upsert_p99_ms"].as_f64().unwrap_or(0.0),
            r["rss_mb"].as_f64().unwrap_or(0.0),
            r["rss_anon_mb"].as_f64().unwrap_or(0.0),
            r["rss_file_mb"].as_f64().unwrap_or(0.0),
        );
    }

    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../loadtest/results");
    let path = dir.join(format!("vector-search-{stamp}.json"));
    let doc = json!({
        "benchmark": "vector_search",
        "machine": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "space": { "semantic_dims": SPACE.semantic_dims, "visual_dims": SPACE.visual_dims },
        "runs": runs,
    });
    match std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&doc).unwrap_or_default(),
        )
    }) {
        Ok(()) => println!("\nwrote {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}
