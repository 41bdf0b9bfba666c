//! The transform pipeline: source bytes and a canonical [`TransformSpec`] in, encoded bytes
//! out. No HTTP here, and nothing async: it runs on a [`pool::TransformPool`] thread.
//!
//! Steps, in order, with the deadline checked between them:
//! 1. sniff: refuse empty files and bytes no loader recognises;
//! 2. header: read dimensions without decoding; refuse pixel bombs before any allocation;
//! 3. choose the output format (negotiated class + alpha + animation);
//! 4. resize: shrink-on-load `thumbnail` (or load, orient, crop, then resize for an editor's
//!    crop), with fail-on-truncated so damaged files are refused, never served half grey;
//! 5. cut by gravity or pad; rotate, flip, blur, sharpen;
//! 6. colour: to sRGB through the embedded ICC profile unless `meta=keep`; flatten alpha for JPEG;
//! 7. metadata policy, then encode.
//!
//! Animated GIF and WebP keep their frames when the output can animate (WebP, GIF) and the
//! request only resizes (no crop, pad, rotation, vertical flip, blur or sharpen); otherwise the
//! first frame is used.

pub mod geometry;
pub mod metadata;
pub mod pool;
pub mod resample;

use std::time::Instant;

use bytes::Bytes;

use crate::url::canonical::{FormatPlan, QualityDefaults, TransformSpec};
use crate::url::options::{Colour, Fit, Flip, Gravity, Meta, OutputFormat};
use crate::vips::{self, Image, Interesting, Size, VipsError};
use geometry::{gravity_offset, plan, Cut};

/// Hard limits applied to every source.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest width × height (all frames together for animations).
    pub max_source_pixels: u64,
    /// Largest output side.
    pub max_dimension: u32,
}

/// Encoder settings from config.
#[derive(Debug, Clone, Copy)]
pub struct EncodeSettings {
    /// Default qualities.
    pub quality: QualityDefaults,
    /// WebP effort 0..=6.
    pub webp_effort: u8,
    /// AVIF effort 0..=9.
    pub avif_effort: u8,
    /// PNG zlib level.
    pub png_compression: u8,
}

/// An encoded result.
#[derive(Debug, Clone)]
pub struct Output {
    /// Encoded bytes.
    pub bytes: Bytes,
    /// Their format.
    pub format: OutputFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels (of one frame).
    pub height: u32,
    /// Whether it was made from a cached working copy rather than the source bytes.
    pub from_working_copy: bool,
}

/// A source decoded once at a working size: upright, sRGB, 8-bit, packed pixels. Later
/// requests for sizes well below it resize this instead of decoding the original again.
#[derive(Debug, Clone)]
pub struct WorkingCopy {
    /// Packed pixels.
    pub pixels: Bytes,
    /// Width of the working copy.
    pub width: u32,
    /// Height of the working copy.
    pub height: u32,
    /// Bands (3, or 4 with alpha).
    pub bands: u32,
    /// Upright width of the original.
    pub source_width: u32,
    /// Upright height of the original.
    pub source_height: u32,
    /// The original's own web format, if any.
    pub native: Option<OutputFormat>,
    /// Smaller versions of the copy, each 1/√2 of the one before, largest first: a request
    /// resizes the smallest one that is still at least twice its output.
    pub smaller: Vec<Level>,
}

/// One smaller version of a working copy (same bands).
#[derive(Debug, Clone)]
pub struct Level {
    /// Packed pixels.
    pub pixels: Bytes,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// Smallest side a working-copy level is made down to.
const MIN_LEVEL_SIDE: u32 = 256;

impl WorkingCopy {
    /// Bytes held, all levels together.
    pub fn byte_size(&self) -> usize {
        self.pixels.len() + self.smaller.iter().map(|l| l.pixels.len()).sum::<usize>()
    }

    /// Whether the last band is alpha (grey + alpha or RGBA).
    pub fn has_alpha(&self) -> bool {
        self.bands == 2 || self.bands == 4
    }

