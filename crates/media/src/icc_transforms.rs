//! Colour conversions of 8-bit RGB pixels from an embedded ICC profile into sRGB, with the
//! lcms transform of each profile built once and kept.
//!
//! Building an lcms transform (parsing both profiles, inverting the output's tone curves,
//! precalculating 8-bit tables) costs milliseconds, more than applying it to a 600-px
//! output: ~10 of the ~62 CPU-ms of an Adobe RGB camera JPEG's cold miss, where libvips'
//! `icc_transform` builds one per image. Photos share a handful of profiles (Adobe RGB,
//! Display P3, each vendor's sRGB), so transforms are kept by the profile's bytes. The
//! conversion is libvips' own: the same lcms call, intent (perceptual) and output profile
//! ([`crate::srgb_profile`]).

use std::ffi::{c_int, c_void};
use std::sync::{Arc, Mutex};

/// How many profiles' transforms are kept.
const KEPT: usize = 8;
/// Profiles larger than this are converted without being kept (real ones are a few KB).
const MAX_KEPT_PROFILE: usize = 64 << 10;

/// lcms's pixel format for interleaved 8-bit RGB (`TYPE_RGB_8`).
const TYPE_RGB_8: u32 = (4 << 16) | (3 << 3) | 1;
/// lcms's signature of RGB data (`cmsSigRgbData`).
const SIG_RGB_DATA: u32 = u32::from_be_bytes(*b"RGB ");
/// `INTENT_PERCEPTUAL`, as libvips asks for it.
const INTENT_PERCEPTUAL: u32 = 0;
/// `cmsFLAGS_NOCACHE`, as libvips passes it: no one-pixel cache shared between calls.
const FLAGS_NOCACHE: u32 = 0x0040;

#[link(name = "lcms2")]
extern "C" {
    fn cmsOpenProfileFromMem(mem: *const c_void, size: u32) -> *mut c_void;
    fn cmsCloseProfile(profile: *mut c_void) -> c_int;
    fn cmsGetColorSpace(profile: *mut c_void) -> u32;
    fn cmsCreateTransform(
        input: *mut c_void,
        input_format: u32,
        output: *mut c_void,
        output_format: u32,
        intent: u32,
        flags: u32,
    ) -> *mut c_void;
    fn cmsDeleteTransform(transform: *mut c_void);
    fn cmsDoTransform(
        transform: *mut c_void,
        input: *const c_void,
        output: *mut c_void,
        pixels: u32,
    );
}

/// An lcms profile, closed on drop.
struct Profile(*mut c_void);

impl Profile {
    fn open(bytes: &[u8]) -> Option<Profile> {
        let len = u32::try_from(bytes.len()).ok()?;
        // SAFETY: lcms reads `len` bytes from `bytes` and copies what it keeps.
        let p = unsafe { cmsOpenProfileFromMem(bytes.as_ptr() as *const c_void, len) };
        (!p.is_null()).then_some(Profile(p))
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        // SAFETY: opened by cmsOpenProfileFromMem and closed once.
        unsafe {
            cmsCloseProfile(self.0);
        }
    }
}

/// A built 8-bit RGB → sRGB transform.
struct Transform(*mut c_void);

// SAFETY: built with cmsFLAGS_NOCACHE, an lcms transform is read-only once built, so
// cmsDoTransform may run on it from several threads at once; it is deleted only on drop.
unsafe impl Send for Transform {}
// SAFETY: as above.
unsafe impl Sync for Transform {}

impl Transform {
    /// The transform from `icc` (an RGB profile) into the parametric sRGB profile.
    fn build(icc: &[u8]) -> Option<Transform> {
        let input = Profile::open(icc)?;
        // SAFETY: a valid profile handle.
        if unsafe { cmsGetColorSpace(input.0) } != SIG_RGB_DATA {
            return None;
        }
        let output = Profile::open(crate::srgb_profile::parametric_srgb())?;
        // SAFETY: valid profiles; lcms copies what it needs, so they may close after.
        let t = unsafe {
            cmsCreateTransform(
                input.0,
                TYPE_RGB_8,
                output.0,
                TYPE_RGB_8,
                INTENT_PERCEPTUAL,
                FLAGS_NOCACHE,
            )
        };
        (!t.is_null()).then_some(Transform(t))
    }

    fn apply(&self, rgb: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; rgb.len()];
        // lcms takes a u32 pixel count: convert in chunks well inside it.
        const CHUNK: usize = 3 << 24;
        for (from, to) in rgb.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
            // SAFETY: both buffers hold `from.len() / 3` whole RGB pixels.
            unsafe {
                cmsDoTransform(
                    self.0,
                    from.as_ptr() as *const c_void,
                    to.as_mut_ptr() as *mut c_void,
                    (from.len() / 3) as u32,
                );
            }
        }
        out
    }
}

