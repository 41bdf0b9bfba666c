//! A JPEG file's marker segments and scans, walked without decoding: the frame header that
//! decode estimates read, and the scan list of a progressive file, which a strong
//! downscale can decode from its coarse scans only.

use std::ops::Range;

/// Progressive frames that libjpeg decodes (Huffman or arithmetic coded).
const SOF_PROGRESSIVE: [u8; 2] = [0xC2, 0xCA];
/// Start of scan.
const SOS: u8 = 0xDA;
/// End of image.
const EOI: u8 = 0xD9;

/// One marker segment of a JPEG file.
#[derive(Debug)]
pub(crate) struct Segment<'a> {
    /// The marker code (the byte after 0xFF).
    pub marker: u8,
    /// Where it lies in the file, from its 0xFF; a scan's range includes its entropy-coded
    /// data.
    pub range: Range<usize>,
    /// The bytes after the length field (empty for markers without one).
    pub payload: &'a [u8],
}

/// The segments of a JPEG file in order, from the one after SOI. Ends after EOI, or early
/// where the file is malformed or cut short (then EOI is never yielded).
pub(crate) struct Segments<'a> {
    bytes: &'a [u8],
    at: usize,
    done: bool,
}

/// Walks `bytes`' segments; yields nothing when it does not start with SOI.
pub(crate) fn segments(bytes: &[u8]) -> Segments<'_> {
    Segments {
        bytes,
        at: 2,
        done: !bytes.starts_with(&[0xFF, 0xD8]),
    }
}

impl<'a> Segments<'a> {
    fn next_segment(&mut self) -> Option<Segment<'a>> {
        let b = self.bytes;
        // Bytes between segments are skipped (libjpeg warns and does the same); a marker
        // may be preceded by any number of 0xFF fill bytes.
        let mut i = self.at + memchr::memchr(0xFF, b.get(self.at..)?)?;
        while *b.get(i + 1)? == 0xFF {
            i += 1;
        }
        let start = i;
        let marker = b[i + 1];
        i += 2;
        if matches!(marker, 0x01 | 0xD0..=0xD7 | EOI) {
            self.at = i;
            self.done = marker == EOI;
            return Some(Segment {
                marker,
                range: start..i,
                payload: &[],
            });
        }
        let len = u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]) as usize;
        if len < 2 {
            return None;
        }
        let payload = b.get(i + 2..i + len)?;
        let mut end = i + len;
        if marker == SOS {
            end = entropy_coded_end(b, end)?;
        }
        self.at = end;
        Some(Segment {
            marker,
            range: start..end,
            payload,
        })
    }
}

impl<'a> Iterator for Segments<'a> {
    type Item = Segment<'a>;

    fn next(&mut self) -> Option<Segment<'a>> {
        if self.done {
            return None;
        }
        let next = self.next_segment();
        if next.is_none() {
            self.done = true;
        }
        next
    }
}

/// Where the entropy-coded data starting at `from` ends: at the next marker other than a
/// stuffed zero or a restart marker. `None` when the file ends first.
fn entropy_coded_end(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        i += memchr::memchr(0xFF, b.get(i..)?)?;
        match *b.get(i + 1)? {
            0x00 | 0xD0..=0xD7 => i += 2,
            // Fill bytes before a marker.
            0xFF => i += 1,
            _ => return Some(i),
        }
    }
}

/// The first frame header (SOFn) of a JPEG file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    /// Progressive (several scans refine the whole image).
    pub progressive: bool,
    /// Width in pixels.
    pub width: u64,
    /// Height in pixels (non-zero: a height given later by DNL is not read).
    pub height: u64,
    /// (horizontal, vertical) sampling factor of each component.
    pub sampling: Vec<(u64, u64)>,
}

