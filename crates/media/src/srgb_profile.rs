//! The sRGB profile that colour conversions write into: a minimal ICC v4 display profile
//! whose tone curves are sRGB's parametric function instead of a sampled table.
//!
//! lcms builds a transform for every conversion, and for the output side it inverts the
//! output profile's tone curves. libvips' bundled sRGB profile stores them as 1024-entry
//! tables, which lcms inverts numerically for every image with a non-sRGB profile (Adobe
//! RGB, Display P3…); a parametric curve is inverted in closed form. An Adobe RGB camera
//! JPEG into a 600 px box: ~56 → ~51 CPU-ms (`cold_resize`). The colorants are sRGB's,
//! adapted to D50 as in the IEC 61966-2.1 profile, so the result is the same conversion.

use std::ffi::{CStr, CString};
use std::sync::OnceLock;

/// sRGB's red, green and blue colorants adapted to D50 (the PCS white), as XYZ.
const SRGB_COLORANTS: [[f64; 3]; 3] = [
    [0.436_066, 0.222_488, 0.013_916],
    [0.385_147, 0.716_873, 0.097_076],
    [0.143_066, 0.060_608, 0.714_096],
];
/// The PCS illuminant (D50).
const D50: [f64; 3] = [0.9642, 1.0, 0.8249];
/// sRGB's transfer function as ICC parametric type 3: `(aX + b)^g` above `d`, `cX` below.
const SRGB_CURVE: [f64; 5] = [2.4, 1.0 / 1.055, 0.055 / 1.055, 1.0 / 12.92, 0.04045];

/// A matrix/TRC RGB display profile (ICC v4.2) with the same parametric type-3 tone curve
/// for every channel.
pub(crate) fn matrix_trc_profile(
    description: &str,
    colorants: [[f64; 3]; 3],
    curve: [f64; 5],
) -> Vec<u8> {
    let s15 = |v: f64| ((v * 65536.0).round() as i32).to_be_bytes();
    let xyz = |[x, y, z]: [f64; 3]| -> Vec<u8> {
        let mut t = b"XYZ \0\0\0\0".to_vec();
        for v in [x, y, z] {
            t.extend_from_slice(&s15(v));
        }
        t
    };
    let text = |s: &str| -> Vec<u8> {
        let utf16: Vec<u8> = s.encode_utf16().flat_map(u16::to_be_bytes).collect();
        let mut t = b"mluc\0\0\0\0".to_vec();
        t.extend_from_slice(&1u32.to_be_bytes());
        t.extend_from_slice(&12u32.to_be_bytes());
        t.extend_from_slice(b"enUS");
        t.extend_from_slice(&(utf16.len() as u32).to_be_bytes());
        t.extend_from_slice(&28u32.to_be_bytes());
        t.extend_from_slice(&utf16);
        t
    };
    let mut trc = b"para\0\0\0\0".to_vec();
    trc.extend_from_slice(&3u16.to_be_bytes());
    trc.extend_from_slice(&[0, 0]);
    for v in curve {
        trc.extend_from_slice(&s15(v));
    }
    let tags: [(&[u8; 4], Vec<u8>); 7] = [
        (b"desc", text(description)),
        (b"cprt", text("No copyright, use freely")),
        (b"wtpt", xyz(D50)),
        (b"rXYZ", xyz(colorants[0])),
        (b"gXYZ", xyz(colorants[1])),
        (b"bXYZ", xyz(colorants[2])),
        (b"rTRC", trc),
    ];
    // The three tone curves share one element; the tag table has 9 entries.
    let entries = tags.len() + 2;
    let mut table = Vec::new();
    let mut data = Vec::new();
    let start = 128 + 4 + 12 * entries;
    let mut trc_at = (0, 0);
    for (sig, body) in &tags {
        while data.len() % 4 != 0 {
            data.push(0);
        }
        let at = (start + data.len()) as u32;
        table.extend_from_slice(*sig);
        table.extend_from_slice(&at.to_be_bytes());
        table.extend_from_slice(&(body.len() as u32).to_be_bytes());
        trc_at = (at, body.len() as u32);
        data.extend_from_slice(body);
    }
    for sig in [b"gTRC", b"bTRC"] {
        table.extend_from_slice(sig);
        table.extend_from_slice(&trc_at.0.to_be_bytes());
        table.extend_from_slice(&trc_at.1.to_be_bytes());
    }
    while data.len() % 4 != 0 {
        data.push(0);
    }
    let size = (start + data.len()) as u32;
    let mut out = Vec::with_capacity(size as usize);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&[0; 4]); // preferred CMM
    out.extend_from_slice(&0x0420_0000u32.to_be_bytes()); // version 4.2
    out.extend_from_slice(b"mntrRGB XYZ ");
    out.extend_from_slice(&[0; 12]); // date
    out.extend_from_slice(b"acsp");
    out.extend_from_slice(&[0; 24]); // platform, flags, maker, model, attributes
    out.extend_from_slice(&0u32.to_be_bytes()); // perceptual intent
    for v in D50 {
        out.extend_from_slice(&s15(v));
    }
    out.extend_from_slice(&[0; 4 + 16 + 28]); // creator, profile ID, reserved
    out.extend_from_slice(&(entries as u32).to_be_bytes());
    out.extend_from_slice(&table);
    out.extend_from_slice(&data);
    out
}

