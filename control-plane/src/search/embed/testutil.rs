//! Test helpers: finding the real model files and the shared photo fixtures.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use flexphoto_media::vips::{Image, Interesting, Size};

use super::RgbImage;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The model directory (`FLEXPHOTO_MODEL_DIR`, else `<repo>/models`) when it holds the files,
/// else `None` after printing a SKIP line.
pub fn model_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("FLEXPHOTO_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("models"));
    let needed = [
        "efficientnet-lite0.safetensors",
        "imagenet_classes.txt",
        "imagenet_definitions.txt",
        "objects/centernet.json",
        "objects/centernet.bin",
        "minilm/model.safetensors",
        "minilm/tokenizer.json",
        "minilm/config.json",
    ];
    if let Some(missing) = needed.iter().find(|f| !dir.join(f).is_file()) {
        crate::test_skip::skip(
            "models",
            &format!(
                "model file {} missing (set FLEXPHOTO_MODEL_DIR or run scripts/fetch-models)",
                dir.join(missing).display()
            ),
        );
        return None;
    }
    Some(dir)
}

/// The shared fixtures folder (the one holding `manifest.json`), or `None` after a SKIP line.
pub fn fixtures_dir() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("FLEXPHOTO_FIXTURES").map(PathBuf::from),
        Some(repo_root().join("../shared/fixtures")),
        Some(repo_root().join("shared/fixtures")),
    ];
    let found = candidates
        .into_iter()
        .flatten()
        .find(|d| d.join("manifest.json").is_file());
    if found.is_none() {
        crate::test_skip::skip(
            "fixtures",
            "fixtures folder not found (set FLEXPHOTO_FIXTURES)",
        );
    }
    found
}

/// Decodes a fixture to sRGB pixels, shrunk to fit a `max`×`max` box as callers would.
pub fn load_rgb(path: &Path, max: u32) -> RgbImage {
    flexphoto_media::vips::init(1).expect("libvips");
    let buf = Bytes::from(std::fs::read(path).expect("read fixture"));
    let img = Image::thumbnail(&buf, max, max, Size::Down, Interesting::None, false, false)
        .expect("decode")
        .to_srgb()
        .expect("srgb");
    let img = if img.has_alpha() {
        img.flatten([255.0; 3]).expect("flatten")
    } else {
        img
    };
    assert_eq!(img.bands(), 3, "{} is not RGB", path.display());
    RgbImage {
        width: img.width(),
        height: img.height(),
        pixels: img.pixels().expect("pixels").to_vec(),
    }
}
