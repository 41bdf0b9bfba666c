//! How much memory decoding a source will hold at once, read from its header without
//! decoding, so that a server can admit large decodes against a memory budget.
//!
//! What dominates is a decoder that must keep the whole image before it can give out a row:
//! a progressive JPEG keeps every DCT coefficient of the full-size image (2 bytes each, about
//! 54 MB for 18 MP at 4:2:0) whatever the scale it decodes to, and an interlaced PNG keeps
//! every pixel. A baseline JPEG decodes row by row into the reduced size libjpeg's DCT scaling
//! gives. Formats not read here give `None`; callers treat them as small.

/// Estimated bytes held while decoding `source` for an output fitted inside `want` (width,
/// height; 0 where unconstrained), or `None` for formats and headers this does not read.
pub fn estimate(source: &[u8], want: (u32, u32)) -> Option<u64> {
    if source.starts_with(&[0xFF, 0xD8]) {
        jpeg(source, want)
    } else if source.starts_with(b"\x89PNG\r\n\x1a\n") {
        png(source)
    } else {
        None
    }
}

/// One JPEG frame header (SOFn).
struct Frame {
    progressive: bool,
    width: u64,
    height: u64,
    /// (horizontal, vertical) sampling factor of each component.
    sampling: Vec<(u64, u64)>,
}

fn jpeg(source: &[u8], want: (u32, u32)) -> Option<u64> {
    let f = jpeg_frame(source)?;
    let (hmax, vmax) = f.sampling.iter().fold((1, 1), |(h, v), &(sh, sv)| {
        (h.max(sh.max(1)), v.max(sv.max(1)))
    });
    let coefficients = if f.progressive {
        f.sampling
            .iter()
            .map(|&(sh, sv)| {
                let bw = (f.width * sh.max(1)).div_ceil(hmax).div_ceil(8);
                let bh = (f.height * sv.max(1)).div_ceil(vmax).div_ceil(8);
                bw * bh * 64 * 2
            })
            .sum()
    } else {
        0
    };
    // The output fitted inside `want`, and the DCT scale the transform decodes at for it.
    let fit = [(want.0, f.width), (want.1, f.height)]
        .into_iter()
        .filter(|&(w, _)| w > 0)
        .map(|(w, have)| w as f64 / have as f64)
        .fold(1.0f64, f64::min);
    let fitted = |side: u64| ((side as f64 * fit).round() as u32).max(1);
    let (w, h) = (f.width as u32, f.height as u32);
    let scale = crate::transform::jpeg_factor((w, h), (fitted(f.width), fitted(f.height))) as u64;
    let decoded =
        f.width.div_ceil(scale) * f.height.div_ceil(scale) * f.sampling.len().max(1) as u64;
    Some(coefficients + decoded)
}

/// The first frame header, walking the marker segments up to the first scan.
fn jpeg_frame(b: &[u8]) -> Option<Frame> {
    let mut i = 2;
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        while *b.get(i)? != 0xFF {
            i += 1;
        }
        while *b.get(i)? == 0xFF {
            i += 1;
        }
        let marker = *b.get(i)?;
        i += 1;
        match marker {
            0x01 | 0xD0..=0xD7 => continue,
            0xD9 | 0xDA => return None,
            _ => {}
        }
        let len = u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]) as usize;
        let seg = b.get(i + 2..i + len)?;
        let is_sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof {
            let height = u16::from_be_bytes([*seg.get(1)?, *seg.get(2)?]) as u64;
            let width = u16::from_be_bytes([*seg.get(3)?, *seg.get(4)?]) as u64;
            let n = *seg.get(5)? as usize;
            let sampling = (0..n)
                .map(|c| {
                    let s = *seg.get(6 + c * 3 + 1)?;
                    Some(((s >> 4) as u64, (s & 0x0F) as u64))
                })
                .collect::<Option<Vec<_>>>()?;
            if width == 0 || height == 0 {
                return None;
            }
            return Some(Frame {
                progressive: matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE),
                width,
                height,
                sampling,
            });
        }
        i += len;
    }
}