/// The frame header, read from the segments before the first scan; `None` when there is
/// none or it is unreadable.
pub(crate) fn frame(bytes: &[u8]) -> Option<Frame> {
    let seg = segments(bytes)
        .take_while(|s| !matches!(s.marker, SOS | EOI))
        .find(|s| is_sof(s.marker))?;
    let p = seg.payload;
    let height = u16::from_be_bytes([*p.get(1)?, *p.get(2)?]) as u64;
    let width = u16::from_be_bytes([*p.get(3)?, *p.get(4)?]) as u64;
    let n = *p.get(5)? as usize;
    let sampling = (0..n)
        .map(|c| {
            let s = *p.get(6 + c * 3 + 1)?;
            Some(((s >> 4) as u64, (s & 0x0F) as u64))
        })
        .collect::<Option<Vec<_>>>()?;
    if width == 0 || height == 0 {
        return None;
    }
    Some(Frame {
        progressive: matches!(seg.marker, 0xC2 | 0xC6 | 0xCA | 0xCE),
        width,
        height,
        sampling,
    })
}

/// Whether `marker` starts a frame (SOF0–SOF15 less DHT, JPG and DAC).
fn is_sof(marker: u8) -> bool {
    matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC)
}

/// The last zigzag coefficient a decode that averages every 8×8 block into at most one
/// output pixel still needs: up to (2,0), (1,1) and (0,2), one cycle per block. Higher
/// frequencies lie above that output's Nyquist limit, which its resampling removes anyway.
pub(crate) const LAST_COARSE_COEFFICIENT: u8 = 5;

/// A progressive JPEG reduced to the scans a decode that averages every 8×8 block into at
/// most one output pixel can show: its AC refinement scans (successive-approximation scans
/// that add the low bits of coefficients already coded) and the first scans of bands past
/// [`LAST_COARSE_COEFFICIENT`] are dropped. That decode's pixels barely move (see
/// `transform/shrink.rs`) and its entropy decoding, the costliest step of a cold miss on a
/// camera's progressive JPEG, more than halves. DC scans, low-band AC scans and every table
/// stay. `None` when `source` is not a progressive JPEG, has no such scans, or does not walk
/// cleanly from SOI to EOI (a damaged file is decoded as it is, so that its errors are
/// reported as they are).
pub(crate) fn coarse_scans_only(source: &[u8]) -> Option<Vec<u8>> {
    // Byte ranges to keep, SOI first.
    let mut kept: Vec<Range<usize>> = Vec::with_capacity(16);
    kept.push(0..2);
    let mut progressive = false;
    let mut dropped = 0usize;
    let mut ended = false;
    for seg in segments(source) {
        if is_sof(seg.marker) {
            // One frame, progressive.
            if progressive || !SOF_PROGRESSIVE.contains(&seg.marker) {
                return None;
            }
            progressive = true;
        }
        if seg.marker == SOS && progressive && is_fine_detail(seg.payload)? {
            dropped += seg.range.len();
            continue;
        }
        ended = seg.marker == EOI;
        match kept.last_mut() {
            Some(last) if last.end == seg.range.start => last.end = seg.range.end,
            _ => kept.push(seg.range),
        }
    }
    if !ended || dropped == 0 {
        return None;
    }
    let mut out = Vec::with_capacity(source.len() - dropped);
    for r in kept {
        out.extend_from_slice(&source[r]);
    }
    Some(out)
}

