//! Fingerprints: SHA-256 of the bytes, and a perceptual difference hash of the picture.

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
}