    /// Makes the √2 levels below the top one.
    fn build_levels(&mut self) -> Result<()> {
        let alpha = self.has_alpha();
        let (mut pixels, mut w, mut h) = (self.pixels.clone(), self.width, self.height);
        loop {
            let nw = (w as f64 / std::f64::consts::SQRT_2).round() as u32;
            let nh = (h as f64 / std::f64::consts::SQRT_2).round() as u32;
            if nw.max(nh) < MIN_LEVEL_SIDE || nw == 0 || nh == 0 {
                return Ok(());
            }
            pixels = Bytes::from(resample::resize(
                &pixels,
                (w, h),
                self.bands,
                (nw, nh),
                alpha,
            )?);
            (w, h) = (nw, nh);
            self.smaller.push(Level {
                pixels: pixels.clone(),
                width: w,
                height: h,
            });
        }
    }

    /// The smallest level (pixels, width, height), the top one included, that holds at least
    /// `min_factor` times the plan's resized size.
    fn pick(&self, p: &geometry::Plan, min_factor: u64) -> Option<(Bytes, u32, u32)> {
        let fits = |w: u32, h: u32| {
            p.resized.0 as u64 * min_factor <= w as u64
                && p.resized.1 as u64 * min_factor <= h as u64
        };
        self.smaller
            .iter()
            .rev()
            .find(|l| fits(l.width, l.height))
            .map(|l| (l.pixels.clone(), l.width, l.height))
            .or_else(|| {
                fits(self.width, self.height)
                    .then(|| (self.pixels.clone(), self.width, self.height))
            })
    }

    /// Decodes `source` once into a copy of exactly `width`×`height` (the caller keeps the
    /// aspect ratio): upright, sRGB, 8-bit, without smaller levels. The base for making
    /// several outputs of one source, such as ingest's variants. `header` is the source's
    /// [`probe`]; pixel bombs are refused before decoding.
    pub fn decode(
        source: &Bytes,
        header: &vips::Header,
        limits: &Limits,
        width: u32,
        height: u32,
    ) -> Result<WorkingCopy> {
        if header.width as u64 * header.page_height as u64 > limits.max_source_pixels {
            return Err(TransformError::TooManyPixels {
                width: header.width,
                height: header.page_height,
                limit: limits.max_source_pixels,
            });
        }
        let (source_width, source_height) = header.oriented_size();
        let (width, height) = (width.max(1), height.max(1));
        let img = match decode_resampled(source, header, width, height)? {
            Some(img) => img,
            None => Image::thumbnail(
                source,
                width,
                height,
                Size::Force,
                Interesting::None,
                true,
                false,
            )?,
        }
        .to_srgb()?;
        let pixels = img.pixels()?;
        let (width, height, bands) = (img.width(), img.height(), img.bands());
        if pixels.len() as u64 != width as u64 * height as u64 * bands as u64 {
            return Err(TransformError::Internal(format!(
                "decoded copy is not 8-bit: {} bytes for {width}x{height}x{bands}",
                pixels.len()
            )));
        }
        Ok(WorkingCopy {
            pixels,
            width,
            height,
            bands,
            source_width,
            source_height,
            native: source_format(&header.loader, source),
            smaller: Vec::new(),
        })
    }

    /// Adds a smaller copy, keeping the levels largest first.
    pub fn push_level(&mut self, level: Level) {
        let area = |l: &Level| l.width as u64 * l.height as u64;
        let at = self
            .smaller
            .iter()
            .position(|l| area(l) < area(&level))
            .unwrap_or(self.smaller.len());
        self.smaller.insert(at, level);
    }

    /// Whether a request may be served from a working copy at all: it needs no metadata and
    /// no editor's crop (which wants full source resolution).
    pub fn eligible(spec: &TransformSpec) -> bool {
        spec.meta == Meta::None && spec.crop.is_none()
    }

