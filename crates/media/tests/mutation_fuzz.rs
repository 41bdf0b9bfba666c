//! A mutation fuzzer over real image bytes: truncations, bit flips, corrupted header fields
//! and huge declared sizes of JPEG, PNG, GIF, WebP and TIFF files, fed to the probe, the
//! transform pipeline (from the source and from a working copy) and the metadata readers.
//! Every input must end without a panic, within its deadline, and with an error that is the
//! file's fault (never an internal one).
//!
//! A short run is part of the test suite. A longer one:
//! `FLEXPHOTO_FUZZ_ITERATIONS=20000 cargo test --release -p flexphoto-media --test mutation_fuzz -- --nocapture`
//! A failing input is written to `target/fuzz-failures/`; turn it into a regression test in
//! `regressions()` below.

use std::time::{Duration, Instant};

use bytes::Bytes;
use flexphoto_media::pool::{ImagePool, PoolError, PoolGauges};
use flexphoto_media::transform::{self, Budget, EncodeSettings, Limits, TransformError};
use flexphoto_media::vips::Image;
use flexphoto_url::{
    options::parse_pairs, resolve, Meta, QualityDefaults, ResolveContext, TransformSpec,
};

/// A small deterministic generator (xorshift64*), so a failure replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    flexphoto_media::vips::init(1).unwrap();
    let (w, h) = (96u32, 64u32);
    let mut px = Vec::new();
    for y in 0..h {
        for x in 0..w {
            px.extend_from_slice(&[(x * 2) as u8, (y * 3) as u8, ((x + y) * 5) as u8, 200]);
        }
    }
    let rgba = Image::from_pixels(&px, w, h, 4).unwrap();
    let rgb_px: Vec<u8> = px.chunks(4).flat_map(|c| [c[0], c[1], c[2]]).collect();
    let rgb = Image::from_pixels(&rgb_px, w, h, 3).unwrap();
    rgb.set_int("orientation", 6);
    let mut frames = Vec::new();
    for f in 0..3u32 {
        for _ in 0..32u32 {
            for x in 0..32u32 {
                frames.extend_from_slice(&[(x * 8 + f * 40) as u8, 90, 160]);
            }
        }
    }
    let anim = Image::from_pixels(&frames, 32, 96, 3).unwrap();
    anim.set_int("page-height", 32);
    let save = |img: &Image, s: &str| img.save(s).unwrap().to_vec();
    vec![
        ("jpeg", save(&rgb, ".jpg[Q=80]")),
        ("png", save(&rgba, ".png")),
        ("gif", save(&anim, ".gif")),
        ("webp", save(&rgba, ".webp[Q=70]")),
        ("tiff", save(&rgb, ".tif")),
    ]
}

