//! What a worker does to an original's bytes: read the header (refusing pixel bombs before
//! decoding), extract EXIF, render the configured variants with the edge's transform pipeline,
//! and compute fingerprints. Everything here is synchronous and must run on a blocking thread
//! (libvips images are `!Send`).

use std::collections::HashMap;
use std::io::Cursor;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone, Utc};
use exif::{In, Tag, Value};
use flexphoto_edge::transform::geometry::{plan, Plan};
use flexphoto_edge::transform::{
    self, EncodeSettings, Limits, Output, TransformError, WorkingCopy,
};
use flexphoto_edge::url::canonical::{resolve, QualityDefaults, ResolveContext, TransformSpec};
use flexphoto_edge::url::options::parse_pairs;
use flexphoto_edge::vips::{Image, Interesting, Size};
use sha2::{Digest, Sha256};

use crate::config::{Config, VariantConfig};
use crate::embed::RgbImage;

/// Why processing an image failed.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The image itself is bad (empty, not an image, truncated, too large); retrying will not
    /// help. The text is meant for people.
    #[error("{0}")]
    Rejected(String),
    /// Something that may pass on a retry (time limit, environment).
    #[error("{0}")]
    Transient(String),
}

impl From<flexphoto_edge::vips::VipsError> for MediaError {
    fn from(e: flexphoto_edge::vips::VipsError) -> Self {
        MediaError::Transient(format!("image operation failed: {e}"))
    }
}

impl From<TransformError> for MediaError {
    fn from(e: TransformError) -> Self {
        match e {
            TransformError::DeadlineExceeded => MediaError::Transient(
                "processing took longer than the configured time limit".into(),
            ),
            TransformError::Internal(m) => {
                MediaError::Transient(format!("internal transform failure: {m}"))
            }
            other => MediaError::Rejected(other.to_string()),
        }
    }
}

/// The typed EXIF fields the schema keeps as columns, plus everything as JSON.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExifFacts {
    /// Camera make.
    pub make: Option<String>,
    /// Camera model.
    pub model: Option<String>,
    /// Lens model.
    pub lens: Option<String>,
    /// When the photo was taken (UTC; local time is taken as UTC when no offset is recorded).
    pub taken_at: Option<DateTime<Utc>>,
    /// ISO sensitivity.
    pub iso: Option<i32>,
    /// Exposure time, seconds.
    pub exposure_time: Option<f64>,
    /// Aperture.
    pub f_number: Option<f64>,
    /// Focal length, mm.
    pub focal_length: Option<f64>,
    /// Latitude, degrees north.
    pub gps_lat: Option<f64>,
    /// Longitude, degrees east.
    pub gps_lon: Option<f64>,
    /// Raw orientation tag.
    pub orientation: Option<i32>,
    /// Every EXIF field as `{"Tag": "display value"}` (large binary fields left out), plus the
    /// selected XMP properties under `"XMP"`.
    pub all: Option<serde_json::Value>,
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
    /// Format name (`jpeg`, `png`, `heif`, `avif` …).
    pub format: String,
    /// Content type matching the format.
    pub mime: String,
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

/// Prepared processing settings: the variants' transform specs are resolved once.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    limits: Limits,
    enc: EncodeSettings,
    variants: Vec<(VariantConfig, TransformSpec)>,
    timeout: Duration,
    /// Shorter side of the embedder's input; `None` when no embedder runs.
    pub embed_side: Option<u32>,
}

