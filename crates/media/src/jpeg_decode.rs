//! Scaled JPEG decoding straight into a buffer of our own, through the system's libjpeg
//! (csrc/jpeg_decode.c): the cold path's decode without libvips' image pipeline.
//!
//! Through libvips a cold miss paid, besides libjpeg's own work, for a second header parse
//! (EXIF included), loader sniffing, region and thread-pool set-up, zeroed tracked buffers
//! and two copies of the decoded pixels: 5–7 CPU-ms of a camera JPEG's ~33 in `perf`. The
//! settings are jpegload's (islow IDCT, fancy upsampling, libjpeg's 1/2, 1/4 and 1/8
//! scaling), so the pixels are the same (tested). Only what libjpeg decodes cleanly is taken:
//! 8-bit greyscale, YCbCr or RGB that does not end early; anything else is left to libvips,
//! whose errors and fallbacks stay the ones users see.

use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CStr};

use crate::transform::{Budget, Result, TransformError};

/// libjpeg's `JMSG_LENGTH_MAX`.
const MESSAGE_LEN: usize = 200;

const FP_OK: c_int = 0;
const FP_CANCELLED: c_int = 4;

#[repr(C)]
struct DecodeResult {
    width: c_uint,
    height: c_uint,
    components: c_uint,
    message: [c_char; MESSAGE_LEN],
}

type AllocFn = unsafe extern "C" fn(ctx: *mut c_void, len: usize) -> *mut u8;
type StopFn = unsafe extern "C" fn(ctx: *mut c_void) -> c_int;

extern "C" {
    fn fp_jpeg_decode(
        data: *const u8,
        len: c_ulong,
        denom: c_uint,
        alloc: AllocFn,
        alloc_ctx: *mut c_void,
        should_stop: StopFn,
        stop_ctx: *mut c_void,
        out: *mut DecodeResult,
    ) -> c_int;
}

/// Pixels decoded at a reduced size.
pub(crate) struct Scaled {
    /// Interleaved 8-bit samples, `bands` per pixel, rows without padding.
    pub pixels: Vec<u8>,
    /// Width after scaling.
    pub width: u32,
    /// Height after scaling.
    pub height: u32,
    /// 1 (grey) or 3 (RGB).
    pub bands: u32,
}

/// Where the decoder's buffer goes, and how large it may be.
struct Buffer {
    pixels: Vec<u8>,
    max_bytes: u64,
}

/// Gives libjpeg a buffer of `len` bytes, or none when it is larger than allowed or memory
/// is short. Never unwinds.
unsafe extern "C" fn alloc_pixels(ctx: *mut c_void, len: usize) -> *mut u8 {
    // SAFETY: `ctx` is the `Buffer` that `decode_scaled` passed, alive for the call.
    let buf = unsafe { &mut *(ctx as *mut Buffer) };
    if len as u64 > buf.max_bytes || len == 0 || buf.pixels.try_reserve_exact(len).is_err() {
        return std::ptr::null_mut();
    }
    buf.pixels.as_mut_ptr()
}

/// Asks the budget whether to go on. Never unwinds.
unsafe extern "C" fn budget_spent(ctx: *mut c_void) -> c_int {
    // SAFETY: `ctx` is the `Budget` that `decode_scaled` passed, alive for the call.
    let budget = unsafe { &*(ctx as *const Budget) };
    budget.check().is_err() as c_int
}

