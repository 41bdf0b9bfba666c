//! Benchmark of the worker's image pipeline alone (`cargo bench -p flexphoto-control-plane
//! --bench ingest_pipeline`): no HTTP, no database, no storage: what `media::analyse` costs per
//! 12-megapixel JPEG with the configured variants, stage by stage, and how many images per
//! second two threads get through. That is the ceiling for `loadtest/ingest.py`.
//!
//! The corpus is made from the real photos in `../shared/fixtures/photos` (or
//! `BENCH_PHOTOS`): each JPEG is cover-resized to 4000×3000 and saved at Q92 with its
//! metadata, with 4:2:0 chroma as phones write them (`BENCH_SUBSAMPLE=444` for full chroma).
//! `BENCH_ROUNDS` (default 3) passes over the corpus per measurement;
//! `BENCH_THREADS` (default 2) threads for the throughput run. Config comes from
//! `config/control-plane.toml` plus the usual `FLEXPHOTO_*` overrides, so variant settings
//! can be compared (e.g. `FLEXPHOTO_PROCESSING_WEBP_EFFORT=4`). Prints a table and writes
//! `loadtest/results/ingest-pipeline-<timestamp>.json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flexphoto_control_plane::config::RawConfig;
use flexphoto_control_plane::ingest::{analyse, IngestSettings};
use flexphoto_media::transform::Budget;
use flexphoto_media::vips::{Image, Interesting, Size};
use serde_json::json;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Process CPU time (user + system) from /proc/self/stat, seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn corpus(dir: &Path, subsample: &str) -> Vec<(String, Bytes)> {
    let save = match subsample {
        "444" => ".jpg[Q=92,subsample_mode=off]",
        _ => ".jpg[Q=92,subsample_mode=on]",
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        if f.extension().and_then(|e| e.to_str()) != Some("jpg") {
            continue;
        }
        let Ok(raw) = std::fs::read(&f) else { continue };
        let raw = Bytes::from(raw);
        let Ok(img) = Image::thumbnail(
            &raw,
            4000,
            3000,
            Size::Both,
            Interesting::Centre,
            true,
            false,
        ) else {
            continue;
        };
        if img.width() != 4000 || img.height() != 3000 {
            continue;
        }
        if let Ok(jpeg) = img.save(save) {
            let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
            out.push((name.unwrap_or_default(), jpeg));
        }
    }
    out
}

fn main() {
    flexphoto_media::vips::init(1).expect("libvips starts");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let photos = std::env::var("BENCH_PHOTOS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("../shared/fixtures/photos"));
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let threads: usize = env_or("BENCH_THREADS", 2);
    let subsample: String = env_or("BENCH_SUBSAMPLE", "420".to_owned());
    let cfg_path = root.join("config/control-plane.toml");
    let cfg = RawConfig::load(Some(&cfg_path))
        .and_then(|raw| raw.validate())
        .expect("config loads");
    let mut settings = IngestSettings::new(&cfg);
    // The embedder's input is made in the pipeline; 384 is the default model's box.
    settings.embed_side = Some(384);
    let settings = Arc::new(settings);

    let corpus = Arc::new(corpus(&photos, &subsample));
    if corpus.is_empty() {
        eprintln!("no JPEG photos in {}: nothing to measure", photos.display());
        return;
    }
    println!(
        "{} 12-MP JPEGs ({subsample} chroma) from {}, {} rounds; variants: {}",
        corpus.len(),
        photos.display(),
        rounds,
        cfg.variants
            .iter()
            .map(|v| format!(
                "{} {}x{} {} q{}",
                v.name,
                v.width,
                v.height,
                v.format.name(),
                v.quality
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Warm-up, then one thread: per-stage wall time.
    for (_, b) in corpus.iter() {
        analyse(b, &settings, &Budget::unlimited()).expect("corpus image processes");
    }
    let mut stage_totals: Vec<(String, Duration)> = Vec::new();
    let mut per_image = Vec::new();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    for _ in 0..rounds {
        for (_, b) in corpus.iter() {
            let start = Instant::now();
            let a = analyse(b, &settings, &Budget::unlimited()).expect("corpus image processes");
            per_image.push(start.elapsed());
            for (name, d) in a.timings.stages() {
                match stage_totals.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, t)) => *t += d,
                    None => stage_totals.push((name, d)),
                }
            }
        }
    }
    let single_wall = t0.elapsed();
    let single_cpu = cpu_seconds() - cpu0;
    let n = per_image.len();
    per_image.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("\none thread, {n} images:");
    println!("  {:<22} {:>9}", "stage", "mean ms");
    let mut stages_json = serde_json::Map::new();
    for (name, total) in &stage_totals {
        let mean = ms(*total) / n as f64;
        println!("  {name:<22} {mean:>9.1}");
        stages_json.insert(name.clone(), json!((mean * 10.0).round() / 10.0));
    }
    let mean_ms = ms(single_wall) / n as f64;
    let cpu_ms = single_cpu * 1000.0 / n as f64;
    println!(
        "  {:<22} {mean_ms:>9.1}   (p50 {:.1}, max {:.1}; CPU {cpu_ms:.1} ms/image)",
        "whole analyse",
        ms(per_image[n / 2]),
        ms(per_image[n - 1])
    );

    // `threads` threads side by side: images per second.
    let total = rounds * corpus.len();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (corpus, settings, next) = (corpus.clone(), settings.clone(), next.clone());
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let (_, b) = &corpus[i % corpus.len()];
                analyse(b, &settings, &Budget::unlimited()).expect("corpus image processes");
            })
        })
        .collect();
    for h in handles {
        h.join().expect("bench thread");
    }
    let wall = t0.elapsed().as_secs_f64();
    let per_s = total as f64 / wall;
    let cpu = (cpu_seconds() - cpu0) * 1000.0 / total as f64;
    println!("\n{threads} threads: {per_s:.2} images/s ({cpu:.1} CPU-ms/image)");

    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    let out = root.join(format!("loadtest/results/ingest-pipeline-{stamp}.json"));
    let report = json!({
        "bench": "ingest_pipeline",
        "images": corpus.len(),
        "chroma_subsampling": subsample,
        "rounds": rounds,
        "variants": cfg.variants.iter().map(|v| json!({
            "name": v.name, "width": v.width, "height": v.height, "fit": v.fit.name(),
            "format": v.format.name(), "quality": v.quality,
        })).collect::<Vec<_>>(),
        "single_thread": {
            "stage_mean_ms": stages_json,
            "image_mean_ms": (mean_ms * 10.0).round() / 10.0,
            "cpu_ms_per_image": (cpu_ms * 10.0).round() / 10.0,
        },
        "threads": threads,
        "images_per_s": (per_s * 100.0).round() / 100.0,
        "threaded_cpu_ms_per_image": (cpu * 10.0).round() / 10.0,
    });
    match std::fs::write(
        &out,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    ) {
        Ok(()) => println!("wrote {}", out.display()),
        Err(e) => eprintln!("could not write {}: {e}", out.display()),
    }
}