    /// Whether the planned resize is at least a 2x reduction of this copy, so the result is
    /// as sharp as one made from the original.
    fn serves(&self, p: &geometry::Plan) -> bool {
        p.resized.0 as u64 * 2 <= self.width as u64 && p.resized.1 as u64 * 2 <= self.height as u64
    }
}

/// Why a transform failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransformError {
    /// Zero bytes.
    #[error("the source image is empty")]
    Empty,
    /// No decoder recognises the bytes.
    #[error("the source is not an image in a supported format")]
    NotAnImage,
    /// The header declares more pixels than allowed.
    #[error("the source image is {width}x{height} ({} megapixels), over the limit of {} megapixels", (*.width as u64 * *.height as u64) / 1_000_000, .limit / 1_000_000)]
    TooManyPixels {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// Configured limit.
        limit: u64,
    },
    /// The decoder failed: truncated or corrupt data.
    #[error("the source image could not be decoded: {0}")]
    Undecodable(String),
    /// A request option does not fit this image (e.g. a crop outside it).
    #[error("{0}")]
    BadOption(String),
    /// The request's deadline passed.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// A bug or environment failure.
    #[error("internal transform failure: {0}")]
    Internal(String),
}

impl From<VipsError> for TransformError {
    fn from(e: VipsError) -> Self {
        TransformError::Undecodable(e.0)
    }
}

type Result<T> = std::result::Result<T, TransformError>;

fn check_deadline(deadline: Option<Instant>) -> Result<()> {
    match deadline {
        Some(d) if Instant::now() >= d => Err(TransformError::DeadlineExceeded),
        _ => Ok(()),
    }
}

/// The source's own format, as the loader names it.
fn source_format(loader: &str, buf: &[u8]) -> Option<OutputFormat> {
    if loader.starts_with("jpegload") {
        Some(OutputFormat::Jpeg)
    } else if loader.starts_with("pngload") {
        Some(OutputFormat::Png)
    } else if loader.starts_with("webpload") {
        Some(OutputFormat::Webp)
    } else if loader.starts_with("gifload") {
        Some(OutputFormat::Gif)
    } else if loader.starts_with("heifload")
        && buf.len() > 12
        && (&buf[8..12] == b"avif" || &buf[8..12] == b"avis")
    {
        Some(OutputFormat::Avif)
    } else {
        None
    }
}

fn choose_format(
    plan: FormatPlan,
    native: Option<OutputFormat>,
    alpha: bool,
    animated: bool,
) -> OutputFormat {
    let fallback = if alpha {
        OutputFormat::Png
    } else {
        OutputFormat::Jpeg
    };
    match plan {
        FormatPlan::Fixed(f) => f,
        FormatPlan::Source => native.unwrap_or(fallback),
        FormatPlan::Auto { avif, webp } => {
            if animated {
                if webp {
                    OutputFormat::Webp
                } else {
                    OutputFormat::Gif
                }
            } else if avif {
                OutputFormat::Avif
            } else if webp {
                OutputFormat::Webp
            } else {
                fallback
            }
        }
    }
}

/// Whether every step of `spec` works frame by frame on an animation strip.
fn frame_safe(spec: &TransformSpec) -> bool {
    spec.crop.is_none()
        && spec.rotate == 0
        && !matches!(spec.flip, Some(Flip::V | Flip::HV))
        && spec.blur.is_none()
        && spec.sharpen.is_none()
        && matches!(spec.fit, Fit::ScaleDown | Fit::Contain | Fit::Fill)
}

fn encode_suffix(format: OutputFormat, quality: u8, enc: &EncodeSettings, strip: bool) -> String {
    let strip = if strip { ",strip" } else { "" };
    match format {
        OutputFormat::Jpeg => format!(".jpg[Q={quality},optimize_coding{strip}]"),
        OutputFormat::Webp => format!(".webp[Q={quality},effort={}{strip}]", enc.webp_effort),
        OutputFormat::Avif => format!(".avif[Q={quality},effort={}{strip}]", enc.avif_effort),
        OutputFormat::Png => format!(".png[compression={}{strip}]", enc.png_compression),
        OutputFormat::Gif => format!(".gif[{}]", strip.trim_start_matches(',')),
    }
}

fn background_for(img: &Image, c: Colour) -> Vec<f64> {
    let grey = 0.2126 * c.r as f64 + 0.7152 * c.g as f64 + 0.0722 * c.b as f64;
    match img.bands() {
        1 => vec![grey],
        2 => vec![grey, c.a as f64],
        3 => vec![c.r as f64, c.g as f64, c.b as f64],
        _ => vec![c.r as f64, c.g as f64, c.b as f64, c.a as f64],
    }
}

