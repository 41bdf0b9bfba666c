//! Ingest: what a worker does to an original's bytes. Read the header (refusing pixel bombs
//! before decoding), extract EXIF and XMP, render the configured variants from typed
//! transform specs, and compute fingerprints and the embedder's input. Everything here is
//! synchronous and must run on a blocking thread (libvips images are `!Send`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use flexphoto_media::exif::{read_exif, ExifFacts};
use flexphoto_media::fingerprint::sha256_hex;
use flexphoto_media::pixels::{rgb_for_embedding, RgbImage};
use flexphoto_media::transform::variants::{self, Step};
use flexphoto_media::transform::{self, Budget, EncodeSettings, Limits, Output, TransformError};
use flexphoto_media::xmp::read_xmp;
use flexphoto_media::ImageFormat;
use flexphoto_url::{QualityDefaults, TransformSpec};

use crate::config::{Config, VariantConfig};

/// Why processing an image failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The image itself is bad (empty, not an image, truncated, too large); retrying will not
    /// help. The text is meant for people.
    #[error("{0}")]
    Rejected(String),
    /// Something that may pass on a retry (time limit, environment).
    #[error("{0}")]
    Transient(String),
}

impl From<TransformError> for IngestError {
    fn from(e: TransformError) -> Self {
        match e {
            TransformError::DeadlineExceeded => IngestError::Transient(
                "processing took longer than the configured time limit".into(),
            ),
            TransformError::Internal(m) => {
                IngestError::Transient(format!("internal transform failure: {m}"))
            }
            other => IngestError::Rejected(other.to_string()),
        }
    }
}

/// One rendered variant.
#[derive(Debug, Clone)]
pub struct RenderedVariant {
    /// Variant name.
    pub name: String,
    /// File extension.
    pub ext: String,
    /// Encoded output.
    pub output: Output,
}

/// Everything a worker learns from an original.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// SHA-256, hex.
    pub sha256: String,
    /// The format the bytes are in.
    pub format: ImageFormat,
    /// Width after orientation.
    pub width: u32,
    /// Height after orientation.
    pub height: u32,
    /// EXIF.
    pub exif: ExifFacts,
    /// Variants in configured order.
    pub variants: Vec<RenderedVariant>,
    /// 64-bit difference hash of a 9×8 greyscale thumbnail.
    pub dhash: u64,
    /// A small upright sRGB copy for the embedder (when one is configured), made from a
    /// variant rather than the original.
    pub embed_input: Option<RgbImage>,
    /// Where the time went, for metrics and benchmarks.
    pub timings: StageTimings,
}

/// Wall time of each step of [`analyse`].
#[derive(Debug, Clone, Default)]
pub struct StageTimings {
    /// SHA-256 of the original.
    pub hash: Duration,
    /// Header read and pixel-limit check.
    pub header: Duration,
    /// EXIF and XMP extraction.
    pub metadata: Duration,
    /// The one decode of a still image into the working copy every variant is made from.
    pub decode: Duration,
    /// Each variant (resize and encode; decode too for animations), by name, in the order
    /// they were made.
    pub variants: Vec<(String, Duration)>,
    /// The perceptual hash.
    pub fingerprint: Duration,
    /// The embedder's input pixels.
    pub embed_input: Duration,
}

impl StageTimings {
    /// Every stage as (name, duration); variants as `variant:{name}`.
    pub fn stages(&self) -> Vec<(String, Duration)> {
        let mut out = vec![
            ("hash".to_owned(), self.hash),
            ("header".to_owned(), self.header),
            ("metadata".to_owned(), self.metadata),
            ("decode".to_owned(), self.decode),
        ];
        out.extend(
            self.variants
                .iter()
                .map(|(n, d)| (format!("variant:{n}"), *d)),
        );
        out.push(("fingerprint".to_owned(), self.fingerprint));
        out.push(("embed_input".to_owned(), self.embed_input));
        out
    }
}

/// Prepared processing settings: each variant's transform spec, built once from config.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    limits: Limits,
    enc: EncodeSettings,
    variants: Vec<(VariantConfig, TransformSpec)>,
    timeout: Duration,
    /// Shorter side of the embedder's input; `None` when no embedder runs.
    pub embed_side: Option<u32>,
}

/// Qualities for variants whose config does not name one (every variant does today).
const VARIANT_QUALITY: QualityDefaults = QualityDefaults {
    jpeg: 85,
    webp: 80,
    avif: 60,
};