/// One mutation of `data`, described for the failure report.
fn mutate(data: &[u8], rng: &mut Rng) -> (String, Vec<u8>) {
    let mut d = data.to_vec();
    match rng.below(6) {
        0 => {
            let at = rng.below(d.len());
            d.truncate(at);
            (format!("truncate at {at}"), d)
        }
        1 => {
            let n = 1 + rng.below(8);
            for _ in 0..n {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
            (format!("{n} bit flips"), d)
        }
        2 => {
            // Huge sizes written over the header region, where width/height fields live.
            let i = rng.below(d.len().min(64));
            for (k, b) in [0xFFu8, 0xFF, 0x7F, 0xFF].iter().enumerate() {
                if i + k < d.len() {
                    d[i + k] = *b;
                }
            }
            (format!("huge field at {i}"), d)
        }
        3 => {
            let i = rng.below(d.len());
            let n = 1 + rng.below(64);
            let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            d.splice(i..i, junk);
            (format!("{n} bytes inserted at {i}"), d)
        }
        4 => {
            let i = rng.below(d.len());
            let n = rng.below(256).min(d.len() - i);
            d.drain(i..i + n);
            (format!("{n} bytes removed at {i}"), d)
        }
        _ => {
            // A block of the file repeated (chunk duplication).
            let i = rng.below(d.len());
            let n = rng.below(512).min(d.len() - i);
            let block = d[i..i + n].to_vec();
            d.splice(i..i, block);
            (format!("{n} bytes repeated at {i}"), d)
        }
    }
}

fn specs() -> Vec<TransformSpec> {
    let presets = std::collections::HashMap::new();
    let ctx = ResolveContext {
        presets: &presets,
        max_dimension: 8192,
        quality: QualityDefaults {
            jpeg: 80,
            webp: 75,
            avif: 50,
        },
        accept: None,
        default_meta: Meta::Copyright,
        allow_meta_keep: false,
    };
    [
        "w=40",
        "w=64&h=64&fit=cover&g=smart&fmt=webp",
        "w=200&fit=contain&fmt=png",
        "fmt=jpeg&blur=2",
    ]
    .iter()
    .map(|q| resolve(&parse_pairs(q, '&', 8192).unwrap(), &ctx).unwrap())
    .collect()
}

fn limits() -> Limits {
    Limits {
        max_output_pixels: 4_000_000,
        ..Limits::new(20_000_000, 4096)
    }
}

const ENC: EncodeSettings = EncodeSettings {
    quality: QualityDefaults {
        jpeg: 80,
        webp: 75,
        avif: 50,
    },
    webp_effort: 0,
    avif_effort: 0,
    png_compression: 1,
};

/// Whether an error is one a bad file may cause (every error but an internal one).
fn is_the_files_fault(e: &TransformError) -> bool {
    !matches!(e, TransformError::Internal(_))
}

/// Runs everything a request or an ingest does with `data`; a description of what went
/// wrong, if anything did.
fn exercise(pool: &ImagePool, rt: &tokio::runtime::Runtime, data: Vec<u8>) -> Option<String> {
    let source = Bytes::from(data);
    let _ = flexphoto_media::exif::read_exif(&source);
    let _ = flexphoto_media::xmp::read_xmp(&source);
    let deadline = Instant::now() + Duration::from_secs(3);
    let started = Instant::now();
    let src = source.clone();
    let job = pool
        .submit(Some(deadline), move |budget: &Budget| {
            let limits = limits();
            let mut problems = Vec::new();
            for spec in specs() {
                match transform::run_with(&src, None, 64, &spec, &limits, &ENC, budget) {
                    Ok((_, Some(copy))) => {
                        if let Err(e) =
                            transform::run_from_copy(&copy, &spec, &limits, &ENC, budget)
                        {
                            if !is_the_files_fault(&e) {
                                problems.push(format!("from copy: {e}"));
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) if is_the_files_fault(&e) => {}
                    Err(e) => problems.push(format!("{e}")),
                }
            }
            if let Err(e) = flexphoto_media::fingerprint::dhash(&src) {
                if !is_the_files_fault(&e) {
                    problems.push(format!("dhash: {e}"));
                }
            }
            problems
        })
        .ok()?;
    let out = rt.block_on(job);
    let took = started.elapsed();
    if took > Duration::from_secs(5) {
        return Some(format!("took {took:?}, past its 3 s deadline"));
    }
    match out {
        Ok(problems) if problems.is_empty() => None,
        Ok(problems) => Some(problems.join("; ")),
        Err(PoolError::Panicked) => Some("panicked".into()),
        Err(e) => Some(format!("pool: {e}")),
    }
}

fn iterations() -> usize {
    std::env::var("FLEXPHOTO_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120)
}

#[test]
fn mutated_images_never_crash_hang_or_fail_internally() {
    let gauges = PoolGauges {
        queued: prometheus::IntGauge::new("q", "q").unwrap(),
        running: prometheus::IntGauge::new("r", "r").unwrap(),
    };
    let pool = ImagePool::new(1, 4, gauges).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seeds = seeds();
    let seed: u64 = std::env::var("FLEXPHOTO_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_F00D);
    let mut rng = Rng(seed);
    let mut failures = Vec::new();
    for i in 0..iterations() {
        let (name, data) = &seeds[i % seeds.len()];
        let (how, mutated) = mutate(data, &mut rng);
        if let Some(problem) = exercise(&pool, &rt, mutated.clone()) {
            let dir =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-failures");
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("{name}-{i}.bin"));
            let _ = std::fs::write(&file, &mutated);
            failures.push(format!(
                "{name} #{i} ({how}): {problem} [{}]",
                file.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} mutated inputs misbehaved (seed {seed}):\n{}",
        failures.len(),
        iterations(),
        failures.join("\n")
    );
}

/// Inputs that once misbehaved, kept as they were found.
#[test]
fn regressions() {
    flexphoto_media::vips::init(1).unwrap();
    let gauges = PoolGauges {
        queued: prometheus::IntGauge::new("q", "q").unwrap(),
        running: prometheus::IntGauge::new("r", "r").unwrap(),
    };
    let pool = ImagePool::new(1, 4, gauges).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let mut ran = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        if e.path().extension().is_none_or(|x| x != "bin") {
            continue;
        }
        let data = std::fs::read(e.path()).unwrap();
        if let Some(problem) = exercise(&pool, &rt, data) {
            panic!("{}: {problem}", e.path().display());
        }
        ran += 1;
    }
    assert!(
        ran >= 5,
        "only {ran} regression inputs in {}",
        dir.display()
    );
}