fn interesting(g: Gravity) -> Interesting {
    match g {
        Gravity::Smart => Interesting::Attention,
        Gravity::Entropy => Interesting::Entropy,
        _ => Interesting::Centre,
    }
}

/// Largest decoded source (bytes) the SIMD path holds in memory; larger sources go through
/// libvips' streaming `thumbnail`.
const MAX_RESAMPLE_BYTES: u64 = 128 << 20;

/// Decodes an RGB or greyscale JPEG to `width`×`height` (upright): shrink-on-load where at
/// least a 2x reduction is left for the filter (libvips' own rule), then SIMD Lanczos-3 and
/// orientation. `None` when this path does not apply (other formats, CMYK, huge sources).
fn decode_resampled(
    source: &Bytes,
    header: &vips::Header,
    width: u32,
    height: u32,
) -> Result<Option<Image>> {
    if !header.loader.starts_with("jpegload") || header.pages > 1 {
        return Ok(None);
    }
    // Target in stored orientation; rotated after resampling.
    let (tw, th) = if (5..=8).contains(&header.orientation) {
        (height, width)
    } else {
        (width, height)
    };
    let factor = (header.width as f64 / tw as f64).min(header.page_height as f64 / th as f64);
    let shrink = [8u32, 4, 2]
        .into_iter()
        .find(|f| factor >= 2.0 * *f as f64)
        .unwrap_or(1);
    let loaded = Image::load(source, true, false, shrink)?;
    let (lw, lh, bands) = (loaded.width(), loaded.height(), loaded.bands());
    if !loaded.is_uchar()
        || !loaded.is_rgb_or_grey()
        || !matches!(bands, 1 | 3)
        || lw as u64 * lh as u64 * bands as u64 > MAX_RESAMPLE_BYTES
    {
        return Ok(None);
    }
    let pixels = loaded.pixels()?;
    let out = resample::resize(&pixels, (lw, lh), bands, (tw, th), false)?;
    drop(pixels);
    let mut img = Image::from_pixel_bytes(Bytes::from(out), tw, th, bands)?;
    if let Some(icc) = loaded.icc_profile() {
        img.set_blob("icc-profile-data", &icc);
    }
    if header.orientation > 1 {
        img.set_int("orientation", header.orientation as i32);
        img = img.autorot()?;
    }
    Ok(Some(img))
}

/// Largest JPEG shrink-on-load factor that still leaves at least `need` pixels of `have`.
fn jpeg_shrink(have: (u32, u32), need: (u32, u32)) -> u32 {
    [8, 4, 2]
        .into_iter()
        .find(|f| have.0 / f >= need.0 && have.1 / f >= need.1)
        .unwrap_or(1)
}

/// Reads only the header: the loader, dimensions and frame count. Refuses empty input and
/// bytes no loader recognises.
pub fn probe(source: &Bytes) -> Result<vips::Header> {
    if source.is_empty() {
        return Err(TransformError::Empty);
    }
    let loader = vips::find_loader(source).ok_or(TransformError::NotAnImage)?;
    let img = Image::load(source, true, false, 1)?;
    Ok(img.header(&loader))
}

/// Runs the whole pipeline from the source bytes. Must be called on a blocking thread.
pub fn run(
    source: &Bytes,
    spec: &TransformSpec,
    limits: &Limits,
    enc: &EncodeSettings,
    deadline: Option<Instant>,
) -> Result<Output> {
    run_with(source, None, 0, spec, limits, enc, deadline).map(|(out, _)| out)
}

