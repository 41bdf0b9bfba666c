//! Working copies: a source decoded once at a working size (upright, sRGB, 8-bit) with
//! smaller levels at 1/√2 steps, so that later outputs of the same source resize pixels in
//! memory instead of decoding the original again.

use bytes::Bytes;
use flexphoto_url::{Meta, OutputFormat, TransformSpec};

use super::geometry;
use super::metadata::CopyrightNotice;
use super::{resample, shrink, source_format, Budget, Limits, Result, TransformError};
use crate::vips::{self, Image, Interesting, Size};

/// A source decoded once at a working size: upright, sRGB, 8-bit, packed pixels. Later
/// requests for sizes well below it resize this instead of decoding the original again.
#[derive(Debug, Clone)]
pub struct WorkingCopy {
    /// Packed pixels.
    pub(crate) pixels: Bytes,
    /// Width of the working copy.
    pub(crate) width: u32,
    /// Height of the working copy.
    pub(crate) height: u32,
    /// Bands (3, or 4 with alpha).
    pub(crate) bands: u32,
    /// Upright width of the original.
    pub(crate) source_width: u32,
    /// Upright height of the original.
    pub(crate) source_height: u32,
    /// The original's own web format, if any.
    pub(crate) native: Option<OutputFormat>,
    /// The original's Artist and Copyright notices (the pixels carry no EXIF).
    pub(crate) copyright: CopyrightNotice,
    /// Smaller versions of the copy, each 1/√2 of the one before, largest first: a request
    /// resizes the smallest one that is still at least twice its output.
    pub(crate) smaller: Vec<Level>,
}

/// One smaller version of a working copy (same bands).
#[derive(Debug, Clone)]
pub struct Level {
    /// Packed pixels.
    pub(crate) pixels: Bytes,
    /// Width.
    pub(crate) width: u32,
    /// Height.
    pub(crate) height: u32,
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
    pub(crate) fn build_levels(&mut self) -> Result<()> {
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
    pub(crate) fn pick(&self, p: &geometry::Plan, min_factor: u64) -> Option<(Bytes, u32, u32)> {
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
    pub(crate) fn decode(
        source: &Bytes,
        header: &vips::Header,
        limits: &Limits,
        width: u32,
        height: u32,
        budget: &Budget,
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
        // The header-only image: the source's profile and EXIF.
        let probed = Image::load(source, true, false, 1)?;
        let scaled = shrink::decode_jpeg_resized(source, header, &probed, (width, height), budget)?;
        let (img, copyright) = match scaled {
            Some(d) => (d.image, d.copyright),
            None => (
                Image::thumbnail(
                    source,
                    width,
                    height,
                    Size::Force,
                    Interesting::None,
                    true,
                    false,
                )?,
                CopyrightNotice::of(&probed),
            ),
        };
        let img = img.to_srgb()?;
        budget.check()?;
        let pixels = img.pixels_cancellable(budget.cancel())?;
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
            copyright,
            smaller: Vec::new(),
        })
    }

    /// Adds a smaller copy, keeping the levels largest first.
    pub(crate) fn push_level(&mut self, level: Level) {
        let area = |l: &Level| l.width as u64 * l.height as u64;
        let at = self
            .smaller
            .iter()
            .position(|l| area(l) < area(&level))
            .unwrap_or(self.smaller.len());
        self.smaller.insert(at, level);
    }

    /// Whether a request may be served from a working copy at all: it keeps no metadata but
    /// the copyright notices (which the copy holds) and has no editor's crop (which wants full
    /// source resolution).
    pub fn eligible(spec: &TransformSpec) -> bool {
        spec.meta != Meta::Keep && spec.crop.is_none()
    }

    /// Whether a copy of `width`×`height` would serve the plan (see [`WorkingCopy::serves`]).
    pub fn would_serve(width: u32, height: u32, p: &geometry::Plan) -> bool {
        p.resized.0 as u64 * 2 <= width as u64 && p.resized.1 as u64 * 2 <= height as u64
    }

    /// Whether the planned resize is at least a 2x reduction of this copy, so the result is
    /// as sharp as one made from the original.
    pub(crate) fn serves(&self, p: &geometry::Plan) -> bool {
        Self::would_serve(self.width, self.height, p)
    }
}