/// The parametric sRGB profile's bytes, made once.
pub(crate) fn parametric_srgb() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        matrix_trc_profile("sRGB IEC61966-2.1 (parametric)", SRGB_COLORANTS, SRGB_CURVE)
    })
}

/// What colour conversions name as their output profile: the parametric sRGB profile held
/// in an anonymous in-memory file (`/proc/self/fd/N`), or libvips' bundled `srgb` where one
/// cannot be made.
pub(crate) fn output_profile() -> &'static CStr {
    static PATH: OnceLock<CString> = OnceLock::new();
    PATH.get_or_init(|| in_memory_file(parametric_srgb()).unwrap_or_else(|| CString::from(c"srgb")))
}

/// `bytes` in an anonymous in-memory file (memfd) that stays open for the life of the
/// process, named by its /proc path.
fn in_memory_file(bytes: &[u8]) -> Option<CString> {
    #[cfg(target_os = "linux")]
    {
        use std::io::Write;
        use std::os::fd::{FromRawFd, IntoRawFd};
        // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns a new fd
        // or -1.
        let fd = unsafe { libc::memfd_create(c"flexphoto-srgb.icc".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` was just created and is owned here.
        let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
        file.write_all(bytes).ok()?;
        let path = format!("/proc/self/fd/{}", file.into_raw_fd());
        // The fd stays open for the life of the process; check it can be read by name.
        (std::fs::read(&path).ok()? == bytes).then(|| CString::new(path).ok())?
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = bytes;
        None
    }
}

/// An Adobe RGB (1998)-like profile named `name`: wider primaries than sRGB, gamma 2.2
/// (type 3 with a = 1), for tests of conversions.
#[cfg(test)]
pub(crate) fn wide_test_profile(name: &str) -> Vec<u8> {
    matrix_trc_profile(
        name,
        [
            [0.609_741, 0.311_111, 0.019_470],
            [0.205_276, 0.625_671, 0.060_867],
            [0.149_185, 0.063_217, 0.744_568],
        ],
        [2.2, 1.0, 0.0, 0.0, 0.0],
    )
}

/// 64×64 interleaved RGB pixels covering a spread of values, for tests of conversions.
#[cfg(test)]
pub(crate) fn test_rgb_pixels() -> Vec<u8> {
    (0..64u32 * 64)
        .flat_map(|i| {
            [
                (i % 64 * 4) as u8,
                (i / 64 * 4) as u8,
                ((i * 7) % 256) as u8,
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vips::Image;

    #[test]
    fn the_profile_is_a_well_formed_v4_display_profile() {
        let p = parametric_srgb();
        assert_eq!(
            u32::from_be_bytes(p[0..4].try_into().unwrap()) as usize,
            p.len()
        );
        assert_eq!(&p[12..24], b"mntrRGB XYZ ");
        assert_eq!(&p[36..40], b"acsp");
        assert_eq!(p.len() % 4, 0);
        assert!(crate::vips::is_srgb_profile(p));
        assert!(output_profile().to_bytes().starts_with(b"/proc/self/fd/"));
    }

    #[test]
    fn conversions_match_the_bundled_srgb_profile() {
        let adobe = wide_test_profile("wide test profile");
        let px = test_rgb_pixels();
        let img = Image::from_pixels(&px, 64, 64, 3).unwrap();
        img.set_blob("icc-profile-data", &adobe);
        let ours = img.to_srgb().unwrap().pixels().unwrap();
        let bundled = img.icc_transform_to(c"srgb").unwrap().pixels().unwrap();
        assert_eq!(ours.len(), bundled.len());
        let max = ours
            .iter()
            .zip(bundled.iter())
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max();
        assert!(max <= Some(1), "largest difference {max:?}");
        // It did convert: wide-gamut values move.
        assert_ne!(ours.to_vec(), px);
    }
}
