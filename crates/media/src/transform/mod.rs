//! The transform pipeline: source bytes and a canonical [`TransformSpec`] in, encoded bytes
//! out. No HTTP here, and nothing async: it runs on an image-pool thread, under a [`Budget`]
//! whose deadline stops it.
//!
//! Stages, in order:
//! 1. probe: refuse empty files, bytes no loader recognises and loaders not allowed, before
//!    any header is parsed; read dimensions without decoding; refuse pixel bombs;
//! 2. plan: the resize, cut and pad from the fit and the source size, and the output checked
//!    against the caps (size, pixels across frames, filter cost) before any pixel work;
//! 3. choose the output format (negotiated class + alpha + animation);
//! 4. resize: for RGB and greyscale JPEGs, a decode scaled by libjpeg (keeping twice the
//!    output size) and one SIMD Lanczos-3 pass ([`shrink`]); for other sources shrink-on-load `thumbnail`
//!    (or load, orient, crop, then resize for an editor's crop), with fail-on-truncated so
//!    damaged files are refused, never served half grey; or SIMD resampling from a working
//!    copy;
//! 5. the finishing [`STEPS`], one after another with the budget checked between them: cut
//!    by gravity, colour to sRGB, pad, rotate, flip, blur, sharpen, flatten, metadata;
//! 6. encode, stoppable mid-way by the budget's [`Cancel`].
//!
//! Animated GIF and WebP keep their frames when the output can animate (WebP, GIF), the
//! request only resizes (no crop, pad, rotation, vertical flip, blur or sharpen), and all
//! frames fit the caps; otherwise the first frame is used.

pub mod error;
pub mod geometry;
pub mod metadata;
pub mod resample;
mod shrink;

pub(crate) use shrink::{covers_whole_blocks, jpeg_factor};
pub mod variants;
pub mod working;

use std::time::Instant;

use bytes::Bytes;

use flexphoto_url::{
    Colour, Fit, Flip, FormatPlan, Gravity, Meta, OutputFormat, QualityDefaults, TransformSpec,
};

pub use error::{Result, TransformError};
use geometry::{gravity_offset, plan, Caps, Cut, Plan};
pub use working::{Level, WorkingCopy};

use crate::format::{FormatSet, ImageFormat};
use crate::vips::{self, Cancel, Image, Interesting, Size};

/// Hard limits applied to every source and every output.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest source width × height (all frames together for animations), from the header.
    pub max_source_pixels: u64,
    /// Largest output width or height.
    pub max_dimension: u32,
    /// Largest output width × height, all frames together for animations.
    pub max_output_pixels: u64,
    /// Largest blur and sharpen cost: output pixels × (blur sigma + sharpen sigma).
    pub max_filter_cost: f64,
    /// Largest AVIF output, pixels. The AVIF, WebP and GIF encoders cannot be stopped once
    /// they start (they take every pixel, then encode in one call that never checks the
    /// deadline), so a larger output is refused when the format is asked for by name, and
    /// negotiated away (to WebP or JPEG) when it would only have been chosen from `Accept`
    /// or the source's format.
    pub max_avif_pixels: u64,
    /// Largest WebP output, pixels, all frames together (see `max_avif_pixels`).
    pub max_webp_pixels: u64,
    /// Largest GIF output, pixels, all frames together (see `max_avif_pixels`).
    pub max_gif_pixels: u64,
    /// The formats whose loaders may run.
    pub formats: FormatSet,
}

impl Limits {
    /// Limits with the given source and output sizes and the defaults for the rest: 50
    /// megapixels of output, a filter cost of 2·10⁹ pixel-sigmas, the default formats.
    pub fn new(max_source_pixels: u64, max_dimension: u32) -> Limits {
        Limits {
            max_source_pixels,
            max_dimension,
            max_output_pixels: 50_000_000,
            max_filter_cost: 2e9,
            max_avif_pixels: 16_000_000,
            max_webp_pixels: 16_000_000,
            max_gif_pixels: 16_000_000,
            formats: FormatSet::default(),
        }
    }

