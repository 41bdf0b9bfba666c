//! Decoded pixels handed to code outside libvips (the embedders).

use std::fmt;

use bytes::Bytes;

use crate::transform::{probe_allowed, Budget, Limits, TransformError};
use crate::vips::{Image, Interesting, Size};

/// RGB pixels (3 bands, 8 bits, row-major, no padding).
#[derive(Clone)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub pixels: Vec<u8>,
}

impl fmt::Debug for RgbImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RgbImage({}x{})", self.width, self.height)
    }
}

/// Decodes `source` into upright sRGB pixels fitted into a `side`×`side` box (never
/// enlarged), alpha flattened on white: the embedder's input. The source is held to
/// `limits` (formats, pixels) from its header before decoding. Blocking.
pub fn rgb_for_embedding(
    source: &Bytes,
    side: u32,
    limits: &Limits,
    budget: &Budget,
) -> Result<RgbImage, TransformError> {
    let header = probe_allowed(source, limits.formats)?;
    if header.width as u64 * header.page_height as u64 > limits.max_source_pixels {
        return Err(TransformError::TooManyPixels {
            width: header.width,
            height: header.page_height,
            limit: limits.max_source_pixels,
        });
    }
    let (bw, bh) = (side.max(1), side.max(1));
    let img =
        Image::thumbnail(source, bw, bh, Size::Down, Interesting::None, true, false)?.to_srgb()?;
    budget.check()?;
    rgb_from_cancellable(img, budget)
}

/// Packed sRGB or grey 8-bit pixels (`bands` of 1–4) as RGB, alpha flattened on white.
pub fn rgb_from_pixels(
    pixels: Bytes,
    width: u32,
    height: u32,
    bands: u32,
) -> Result<RgbImage, TransformError> {
    rgb_from(Image::from_pixel_bytes(pixels, width, height, bands)?)
}

/// Packs an sRGB image as 3-band pixels, alpha flattened on white.
pub(crate) fn rgb_from(img: Image) -> Result<RgbImage, TransformError> {
    rgb_from_cancellable(img, &Budget::unlimited())
}

fn rgb_from_cancellable(mut img: Image, budget: &Budget) -> Result<RgbImage, TransformError> {
    if img.bands() == 4 || img.bands() == 2 {
        img = img.flatten([255.0, 255.0, 255.0])?;
    }
    let (width, height) = (img.width(), img.height());
    let pixels = img.pixels_cancellable(budget.cancel())?;
    if pixels.len() != width as usize * height as usize * 3 {
        return Err(TransformError::Internal(format!(
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