/// Runs the pipeline, from `working` when it serves the request. With `working_side > 0`, a
/// large source without a working copy gets one made (upright, sRGB, fitted into
/// `working_side`²) when this request can use it; it is returned for the caller to cache.
pub fn run_with(
    source: &Bytes,
    working: Option<&WorkingCopy>,
    working_side: u32,
    spec: &TransformSpec,
    limits: &Limits,
    enc: &EncodeSettings,
    deadline: Option<Instant>,
) -> Result<(Output, Option<WorkingCopy>)> {
    check_deadline(deadline)?;
    let eligible = WorkingCopy::eligible(spec);
    if let (Some(w), true) = (working, eligible) {
        let p = plan(
            spec.fit,
            spec.gravity,
            spec.width,
            spec.height,
            w.source_width,
            w.source_height,
            limits.max_dimension,
        );
        if w.serves(&p) {
            let (out, _) = from_working_copy(w, spec, &p, enc, deadline, 2, false)?;
            return Ok((out, None));
        }
    }
    let header = probe(source)?;
    let frame_pixels = header.width as u64 * header.page_height as u64;
    if frame_pixels > limits.max_source_pixels {
        return Err(TransformError::TooManyPixels {
            width: header.width,
            height: header.page_height,
            limit: limits.max_source_pixels,
        });
    }
    let animated_src = header.pages > 1 && vips::loader_animates(&header.loader);
    let native = source_format(&header.loader, source);
    let format = choose_format(spec.format, native, header.has_alpha, animated_src);
    let keep_frames = animated_src
        && format.animates()
        && frame_safe(spec)
        && frame_pixels.saturating_mul(header.pages as u64) <= limits.max_source_pixels;

    if working.is_none() && working_side > 0 && eligible && !animated_src {
        let (sw, sh) = header.oriented_size();
        let scale = (working_side as f64 / sw.max(sh).max(1) as f64).min(1.0);
        let iw = ((sw as f64 * scale).round() as u32).max(1);
        let ih = ((sh as f64 * scale).round() as u32).max(1);
        let p = plan(
            spec.fit,
            spec.gravity,
            spec.width,
            spec.height,
            sw,
            sh,
            limits.max_dimension,
        );
        let sketch = WorkingCopy {
            pixels: Bytes::new(),
            width: iw,
            height: ih,
            bands: 0,
            source_width: sw,
            source_height: sh,
            native,
            smaller: Vec::new(),
        };
        if sketch.serves(&p) {
            let mut copy = WorkingCopy::decode(source, &header, limits, iw, ih)?;
            copy.build_levels()?;
            check_deadline(deadline)?;
            let (out, _) = from_working_copy(&copy, spec, &p, enc, deadline, 2, false)?;
            return Ok((out, Some(copy)));
        }
    }

    check_deadline(deadline)?;
    let (ow, oh) = match spec.crop {
        Some(r) => (r.w, r.h),
        None => header.oriented_size(),
    };
    let p = plan(
        spec.fit,
        spec.gravity,
        spec.width,
        spec.height,
        ow,
        oh,
        limits.max_dimension,
    );
    let size = if p.force {
        Size::Force
    } else if p.down_only {
        Size::Down
    } else {
        Size::Both
    };
    let crop_mode = p.vips_crop.map(interesting).unwrap_or(Interesting::None);

    let img = match spec.crop {
        None => Image::thumbnail(source, p.box_w, p.box_h, size, crop_mode, true, keep_frames)?,
        Some(r) => {
            // Editor's crop: in oriented pixels, so orient first. JPEGs still shrink on load.
            let (sw, sh) = header.oriented_size();
            let x = r.x.min(sw);
            let y = r.y.min(sh);
            let cw = r.w.min(sw - x);
            let ch = r.h.min(sh - y);
            if cw == 0 || ch == 0 {
                return Err(TransformError::BadOption(format!(
                    "option `crop`: the rectangle {},{},{},{} lies outside the {sw}x{sh} image",
                    r.x, r.y, r.w, r.h
                )));
            }
            let shrink = if header.loader.starts_with("jpegload") {
                jpeg_shrink((cw, ch), p.resized)
            } else {
                1
            };
            let loaded = Image::load(source, true, false, shrink)?.autorot()?;
            let (lw, lh) = (loaded.width(), loaded.height());
            let sx = lw as f64 / sw as f64;
            let sy = lh as f64 / sh as f64;
            let ex = ((x as f64 * sx) as u32).min(lw.saturating_sub(1));
            let ey = ((y as f64 * sy) as u32).min(lh.saturating_sub(1));
            let ew = ((cw as f64 * sx).round() as u32).clamp(1, lw - ex);
            let eh = ((ch as f64 * sy).round() as u32).clamp(1, lh - ey);
            loaded
                .extract(ex, ey, ew, eh)?
                .thumbnail_image(p.box_w, p.box_h, size, crop_mode)?
        }
    };
    finish(img, spec, &p, format, keep_frames, enc, deadline).map(|o| (o, None))
}