fn png(b: &[u8]) -> Option<u64> {
    // IHDR is the first chunk: width, height, bit depth, colour type, …, interlace.
    let ihdr = b.get(16..29)?;
    if b.get(12..16)? != b"IHDR" {
        return None;
    }
    let width = u32::from_be_bytes(ihdr[0..4].try_into().ok()?) as u64;
    let height = u32::from_be_bytes(ihdr[4..8].try_into().ok()?) as u64;
    let depth = ihdr[8] as u64;
    let channels = match ihdr[9] {
        0 | 3 => 1,
        4 => 2,
        2 => 3,
        6 => 4,
        _ => return None,
    };
    let row = (width * channels * depth).div_ceil(8);
    // Interlaced: the whole image; otherwise libvips reads it a strip of rows at a time.
    Some(if ihdr[12] == 1 {
        row * height
    } else {
        row * 16
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JPEG header up to its frame header: SOI, an APP0 segment, then SOFn.
    fn jpeg_header(sof: u8, w: u16, h: u16, sampling: &[u8]) -> Vec<u8> {
        let mut b = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0xAA, 0xBB, 0xFF, sof];
        let len = 8 + 3 * sampling.len() as u16;
        b.extend_from_slice(&len.to_be_bytes());
        b.push(8);
        b.extend_from_slice(&h.to_be_bytes());
        b.extend_from_slice(&w.to_be_bytes());
        b.push(sampling.len() as u8);
        for (id, s) in sampling.iter().enumerate() {
            b.extend_from_slice(&[id as u8 + 1, *s, 0]);
        }
        b.extend_from_slice(&[0xFF, 0xDA]);
        b
    }

    #[test]
    fn progressive_jpeg_counts_every_coefficient() {
        // 18 MP at 4:2:0: Y 705x397 blocks, Cb and Cr 353x199 each, 128 bytes per block.
        let h = jpeg_header(0xC2, 5640, 3172, &[0x22, 0x11, 0x11]);
        let coefficients = (705 * 397 + 2 * 353 * 199) * 128;
        // Into a 600 px box the transform decodes at 1/4 (twice the target at least):
        // 1410x793 pixels, 3 components.
        assert_eq!(
            estimate(&h, (600, 600)),
            Some(coefficients + 1410 * 793 * 3)
        );
        assert!(estimate(&h, (600, 600)).unwrap() > 50 << 20);
    }

    #[test]
    fn baseline_jpeg_counts_the_scaled_decode_only() {
        let h = jpeg_header(0xC0, 5640, 3172, &[0x22, 0x11, 0x11]);
        assert_eq!(estimate(&h, (600, 600)), Some(1410 * 793 * 3));
        // A 300 px box: 1/8.
        assert_eq!(estimate(&h, (300, 300)), Some(705 * 397 * 3));
        // A full-size output decodes at full size.
        assert_eq!(estimate(&h, (5640, 0)), Some(5640 * 3172 * 3));
        // Grayscale: one component; no box: full size.
        let g = jpeg_header(0xC0, 800, 600, &[0x11]);
        assert_eq!(estimate(&g, (0, 0)), Some(800 * 600));
    }

    #[test]
    fn png_interlaced_or_not() {
        let mut b = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
        b.extend_from_slice(&1000u32.to_be_bytes());
        b.extend_from_slice(&500u32.to_be_bytes());
        b.extend_from_slice(&[8, 6, 0, 0, 1]);
        assert_eq!(estimate(&b, (0, 0)), Some(1000 * 4 * 500));
        b[28] = 0;
        assert_eq!(estimate(&b, (0, 0)), Some(1000 * 4 * 16));
    }

    #[test]
    fn unreadable_headers_give_none() {
        assert_eq!(estimate(b"", (1, 1)), None);
        assert_eq!(estimate(b"GIF89a", (1, 1)), None);
        assert_eq!(estimate(&[0xFF, 0xD8, 0xFF], (1, 1)), None);
        // A segment length running past the end, and a frame with no height (DNL).
        assert_eq!(
            estimate(&[0xFF, 0xD8, 0xFF, 0xE0, 0xFF, 0xFF, 0], (1, 1)),
            None
        );
        let dnl = jpeg_header(0xC0, 800, 0, &[0x11]);
        assert_eq!(estimate(&dnl, (1, 1)), None);
        // Scans before a frame header.
        assert_eq!(estimate(&[0xFF, 0xD8, 0xFF, 0xDA, 0, 2], (1, 1)), None);
    }
}