/// Whether a scan header (SOS payload) starts a scan of fine detail: an AC refinement scan
/// (spectral selection past DC, previous approximation bit position Ah above zero) or the
/// first scan of a band past [`LAST_COARSE_COEFFICIENT`]. `None` when the header is too short
/// for its component count.
fn is_fine_detail(sos: &[u8]) -> Option<bool> {
    let n = *sos.first()? as usize;
    let spectral_start = *sos.get(1 + 2 * n)?;
    let approximation = *sos.get(3 + 2 * n)?;
    Some(spectral_start > 0 && (approximation >> 4 > 0 || spectral_start > LAST_COARSE_COEFFICIENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SOI, a frame header of `sof`, a DHT-like segment, then `scans` (Ss, Se, Ah<<4|Al,
    /// entropy bytes), then EOI.
    fn jpeg(sof: u8, scans: &[(u8, u8, u8, &[u8])]) -> Vec<u8> {
        let mut b = vec![
            0xFF, 0xD8, 0xFF, sof, 0x00, 0x0B, 8, 0, 16, 0, 16, 1, 1, 0x11, 0,
        ];
        b.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x03, 0x42]);
        for &(ss, se, a, data) in scans {
            b.extend_from_slice(&[0xFF, SOS, 0x00, 0x08, 1, 1, 0x00, ss, se, a]);
            b.extend_from_slice(data);
        }
        b.extend_from_slice(&[0xFF, EOI]);
        b
    }

    #[test]
    fn walks_segments_and_entropy_data_to_eoi() {
        // Entropy data holding a stuffed 0xFF, a restart marker and fill before the next
        // marker.
        let b = jpeg(
            0xC2,
            &[
                (0, 0, 0x01, &[1, 0xFF, 0x00, 2, 0xFF, 0xD3, 3]),
                (1, 63, 0x00, &[4, 0xFF, 0xFF]),
            ],
        );
        let markers: Vec<u8> = segments(&b).map(|s| s.marker).collect();
        assert_eq!(markers, vec![0xC2, 0xC4, SOS, SOS, EOI]);
        let sos: Vec<_> = segments(&b).filter(|s| s.marker == SOS).collect();
        assert_eq!(&b[sos[0].range.end..sos[0].range.end + 2], &[0xFF, SOS]);
        assert_eq!(sos[1].payload, &[1, 1, 0x00, 1, 63, 0x00]);
    }

    #[test]
    fn drops_refinement_and_high_band_scans_only() {
        // libjpeg's default script for one component, plus a band that starts low and ends
        // high, which stays whole.
        let b = jpeg(
            0xC2,
            &[
                (0, 0, 0x01, &[0xD1]),
                (1, 5, 0x02, &[0xA1]),
                (6, 63, 0x02, &[0xA4]),
                (1, 63, 0x21, &[0xA2, 0xFF, 0x00]),
                (0, 0, 0x10, &[0xD2]),
                (5, 20, 0x00, &[0xA5]),
                (1, 63, 0x10, &[0xA3]),
            ],
        );
        let pruned = coarse_scans_only(&b).expect("has fine scans");
        let want = jpeg(
            0xC2,
            &[
                (0, 0, 0x01, &[0xD1]),
                (1, 5, 0x02, &[0xA1]),
                (0, 0, 0x10, &[0xD2]),
                (5, 20, 0x00, &[0xA5]),
            ],
        );
        assert_eq!(pruned, want);
        // Nothing left to drop, and baseline files, are left as they are.
        assert_eq!(coarse_scans_only(&want), None);
        assert_eq!(coarse_scans_only(&jpeg(0xC0, &[(0, 63, 0, &[1])])), None);
    }

    #[test]
    fn damaged_files_are_not_rewritten() {
        let b = jpeg(0xC2, &[(0, 0, 0x01, &[1]), (1, 63, 0x10, &[2, 3, 4])]);
        assert!(coarse_scans_only(&b).is_some());
        // Cut inside the refinement scan or just before EOI.
        for cut in [b.len() - 4, b.len() - 1] {
            assert_eq!(coarse_scans_only(&b[..cut]), None, "cut at {cut}");
        }
        // A scan header shorter than its component count says.
        let mut short = b.clone();
        let at = short.windows(2).rposition(|w| w == [0xFF, SOS]).unwrap();
        short[at + 4] = 4;
        assert_eq!(coarse_scans_only(&short), None);
        // Not a JPEG.
        assert_eq!(coarse_scans_only(b"GIF89a"), None);
    }

    #[test]
    fn frame_is_read_before_the_first_scan() {
        let b = jpeg(0xC2, &[(0, 0, 0x01, &[1])]);
        assert_eq!(
            frame(&b),
            Some(Frame {
                progressive: true,
                width: 16,
                height: 16,
                sampling: vec![(1, 1)],
            })
        );
        // Garbage between segments is skipped.
        let mut g = b[..2].to_vec();
        g.extend_from_slice(&[0u8; 1000]);
        g.extend_from_slice(&b[2..]);
        assert_eq!(frame(&g).map(|f| f.width), Some(16));
    }
}