/// Renders `spec` from `copy` whenever the copy or one of its levels holds at least the
/// planned size, resizing at most once (ingest makes every variant of an upload from one
/// decode). `None` when the copy is too small or the request is not [`WorkingCopy::eligible`].
/// For a plain resize (no smart crop), the resized pixels come back as a [`Level`] that later,
/// smaller outputs can start from.
pub fn run_from_copy(
    copy: &WorkingCopy,
    spec: &TransformSpec,
    limits: &Limits,
    enc: &EncodeSettings,
    deadline: Option<Instant>,
) -> Result<Option<(Output, Option<Level>)>> {
    check_deadline(deadline)?;
    if !WorkingCopy::eligible(spec) {
        return Ok(None);
    }
    let p = plan(
        spec.fit,
        spec.gravity,
        spec.width,
        spec.height,
        copy.source_width,
        copy.source_height,
        limits.max_dimension,
    );
    if copy.pick(&p, 1).is_none() {
        return Ok(None);
    }
    from_working_copy(copy, spec, &p, enc, deadline, 1, true).map(Some)
}

/// Makes the output from a working copy: resize the smallest level holding `min_factor` times
/// the planned size (the caller has checked one does), then the shared steps. With
/// `keep_level`, a plain resize's pixels are returned as a new level.
fn from_working_copy(
    w: &WorkingCopy,
    spec: &TransformSpec,
    p: &geometry::Plan,
    enc: &EncodeSettings,
    deadline: Option<Instant>,
    min_factor: u64,
    keep_level: bool,
) -> Result<(Output, Option<Level>)> {
    let (pixels, width, height) = w
        .pick(p, min_factor)
        .unwrap_or_else(|| (w.pixels.clone(), w.width, w.height));
    let base = Image::from_pixel_bytes(pixels.clone(), width, height, w.bands)?;
    let mut level = None;
    let img = match p.vips_crop {
        // Centre cover: resample, then cut the middle (what libvips' crop=centre does).
        Some(Gravity::Center) if p.resized.0 >= p.box_w && p.resized.1 >= p.box_h => {
            let resized =
                resample::resize(&pixels, (width, height), w.bands, p.resized, w.has_alpha())?;
            let (x, y) =
                gravity_offset(Gravity::Center, p.resized.0, p.resized.1, p.box_w, p.box_h);
            Image::from_pixel_bytes(Bytes::from(resized), p.resized.0, p.resized.1, w.bands)?
                .extract(x, y, p.box_w, p.box_h)?
        }
        Some(g) => base.thumbnail_image(p.box_w, p.box_h, Size::Both, interesting(g))?,
        None if p.resized == (width, height) => base,
        None => {
            let l = Level {
                pixels: Bytes::from(resample::resize(
                    &pixels,
                    (width, height),
                    w.bands,
                    p.resized,
                    w.has_alpha(),
                )?),
                width: p.resized.0,
                height: p.resized.1,
            };
            let img = Image::from_pixel_bytes(l.pixels.clone(), l.width, l.height, w.bands)?;
            if keep_level {
                level = Some(l);
            }
            img
        }
    };
    let format = choose_format(spec.format, w.native, w.has_alpha(), false);
    let mut out = finish(img, spec, p, format, false, enc, deadline)?;
    out.from_working_copy = true;
    Ok((out, level))
}