impl IngestSettings {
    /// The variants' transform specs and the limits, from validated config.
    pub fn new(cfg: &Config) -> Self {
        let variants = cfg
            .variants
            .iter()
            .map(|v| {
                let spec =
                    TransformSpec::for_box(v.width, v.height, v.fit, v.format, Some(v.quality));
                (v.clone(), spec)
            })
            .collect();
        Self {
            limits: Limits {
                formats: cfg.allowed_formats.iter().copied().collect(),
                ..Limits::new(cfg.max_pixels, cfg.max_dimension)
            },
            enc: EncodeSettings {
                quality: VARIANT_QUALITY,
                webp_effort: cfg.webp_effort,
                avif_effort: cfg.avif_effort,
                png_compression: 6,
            },
            variants,
            timeout: cfg.processing_timeout,
            embed_side: None,
        }
    }

    /// How long one original's processing may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The limits every original is held to.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// Analyses an original completely, within `budget` (the image pool stops it when its
/// deadline passes). Blocking; call from an image-pool thread.
pub fn analyse(
    source: &Bytes,
    settings: &IngestSettings,
    budget: &Budget,
) -> Result<Analysis, IngestError> {
    let mut timings = StageTimings::default();
    let mut clock = Instant::now();
    let mut lap = || {
        let now = Instant::now();
        std::mem::replace(&mut clock, now).elapsed()
    };
    let sha256 = sha256_hex(source);
    timings.hash = lap();
    let header = transform::probe_allowed(source, settings.limits.formats)?;
    let pixels = header.width as u64 * header.page_height as u64;
    if pixels > settings.limits.max_source_pixels {
        return Err(TransformError::TooManyPixels {
            width: header.width,
            height: header.page_height,
            limit: settings.limits.max_source_pixels,
        }
        .into());
    }
    let (width, height) = header.oriented_size();
    timings.header = lap();
    let format = ImageFormat::from_loader(&header.loader, source).ok_or_else(|| {
        IngestError::Rejected(format!(
            "the file is in a format FlexPhotoDB does not accept ({})",
            header.loader
        ))
    })?;
    let mut exif = read_exif(source);
    let xmp = read_xmp(source);
    if exif.lens.is_none() {
        exif.lens = ["exifEX:LensModel", "aux:Lens"]
            .iter()
            .find_map(|k| xmp.get(*k).and_then(|v| v.as_str()).map(str::to_owned));
    }
    if !xmp.is_empty() {
        let all = exif
            .all
            .get_or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
        if let Some(obj) = all.as_object_mut() {
            obj.insert("XMP".to_owned(), serde_json::Value::Object(xmp));
        }
    }
    timings.metadata = lap();
    let specs: Vec<TransformSpec> = settings.variants.iter().map(|(_, s)| s.clone()).collect();
    let rendered = variants::render_all(
        source,
        &header,
        &specs,
        &settings.limits,
        &settings.enc,
        budget,
        |step| match step {
            Step::Decoded => timings.decode = lap(),
            Step::Variant(i) => timings
                .variants
                .push((settings.variants[i].0.name.clone(), lap())),
            Step::Fingerprinted => timings.fingerprint = lap(),
        },
    )?;
    let dhash = rendered.dhash;
    let smallest_uncropped = rendered.smallest_uncropped;
    let variants: Vec<RenderedVariant> = settings
        .variants
        .iter()
        .zip(rendered.outputs)
        .map(|((v, _), output)| RenderedVariant {
            name: v.name.clone(),
            ext: v.extension().to_owned(),
            output,
        })
        .collect();
    // The embedder reads the stored variant a re-embed would read, so that rebuilding the
    // index (or a model change) gives the vectors ingest gave.
    let embed_input = match settings.embed_side {
        Some(side) => {
            let from = settings
                .embed_variant()
                .and_then(|name| variants.iter().find(|v| v.name == name))
                .map(|v| v.output.bytes.clone())
                .or(smallest_uncropped)
                .unwrap_or_else(|| source.clone());
            Some(rgb_for_embedding(&from, side, &settings.limits, budget)?)
        }
        None => None,
    };
    timings.embed_input = lap();
    Ok(Analysis {
        embed_input,
        timings,
        sha256,
        format,
        width,
        height,
        exif,
        variants,
        dhash,
    })
}

impl IngestSettings {
    /// The variant to embed from when re-embedding a stored image: the smallest uncropped one
    /// whose box covers the embedder's input, else the largest uncropped one.
    pub fn embed_variant(&self) -> Option<&str> {
        let side = self.embed_side?;
        let uncropped = || self.variants.iter().filter(|(_, spec)| !spec.fit.crops());
        uncropped()
            .filter(|(v, _)| v.width >= side && v.height >= side)
            .min_by_key(|(v, _)| u64::from(v.width) * u64::from(v.height))
            .or_else(|| uncropped().max_by_key(|(v, _)| u64::from(v.width) * u64::from(v.height)))
            .map(|(v, _)| v.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flexphoto_media::vips::Image;

    /// A 1200×800 test picture: four coloured quadrants (so orientation errors show), a
    /// gradient and fine stripes (so resampling differences show).
    fn picture(bands: u32) -> Vec<u8> {
        let (w, h) = (1200u32, 800u32);
        let mut px = Vec::with_capacity((w * h * bands) as usize);
        for y in 0..h {
            for x in 0..w {
                let quad = [
                    [220u8, 40, 40],
                    [40, 200, 60],
                    [40, 60, 220],
                    [230, 210, 40],
                ][((y >= h / 2) as usize) * 2 + (x >= w / 2) as usize];
                let stripe = if (x / 3 + y / 5) % 2 == 0 { 25 } else { 0 };
                let grad = (x * 40 / w) as u8;
                for c in quad {
                    px.push(c.saturating_sub(stripe).saturating_add(grad));
                }
                if bands == 4 {
                    px.push(if x < w / 4 { 0 } else { 255 });
                }
            }
        }
        px
    }

    fn decoded(bytes: &Bytes) -> (u32, u32, u32, Vec<u8>) {
        let img = Image::load(bytes, true, false, 1).unwrap();
        let px = img.pixels().unwrap();
        (img.width(), img.height(), img.bands(), px.to_vec())
    }

    fn default_settings() -> IngestSettings {
        let cfg = crate::config::RawConfig::from_toml_and_env("", std::iter::empty())
            .unwrap()
            .validate()
            .unwrap();
        let mut s = IngestSettings::new(&cfg);
        s.embed_side = Some(384);
        s
    }

    /// Every variant made from the one decoded copy matches, within encoder noise, the same
    /// variant rendered straight from the original by the edge's pipeline.
    fn assert_matches_direct(source: &Bytes, settings: &IngestSettings) -> Analysis {
        let a = analyse(source, settings, &Budget::unlimited()).unwrap();
        for (v, spec) in &settings.variants {
            let ours = a.variants.iter().find(|r| r.name == v.name).unwrap();
            let direct = transform::run(
                source,
                spec,
                &settings.limits,
                &settings.enc,
                &Budget::unlimited(),
            )
            .unwrap();
            let (w1, h1, b1, p1) = decoded(&ours.output.bytes);
            let (w2, h2, b2, p2) = decoded(&direct.bytes);
            assert_eq!((w1, h1, b1), (w2, h2, b2), "variant {}", v.name);
            let mad = p1
                .iter()
                .zip(&p2)
                .map(|(a, b)| (*a as i32 - *b as i32).unsigned_abs() as u64)
                .sum::<u64>() as f64
                / p1.len() as f64;
            assert!(mad < 3.0, "variant {}: mean difference {mad:.2}", v.name);
        }
        a
    }

    #[test]
    fn variants_from_one_decode_match_direct_rendering() {
        flexphoto_media::vips::init(1).unwrap();
        let settings = default_settings();
        // A JPEG stored sideways (EXIF orientation 6): variants come out upright.
        let img = Image::from_pixels(&picture(3), 1200, 800, 3).unwrap();
        img.set_int("orientation", 6);
        let jpeg = img.save(".jpg[Q=95]").unwrap();
        assert_eq!(transform::probe(&jpeg).unwrap().orientation, 6);
        let a = assert_matches_direct(&jpeg, &settings);
        assert_eq!((a.width, a.height), (800, 1200));
        let full = a.variants.iter().find(|v| v.name == "full").unwrap();
        assert_eq!((full.output.width, full.output.height), (800, 1200));
        let rgb = a.embed_input.as_ref().unwrap();
        assert_eq!((rgb.width, rgb.height), (256, 384));

        // Alpha survives in WebP variants and is flattened in the JPEG one.
        let png = Image::from_pixels(&picture(4), 1200, 800, 4)
            .unwrap()
            .save(".png")
            .unwrap();
        let a = assert_matches_direct(&png, &settings);
        let medium = a.variants.iter().find(|v| v.name == "medium").unwrap();
        assert_eq!(decoded(&medium.output.bytes).2, 4);
        let full = a.variants.iter().find(|v| v.name == "full").unwrap();
        assert_eq!(decoded(&full.output.bytes).2, 3);
    }
}
