//! Development probes over the labelled sets, straight through the embedder (no service):
//! per-group ranking quality and near-duplicate score distributions. Ignored by default; run
//!
//! ```text
//! scripts/fetch-eval-photos            # once: data/search-sets/{tune,holdout}
//! cargo test --release -p flexphoto-control-plane --lib search::probe -- --ignored --nocapture
//! ```
//!
//! `FLEXPHOTO_SEARCH_SETS` names another folder of sets, `PROBE_SETS` the sets in it to rank
//! (comma-separated; default `tune,holdout`). The embedder reads what ingest gives it (the
//! stored variant); `PROBE_CONFIG_TOML` (configuration text, e.g. other `[[variants]]`)
//! changes the settings that make it, `PROBE_FROM_ORIGINAL=1` has it read the original.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::Value;

use super::embed::conse::{ConseEmbedder, Extras};
use super::embed::testutil;
use super::embed::{Embedder, ImageEmbedding, RgbImage};
use super::eval::{edits, process_cpu_seconds, EDITS};
use crate::ingest::IngestSettings;

fn sets_dir() -> PathBuf {
    std::env::var_os("FLEXPHOTO_SEARCH_SETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/search-sets"))
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn rgb_of(data: &Bytes, side: u32) -> RgbImage {
    let limits = flexphoto_media::transform::Limits::new(200_000_000, 16_384);
    flexphoto_media::pixels::rgb_for_embedding(
        data,
        side,
        &limits,
        &flexphoto_media::transform::Budget::unlimited(),
    )
    .expect("decode")
}

/// The ingest settings for an embedder whose input side is `side`: the default
/// configuration, or `PROBE_CONFIG_TOML`'s.
fn ingest_settings(side: u32) -> IngestSettings {
    let toml = std::env::var("PROBE_CONFIG_TOML").unwrap_or_default();
    let cfg = crate::config::RawConfig::from_toml_and_env(&toml, std::iter::empty())
        .unwrap()
        .validate()
        .unwrap();
    let mut settings = IngestSettings::new(&cfg);
    settings.embed_side = Some(side);
    settings
}

/// The embedder's input as ingest makes it: from the stored variant that a re-embed reads
/// (not from the original), so the probe ranks as the service does; from the original with
/// `PROBE_FROM_ORIGINAL`.
fn ingest_input(data: &Bytes, settings: &IngestSettings) -> RgbImage {
    if std::env::var_os("PROBE_FROM_ORIGINAL").is_some() {
        return rgb_of(data, settings.embed_side.unwrap_or(384));
    }
    let budget = flexphoto_media::transform::Budget::unlimited();
    crate::ingest::analyse(data, settings, &budget)
        .expect("ingest analysis")
        .embed_input
        .expect("embedder input")
}

