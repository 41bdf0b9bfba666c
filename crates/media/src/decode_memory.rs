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

fn jpeg(source: &[u8], want: (u32, u32)) -> Option<u64> {
    let f = crate::jpeg_segments::frame(source)?;
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
    let need = (fitted(f.width), fitted(f.height));
    let scale = crate::transform::jpeg_factor((w, h), need) as u64;
    let decoded =
        f.width.div_ceil(scale) * f.height.div_ceil(scale) * f.sampling.len().max(1) as u64;
    // A progressive source decoded without its refinement scans is a copy of the rest.
    let pruned_copy = if f.progressive && crate::transform::covers_whole_blocks((w, h), need) {
        source.len() as u64
    } else {
        0
    };
    Some(coefficients + decoded + pruned_copy)
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
        // 1410x793 pixels, 3 components, from a copy of the source without its refinement
        // scans (at most the source's size).
        assert_eq!(
            estimate(&h, (600, 600)),
            Some(coefficients + 1410 * 793 * 3 + h.len() as u64)
        );
        assert!(estimate(&h, (600, 600)).unwrap() > 50 << 20);
        // Into a 1000 px box: 1/2, from the source itself.
        assert_eq!(
            estimate(&h, (1000, 1000)),
            Some(coefficients + 2820 * 1586 * 3)
        );
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