/// The steps after resizing: cut or pad, colour, rotate, flip, blur, sharpen, metadata, encode.
fn finish(
    mut img: Image,
    spec: &TransformSpec,
    p: &geometry::Plan,
    format: OutputFormat,
    keep_frames: bool,
    enc: &EncodeSettings,
    deadline: Option<Instant>,
) -> Result<Output> {
    check_deadline(deadline)?;

    if let Cut::To { w, h } = p.cut {
        let (iw, ih) = (img.width(), img.height());
        let (cw, ch) = (w.min(iw), h.min(ih));
        if (cw, ch) != (iw, ih) {
            img = match spec.gravity {
                Gravity::Smart | Gravity::Entropy => {
                    let (x, y) = gravity_offset(Gravity::Center, iw, ih, cw, ch);
                    img.extract(x, y, cw, ch)?
                }
                g => {
                    let (x, y) = gravity_offset(g, iw, ih, cw, ch);
                    img.extract(x, y, cw, ch)?
                }
            };
        }
    }

    // Colour: everything below works in sRGB with 3 or 4 bands.
    if spec.meta != Meta::Keep {
        img = img.to_srgb()?;
    }

    if let Some((pw, ph)) = p.pad_to {
        let (iw, ih) = (img.width(), img.height());
        if (iw, ih) != (pw, ph) {
            if spec.background.a < 255 && !img.has_alpha() {
                img = img.add_alpha()?;
            }
            let bg = background_for(&img, spec.background);
            let x = (pw.saturating_sub(iw)) / 2;
            let y = (ph.saturating_sub(ih)) / 2;
            img = img.embed(x, y, pw, ph, &bg)?;
        }
    }
    if spec.rotate != 0 {
        img = img.rotate(spec.rotate)?;
    }
    match spec.flip {
        Some(Flip::H) => img = img.flip(true)?,
        Some(Flip::V) => img = img.flip(false)?,
        Some(Flip::HV) => img = img.flip(true)?.flip(false)?,
        None => {}
    }
    if let Some(s) = spec.blur {
        img = img.blur(s)?;
    }
    if let Some(s) = spec.sharpen {
        img = img.sharpen(s)?;
    }
    if !format.has_alpha() && img.has_alpha() {
        let c = spec.background;
        img = img.flatten([c.r as f64, c.g as f64, c.b as f64])?;
    }

    let strip = match spec.meta {
        Meta::None => true,
        Meta::Keep => false,
        Meta::Copyright => {
            let artist = img
                .string_field("exif-ifd0-Artist")
                .and_then(|s| metadata::exif_field_value(&s));
            let copyright = img
                .string_field("exif-ifd0-Copyright")
                .and_then(|s| metadata::exif_field_value(&s));
            img = img.without_fields(metadata::is_output_metadata)?;
            match metadata::copyright_exif(artist.as_deref(), copyright.as_deref()) {
                Some(blob) => {
                    img.set_blob("exif-data", &blob);
                    false
                }
                None => true,
            }
        }
    };
    check_deadline(deadline)?;
    let quality = spec
        .quality
        .unwrap_or_else(|| enc.quality.for_format(format));
    let bytes = img.save(&encode_suffix(format, quality, enc, strip))?;
    let height = if keep_frames && img.page_height() > 0 {
        img.page_height()
    } else {
        img.height()
    };
    Ok(Output {
        bytes,
        format,
        width: img.width(),
        height,
        from_working_copy: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_choice() {
        let auto = |avif, webp| FormatPlan::Auto { avif, webp };
        assert_eq!(
            choose_format(auto(true, true), None, false, false),
            OutputFormat::Avif
        );
        assert_eq!(
            choose_format(auto(false, true), None, false, false),
            OutputFormat::Webp
        );
        assert_eq!(
            choose_format(auto(false, false), None, false, false),
            OutputFormat::Jpeg
        );
        assert_eq!(
            choose_format(auto(false, false), None, true, false),
            OutputFormat::Png
        );
        assert_eq!(
            choose_format(auto(true, true), None, false, true),
            OutputFormat::Webp
        );
        assert_eq!(
            choose_format(auto(true, false), None, false, true),
            OutputFormat::Gif
        );
        assert_eq!(
            choose_format(FormatPlan::Source, Some(OutputFormat::Gif), false, true),
            OutputFormat::Gif
        );
        assert_eq!(
            choose_format(FormatPlan::Source, None, true, false),
            OutputFormat::Png
        );
        assert_eq!(
            choose_format(FormatPlan::Fixed(OutputFormat::Jpeg), None, true, false),
            OutputFormat::Jpeg
        );
    }

    #[test]
    fn shrink_factor() {
        assert_eq!(jpeg_shrink((4000, 3000), (400, 300)), 8);
        assert_eq!(jpeg_shrink((4000, 3000), (1000, 750)), 4);
        assert_eq!(jpeg_shrink((4000, 3000), (3000, 2250)), 1);
    }
}