impl MediaSettings {
    /// Resolves the configured variants through the edge's option grammar.
    pub fn new(cfg: &Config) -> Result<Self, String> {
        let quality = QualityDefaults {
            jpeg: 85,
            webp: 80,
            avif: 60,
        };
        let presets = HashMap::new();
        let ctx = ResolveContext {
            presets: &presets,
            max_dimension: cfg.max_dimension,
            quality,
            accept: None,
        };
        let mut variants = Vec::new();
        for v in &cfg.variants {
            let text = format!(
                "w={},h={},fit={},f={},q={}",
                v.width, v.height, v.fit, v.format, v.quality
            );
            let opts = parse_pairs(&text, ',', cfg.max_dimension)
                .map_err(|e| format!("variant {}: {e}", v.name))?;
            let spec = resolve(&opts, &ctx).map_err(|e| format!("variant {}: {e}", v.name))?;
            variants.push((v.clone(), spec));
        }
        Ok(Self {
            limits: Limits {
                max_source_pixels: cfg.max_pixels,
                max_dimension: cfg.max_dimension,
            },
            enc: EncodeSettings {
                quality,
                webp_effort: cfg.webp_effort,
                avif_effort: cfg.avif_effort,
                png_compression: 6,
            },
            variants,
            timeout: cfg.processing_timeout,
            embed_side: None,
        })
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Analyses an original completely. Blocking; call from a blocking thread.
pub fn analyse(source: &Bytes, settings: &MediaSettings) -> Result<Analysis, MediaError> {
    let deadline = Instant::now() + settings.timeout;
    let mut timings = StageTimings::default();
    let mut clock = Instant::now();
    let mut lap = || {
        let now = Instant::now();
        std::mem::replace(&mut clock, now).elapsed()
    };
    let sha256 = sha256_hex(source);
    timings.hash = lap();
    let header = transform::probe(source)?;
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
    let (format, mime) = format_of(&header.loader, source);
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
    // A still image is decoded once, at the largest size any variant needs; every variant,
    // the fingerprint and the embedder's input are made from that copy or from the pixels of
    // a larger variant, so orientation and colour conversion also happen once. Animations go
    // variant by variant from the original so that outputs that can animate keep their frames.
    let plans: Vec<Plan> = settings
        .variants
        .iter()
        .map(|(_, spec)| {
            plan(
                spec.fit,
                spec.gravity,
                spec.width,
                spec.height,
                width,
                height,
                settings.limits.max_dimension,
            )
        })
        .collect();
    let mut copy = if header.pages <= 1 {
        let (cw, ch) = copy_size(&plans, width, height);
        Some(WorkingCopy::decode(
            source,
            &header,
            &settings.limits,
            cw,
            ch,
        )?)
    } else {
        None
    };
    timings.decode = lap();
    let mut order: Vec<usize> = (0..settings.variants.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(area(plans[i].resized)));
    let mut rendered: Vec<Option<RenderedVariant>> = vec![None; settings.variants.len()];
    // Uncropped outputs of an animation, for the fingerprint.
    let mut made: Vec<(Bytes, u32, u32)> = Vec::new();
    for i in order {
        let (v, spec) = &settings.variants[i];
        let from_copy = match &copy {
            Some(c) => {
                transform::run_from_copy(c, spec, &settings.limits, &settings.enc, Some(deadline))?
            }
            None => None,
        };
        let output = match from_copy {
            Some((output, level)) => {
                if let (Some(c), Some(level)) = (copy.as_mut(), level) {
                    c.push_level(level);
                }
                output
            }
            None => {
                let output = transform::run(
                    source,
                    spec,
                    &settings.limits,
                    &settings.enc,
                    Some(deadline),
                )?;
                if !spec.fit.crops() {
                    made.push((output.bytes.clone(), output.width, output.height));
                }
                output
            }
        };
        timings.variants.push((v.name.clone(), lap()));
        rendered[i] = Some(RenderedVariant {
            name: v.name.clone(),
            ext: v.extension().to_owned(),
            output,
        });
    }
    let variants: Vec<RenderedVariant> = rendered.into_iter().flatten().collect();
    // The fingerprint looks at the whole picture: a 64-px sketch from the smallest uncropped
    // pixels (or output) that will do.
    let dhash = match &copy {
        Some(c) => {
            let (tw, th) = fit_inside(width, height, 64);
            let (px, lw, lh) = smallest_level(c, tw, th);
            let small =
                transform::resample::resize(&px, (lw, lh), c.bands, (tw, th), c.has_alpha())?;
            let rgb = rgb_from(Image::from_pixel_bytes(
                Bytes::from(small),
                tw,
                th,
                c.bands,
            )?)?;
            dhash_of(Image::from_pixels(&rgb.pixels, rgb.width, rgb.height, 3)?)?
        }
        None => dhash(&smallest_output(&made).unwrap_or_else(|| source.clone()))?,
    };
    timings.fingerprint = lap();
    // The embedder reads the stored variant a re-embed would read, so that rebuilding the
    // index (or a model change) gives the vectors ingest gave.
    let embed_input = match settings.embed_side {
        Some(side) => {
            let from = settings
                .embed_variant()
                .and_then(|name| variants.iter().find(|v| v.name == name))
                .map(|v| v.output.bytes.clone())
                .or_else(|| smallest_output(&made))
                .unwrap_or_else(|| source.clone());
            Some(rgb_for_embedding(&from, side)?)
        }
        None => None,
    };
    timings.embed_input = lap();
    Ok(Analysis {
        embed_input,
        timings,
        sha256,
        format,
        mime,
        width,
        height,
        exif,
        variants,
        dhash,
    })
}

impl MediaSettings {
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

/// Decodes `source` into upright sRGB pixels fitted into a `side`×`side` box (never
/// enlarged), alpha flattened on white: the embedder's input. Blocking.
pub fn rgb_for_embedding(source: &Bytes, side: u32) -> Result<RgbImage, MediaError> {
    transform::probe(source)?;
    let (bw, bh) = (side.max(1), side.max(1));
    let img = Image::thumbnail(source, bw, bh, Size::Down, Interesting::None, true, false)
        .map_err(|e| MediaError::Rejected(format!("the image could not be decoded: {e}")))?
        .to_srgb()?;
    rgb_from(img)
}

/// Packs an sRGB image as 3-band pixels, alpha flattened on white.
fn rgb_from(mut img: Image) -> Result<RgbImage, MediaError> {
    if img.bands() == 4 || img.bands() == 2 {
        img = img.flatten([255.0, 255.0, 255.0])?;
    }
    let (width, height) = (img.width(), img.height());
    let pixels = img.pixels()?;
    if pixels.len() != width as usize * height as usize * 3 {
        return Err(MediaError::Transient(format!(
            "unexpected pixel layout for embedding: {} bytes for {width}x{height}",
            pixels.len()
        )));
    }
    Ok(RgbImage {
        width,
        height,
        pixels: pixels.to_vec(),
    })
}

/// The smallest of the encoded uncropped outputs, if any.
fn smallest_output(made: &[(Bytes, u32, u32)]) -> Option<Bytes> {
    made.iter()
        .min_by_key(|(_, w, h)| u64::from(*w) * u64::from(*h))
        .map(|(b, _, _)| b.clone())
}

fn area((w, h): (u32, u32)) -> u64 {
    u64::from(w) * u64::from(h)
}

/// `w`×`h` fitted into a `side`² box, never enlarged.
fn fit_inside(w: u32, h: u32, side: u32) -> (u32, u32) {
    let s = (side as f64 / w.max(h).max(1) as f64).min(1.0);
    (
        ((w as f64 * s).round() as u32).max(1),
        ((h as f64 * s).round() as u32).max(1),
    )
}

/// Size of the one decoded copy of a `w`×`h` (upright) source: the original's aspect ratio,
/// large enough for every variant's planned resize, never larger than the original.
fn copy_size(plans: &[Plan], w: u32, h: u32) -> (u32, u32) {
    let (w, h) = (w.max(1), h.max(1));
    let scale = plans
        .iter()
        .map(|p| (p.resized.0 as f64 / w as f64).max(p.resized.1 as f64 / h as f64))
        .fold(0.0f64, f64::max)
        .min(1.0);
    let need_w = plans.iter().map(|p| p.resized.0.min(w)).max().unwrap_or(1);
    let need_h = plans.iter().map(|p| p.resized.1.min(h)).max().unwrap_or(1);
    (
        ((w as f64 * scale).round() as u32).max(need_w).clamp(1, w),
        ((h as f64 * scale).round() as u32).max(need_h).clamp(1, h),
    )
}

/// The smallest of a copy's levels (the top included) at least `w`×`h`, as pixels and size.
fn smallest_level(c: &WorkingCopy, w: u32, h: u32) -> (Bytes, u32, u32) {
    c.smaller
        .iter()
        .rev()
        .find(|l| l.width >= w && l.height >= h)
        .map(|l| (l.pixels.clone(), l.width, l.height))
        .unwrap_or_else(|| (c.pixels.clone(), c.width, c.height))
}

fn format_of(loader: &str, buf: &[u8]) -> (String, String) {
    let name = loader
        .trim_end_matches("_buffer")
        .trim_end_matches("_source")
        .trim_end_matches("load");
    let brand = buf.get(8..12).unwrap_or_default();
    let (f, m) = match name {
        "jpeg" => ("jpeg", "image/jpeg"),
        "png" => ("png", "image/png"),
        "webp" => ("webp", "image/webp"),
        "gif" => ("gif", "image/gif"),
        "tiff" => ("tiff", "image/tiff"),
        "heif" if brand == b"avif" || brand == b"avis" => ("avif", "image/avif"),
        "heif" => ("heif", "image/heif"),
        other => return (other.to_owned(), "application/octet-stream".to_owned()),
    };
    (f.to_owned(), m.to_owned())
}

/// A 64-bit difference hash: each bit says whether a pixel of a 9×8 greyscale thumbnail is
/// brighter than its right-hand neighbour.
pub fn dhash(source: &Bytes) -> Result<u64, MediaError> {
    let img = Image::thumbnail(source, 9, 8, Size::Force, Interesting::None, true, false)
        .map_err(|e| MediaError::Rejected(format!("the source image could not be decoded: {e}")))?;
    dhash_of(img)
}

/// The difference hash of an already decoded image.
fn dhash_of(img: Image) -> Result<u64, MediaError> {
    let thumb = if (img.width(), img.height()) == (9, 8) {
        img
    } else {
        img.thumbnail_image(9, 8, Size::Force, Interesting::None)?
    };
    let pgm = thumb
        .save(".pgm")
        .map_err(|e| MediaError::Transient(format!("greyscale thumbnail failed: {e}")))?;
    let (w, h, px) = parse_pgm(&pgm)
        .ok_or_else(|| MediaError::Transient("unexpected greyscale thumbnail".into()))?;
    Ok(dhash_from_grey(w, h, px))
}

fn dhash_from_grey(w: usize, h: usize, px: &[u8]) -> u64 {
    let mut bits = 0u64;
    for y in 0..h.min(8) {
        for x in 0..(w - 1).min(8) {
            bits <<= 1;
            if px[y * w + x] > px[y * w + x + 1] {
                bits |= 1;
            }
        }
    }
    bits
}

/// Parses a binary 8-bit PGM (`P5`) into width, height and pixels.
fn parse_pgm(buf: &[u8]) -> Option<(usize, usize, &[u8])> {
    let mut fields = Vec::with_capacity(4);
    let mut i = 0;
    while fields.len() < 4 && i < buf.len() {
        match buf[i] {
            b'#' => {
                while i < buf.len() && buf[i] != b'\n' {
                    i += 1;
                }
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                let start = i;
                while i < buf.len() && !buf[i].is_ascii_whitespace() {
                    i += 1;
                }
                fields.push(std::str::from_utf8(&buf[start..i]).ok()?);
            }
        }
    }
    if fields.len() < 4 || fields[0] != "P5" || fields[3] != "255" {
        return None;
    }
    let w: usize = fields[1].parse().ok()?;
    let h: usize = fields[2].parse().ok()?;
    let px = buf.get(i + 1..i + 1 + w * h)?;
    (w >= 2).then_some((w, h, px))
}

fn ascii(v: &Value) -> Option<String> {
    if let Value::Ascii(parts) = v {
        let s = parts.first()?;
        let s = String::from_utf8_lossy(s)
            .trim_matches(|c: char| c == '\0' || c.is_whitespace())
            .to_owned();
        (!s.is_empty()).then_some(s)
    } else {
        None
    }
}

fn rational(v: &Value, i: usize) -> Option<f64> {
    let r = match v {
        Value::Rational(r) => r.get(i).map(|r| r.to_f64()),
        Value::SRational(r) => r.get(i).map(|r| r.to_f64()),
        _ => None,
    }?;
    r.is_finite().then_some(r)
}

fn gps_coord(exif: &exif::Exif, tag: Tag, ref_tag: Tag, neg: u8) -> Option<f64> {
    let f = exif.get_field(tag, In::PRIMARY)?;
    let (d, m, s) = (
        rational(&f.value, 0)?,
        rational(&f.value, 1).unwrap_or(0.0),
        rational(&f.value, 2).unwrap_or(0.0),
    );
    let mut deg = d + m / 60.0 + s / 3600.0;
    if let Some(r) = exif
        .get_field(ref_tag, In::PRIMARY)
        .and_then(|r| ascii(&r.value))
    {
        if r.as_bytes().first() == Some(&neg) {
            deg = -deg;
        }
    }
    deg.is_finite().then_some(deg)
}

fn taken_at(exif: &exif::Exif) -> Option<DateTime<Utc>> {
    let f = exif
        .get_field(Tag::DateTimeOriginal, In::PRIMARY)
        .or_else(|| exif.get_field(Tag::DateTime, In::PRIMARY))?;
    let Value::Ascii(parts) = &f.value else {
        return None;
    };
    let mut dt = exif::DateTime::from_ascii(parts.first()?).ok()?;
    if let Some(off) = exif.get_field(Tag::OffsetTimeOriginal, In::PRIMARY) {
        if let Value::Ascii(o) = &off.value {
            if let Some(o) = o.first() {
                let _ = dt.parse_offset(o);
            }
        }
    }
    let naive = NaiveDate::from_ymd_opt(dt.year.into(), dt.month.into(), dt.day.into())?
        .and_hms_opt(dt.hour.into(), dt.minute.into(), dt.second.into())?;
    let offset = FixedOffset::east_opt(i32::from(dt.offset.unwrap_or(0)) * 60)?;
    Some(
        offset
            .from_local_datetime(&naive)
            .single()?
            .with_timezone(&Utc),
    )
}

/// Reads EXIF from any container kamadak-exif knows (JPEG, HEIF, PNG, WebP, TIFF). Broken or
/// missing EXIF gives empty facts, never an error: metadata fails softly.
pub fn read_exif(source: &[u8]) -> ExifFacts {
    let mut reader = exif::Reader::new();
    reader.continue_on_error(true);
    let exif = match reader
        .read_from_container(&mut Cursor::new(source))
        .or_else(|e| e.distill_partial_result(|_| {}))
    {
        Ok(e) => e,
        Err(_) => return ExifFacts::default(),
    };
    let get = |t: Tag| exif.get_field(t, In::PRIMARY);
    let mut all = serde_json::Map::new();
    for f in exif.fields() {
        if f.ifd_num != In::PRIMARY || f.tag == Tag::MakerNote {
            continue;
        }
        if matches!(&f.value, Value::Undefined(b, _) | Value::Byte(b) if b.len() > 64) {
            continue;
        }
        let mut text = match &f.value {
            Value::Ascii(_) => ascii(&f.value).unwrap_or_default(),
            _ => f.display_value().with_unit(&exif).to_string(),
        };
        if text.len() > 512 {
            let mut cut = 512;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        all.insert(f.tag.to_string(), serde_json::Value::String(text));
    }
    let lat = gps_coord(&exif, Tag::GPSLatitude, Tag::GPSLatitudeRef, b'S');
    let lon = gps_coord(&exif, Tag::GPSLongitude, Tag::GPSLongitudeRef, b'W');
    let (gps_lat, gps_lon) = match (lat, lon) {
        (Some(a), Some(b)) if (-90.0..=90.0).contains(&a) && (-180.0..=180.0).contains(&b) => {
            (Some(a), Some(b))
        }
        _ => (None, None),
    };
    ExifFacts {
        make: get(Tag::Make).and_then(|f| ascii(&f.value)),
        model: get(Tag::Model).and_then(|f| ascii(&f.value)),
        lens: get(Tag::LensModel).and_then(|f| ascii(&f.value)),
        taken_at: taken_at(&exif),
        iso: get(Tag::PhotographicSensitivity)
            .and_then(|f| f.value.get_uint(0))
            .and_then(|v| i32::try_from(v).ok()),
        exposure_time: get(Tag::ExposureTime).and_then(|f| rational(&f.value, 0)),
        f_number: get(Tag::FNumber).and_then(|f| rational(&f.value, 0)),
        focal_length: get(Tag::FocalLength).and_then(|f| rational(&f.value, 0)),
        gps_lat,
        gps_lon,
        orientation: get(Tag::Orientation)
            .and_then(|f| f.value.get_uint(0))
            .and_then(|v| i32::try_from(v).ok()),
        all: (!all.is_empty()).then_some(serde_json::Value::Object(all)),
    }
}

/// XMP properties kept (by qualified name).
const XMP_PROPS: &[&str] = &[
    "xmp:Rating",
    "xmp:CreatorTool",
    "xmp:CreateDate",
    "aux:Lens",
    "exifEX:LensModel",
    "photoshop:DateCreated",
    "photoshop:City",
    "photoshop:Country",
    "dc:title",
    "dc:description",
    "dc:subject",
    "dc:creator",
    "dc:rights",
];

/// Reads the XMP packet (found within the first MiB, where every container we accept keeps
/// it) and returns the properties in [`XMP_PROPS`] that it sets. Lists (`rdf:li`) are joined
/// with `, `. Malformed XMP yields what could be read.
pub fn read_xmp(source: &[u8]) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    let window = &source[..source.len().min(1 << 20)];
    let Some(start) = find(window, b"<x:xmpmeta") else {
        return out;
    };
    let end = find(&window[start..], b"</x:xmpmeta>")
        .map(|e| start + e)
        .unwrap_or(window.len());
    let xmp = String::from_utf8_lossy(&window[start..end]);
    for prop in XMP_PROPS {
        // Attribute form: prop="value".
        if let Some(i) = xmp.find(&format!("{prop}=\"")) {
            let rest = &xmp[i + prop.len() + 2..];
            if let Some(j) = rest.find('"') {
                out.insert(
                    (*prop).to_owned(),
                    serde_json::Value::String(unescape(&rest[..j])),
                );
                continue;
            }
        }
        // Element form: <prop>value</prop>, or a list of <rdf:li>.
        let open = format!("<{prop}>");
        let close = format!("</{prop}>");
        if let Some(i) = xmp.find(&open) {
            let body = &xmp[i + open.len()..];
            let body = &body[..body.find(&close).unwrap_or(body.len())];
            let items: Vec<String> = body
                .split("<rdf:li")
                .skip(1)
                .filter_map(|li| {
                    let v = &li[li.find('>')? + 1..];
                    Some(unescape(v[..v.find("</rdf:li>")?].trim()))
                })
                .filter(|v| !v.is_empty())
                .collect();
            let v = if items.is_empty() {
                unescape(body.trim())
            } else {
                items.join(", ")
            };
            if !v.is_empty() && !v.contains('<') {
                out.insert((*prop).to_owned(), serde_json::Value::String(v));
            }
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn unescape(s: &str) -> String {
    let mut v = s
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&");
    if v.len() > 512 {
        let mut cut = 512;
        while !v.is_char_boundary(cut) {
            cut -= 1;
        }
        v.truncate(cut);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xmp_attributes_and_lists() {
        let doc = br#"junk<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description
            aux:Lens="EF-S18-55mm f/3.5-5.6 III" xmp:Rating="4">
            <dc:subject><rdf:Bag><rdf:li>beach</rdf:li><rdf:li>sun &amp; sea</rdf:li></rdf:Bag></dc:subject>
            <dc:title><rdf:Alt><rdf:li xml:lang="x-default">Dune</rdf:li></rdf:Alt></dc:title>
            </rdf:Description></rdf:RDF></x:xmpmeta>"#;
        let x = read_xmp(doc);
        assert_eq!(x["aux:Lens"], "EF-S18-55mm f/3.5-5.6 III");
        assert_eq!(x["xmp:Rating"], "4");
        assert_eq!(x["dc:subject"], "beach, sun & sea");
        assert_eq!(x["dc:title"], "Dune");
        assert!(read_xmp(b"no xmp here").is_empty());
    }

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

    fn default_settings() -> MediaSettings {
        let cfg = crate::config::RawConfig::from_toml_and_env("", |_| None)
            .unwrap()
            .validate()
            .unwrap();
        let mut s = MediaSettings::new(&cfg).unwrap();
        s.embed_side = Some(384);
        s
    }

    /// Every variant made from the one decoded copy matches, within encoder noise, the same
    /// variant rendered straight from the original by the edge's pipeline.
    fn assert_matches_direct(source: &Bytes, settings: &MediaSettings) -> Analysis {
        let a = analyse(source, settings).unwrap();
        for (v, spec) in &settings.variants {
            let ours = a.variants.iter().find(|r| r.name == v.name).unwrap();
            let direct =
                transform::run(source, spec, &settings.limits, &settings.enc, None).unwrap();
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
        flexphoto_edge::vips::init(1).unwrap();
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

    #[test]
    fn pgm_and_dhash() {
        let mut buf = b"P5\n# comment\n9 8\n255\n".to_vec();
        let px: Vec<u8> = (0..72).map(|i| if i % 9 < 4 { 200 } else { 10 }).collect();
        buf.extend_from_slice(&px);
        let (w, h, p) = parse_pgm(&buf).unwrap();
        assert_eq!((w, h), (9, 8));
        // Only the 4th→5th step in each row goes from bright to dark.
        let expect = (0..8).fold(0u64, |acc, _| (acc << 8) | 0b0001_0000);
        assert_eq!(dhash_from_grey(w, h, p), expect);
        assert!(parse_pgm(b"P6\n9 8\n255\n").is_none());
    }

    #[test]
    fn missing_exif_is_empty() {
        assert_eq!(read_exif(b"not an image"), ExifFacts::default());
    }

    #[test]
    fn formats_from_loaders() {
        assert_eq!(format_of("jpegload_buffer", b"").0, "jpeg");
        assert_eq!(
            format_of("heifload_buffer", b"\0\0\0\x1cftypavif").1,
            "image/avif"
        );
        assert_eq!(
            format_of("heifload_buffer", b"\0\0\0\x1cftypheic").1,
            "image/heif"
        );
    }
}
