//! Fingerprints: SHA-256 of the bytes, a perceptual difference hash of the picture, and a
//! small grey layout that near-duplicate checks compare across crops and small turns.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::transform::TransformError;
use crate::vips::{Image, Interesting, Size};

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A 64-bit difference hash: each bit says whether a pixel of a 9×8 greyscale thumbnail is
/// brighter than its right-hand neighbour.
pub fn dhash(source: &Bytes) -> Result<u64, TransformError> {
    dhash_of(Image::thumbnail(
        source,
        9,
        8,
        Size::Force,
        Interesting::None,
        true,
        false,
    )?)
}

/// The difference hash of packed 8-bit pixels (`bands` of 1–4).
pub fn dhash_of_pixels(
    pixels: Bytes,
    width: u32,
    height: u32,
    bands: u32,
) -> Result<u64, TransformError> {
    dhash_of(Image::from_pixel_bytes(pixels, width, height, bands)?)
}

/// The difference hash of an already decoded image.
pub(crate) fn dhash_of(img: Image) -> Result<u64, TransformError> {
    let thumb = if (img.width(), img.height()) == (9, 8) {
        img
    } else {
        img.thumbnail_image(9, 8, Size::Force, Interesting::None)?
    };
    let pgm = thumb.save(".pgm").map_err(TransformError::from)?;
    let (w, h, px) = parse_pgm(&pgm)
        .ok_or_else(|| TransformError::Internal("unexpected greyscale thumbnail".into()))?;
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

/// Side of a [`Layout`].
pub const LAYOUT_SIDE: usize = 32;

/// A `LAYOUT_SIDE`² grey thumbnail of the whole picture (aspect ratio not kept), row-major.
pub type Layout = Vec<u8>;

/// The layout of packed RGB pixels (`width * height * 3` bytes): the mean grey of each cell.
pub fn layout_of_rgb(pixels: &[u8], width: u32, height: u32) -> Layout {
    let (w, h) = (width as usize, height as usize);
    let n = LAYOUT_SIDE;
    let mut sum = vec![0u32; n * n];
    let mut count = vec![0u32; n * n];
    if w == 0 || h == 0 || pixels.len() < w * h * 3 {
        return vec![0; n * n];
    }
    for y in 0..h {
        let cy = y * n / h;
        for x in 0..w {
            let p = &pixels[(y * w + x) * 3..][..3];
            let grey =
                (299 * u32::from(p[0]) + 587 * u32::from(p[1]) + 114 * u32::from(p[2])) / 1000;
            let c = cy * n + x * n / w;
            sum[c] += grey;
            count[c] += 1;
        }
    }
    sum.iter()
        .zip(&count)
        .map(|(s, c)| (s / (*c).max(1)) as u8)
        .collect()
}

/// Side of the grids [`layout_similarity`] compares.
const COMPARE: usize = 20;
/// Share of each side of the tighter picture that is compared (its centre, so crop and turn
/// borders stay out).
const INNER: f32 = 0.75;
/// Relative zooms tried: how much wider the other picture's view may be.
const ZOOMS: [f32; 7] = [1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7];

/// How alike two layouts are allowing for one being a centred crop of the other (up to about
/// 15 % from every side) or slightly turned: the best normalised cross-correlation (-1..1)
/// between the centre of one and a zoomed centre of the other, both ways.
pub fn layout_similarity(a: &[u8], b: &[u8]) -> f32 {
    let full = LAYOUT_SIDE * LAYOUT_SIDE;
    if a.len() != full || b.len() != full {
        return -1.0;
    }
    let mut best = -1f32;
    for (tight, wide) in [(a, b), (b, a)] {
        let t = centre_grid(tight, INNER);
        for z in ZOOMS {
            best = best.max(ncc(&t, &centre_grid(wide, INNER * z)));
        }
    }
    best
}

/// The centre `fraction` of a layout resampled (bilinear) onto a `COMPARE`² grid.
fn centre_grid(layout: &[u8], fraction: f32) -> Vec<f32> {
    let n = LAYOUT_SIDE as f32;
    let side = n * fraction;
    let origin = (n - side) / 2.0;
    let at = |x: usize, y: usize| f32::from(layout[y * LAYOUT_SIDE + x]);
    let mut out = Vec::with_capacity(COMPARE * COMPARE);
    for j in 0..COMPARE {
        for i in 0..COMPARE {
            let fx = (origin + (i as f32 + 0.5) * side / COMPARE as f32 - 0.5).clamp(0.0, n - 1.0);
            let fy = (origin + (j as f32 + 0.5) * side / COMPARE as f32 - 0.5).clamp(0.0, n - 1.0);
            let (x0, y0) = (fx as usize, fy as usize);
            let (x1, y1) = ((x0 + 1).min(LAYOUT_SIDE - 1), (y0 + 1).min(LAYOUT_SIDE - 1));
            let (dx, dy) = (fx - x0 as f32, fy - y0 as f32);
            out.push(
                at(x0, y0) * (1.0 - dx) * (1.0 - dy)
                    + at(x1, y0) * dx * (1.0 - dy)
                    + at(x0, y1) * (1.0 - dx) * dy
                    + at(x1, y1) * dx * dy,
            );
        }
    }
    out
}

/// Normalised cross-correlation; 0 when either side is flat.
fn ncc(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len() as f32;
    let (ma, mb) = (a.iter().sum::<f32>() / n, b.iter().sum::<f32>() / n);
    let (mut ab, mut aa, mut bb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (x - ma, y - mb);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa < 1e-3 || bb < 1e-3 {
        0.0
    } else {
        ab / (aa * bb).sqrt()
    }
}

/// Number of differing bits between two 64-bit hashes.
pub fn hamming(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A smooth, non-symmetric test picture: `size`² RGB, seen through the centre `view` of
    /// its side (1.0: all of it).
    fn scene(size: usize, view: f32, seed: f32) -> Vec<u8> {
        let mut px = Vec::with_capacity(size * size * 3);
        for y in 0..size {
            for x in 0..size {
                let u = 0.5 + (x as f32 / size as f32 - 0.5) * view;
                let v = 0.5 + (y as f32 / size as f32 - 0.5) * view;
                let g = 128.0
                    + 60.0 * (u * 7.0 + seed).sin() * (v * 5.0 - seed).cos()
                    + 50.0 * (u * 3.0 * v + seed * 2.0).sin();
                let g = g.clamp(0.0, 255.0) as u8;
                px.extend_from_slice(&[g, g, g]);
            }
        }
        px
    }

    #[test]
    fn layouts_match_across_crops_not_across_pictures() {
        let s = 200;
        let whole = layout_of_rgb(&scene(s, 1.0, 0.3), s as u32, s as u32);
        let crop10 = layout_of_rgb(&scene(s, 0.8, 0.3), s as u32, s as u32);
        let other = layout_of_rgb(&scene(s, 1.0, 2.1), s as u32, s as u32);
        assert_eq!(whole.len(), LAYOUT_SIDE * LAYOUT_SIDE);
        assert!(layout_similarity(&whole, &whole) > 0.999);
        let same = layout_similarity(&whole, &crop10);
        let diff = layout_similarity(&whole, &other);
        assert!(same > 0.95, "a 10 % crop: {same}");
        assert!(diff < same - 0.2, "another picture: {diff} vs {same}");
        assert_eq!(layout_similarity(&whole, &[0; 3]), -1.0);
    }
}