/// Decodes `jpeg` scaled by `1/denom` (1, 2, 4 or 8) into at most `max_bytes` of pixels.
/// `Ok(None)` when this decoder does not take the file (other colour spaces or precisions,
/// damaged or cut data, a larger buffer): libvips decodes it instead. Stops when `budget`
/// is spent.
pub(crate) fn decode_scaled(
    jpeg: &[u8],
    denom: u32,
    max_bytes: u64,
    budget: &Budget,
) -> Result<Option<Scaled>> {
    if !matches!(denom, 1 | 2 | 4 | 8) {
        return Ok(None);
    }
    let mut buf = Buffer {
        pixels: Vec::new(),
        max_bytes,
    };
    let mut out = DecodeResult {
        width: 0,
        height: 0,
        components: 0,
        message: [0; MESSAGE_LEN],
    };
    // SAFETY: `jpeg` is read for the call only; the callbacks get the live `buf` and
    // `budget`; `out` is a valid result struct.
    let rc = unsafe {
        fp_jpeg_decode(
            jpeg.as_ptr(),
            jpeg.len() as c_ulong,
            denom,
            alloc_pixels,
            &mut buf as *mut Buffer as *mut c_void,
            budget_spent,
            budget as *const Budget as *mut c_void,
            &mut out,
        )
    };
    match rc {
        FP_OK => {}
        FP_CANCELLED => return Err(TransformError::DeadlineExceeded),
        _ => {
            // SAFETY: the decoder leaves a NUL-terminated message, possibly empty.
            let message = unsafe { CStr::from_ptr(out.message.as_ptr()) };
            tracing::debug!(code = rc, message = %message.to_string_lossy(), "jpeg decoder declined; libvips decodes");
            return Ok(None);
        }
    }
    let len = out.width as usize * out.height as usize * out.components as usize;
    if !matches!(out.components, 1 | 3) || len > buf.pixels.capacity() {
        return Ok(None);
    }
    // SAFETY: the decoder wrote all `len` bytes of the rows it kept (and maybe some slack
    // after them, dropped here).
    unsafe { buf.pixels.set_len(len) };
    Ok(Some(Scaled {
        pixels: buf.pixels,
        width: out.width,
        height: out.height,
        bands: out.components,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vips::{Cancel, Image};
    use bytes::Bytes;

    /// A textured `w`×`h` image with `bands` bands, saved with `suffix`.
    fn jpeg(w: u32, h: u32, bands: u32, suffix: &str) -> Bytes {
        let px: Vec<u8> = (0..w * h * bands)
            .map(|i| ((i / bands % w) * 3 + (i / bands / w) * 5 + (i % bands) * 40) as u8)
            .collect();
        Image::from_pixels(&px, w, h, bands)
            .and_then(|i| i.save(suffix))
            .expect("encode test image")
    }

    fn by_vips(source: &Bytes, denom: u32) -> (Vec<u8>, u32, u32) {
        let img = Image::load(source, true, false, denom).unwrap();
        (img.pixels().unwrap().to_vec(), img.width(), img.height())
    }

    #[test]
    fn pixels_are_libvips_jpegload_pixels_at_every_scale() {
        for (bands, suffix) in [
            (3, ".jpg[Q=85]"),
            (3, ".jpg[Q=85,subsample-mode=off]"),
            (3, ".jpg[Q=85,interlace]"),
            (1, ".jpg[Q=85]"),
        ] {
            let source = jpeg(333, 201, bands, suffix);
            for denom in [1, 2, 4, 8] {
                let ours = decode_scaled(&source, denom, u64::MAX, &Budget::unlimited())
                    .unwrap()
                    .expect("decoded");
                let (pixels, w, h) = by_vips(&source, denom);
                assert_eq!(
                    (ours.width, ours.height, ours.bands),
                    (w, h, bands),
                    "{suffix}"
                );
                assert!(ours.pixels == pixels, "{suffix} at 1/{denom}");
            }
        }
    }

    #[test]
    fn damaged_or_unusual_files_are_left_to_libvips() {
        let source = jpeg(64, 48, 3, ".jpg");
        let budget = Budget::unlimited();
        let cut = &source[..source.len() / 2];
        assert!(decode_scaled(cut, 1, u64::MAX, &budget).unwrap().is_none());
        assert!(decode_scaled(b"not a jpeg", 1, u64::MAX, &budget)
            .unwrap()
            .is_none());
        assert!(decode_scaled(&[], 1, u64::MAX, &budget).unwrap().is_none());
        assert!(decode_scaled(&source, 3, u64::MAX, &budget)
            .unwrap()
            .is_none());
        // A buffer larger than allowed is not taken.
        assert!(decode_scaled(&source, 1, 64 * 48 * 3 - 1, &budget)
            .unwrap()
            .is_none());
        assert!(decode_scaled(&source, 1, 64 * 48 * 3, &budget)
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_spent_budget_stops_the_decode() {
        let source = jpeg(64, 48, 3, ".jpg");
        let cancel = Cancel::new();
        cancel.kill();
        let budget = Budget::new(None, cancel);
        assert!(matches!(
            decode_scaled(&source, 1, u64::MAX, &budget),
            Err(TransformError::DeadlineExceeded)
        ));
    }
}
