//! JPEG decoding at a reduced size: libjpeg's DCT scaling (1/2, 1/4, 1/8) during the decode,
//! keeping a margin over the target size, then one SIMD Lanczos-3 pass to the exact size,
//! then orientation.
//!
//! The margin: 1/4 and 1/8 keep at least twice the target, as libvips' `thumbnail` does;
//! those scaled IDCTs are soft filters (1/8 keeps only each block's average), and a decode
//! that just covers the output (what PIL's draft mode does) lost up to 0.035 SSIM against a
//! full-resolution Lanczos-3 reference on 2 of the 11 fixture photos. The 1/2 IDCT keeps 4×4
//! of each block's 8×8 coefficients, a sharp low-pass, so 1.4× the target is enough there:
//! it cut the mean cold-resize cost by ~12% (photos of 1.7–2 MP into 500–700 px boxes
//! decode at half size instead of full), and every photo still came out at least as close
//! to the reference after encoding as libvips' own `thumbnail`
//! (`cargo bench -p flexphoto-media --bench cold_resize`).
//!
//! Where every output pixel averages whole 8×8 blocks, a progressive source is decoded
//! from its coarse scans only ([`covers_whole_blocks`], `jpeg_segments::coarse_scans_only`):
//! without its AC refinement scans, SSIM after encoding moved by −0.0016…+0.0016 (mean
//! −0.00004) on 22 progressive photos in four boxes (64–600 px) while an 18-MP camera
//! JPEG's cold resize took 0.30 s of CPU instead of 0.75; also without the bands past one
//! cycle per block, it took 0.21 s, and on 29 progressive photos in three boxes (64–600 px)
//! per-photo SSIM after encoding moved by −0.0002…+0.0004.
//!
//! The scaled decode itself runs through libjpeg straight into a buffer (`jpeg_decode`), and
//! a non-sRGB profile is applied through a kept transform (`icc_transforms`).

use bytes::Bytes;

use super::metadata::CopyrightNotice;
use super::{resample, Budget, Result};
use crate::vips::{self, Image};
use crate::{icc_transforms, jpeg_decode, jpeg_segments};

/// Largest decoded source (bytes) held in memory here; larger ones go through libvips'
/// streaming `thumbnail`.
pub(crate) const MAX_DECODED_BYTES: u64 = 128 << 20;

/// The margin a libjpeg scale-down factor keeps over the target, in tenths.
fn margin_tenths(factor: u32) -> u64 {
    if factor == 2 {
        14
    } else {
        20
    }
}

/// The largest libjpeg scale-down factor (8, 4, 2 or 1) whose output, `ceil(side / f)` as
/// libjpeg sizes it, still keeps its margin over the target: 1.4× for 1/2, 2× for 1/4 and 1/8.
pub(crate) fn jpeg_factor(have: (u32, u32), need: (u32, u32)) -> u32 {
    [8u32, 4, 2]
        .into_iter()
        .find(|&f| {
            let m = margin_tenths(f);
            have.0.div_ceil(f) as u64 * 10 >= need.0 as u64 * m
                && have.1.div_ceil(f) as u64 * 10 >= need.1 as u64 * m
        })
        .unwrap_or(1)
}

/// Whether every output pixel averages at least a whole 8×8 DCT block of the source in both
/// directions, so that a progressive source can be decoded from its coarse scans only
/// (without the low bits of AC coefficients and the bands past one cycle per block): most
/// of the entropy decoding of a camera's progressive JPEG, the costliest step of a cold miss
/// on one.
pub(crate) fn covers_whole_blocks(have: (u32, u32), need: (u32, u32)) -> bool {
    have.0 as u64 >= need.0 as u64 * 8 && have.1 as u64 >= need.1 as u64 * 8
}

/// A source decoded and resized: upright, its ICC profile attached (not yet applied).
pub(crate) struct Decoded {
    /// The resized image.
    pub image: Image,
    /// The source's Artist and Copyright (the pixels carry no EXIF).
    pub copyright: CopyrightNotice,
}