    /// The caps a plan is made within.
    pub fn caps(&self) -> Caps {
        Caps {
            max_dimension: self.max_dimension,
            max_pixels: self.max_output_pixels,
        }
    }
}

/// How much time one piece of work may take: a deadline checked between steps, and a
/// [`Cancel`] that stops a libvips evaluation in the middle (the image pool's watchdog kills
/// it when the deadline passes).
#[derive(Debug, Clone, Default)]
pub struct Budget {
    deadline: Option<Instant>,
    cancel: Cancel,
}

impl Budget {
    /// No time limit (tests, tools).
    pub fn unlimited() -> Budget {
        Budget::default()
    }

    /// Until `deadline`, stoppable through `cancel`.
    pub fn new(deadline: Option<Instant>, cancel: Cancel) -> Budget {
        Budget { deadline, cancel }
    }

    /// The deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// What stops libvips evaluations of this work.
    pub fn cancel(&self) -> &Cancel {
        &self.cancel
    }

    /// Fails once the deadline has passed or the work was cancelled.
    pub fn check(&self) -> Result<()> {
        if self.cancel.is_killed() || self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(TransformError::DeadlineExceeded);
        }
        Ok(())
    }
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

/// The source's own web format, when browsers can show it.
pub(crate) fn source_format(loader: &str, buf: &[u8]) -> Option<OutputFormat> {
    ImageFormat::from_loader(loader, buf).and_then(ImageFormat::web_output)
}

/// Which uninterruptible encoders an output fits (see [`Limits::max_avif_pixels`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fits {
    avif: bool,
    webp: bool,
    gif: bool,
}

impl Fits {
    /// Every encoder fits.
    #[cfg(test)]
    const ALL: Fits = Fits {
        avif: true,
        webp: true,
        gif: true,
    };

    /// The encoders an output of `p`'s size fits, one frame.
    fn of(p: &Plan, limits: &Limits) -> Fits {
        Fits {
            avif: encode_fits(OutputFormat::Avif, p, 1, limits),
            webp: encode_fits(OutputFormat::Webp, p, 1, limits),
            gif: encode_fits(OutputFormat::Gif, p, 1, limits),
        }
    }

    fn allows(self, f: OutputFormat) -> bool {
        match f {
            OutputFormat::Avif => self.avif,
            OutputFormat::Webp => self.webp,
            OutputFormat::Gif => self.gif,
            OutputFormat::Jpeg | OutputFormat::Png => true,
        }
    }
}

