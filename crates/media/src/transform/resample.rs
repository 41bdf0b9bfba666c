//! Lanczos-3 resampling of packed 8-bit pixels with SIMD, for the large reductions: libvips
//! 8.14 reduces rows in scalar C, which made its resize the most expensive step of turning a
//! 12-megapixel photo into variants. Same filter as libvips' default, so outputs look alike.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use super::{Result, TransformError};

/// Resizes packed `bands`-per-pixel 8-bit pixels (1 grey, 2 grey + alpha, 3 RGB, 4 RGBA) from
/// `width`×`height` to `out_w`×`out_h`. With `alpha`, the last band is alpha and colours are
/// weighted by it (no dark fringes).
pub fn resize(
    pixels: &[u8],
    (width, height): (u32, u32),
    bands: u32,
    (out_w, out_h): (u32, u32),
    alpha: bool,
) -> Result<Vec<u8>> {
    let pixel_type = match bands {
        1 => PixelType::U8,
        2 => PixelType::U8x2,
        3 => PixelType::U8x3,
        4 => PixelType::U8x4,
        n => {
            return Err(TransformError::Internal(format!(
                "cannot resample {n}-band pixels"
            )))
        }
    };
    let bad = |e: &dyn std::fmt::Display| TransformError::Internal(format!("resample: {e}"));
    let src = ImageRef::new(width, height, pixels, pixel_type).map_err(|e| bad(&e))?;
    let mut dst = Image::new(out_w.max(1), out_h.max(1), pixel_type);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3))
        .use_alpha(alpha);
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| bad(&e))?;
    Ok(dst.into_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_colour_stays_flat_and_sizes_are_exact() {
        let px: Vec<u8> = [200u8, 100, 50].repeat(40 * 30);
        let out = resize(&px, (40, 30), 3, (17, 11), false).unwrap();
        assert_eq!(out.len(), 17 * 11 * 3);
        assert!(out.chunks(3).all(|c| c == [200, 100, 50]));
    }

    #[test]
    fn transparent_pixels_do_not_darken_colours() {
        // Half opaque red, half fully transparent black.
        let mut px = Vec::new();
        for x in 0..64 {
            if x < 32 {
                px.extend_from_slice(&[255, 0, 0, 255]);
            } else {
                px.extend_from_slice(&[0, 0, 0, 0]);
            }
        }
        let row = px.clone();
        let px: Vec<u8> = row.repeat(8);
        let out = resize(&px, (64, 8), 4, (16, 2), true).unwrap();
        for c in out.chunks(4).filter(|c| c[3] > 16) {
            assert!(
                c[0] > 240,
                "colour darkened by transparent neighbours: {c:?}"
            );
        }
    }

    #[test]
    fn bad_band_count_is_an_error() {
        assert!(resize(&[0; 50], (5, 2), 5, (2, 1), false).is_err());
    }
}