impl Drop for Transform {
    fn drop(&mut self) {
        // SAFETY: created by cmsCreateTransform and deleted once, when no call holds it.
        unsafe { cmsDeleteTransform(self.0) }
    }
}

/// Transforms by profile bytes, most recently used first.
struct Kept(Mutex<Vec<(Vec<u8>, Arc<Transform>)>>);

impl Kept {
    const fn new() -> Kept {
        Kept(Mutex::new(Vec::new()))
    }

    /// The transform for `icc`, kept or built (and then kept).
    fn transform_for(&self, icc: &[u8]) -> Option<Arc<Transform>> {
        if let Ok(mut kept) = self.0.lock() {
            if let Some(i) = kept.iter().position(|(p, _)| p.as_slice() == icc) {
                let entry = kept.remove(i);
                let t = entry.1.clone();
                kept.insert(0, entry);
                return Some(t);
            }
        }
        // Built outside the lock: a first image with a new profile does not hold up others.
        let t = Arc::new(Transform::build(icc)?);
        if icc.len() <= MAX_KEPT_PROFILE {
            if let Ok(mut kept) = self.0.lock() {
                if !kept.iter().any(|(p, _)| p.as_slice() == icc) {
                    kept.truncate(KEPT - 1);
                    kept.insert(0, (icc.to_vec(), t.clone()));
                }
            }
        }
        Some(t)
    }

    /// Whether a transform for `icc` is kept.
    #[cfg(test)]
    fn holds(&self, icc: &[u8]) -> bool {
        self.0
            .lock()
            .unwrap()
            .iter()
            .any(|(p, _)| p.as_slice() == icc)
    }
}

/// The process's kept transforms.
static KEPT_TRANSFORMS: Kept = Kept::new();

/// `rgb` (interleaved 8-bit RGB) converted from the colours `icc` describes into sRGB; `None`
/// when `icc` is not a usable RGB profile (the caller falls back to libvips, which ignores
/// a broken profile).
pub(crate) fn rgb_to_srgb(icc: &[u8], rgb: &[u8]) -> Option<Vec<u8>> {
    if !rgb.len().is_multiple_of(3) {
        return None;
    }
    Some(KEPT_TRANSFORMS.transform_for(icc)?.apply(rgb))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srgb_profile::{test_rgb_pixels, wide_test_profile};
    use crate::vips::Image;

    #[test]
    fn converts_exactly_as_libvips_does() {
        let icc = wide_test_profile("wide test profile");
        let px = test_rgb_pixels();
        let img = Image::from_pixels(&px, 64, 64, 3).unwrap();
        img.set_blob("icc-profile-data", &icc);
        let vips = img
            .icc_transform_to(crate::srgb_profile::output_profile())
            .unwrap()
            .pixels()
            .unwrap();
        let ours = rgb_to_srgb(&icc, &px).unwrap();
        assert_eq!(ours, vips.to_vec());
        assert_ne!(ours, px, "wide-gamut values move");
        // A kept transform gives the same pixels.
        let kept = Kept::new();
        let t = kept.transform_for(&icc).unwrap();
        assert!(kept.holds(&icc));
        assert!(Arc::ptr_eq(&t, &kept.transform_for(&icc).unwrap()));
        assert_eq!(t.apply(&px), ours);
    }

    #[test]
    fn unusable_profiles_are_refused() {
        let px = test_rgb_pixels();
        assert!(rgb_to_srgb(b"not a profile", &px).is_none());
        assert!(rgb_to_srgb(&[], &px).is_none());
        let mut cut = wide_test_profile("cut");
        cut.truncate(cut.len() / 2);
        assert!(rgb_to_srgb(&cut, &px).is_none());
        assert!(rgb_to_srgb(&wide_test_profile("odd length"), &px[..10]).is_none());
    }

    #[test]
    fn the_least_recently_used_transform_goes_first() {
        let kept = Kept::new();
        let profiles: Vec<Vec<u8>> = (0..=KEPT)
            .map(|i| wide_test_profile(&format!("p{i}")))
            .collect();
        for p in &profiles[..KEPT] {
            assert!(kept.transform_for(p).is_some());
        }
        // The first is used again, so the second is the oldest when one more comes.
        assert!(kept.transform_for(&profiles[0]).is_some());
        assert!(kept.transform_for(&profiles[KEPT]).is_some());
        assert_eq!(kept.0.lock().unwrap().len(), KEPT);
        assert!(kept.holds(&profiles[0]) && kept.holds(&profiles[KEPT]));
        assert!(!kept.holds(&profiles[1]));
        // Unusable profiles are not kept.
        assert!(kept.transform_for(b"junk").is_none());
        assert!(!kept.holds(b"junk"));
    }
}