fn choose_format(
    plan: FormatPlan,
    native: Option<OutputFormat>,
    alpha: bool,
    animated: bool,
    fits: Fits,
) -> OutputFormat {
    let fallback = if alpha {
        OutputFormat::Png
    } else {
        OutputFormat::Jpeg
    };
    match plan {
        FormatPlan::Fixed(f) => f,
        FormatPlan::Source => match native {
            Some(n) if !fits.allows(n) => fallback,
            n => n.unwrap_or(fallback),
        },
        FormatPlan::Auto { avif, webp } => {
            let avif = avif && fits.avif;
            let webp = webp && fits.webp;
            if animated {
                if webp {
                    OutputFormat::Webp
                } else if fits.gif {
                    OutputFormat::Gif
                } else {
                    fallback
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

/// Largest JPEG shrink-on-load factor that still leaves at least `need` pixels of `have`.
fn jpeg_shrink(have: (u32, u32), need: (u32, u32)) -> u32 {
    [8, 4, 2]
        .into_iter()
        .find(|f| have.0 / f >= need.0 && have.1 / f >= need.1)
        .unwrap_or(1)
}

/// Reads only the header: the loader, dimensions and frame count. Refuses empty input, bytes
/// no loader recognises, and formats outside `formats` (checked on the loader libvips names
/// from the first bytes, before that loader parses anything).
pub fn probe_allowed(source: &Bytes, formats: FormatSet) -> Result<vips::Header> {
    probe_image(source, formats).map(|(header, _)| header)
}

/// [`probe_allowed`], with the header-only image it read (its metadata: profile, EXIF).
pub(crate) fn probe_image(source: &Bytes, formats: FormatSet) -> Result<(vips::Header, Image)> {
    if source.is_empty() {
        return Err(TransformError::Empty);
    }
    let loader = vips::find_loader(source).ok_or(TransformError::NotAnImage)?;
    match ImageFormat::from_loader(&loader, source) {
        Some(f) if formats.contains(f) => {}
        Some(f) => {
            return Err(TransformError::FormatNotAllowed {
                format: f.name().to_owned(),
                allowed: formats.names(),
            })
        }
        None => {
            return Err(TransformError::FormatNotAllowed {
                format: loader.trim_end_matches("load_buffer").to_owned(),
                allowed: formats.names(),
            })
        }
    }
    let img = Image::load(source, true, false, 1)?;
    Ok((img.header(&loader), img))
}

/// [`probe_allowed`] with the default formats.
pub fn probe(source: &Bytes) -> Result<vips::Header> {
    probe_allowed(source, FormatSet::default())
}

/// Refuses a source whose header declares more pixels than allowed.
fn check_source(header: &vips::Header, limits: &Limits) -> Result<()> {
    let frame_pixels = header.width as u64 * header.page_height as u64;
    if frame_pixels > limits.max_source_pixels {
        return Err(TransformError::TooManyPixels {
            width: header.width,
            height: header.page_height,
            limit: limits.max_source_pixels,
        });
    }
    Ok(())
}

/// Checks a plan's output against the caps, before any pixel work: each side within
/// `max_dimension`, all `frames` within `max_output_pixels`, and the blur and sharpen cost.
pub fn check_output(p: &Plan, frames: u32, spec: &TransformSpec, limits: &Limits) -> Result<()> {
    let (w, h) = p.output_size();
    let (w, h) = if spec.rotate % 180 == 90 {
        (h, w)
    } else {
        (w, h)
    };
    let pixels = w as u64 * h as u64 * frames.max(1) as u64;
    if w > limits.max_dimension || h > limits.max_dimension || pixels > limits.max_output_pixels {
        return Err(TransformError::OutputTooLarge {
            width: w,
            height: h,
            frames: frames.max(1),
            max_dimension: limits.max_dimension,
            max_pixels: limits.max_output_pixels,
        });
    }
    if let FormatPlan::Fixed(f) = spec.format {
        if !encode_fits(f, p, frames, limits) {
            let (max_pixels, key) = encode_cap(f, limits).unwrap_or((0, ""));
            return Err(TransformError::EncodeTooLarge {
                format: f.name(),
                width: w,
                height: h,
                max_pixels,
                key,
            });
        }
    }
    let sigma = spec.blur.unwrap_or(0.0) as f64 + spec.sharpen.unwrap_or(0.0) as f64;
    let cost = pixels as f64 * sigma;
    if cost > limits.max_filter_cost {
        return Err(TransformError::FilterTooCostly {
            width: w,
            height: h,
            sigma,
            limit: limits.max_filter_cost,
        });
    }
    Ok(())
}

/// The cap of an uninterruptible encoder and its config key; `None` for formats whose
/// encoders stop at the deadline (JPEG, PNG: they encode tile by tile).
fn encode_cap(f: OutputFormat, limits: &Limits) -> Option<(u64, &'static str)> {
    match f {
        OutputFormat::Avif => Some((limits.max_avif_pixels, "limits.max_avif_pixels")),
        OutputFormat::Webp => Some((limits.max_webp_pixels, "limits.max_webp_pixels")),
        OutputFormat::Gif => Some((limits.max_gif_pixels, "limits.max_gif_pixels")),
        OutputFormat::Jpeg | OutputFormat::Png => None,
    }
}

/// Whether `frames` frames of `p`'s output size in `f` stay within that encoder's cap.
fn encode_fits(f: OutputFormat, p: &Plan, frames: u32, limits: &Limits) -> bool {
    let (w, h) = p.output_size();
    encode_cap(f, limits)
        .is_none_or(|(cap, _)| (w as u64 * h as u64).saturating_mul(frames.max(1) as u64) <= cap)
}

/// Plans `spec` for an upright `w`×`h` source.
fn plan_for(spec: &TransformSpec, w: u32, h: u32, limits: &Limits) -> Plan {
    plan(
        spec.fit,
        spec.gravity,
        spec.width,
        spec.height,
        w,
        h,
        limits.caps(),
    )
}

/// Runs the whole pipeline from the source bytes. Must be called on a blocking thread.
pub fn run(
    source: &Bytes,
    spec: &TransformSpec,
    limits: &Limits,
    enc: &EncodeSettings,
    budget: &Budget,
) -> Result<Output> {
    run_with(source, None, 0, spec, limits, enc, budget).map(|(out, _)| out)
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
    budget: &Budget,
) -> Result<(Output, Option<WorkingCopy>)> {
    budget.check()?;
    let eligible = WorkingCopy::eligible(spec);
    if let (Some(w), true) = (working, eligible) {
        let p = plan_for(spec, w.source_width, w.source_height, limits);
        check_output(&p, 1, spec, limits)?;
        if w.serves(&p) {
            let (out, _) = from_working_copy(w, spec, &p, limits, enc, budget, 2, false)?;
            return Ok((out, None));
        }
    }
    let (header, probed) = probe_image(source, limits.formats)?;
    check_source(&header, limits)?;
    let frame_pixels = header.width as u64 * header.page_height as u64;
    let animated_src = header.pages > 1
        && ImageFormat::from_loader(&header.loader, source).is_some_and(ImageFormat::animates);
    let native = source_format(&header.loader, source);

    let (ow, oh) = match spec.crop {
        Some(r) => (r.w, r.h),
        None => header.oriented_size(),
    };
    let p = plan_for(spec, ow, oh, limits);
    check_output(&p, 1, spec, limits)?;
    let format = choose_format(
        spec.format,
        native,
        header.has_alpha,
        animated_src,
        Fits::of(&p, limits),
    );
    let out_frame = p.output_size();
    let keep_frames = animated_src
        && format.animates()
        && encode_fits(format, &p, header.pages, limits)
        && frame_safe(spec)
        && frame_pixels.saturating_mul(header.pages as u64) <= limits.max_source_pixels
        && (out_frame.0 as u64 * out_frame.1 as u64).saturating_mul(header.pages as u64)
            <= limits.max_output_pixels;

    if working.is_none() && working_side > 0 && eligible && !animated_src {
        let (sw, sh) = header.oriented_size();
        let scale = (working_side as f64 / sw.max(sh).max(1) as f64).min(1.0);
        let iw = ((sw as f64 * scale).round() as u32).max(1);
        let ih = ((sh as f64 * scale).round() as u32).max(1);
        let sp = plan_for(spec, sw, sh, limits);
        if WorkingCopy::would_serve(iw, ih, &sp) {
            let mut copy = WorkingCopy::decode(source, &header, limits, iw, ih, budget)?;
            copy.build_levels()?;
            budget.check()?;
            let (out, _) = from_working_copy(&copy, spec, &sp, limits, enc, budget, 2, false)?;
            return Ok((out, Some(copy)));
        }
    }

    if !keep_frames {
        if let Some(out) =
            from_scaled_jpeg(source, &header, &probed, spec, &p, format, enc, budget)?
        {
            return Ok((out, None));
        }
    }

    budget.check()?;
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
    let ctx = Finishing {
        img,
        spec,
        plan: &p,
        format,
        keep_frames,
        copyright: None,
    };
    finish(ctx, enc, budget).map(|o| (o, None))
}

/// Makes the output from a JPEG decoded at a reduced size by libjpeg's DCT scaling and
/// resampled once with SIMD ([`shrink`]). `None` when that path does not apply:
/// other formats and colour spaces, enlargements, smart crops, editor's crops and `meta=keep`
/// go through libvips' `thumbnail`.
#[allow(clippy::too_many_arguments)]
fn from_scaled_jpeg(
    source: &Bytes,
    header: &vips::Header,
    probed: &Image,
    spec: &TransformSpec,
    p: &Plan,
    format: OutputFormat,
    enc: &EncodeSettings,
    budget: &Budget,
) -> Result<Option<Output>> {
    let (sw, sh) = header.oriented_size();
    let centre_cut = match p.vips_crop {
        None => false,
        Some(Gravity::Center) if p.resized.0 >= p.box_w && p.resized.1 >= p.box_h => true,
        Some(_) => return Ok(None),
    };
    if !WorkingCopy::eligible(spec) || p.resized.0 > sw || p.resized.1 > sh {
        return Ok(None);
    }
    budget.check()?;
    let Some(decoded) = shrink::decode_jpeg_resized(source, header, probed, p.resized, budget)?
    else {
        return Ok(None);
    };
    let img = if centre_cut {
        let (x, y) = gravity_offset(Gravity::Center, p.resized.0, p.resized.1, p.box_w, p.box_h);
        decoded.image.extract(x, y, p.box_w, p.box_h)?
    } else {
        decoded.image
    };
    let ctx = Finishing {
        img,
        spec,
        plan: p,
        format,
        keep_frames: false,
        copyright: Some(&decoded.copyright),
    };
    finish(ctx, enc, budget).map(Some)
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
    budget: &Budget,
) -> Result<Option<(Output, Option<Level>)>> {
    budget.check()?;
    if !WorkingCopy::eligible(spec) {
        return Ok(None);
    }
    let p = plan_for(spec, copy.source_width, copy.source_height, limits);
    check_output(&p, 1, spec, limits)?;
    if copy.pick(&p, 1).is_none() {
        return Ok(None);
    }
    from_working_copy(copy, spec, &p, limits, enc, budget, 1, true).map(Some)
}

/// Makes the output from a working copy: resize the smallest level holding `min_factor` times
/// the planned size (the caller has checked one does), then the shared steps. With
/// `keep_level`, a plain resize's pixels are returned as a new level.
#[allow(clippy::too_many_arguments)]
fn from_working_copy(
    w: &WorkingCopy,
    spec: &TransformSpec,
    p: &Plan,
    limits: &Limits,
    enc: &EncodeSettings,
    budget: &Budget,
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
    let format = choose_format(
        spec.format,
        w.native,
        w.has_alpha(),
        false,
        Fits::of(p, limits),
    );
    let ctx = Finishing {
        img,
        spec,
        plan: p,
        format,
        keep_frames: false,
        copyright: Some(&w.copyright),
    };
    let mut out = finish(ctx, enc, budget)?;
    out.from_working_copy = true;
    Ok((out, level))
}

/// What the finishing steps work on.
struct Finishing<'a> {
    img: Image,
    spec: &'a TransformSpec,
    plan: &'a Plan,
    format: OutputFormat,
    keep_frames: bool,
    /// The source's Artist and Copyright when the image no longer carries its EXIF (made from
    /// a working copy); `None` reads them from the image.
    copyright: Option<&'a metadata::CopyrightNotice>,
}

/// One finishing step.
type Step = fn(&mut Finishing<'_>) -> Result<()>;

/// The finishing steps, in order; the budget is checked between them.
pub const STEP_NAMES: [&str; 8] = [
    "cut", "colour", "pad", "rotate", "flip", "blur", "sharpen", "flatten",
];

const STEPS: [Step; 8] = [
    step_cut,
    step_colour,
    step_pad,
    step_rotate,
    step_flip,
    step_blur,
    step_sharpen,
    step_flatten,
];

/// Cuts to the planned box by gravity (smart and entropy were cut by libvips already).
fn step_cut(c: &mut Finishing<'_>) -> Result<()> {
    if let Cut::To { w, h } = c.plan.cut {
        let (iw, ih) = (c.img.width(), c.img.height());
        let (cw, ch) = (w.min(iw), h.min(ih));
        if (cw, ch) != (iw, ih) {
            let g = match c.spec.gravity {
                Gravity::Smart | Gravity::Entropy => Gravity::Center,
                g => g,
            };
            let (x, y) = gravity_offset(g, iw, ih, cw, ch);
            c.img = c.img.extract(x, y, cw, ch)?;
        }
    }
    Ok(())
}

/// Colour: everything after works in sRGB with 3 or 4 bands, unless `meta=keep`.
fn step_colour(c: &mut Finishing<'_>) -> Result<()> {
    if c.spec.meta != Meta::Keep {
        c.img = c.img.to_srgb()?;
    }
    Ok(())
}

fn step_pad(c: &mut Finishing<'_>) -> Result<()> {
    if let Some((pw, ph)) = c.plan.pad_to {
        let (iw, ih) = (c.img.width(), c.img.height());
        if (iw, ih) != (pw, ph) {
            if c.spec.background.a < 255 && !c.img.has_alpha() {
                c.img = c.img.add_alpha()?;
            }
            let bg = background_for(&c.img, c.spec.background);
            let x = (pw.saturating_sub(iw)) / 2;
            let y = (ph.saturating_sub(ih)) / 2;
            c.img = c.img.embed(x, y, pw, ph, &bg)?;
        }
    }
    Ok(())
}

fn step_rotate(c: &mut Finishing<'_>) -> Result<()> {
    if c.spec.rotate != 0 {
        c.img = c.img.rotate(c.spec.rotate)?;
    }
    Ok(())
}

fn step_flip(c: &mut Finishing<'_>) -> Result<()> {
    match c.spec.flip {
        Some(Flip::H) => c.img = c.img.flip(true)?,
        Some(Flip::V) => c.img = c.img.flip(false)?,
        Some(Flip::HV) => c.img = c.img.flip(true)?.flip(false)?,
        None => {}
    }
    Ok(())
}

fn step_blur(c: &mut Finishing<'_>) -> Result<()> {
    if let Some(s) = c.spec.blur {
        c.img = c.img.blur(s)?;
    }
    Ok(())
}

fn step_sharpen(c: &mut Finishing<'_>) -> Result<()> {
    if let Some(s) = c.spec.sharpen {
        c.img = c.img.sharpen(s)?;
    }
    Ok(())
}

/// Flattens alpha onto the background for formats without alpha.
fn step_flatten(c: &mut Finishing<'_>) -> Result<()> {
    if !c.format.has_alpha() && c.img.has_alpha() {
        let b = c.spec.background;
        c.img = c.img.flatten([b.r as f64, b.g as f64, b.b as f64])?;
    }
    Ok(())
}

/// Runs the finishing steps with the budget checked between them, applies the metadata policy
/// and encodes.
fn finish(mut c: Finishing<'_>, enc: &EncodeSettings, budget: &Budget) -> Result<Output> {
    for step in STEPS {
        budget.check()?;
        step(&mut c)?;
    }
    budget.check()?;
    let strip = match c.spec.meta {
        Meta::None => true,
        Meta::Keep => false,
        Meta::Copyright => {
            let notice = match c.copyright {
                Some(n) => n.clone(),
                None => metadata::CopyrightNotice::of(&c.img),
            };
            c.img = c.img.without_fields(metadata::is_output_metadata)?;
            match notice.exif_block() {
                Some(blob) => {
                    c.img.set_blob("exif-data", &blob);
                    false
                }
                None => true,
            }
        }
    };
    let quality = c
        .spec
        .quality
        .unwrap_or_else(|| enc.quality.for_format(c.format));
    let bytes = c.img.save_cancellable(
        &encode_suffix(c.format, quality, enc, strip),
        budget.cancel(),
    )?;
    let height = if c.keep_frames && c.img.page_height() > 0 {
        c.img.page_height()
    } else {
        c.img.height()
    };
    Ok(Output {
        bytes,
        format: c.format,
        width: c.img.width(),
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
            choose_format(auto(true, true), None, false, false, Fits::ALL),
            OutputFormat::Avif
        );
        assert_eq!(
            choose_format(auto(false, true), None, false, false, Fits::ALL),
            OutputFormat::Webp
        );
        assert_eq!(
            choose_format(auto(false, false), None, false, false, Fits::ALL),
            OutputFormat::Jpeg
        );
        assert_eq!(
            choose_format(auto(false, false), None, true, false, Fits::ALL),
            OutputFormat::Png
        );
        assert_eq!(
            choose_format(auto(true, true), None, false, true, Fits::ALL),
            OutputFormat::Webp
        );
        assert_eq!(
            choose_format(auto(true, false), None, false, true, Fits::ALL),
            OutputFormat::Gif
        );
        assert_eq!(
            choose_format(
                FormatPlan::Source,
                Some(OutputFormat::Gif),
                false,
                true,
                Fits::ALL
            ),
            OutputFormat::Gif
        );
        assert_eq!(
            choose_format(FormatPlan::Source, None, true, false, Fits::ALL),
            OutputFormat::Png
        );
        assert_eq!(
            choose_format(
                FormatPlan::Fixed(OutputFormat::Jpeg),
                None,
                true,
                false,
                Fits::ALL
            ),
            OutputFormat::Jpeg
        );
    }

    #[test]
    fn shrink_factor() {
        assert_eq!(jpeg_shrink((4000, 3000), (400, 300)), 8);
        assert_eq!(jpeg_shrink((4000, 3000), (1000, 750)), 4);
        assert_eq!(jpeg_shrink((4000, 3000), (3000, 2250)), 1);
    }

    fn spec(q: &str) -> TransformSpec {
        let presets = std::collections::HashMap::new();
        let ctx = flexphoto_url::ResolveContext {
            presets: &presets,
            max_dimension: 8192,
            quality: QualityDefaults {
                jpeg: 80,
                webp: 75,
                avif: 50,
            },
            accept: None,
            default_meta: Meta::None,
            allow_meta_keep: true,
        };
        flexphoto_url::resolve(
            &flexphoto_url::options::parse_pairs(q, '&', 8192).unwrap(),
            &ctx,
        )
        .unwrap()
    }

    #[test]
    fn outputs_over_the_caps_are_refused_before_any_work() {
        let limits = Limits::new(100_000_000, 8192);
        let check = |q: &str, w: u32, h: u32, frames: u32| {
            let s = spec(q);
            let p = plan_for(&s, w, h, &limits);
            check_output(&p, frames, &s, &limits)
        };
        // The attack shapes: a thin source enlarged, `outside` on a thin source, a fill blur.
        assert!(matches!(
            check("w=8192&fit=contain", 1, 1200, 1),
            Err(TransformError::OutputTooLarge { .. })
        ));
        assert!(matches!(
            check("w=8192&h=10&fit=outside", 1, 1200, 1),
            Err(TransformError::OutputTooLarge { .. })
        ));
        assert!(matches!(
            check("w=8192&h=8192&fit=fill", 5472, 3648, 1),
            Err(TransformError::OutputTooLarge { .. })
        ));
        assert!(matches!(
            check("w=6000&h=6000&fit=fill&blur=100&sharpen=100", 5472, 3648, 1),
            Err(TransformError::FilterTooCostly { .. })
        ));
        // Frames count: 300 frames of 2048² are far over 50 MP.
        assert!(matches!(
            check("w=2048&fit=contain", 316, 316, 300),
            Err(TransformError::OutputTooLarge { .. })
        ));
        // Ordinary requests pass.
        assert!(check("w=400", 6000, 4000, 1).is_ok());
        assert!(check("w=1600&h=1600&fit=cover&blur=2", 6000, 4000, 1).is_ok());
        assert!(check("w=200", 316, 316, 300).is_ok());
        assert!(check("", 6000, 4000, 1).is_ok());
        let err = check("w=8192&fit=contain", 1, 1200, 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("limit"), "{err}");
        // AVIF by name over its own cap is refused, naming the key; below it, it passes.
        let err = check("w=5000&fmt=avif", 6000, 4000, 1).unwrap_err();
        assert!(
            matches!(err, TransformError::EncodeTooLarge { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("limits.max_avif_pixels"), "{err}");
        assert!(check("w=4000&fmt=avif", 6000, 4000, 1).is_ok());
        // So are WebP and GIF (their encoders cannot be stopped either); JPEG and PNG are not.
        let err = check("w=5000&fmt=webp", 6000, 4000, 1).unwrap_err();
        assert!(err.to_string().contains("limits.max_webp_pixels"), "{err}");
        let err = check("w=5000&fmt=gif", 6000, 4000, 1).unwrap_err();
        assert!(err.to_string().contains("limits.max_gif_pixels"), "{err}");
        assert!(check("w=4000&fmt=webp", 6000, 4000, 1).is_ok());
        assert!(check("w=5000&fmt=jpeg", 6000, 4000, 1).is_ok());
        assert!(check("w=5000&fmt=png", 6000, 4000, 1).is_ok());
    }

    #[test]
    fn large_outputs_are_negotiated_away_from_slow_encoders() {
        let auto = |avif, webp| FormatPlan::Auto { avif, webp };
        let no_avif = Fits {
            avif: false,
            ..Fits::ALL
        };
        let only_fast = Fits {
            avif: false,
            webp: false,
            gif: false,
        };
        let choose = |plan, native, alpha, animated, fits| {
            choose_format(plan, native, alpha, animated, fits)
        };
        assert_eq!(
            choose(auto(true, true), None, false, false, no_avif),
            OutputFormat::Webp
        );
        assert_eq!(
            choose(auto(true, false), None, false, false, no_avif),
            OutputFormat::Jpeg
        );
        assert_eq!(
            choose(auto(true, true), None, false, false, only_fast),
            OutputFormat::Jpeg
        );
        // Animated sources fall back to GIF, then to a still when GIF is too large too.
        assert_eq!(
            choose(auto(true, true), None, false, true, Fits::ALL),
            OutputFormat::Webp
        );
        assert_eq!(
            choose(auto(false, false), None, false, true, Fits::ALL),
            OutputFormat::Gif
        );
        assert_eq!(
            choose(auto(true, true), None, true, true, only_fast),
            OutputFormat::Png
        );
        let avif = Some(OutputFormat::Avif);
        assert_eq!(
            choose(FormatPlan::Source, avif, true, false, no_avif),
            OutputFormat::Png
        );
        assert_eq!(
            choose(FormatPlan::Source, avif, false, false, Fits::ALL),
            OutputFormat::Avif
        );
        assert_eq!(
            choose(
                FormatPlan::Source,
                Some(OutputFormat::Webp),
                false,
                false,
                only_fast
            ),
            OutputFormat::Jpeg
        );
    }

    #[test]
    fn budgets_stop_work() {
        assert!(Budget::unlimited().check().is_ok());
        let past = Budget::new(
            Some(Instant::now() - std::time::Duration::from_millis(1)),
            Cancel::new(),
        );
        assert!(matches!(
            past.check(),
            Err(TransformError::DeadlineExceeded)
        ));
        let c = Cancel::new();
        let b = Budget::new(None, c.clone());
        c.kill();
        assert!(matches!(b.check(), Err(TransformError::DeadlineExceeded)));
    }
}