/// Ranks every query of one set; prints per-group figures and each miss.
fn rank_set(e: &ConseEmbedder, dir: &Path) -> BTreeMap<String, (usize, f64, usize)> {
    let q: Value =
        serde_json::from_slice(&std::fs::read(dir.join("labelled/queries.json")).unwrap()).unwrap();
    let names: Vec<String> = q["labelled_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let settings = ingest_settings(e.input_size());
    let embs: Vec<ImageEmbedding> = names
        .iter()
        .map(|n| {
            let data = Bytes::from(std::fs::read(dir.join(n)).unwrap());
            e.embed_image(&ingest_input(&data, &settings)).unwrap()
        })
        .collect();
    for (n, emb) in names.iter().zip(&embs) {
        let c: Vec<String> = emb
            .concepts
            .iter()
            .take(6)
            .map(|c| format!("{} {:.2}", c.label, c.weight))
            .collect();
        println!("  {n} faces={:?}: {}", emb.faces, c.join(", "));
    }
    // group → (queries, reciprocal-rank sum, hits in the top 5)
    let mut groups: BTreeMap<String, (usize, f64, usize)> = BTreeMap::new();
    for query in q["queries"].as_array().unwrap() {
        let text = query["query"].as_str().unwrap();
        let group = query["group"].as_str().unwrap_or("all").to_owned();
        let rel: Vec<&str> = query["relevant"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let qv = e.embed_text(text).unwrap();
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.sort_by(|&a, &b| dot(&qv, &embs[b].semantic).total_cmp(&dot(&qv, &embs[a].semantic)));
        let rank = order
            .iter()
            .position(|&i| rel.contains(&names[i].as_str()))
            .unwrap()
            + 1;
        let g = groups.entry(group.clone()).or_default();
        g.0 += 1;
        g.1 += 1.0 / rank as f64;
        g.2 += usize::from(rank <= 5);
        if rank > 1 {
            let top: Vec<String> = order[..3]
                .iter()
                .map(|&i| format!("{} {:.2}", names[i], dot(&qv, &embs[i].semantic)))
                .collect();
            println!(
                "  miss [{group}] {text:?}: rank {rank}; top {}",
                top.join(", ")
            );
        }
    }
    groups
}

#[test]
#[ignore = "development probe; needs the models and scripts/fetch-eval-photos"]
fn rank_quality() {
    let Some(model) = testutil::model_dir() else {
        return;
    };
    flexphoto_media::vips::init(1).unwrap();
    let variant = std::env::var("PROBE_VARIANT").unwrap_or_default();
    let extras = Extras {
        faces: !variant.contains("nofaces"),
        appearance: !variant.contains("noappearance"),
        face_tiles: variant.contains("facetiles"),
        objects: !variant.contains("noobjects"),
    };
    let mut e = ConseEmbedder::load_with(&model, extras).unwrap();
    if variant.contains("plaintext") {
        e = e.with_plain_class_text();
    }
    println!("variant {variant:?}: {}", e.info().id());
    let wanted = std::env::var("PROBE_SETS").unwrap_or_else(|_| "tune,holdout".into());
    let mut sets: Vec<PathBuf> = wanted
        .split(',')
        .map(|s| sets_dir().join(s))
        .filter(|d| d.join("labelled/queries.json").is_file())
        .collect();
    if let Some(fx) = testutil::fixtures_dir() {
        sets.push(fx);
    }
    for dir in sets {
        println!("== {}", dir.display());
        let groups = rank_set(&e, &dir);
        let (mut n, mut rr, mut r5) = (0, 0.0, 0);
        for (g, (gn, grr, gr5)) in &groups {
            println!(
                "  {g:10} MRR {:.3}  R@5 {:.3}  ({gn} queries)",
                grr / *gn as f64,
                *gr5 as f64 / *gn as f64
            );
            n += gn;
            rr += grr;
            r5 += gr5;
        }
        println!(
            "  overall    MRR {:.3}  R@5 {:.3}  ({n} queries)",
            rr / n as f64,
            r5 as f64 / n as f64
        );
    }
}

/// What the extra concept models (faces, appearance, objects) add to embedding an image, in
/// CPU ms, on every photo of the sets and the fixtures, and what that does to the image
/// pipeline's throughput (database, storage and HTTP work left out, so the share is an upper
/// bound). The steps run in turns, and each photo's fastest round counts for each step (the
/// least disturbed by other work on a shared machine). A release build: `cargo test
/// --release -p flexphoto-control-plane --lib search::probe::embed_cost -- --ignored
/// --nocapture` (`PROBE_ROUNDS`, default 5).
#[test]
#[ignore = "timing run; use a release build"]
fn embed_cost() {
    let Some(model) = testutil::model_dir() else {
        return;
    };
    flexphoto_media::vips::init(1).unwrap();
    let none = Extras {
        faces: false,
        appearance: false,
        face_tiles: false,
        objects: false,
    };
    let variants = [
        (
            "classifier only",
            ConseEmbedder::load_with(&model, none).unwrap(),
        ),
        (
            "+ appearance",
            ConseEmbedder::load_with(
                &model,
                Extras {
                    appearance: true,
                    ..none
                },
            )
            .unwrap(),
        ),
        (
            "+ objects",
            ConseEmbedder::load_with(
                &model,
                Extras {
                    appearance: true,
                    objects: true,
                    ..none
                },
            )
            .unwrap(),
        ),
        ("all (default)", ConseEmbedder::load(&model).unwrap()),
    ];
    let settings = ingest_settings(variants[0].1.input_size());
    let originals: Vec<Bytes> = duplicate_photos()
        .iter()
        .map(|p| Bytes::from(std::fs::read(p).unwrap()))
        .collect();
    let budget = flexphoto_media::transform::Budget::unlimited();
    // Each photo's embedder input as ingest makes it, and its size in megapixels.
    let (images, megapixels): (Vec<RgbImage>, Vec<f64>) = originals
        .iter()
        .map(|data| {
            let a = crate::ingest::analyse(data, &settings, &budget).unwrap();
            let mp = f64::from(a.width) * f64::from(a.height) / 1e6;
            (a.embed_input.expect("embedder input"), mp)
        })
        .unzip();
    let rounds: usize = std::env::var("PROBE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    // Per photo, the fastest of the rounds for each step: the run least disturbed by other
    // work on a shared machine. Column 0 is the image pipeline, then one per embedder.
    let mut fastest = vec![vec![f64::INFINITY; variants.len() + 1]; originals.len()];
    for _ in 0..rounds {
        for (k, (data, img)) in originals.iter().zip(&images).enumerate() {
            let cpu = cpu_ms();
            crate::ingest::analyse(data, &settings, &budget).unwrap();
            fastest[k][0] = fastest[k][0].min(cpu_ms() - cpu);
            for (i, (_, e)) in variants.iter().enumerate() {
                let cpu = cpu_ms();
                e.embed_image(img).unwrap();
                fastest[k][i + 1] = fastest[k][i + 1].min(cpu_ms() - cpu);
            }
        }
    }
    // Photos up to 2 megapixels (the web-sized sets) and larger ones (camera originals).
    println!("each step's fastest of {rounds} rounds, CPU ms per image:");
    for (name, keep) in [
        ("all photos", &(|_: f64| true) as &dyn Fn(f64) -> bool),
        ("up to 2 MP", &|mp| mp <= 2.0),
        ("over 2 MP", &|mp| mp > 2.0),
    ] {
        let rows: Vec<&Vec<f64>> = fastest
            .iter()
            .zip(&megapixels)
            .filter(|(_, &mp)| keep(mp))
            .map(|(f, _)| f)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let mean = |i: usize| rows.iter().map(|f| f[i]).sum::<f64>() / rows.len() as f64;
        println!("{name} ({}):", rows.len());
        for (i, (label, _)) in variants.iter().enumerate() {
            println!(
                "  {label:16} {:7.1}  (+{:.1})",
                mean(i + 1),
                mean(i + 1) - mean(1)
            );
        }
        // Workers are CPU-bound, so throughput goes as 1 / CPU per image.
        let (pipeline, base, all) = (mean(0), mean(0) + mean(1), mean(0) + mean(variants.len()));
        println!(
            "  image pipeline before embedding (decode, variants, dHash, embedder input) \
             {pipeline:.1}\n  ingest CPU per image: {base:.1} with the classifier only, {all:.1} \
             with all; throughput {:+.1} %",
            (base / all - 1.0) * 100.0
        );
    }
}

/// This process's CPU time so far, milliseconds.
fn cpu_ms() -> f64 {
    process_cpu_seconds() * 1e3
}

/// The photos of the sets `PROBE_DUP_SETS` names (comma-separated `tune`, `holdout`,
/// `fixtures`; default all), for the duplicate probe.
fn duplicate_photos() -> Vec<PathBuf> {
    let wanted = std::env::var("PROBE_DUP_SETS").unwrap_or_else(|_| "tune,holdout,fixtures".into());
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = ["tune", "holdout"]
        .iter()
        .filter(|s| wanted.contains(*s))
        .map(|s| sets_dir().join(s).join("labelled"))
        .collect();
    if let Some(fx) = testutil::fixtures_dir().filter(|_| wanted.contains("fixtures")) {
        dirs.push(fx.join("photos"));
        dirs.push(fx.join("labelled"));
    }
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let ext = p
                .extension()
                .and_then(|x| x.to_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            if ["jpg", "jpeg", "png"].contains(&ext.as_str()) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
#[ignore = "development probe; needs the models and scripts/fetch-eval-photos"]
fn duplicate_scores() {
    let Some(model) = testutil::model_dir() else {
        return;
    };
    flexphoto_media::vips::init(1).unwrap();
    let e = ConseEmbedder::load(&model).unwrap();
    // (photo index, edit name, visual vector, dhash, layout)
    type Item<'a> = (usize, &'a str, Vec<f32>, u64, Vec<u8>);
    let mut items: Vec<Item> = Vec::new();
    for (g, path) in duplicate_photos().iter().enumerate() {
        let data = Bytes::from(std::fs::read(path).unwrap());
        let Ok(made) = edits(&data) else {
            continue;
        };
        let mut all = vec![("original", data)];
        all.extend(made);
        for (kind, bytes) in all {
            let rgb = rgb_of(&bytes, e.input_size());
            let hash = flexphoto_media::fingerprint::dhash_of_pixels(
                Bytes::from(rgb.pixels.clone()),
                rgb.width,
                rgb.height,
                3,
            )
            .unwrap();
            let layout =
                flexphoto_media::fingerprint::layout_of_rgb(&rgb.pixels, rgb.width, rgb.height);
            let emb = e.embed_image(&rgb).unwrap();
            items.push((g, kind, emb.visual, hash, layout));
        }
    }
    let photos = items.iter().map(|i| i.0).max().unwrap_or(0) + 1;
    println!("{photos} photos, {} images, edits {EDITS:?}", items.len());
    // (same photo, cosine, dhash bits, layout similarity, label)
    let mut pairs: Vec<(bool, f32, u32, f32, String)> = Vec::new();
    for i in 0..items.len() {
        for j in i + 1..items.len() {
            let (a, b) = (&items[i], &items[j]);
            pairs.push((
                a.0 == b.0,
                dot(&a.2, &b.2),
                (a.3 ^ b.3).count_ones(),
                flexphoto_media::fingerprint::layout_similarity(&a.4, &b.4),
                format!("{}:{}~{}:{}", a.0, a.1, b.0, b.1),
            ));
        }
    }
    let show = |title: &str,
                mut v: Vec<&(bool, f32, u32, f32, String)>,
                key: fn(&(bool, f32, u32, f32, String)) -> f32| {
        v.sort_by(|x, y| key(x).total_cmp(&key(y)));
        println!("{title}:");
        for p in v.iter().take(12) {
            println!("  cos {:.3} dhash {:2} layout {:.3} {}", p.1, p.2, p.3, p.4);
        }
    };
    show(
        "true pairs, lowest cosine",
        pairs.iter().filter(|p| p.0).collect(),
        |p| p.1,
    );
    show(
        "true pairs, lowest layout",
        pairs.iter().filter(|p| p.0).collect(),
        |p| p.3,
    );
    show(
        "other photos, highest cosine",
        pairs.iter().filter(|p| !p.0).collect(),
        |p| -p.1,
    );
    show(
        "other photos, highest layout",
        pairs.iter().filter(|p| !p.0).collect(),
        |p| -p.3,
    );
    show(
        "other photos, highest cosine + layout",
        pairs.iter().filter(|p| !p.0).collect(),
        |p| -(p.1 + p.3),
    );
    // Recall of simple rules at the precision they keep.
    let trues = pairs.iter().filter(|p| p.0).count();
    for (name, rule) in [
        (
            "cos>=0.92",
            Box::new(|p: &(bool, f32, u32, f32, String)| p.1 >= 0.92)
                as Box<dyn Fn(&(bool, f32, u32, f32, String)) -> bool>,
        ),
        (
            "cos>=0.85",
            Box::new(|p: &(bool, f32, u32, f32, String)| p.1 >= 0.85),
        ),
        (
            "cos>=0.80",
            Box::new(|p: &(bool, f32, u32, f32, String)| p.1 >= 0.80),
        ),
        (
            "dhash<=10",
            Box::new(|p: &(bool, f32, u32, f32, String)| p.2 <= 10),
        ),
        (
            "layout>=0.9",
            Box::new(|p: &(bool, f32, u32, f32, String)| p.3 >= 0.9),
        ),
        (
            "layout>=0.95",
            Box::new(|p: &(bool, f32, u32, f32, String)| p.3 >= 0.95),
        ),
        (
            "cos>=.7&layout>=.9",
            Box::new(|p: &(bool, f32, u32, f32, String)| p.1 >= 0.7 && p.3 >= 0.9),
        ),
        (
            "cos>=.6&layout>=.85",
            Box::new(|p: &(bool, f32, u32, f32, String)| p.1 >= 0.6 && p.3 >= 0.85),
        ),
        (
            "cos+layout>=1.7",
            Box::new(|p: &(bool, f32, u32, f32, String)| p.1 + p.3 >= 1.7),
        ),
    ] {
        let found: Vec<_> = pairs.iter().filter(|p| rule(p)).collect();
        let tp = found.iter().filter(|p| p.0).count();
        println!(
            "  {name:22} found {:4} precision {:.3} recall {:.3}",
            found.len(),
            tp as f64 / found.len().max(1) as f64,
            tp as f64 / trues as f64
        );
    }
}

#[test]
#[ignore = "development probe; needs the models and scripts/fetch-eval-photos"]
fn faces_found() {
    let Some(model) = testutil::model_dir() else {
        return;
    };
    flexphoto_media::vips::init(1).unwrap();
    let f = super::embed::faces::FaceModels::load(
        &model.join("faces"),
        std::env::var_os("PROBE_FACE_TILES").is_some(),
    )
    .unwrap();
    let list = std::env::var("PROBE_IMAGES").unwrap_or_default();
    for p in list.split(',').filter(|s| !s.is_empty()) {
        let data = Bytes::from(std::fs::read(p).unwrap());
        let rgb = rgb_of(&data, 384);
        let t = std::time::Instant::now();
        let found = f.detect(&rgb).unwrap();
        println!("{p}: {:?} {:?}", t.elapsed(), found);
    }
}

#[test]
#[ignore = "development probe; needs the models and scripts/fetch-eval-photos"]
fn object_detections() {
    let Some(model) = testutil::model_dir() else {
        return;
    };
    flexphoto_media::vips::init(1).unwrap();
    let det = crate::search::embed::objects::ObjectModel::load(
        &model.join(crate::search::embed::objects::files::DIR),
    )
    .unwrap();
    for set in ["tune", "holdout"] {
        let dir = sets_dir().join(set).join("labelled");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for p in files
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x != "json"))
        {
            let rgb = rgb_of(&Bytes::from(std::fs::read(p).unwrap()), 384);
            let t = std::time::Instant::now();
            let o = det.detect(&rgb).unwrap();
            let mut top: Vec<(usize, f32)> = o.scores.iter().copied().enumerate().collect();
            top.sort_by(|a, b| b.1.total_cmp(&a.1));
            let shown: Vec<String> = top
                .iter()
                .take(4)
                .map(|(i, s)| format!("{} {s:.2}", crate::search::embed::objects::CLASSES[*i]))
                .collect();
            println!(
                "{set}/{}: people {} | {} ({} ms)",
                p.file_name().unwrap().to_string_lossy(),
                o.people,
                shown.join(", "),
                t.elapsed().as_millis()
            );
        }
    }
}