/// Whether `img` is 8-bit RGB or greyscale, one byte per band and 1 or 3 bands: what this
/// path resamples.
fn holds_rgb_or_grey_bytes(img: &Image) -> bool {
    img.is_uchar() && img.is_rgb_or_grey() && matches!(img.bands(), 1 | 3)
}

/// Decodes an RGB or greyscale JPEG to exactly `width`×`height` (upright sizes). `probed` is
/// the source's header-only image (its profile and EXIF). `None` when this path does not
/// apply: other formats, CMYK or 16-bit, animations, or more than [`MAX_DECODED_BYTES`] of
/// decoded pixels.
pub(crate) fn decode_jpeg_resized(
    source: &Bytes,
    header: &vips::Header,
    probed: &Image,
    (width, height): (u32, u32),
    budget: &Budget,
) -> Result<Option<Decoded>> {
    if !header.loader.starts_with("jpegload") || header.pages > 1 {
        return Ok(None);
    }
    let (width, height) = (width.max(1), height.max(1));
    // Target in stored orientation; rotated after resampling.
    let (tw, th) = if (5..=8).contains(&header.orientation) {
        (height, width)
    } else {
        (width, height)
    };
    let have = (header.width, header.page_height);
    let shrink = jpeg_factor(have, (tw, th));
    let pruned = covers_whole_blocks(have, (tw, th))
        .then(|| jpeg_segments::coarse_scans_only(source))
        .flatten()
        .map(Bytes::from);
    let data = pruned.as_ref().unwrap_or(source);
    // libjpeg straight into a buffer; what it declines, libvips decodes (and refuses).
    let direct = if holds_rgb_or_grey_bytes(probed) {
        jpeg_decode::decode_scaled(data, shrink, MAX_DECODED_BYTES, budget)?
    } else {
        None
    };
    let (pixels, (lw, lh), bands, icc, copyright) = match direct {
        Some(d) => (
            Bytes::from(d.pixels),
            (d.width, d.height),
            d.bands,
            probed.icc_profile(),
            CopyrightNotice::of(probed),
        ),
        None => {
            let loaded = Image::load(data, true, false, shrink)?;
            let (lw, lh, bands) = (loaded.width(), loaded.height(), loaded.bands());
            if !holds_rgb_or_grey_bytes(&loaded)
                || lw as u64 * lh as u64 * bands as u64 > MAX_DECODED_BYTES
            {
                return Ok(None);
            }
            (
                loaded.pixels_cancellable(budget.cancel())?,
                (lw, lh),
                bands,
                loaded.icc_profile(),
                CopyrightNotice::of(&loaded),
            )
        }
    };
    budget.check()?;
    let mut pixels = if (lw, lh) == (tw, th) {
        pixels
    } else {
        let out = resample::resize(&pixels, (lw, lh), bands, (tw, th), false)?;
        drop(pixels);
        Bytes::from(out)
    };
    // A non-sRGB profile is applied here, through a kept transform; an sRGB one, or one lcms
    // cannot use, stays attached for `Image::to_srgb`.
    let mut icc = icc;
    if let Some(profile) = icc
        .as_deref()
        .filter(|p| bands == 3 && !vips::is_srgb_profile(p))
    {
        if let Some(converted) = icc_transforms::rgb_to_srgb(profile, &pixels) {
            pixels = Bytes::from(converted);
            icc = None;
        }
    }
    let mut image = Image::from_pixel_bytes(pixels, tw, th, bands)?;
    if let Some(icc) = icc {
        image.set_blob("icc-profile-data", &icc);
    }
    if header.orientation > 1 {
        image.set_int("orientation", header.orientation as i32);
        image = image.autorot()?;
    }
    Ok(Some(Decoded { image, copyright }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A textured `w`×`h` RGB image (gradients plus pseudo-random noise) saved with `suffix`.
    fn textured_jpeg(w: u32, h: u32, suffix: &str) -> Bytes {
        let mut seed = 0x2545_F491u32;
        let px: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let (x, y) = (i % w, i / w);
                let n = (seed % 64) as u8;
                [
                    (x % 256) as u8 / 2 + n,
                    (y % 256) as u8 / 2 + n,
                    ((x + y) % 128) as u8 + n,
                ]
            })
            .collect();
        Image::from_pixels(&px, w, h, 3)
            .and_then(|i| i.save(suffix))
            .expect("encode test image")
    }

    fn decode(source: &Bytes, size: (u32, u32)) -> Vec<u8> {
        let (header, probed) =
            crate::transform::probe_image(source, Default::default()).expect("probe");
        let d = decode_jpeg_resized(source, &header, &probed, size, &Budget::unlimited())
            .expect("decode")
            .expect("JPEG path applies");
        d.image.pixels().expect("pixels").to_vec()
    }

    #[test]
    fn strong_downscales_of_progressive_jpegs_skip_fine_scans_invisibly() {
        // The same quantised coefficients, in one scan or in libjpeg's progressive script.
        let baseline = textured_jpeg(1024, 768, ".jpg[Q=90]");
        let progressive = textured_jpeg(1024, 768, ".jpg[Q=90,interlace]");
        assert!(jpeg_segments::coarse_scans_only(&progressive).is_some());
        // A mild reduction decodes every scan: the pixels are the baseline's.
        assert!(!covers_whole_blocks((1024, 768), (400, 300)));
        assert_eq!(
            decode(&progressive, (400, 300)),
            decode(&baseline, (400, 300))
        );
        // Each output pixel covers more than a block: the refinement bits are skipped, and
        // the result stays within a fraction of a level of the full decode's.
        assert!(covers_whole_blocks((1024, 768), (100, 75)));
        let (full, pruned) = (
            decode(&baseline, (100, 75)),
            decode(&progressive, (100, 75)),
        );
        assert_eq!(full.len(), pruned.len());
        let diff: Vec<i32> = full
            .iter()
            .zip(&pruned)
            .map(|(&a, &b)| (a as i32 - b as i32).abs())
            .collect();
        let mean = diff.iter().sum::<i32>() as f64 / diff.len() as f64;
        // (Not identical: the refinement bits were skipped; measured 0.32 and 2.)
        assert!(mean > 0.0 && mean < 0.5, "mean difference {mean}");
        assert!(diff.iter().all(|&d| d <= 4), "max {:?}", diff.iter().max());
    }

    #[test]
    fn whole_blocks_in_both_directions() {
        assert!(covers_whole_blocks((5640, 3172), (700, 394)));
        assert!(covers_whole_blocks((800, 800), (100, 100)));
        assert!(!covers_whole_blocks((800, 800), (101, 100)));
        assert!(!covers_whole_blocks((800, 800), (100, 101)));
    }

    #[test]
    fn factor_keeps_its_margin_over_the_target() {
        // 18 MP into a 600 box: 1/4 leaves 1410x793, at least twice 600x338; 1/8 would not.
        assert_eq!(jpeg_factor((5640, 3172), (600, 338)), 4);
        // libjpeg rounds up: 2561/4 = 641 is twice 320.
        assert_eq!(jpeg_factor((2561, 1601), (320, 200)), 4);
        assert_eq!(jpeg_factor((2560, 1600), (640, 400)), 2);
        assert_eq!(jpeg_factor((2560, 1600), (641, 400)), 2);
        assert_eq!(jpeg_factor((4000, 3000), (400, 300)), 4);
        assert_eq!(jpeg_factor((8000, 6000), (400, 300)), 8);
        // 1/2 keeps 1.4x: 1000x536 covers 1.4 x 600x322 (840x451), not 1.4 x 720.
        assert_eq!(jpeg_factor((2000, 1072), (600, 322)), 2);
        assert_eq!(jpeg_factor((2000, 1072), (720, 386)), 1);
        assert_eq!(jpeg_factor((1400, 1000), (500, 357)), 2);
        assert_eq!(jpeg_factor((1400, 1000), (501, 358)), 1);
        // Less than a 1.4x reduction, or enlarging: no scaling.
        assert_eq!(jpeg_factor((640, 480), (700, 525)), 1);
        assert_eq!(jpeg_factor((800, 600), (600, 450)), 1);
    }
}
