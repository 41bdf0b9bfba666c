//! The only module that touches libvips. It owns every image pointer and the bytes it reads
//! from, so the rest of the crate never sees raw libvips.
//!
//! Why raw calls: Debian's libvips is 8.14, while the `libvips` crate's option structs were
//! generated for 8.18 and send options 8.14 does not know. The crate's public `bindings`
//! module exposes the variadic C API, which passes only the options named here, so these
//! calls work on any libvips from 8.13 on.
//!
//! Safety rules kept here:
//! - an [`Image`] holds a clone of the bytes it was loaded from (libvips does not copy them)
//!   and so does every image derived from it;
//! - an [`Image`] is `!Send` (it holds a raw pointer), so it lives and dies on one blocking
//!   thread; only bytes cross threads;
//! - libvips is initialised once and never shut down;
//! - error text is read from libvips' global buffer right after a failure and the buffer is
//!   cleared.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use libvips::bindings as ffi;

/// Stops libvips work from another thread. A job's evaluations ([`Image::save_cancellable`],
/// [`Image::pixels_cancellable`]) register the image they evaluate here; [`Cancel::kill`] sets
/// libvips' kill flag on each, which every operation pulling pixels through them checks per
/// tile, so the evaluation fails within a tile's work and the thread is free again. Cheap to
/// clone; clones share the state.
#[derive(Clone, Default)]
pub struct Cancel {
    inner: Arc<CancelInner>,
}

#[derive(Default)]
struct CancelInner {
    killed: AtomicBool,
    /// Images being evaluated, each holding one reference (as addresses: raw pointers are not
    /// `Send`). Only touched under this lock.
    evaluating: Mutex<Vec<usize>>,
}

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancel")
            .field("killed", &self.is_killed())
            .finish()
    }
}

impl Cancel {
    /// A fresh token, not killed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether [`Cancel::kill`] was called.
    pub fn is_killed(&self) -> bool {
        self.inner.killed.load(Ordering::Acquire)
    }

    /// Stops every evaluation running under this token, and every later one.
    pub fn kill(&self) {
        self.inner.killed.store(true, Ordering::Release);
        let evaluating = match self.inner.evaluating.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        for addr in evaluating.iter() {
            // SAFETY: each registered image holds a reference taken in `register` and released
            // only under this lock, so the pointer is valid here. Setting the flag from another
            // thread is how libvips expects evaluations to be stopped.
            unsafe { ffi::vips_image_set_kill(*addr as *mut ffi::VipsImage, 1) };
        }
    }

    /// Registers `img` for the duration of an evaluation; `None` when already killed.
    fn register(&self, img: &Image) -> Option<EvalGuard<'_>> {
        let mut evaluating = match self.inner.evaluating.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if self.is_killed() {
            return None;
        }
        // SAFETY: takes a reference so the image outlives its registration.
        unsafe { ffi::g_object_ref(img.ptr as *mut c_void) };
        evaluating.push(img.ptr as usize);
        Some(EvalGuard {
            cancel: self,
            addr: img.ptr as usize,
        })
    }
}

/// Ends a registration: the image leaves the token's list and its reference is released.
struct EvalGuard<'a> {
    cancel: &'a Cancel,
    addr: usize,
}

impl Drop for EvalGuard<'_> {
    fn drop(&mut self) {
        let mut evaluating = match self.cancel.inner.evaluating.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(i) = evaluating.iter().position(|a| *a == self.addr) {
            evaluating.swap_remove(i);
        }
        // SAFETY: releases the reference taken in `register`, under the lock `kill` holds.
        unsafe { ffi::g_object_unref(self.addr as *mut c_void) };
    }
}

/// A libvips failure with libvips' own words.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct VipsError(pub String);

type Result<T> = std::result::Result<T, VipsError>;

static INIT: OnceLock<std::result::Result<(), String>> = OnceLock::new();

/// Starts libvips once for the process; later calls return the first call's outcome.
///
/// `concurrency` is the number of threads libvips may use inside one operation; the edge runs
/// many operations side by side, so 1 is usually right.
pub fn init(concurrency: usize) -> std::result::Result<(), String> {
    INIT.get_or_init(|| {
        let name = c"flexphoto";
        // SAFETY: plain C calls with valid C strings, made once.
        unsafe {
            if ffi::vips_init(name.as_ptr()) != 0 {
                return Err(take_error("vips_init failed").0);
            }
            // The operation cache would keep references to request buffers alive.
            ffi::vips_cache_set_max(0);
            ffi::vips_cache_set_max_mem(0);
            ffi::vips_concurrency_set(concurrency.max(1) as c_int);
            // Refuse loaders libvips marks as unfuzzed or unsafe for untrusted input.
            ffi::vips_block_untrusted_set(1);
            // libvips warnings (e.g. about odd EXIF in user files) go to our logs, not stderr.
            ffi::g_log_set_handler(
                c"VIPS".as_ptr(),
                ffi::GLogLevelFlags_G_LOG_LEVEL_WARNING | ffi::GLogLevelFlags_G_LOG_LEVEL_MESSAGE,
                Some(log_to_tracing),
                ptr::null_mut(),
            );
        }
        Ok(())
    })
    .clone()
}

unsafe extern "C" fn log_to_tracing(
    _domain: *const c_char,
    _level: ffi::GLogLevelFlags,
    message: *const c_char,
    _data: ffi::gpointer,
) {
    if !message.is_null() {
        // SAFETY: glib passes a NUL-terminated message valid for this call.
        let msg = unsafe { CStr::from_ptr(message) }.to_string_lossy();
        tracing::debug!(target: "libvips", "{msg}");
    }
}

fn take_error(fallback: &str) -> VipsError {
    // SAFETY: vips_error_buffer returns a NUL-terminated string owned by libvips.
    let msg = unsafe {
        let p = ffi::vips_error_buffer();
        let s = if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().trim().to_owned()
        };
        ffi::vips_error_clear();
        s
    };
    let msg = if msg.is_empty() {
        fallback.to_owned()
    } else {
        // Keep the last line: it is the most specific, and the buffer is shared by threads.
        msg.lines().last().unwrap_or(fallback).to_owned()
    };
    VipsError(msg)
}

/// A libvips image and the bytes it may still read from.
pub struct Image {
    ptr: *mut ffi::VipsImage,
    _source: Bytes,
}

impl Drop for Image {
    fn drop(&mut self) {
        // SAFETY: we own one reference to a valid GObject.
        unsafe { ffi::g_object_unref(self.ptr as *mut c_void) }
    }
}

/// How a resize treats the box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// Up or down.
    Both,
    /// Only shrink.
    Down,
    /// Stretch to exactly the box.
    Force,
}

/// How `thumbnail` crops to fill the box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interesting {
    /// Do not crop: fit inside.
    None,
    /// Keep the middle.
    Centre,
    /// Keep the busiest part.
    Entropy,
    /// Keep the most salient part.
    Attention,
}

/// Facts read from a file's header without decoding its pixels.
#[derive(Debug, Clone)]
pub struct Header {
    /// libvips' loader name, e.g. `jpegload_buffer`.
    pub loader: String,
    /// Width in stored orientation.
    pub width: u32,
    /// Height of one page (frame) in stored orientation.
    pub page_height: u32,
    /// Number of pages or frames in the file.
    pub pages: u32,
    /// Whether the image has an alpha channel.
    pub has_alpha: bool,
    /// EXIF orientation 1..=8 (1 when absent or applied by the container).
    pub orientation: u32,
}

impl Header {
    /// Width and height after EXIF orientation.
    pub fn oriented_size(&self) -> (u32, u32) {
        if (5..=8).contains(&self.orientation) {
            (self.page_height, self.width)
        } else {
            (self.width, self.page_height)
        }
    }
}

/// Names libvips' loader for `buf`, or `None` when no loader recognises the bytes.
pub fn find_loader(buf: &[u8]) -> Option<String> {
    // SAFETY: reads `buf` only for the duration of the call.
    unsafe {
        let p = ffi::vips_foreign_find_load_buffer(buf.as_ptr() as *const c_void, buf.len() as _);
        if p.is_null() {
            ffi::vips_error_clear();
            None
        } else {
            Some(loader_nickname(&CStr::from_ptr(p).to_string_lossy()))
        }
    }
}

/// Normalises a loader name (`VipsForeignLoadJpegBuffer` or `jpegload_buffer`) to the
/// nickname form `jpegload_buffer`.
fn loader_nickname(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let core = lower.strip_prefix("vipsforeignload").unwrap_or(&lower);
    let core = core.trim_end_matches("_buffer").trim_end_matches("buffer");
    let core = core.trim_end_matches("load");
    // Loaders named for their library: nsgif reads GIF, spng reads PNG.
    let core = match core {
        "nsgif" => "gif",
        "spng" => "png",
        other => other,
    };
    format!("{core}load_buffer")
}

fn load_options(fail_on_truncated: bool, all_frames: bool, shrink: u32) -> CString {
    let mut opts = Vec::new();
    if fail_on_truncated {
        opts.push("fail_on=truncated".to_owned());
    }
    if all_frames {
        opts.push("n=-1".to_owned());
    }
    if shrink > 1 {
        opts.push(format!("shrink={shrink}"));
    }
    // Option strings never contain NUL: built from fixed text and numbers above.
    CString::new(format!("[{}]", opts.join(","))).unwrap_or_default()
}

impl Image {
    /// An image from packed 8-bit pixels (`bands` per pixel, row-major), copied.
    pub fn from_pixels(pixels: &[u8], width: u32, height: u32, bands: u32) -> Result<Image> {
        Self::from_pixel_bytes(Bytes::copy_from_slice(pixels), width, height, bands)
    }

    /// An image over packed 8-bit pixels held in `pixels`, without copying them.
    pub fn from_pixel_bytes(pixels: Bytes, width: u32, height: u32, bands: u32) -> Result<Image> {
        if pixels.len() as u64 != width as u64 * height as u64 * bands as u64 {
            return Err(VipsError(
                "pixel buffer size does not match its dimensions".into(),
            ));
        }
        // SAFETY: the image reads from `pixels`, which the Image (and every image derived
        // from it) keeps alive.
        let p = unsafe {
            ffi::vips_image_new_from_memory(
                pixels.as_ptr() as *const c_void,
                pixels.len() as _,
                width as c_int,
                height as c_int,
                bands as c_int,
                ffi::VipsBandFormat_VIPS_FORMAT_UCHAR,
            )
        };
        if p.is_null() {
            return Err(take_error("cannot make image from pixels"));
        }
        let raw = Image {
            ptr: p,
            _source: pixels,
        };
        // Say what the bands are: libvips would guess 4 bands to be CMYK, losing the alpha.
        let interpretation = if bands <= 2 {
            ffi::VipsInterpretation_VIPS_INTERPRETATION_B_W
        } else {
            ffi::VipsInterpretation_VIPS_INTERPRETATION_sRGB
        };
        let mut out = ptr::null_mut();
        // SAFETY: variadic call with a NULL-terminated option list; the copy shares pixels.
        let rc = unsafe {
            ffi::vips_copy(
                raw.ptr,
                &mut out,
                c"interpretation".as_ptr(),
                interpretation,
                ptr::null::<c_char>(),
            )
        };
        raw.result(rc, out, "cannot make image from pixels")
    }

    fn wrap(&self, ptr: *mut ffi::VipsImage) -> Image {
        Image {
            ptr,
            _source: self._source.clone(),
        }
    }

    /// Opens `buf` lazily: reads the header, decodes nothing yet.
    pub fn load(
        buf: &Bytes,
        fail_on_truncated: bool,
        all_frames: bool,
        shrink: u32,
    ) -> Result<Image> {
        let opts = load_options(fail_on_truncated, all_frames, shrink);
        // SAFETY: the returned image reads from `buf`, which the Image keeps alive.
        let p = unsafe {
            ffi::vips_image_new_from_buffer(
                buf.as_ptr() as *const c_void,
                buf.len() as _,
                opts.as_ptr(),
                ptr::null::<c_char>(),
            )
        };
        if p.is_null() {
            return Err(take_error("cannot load image"));
        }
        Ok(Image {
            ptr: p,
            _source: buf.clone(),
        })
    }

    /// Shrink-on-load thumbnail of `buf` into a `width`×`height` box (libvips `thumbnail`):
    /// JPEG, WebP and HEIF decode at reduced size, EXIF orientation is applied.
    pub fn thumbnail(
        buf: &Bytes,
        width: u32,
        height: u32,
        size: Size,
        crop: Interesting,
        fail_on_truncated: bool,
        all_frames: bool,
    ) -> Result<Image> {
        let opts = load_options(fail_on_truncated, all_frames, 1);
        let mut out = ptr::null_mut();
        // SAFETY: variadic call with NULL-terminated name/value pairs of the right C types.
        let rc = unsafe {
            ffi::vips_thumbnail_buffer(
                buf.as_ptr() as *mut c_void,
                buf.len() as _,
                &mut out,
                width as c_int,
                c"height".as_ptr(),
                height as c_int,
                c"size".as_ptr(),
                size_code(size),
                c"crop".as_ptr(),
                interesting_code(crop),
                c"option_string".as_ptr(),
                opts.as_ptr(),
                ptr::null::<c_char>(),
            )
        };
        if rc != 0 || out.is_null() {
            return Err(take_error("thumbnail failed"));
        }
        Ok(Image {
            ptr: out,
            _source: buf.clone(),
        })
    }

    /// Resizes an already loaded image into a box (libvips `thumbnail_image`).
    pub fn thumbnail_image(
        &self,
        width: u32,
        height: u32,
        size: Size,
        crop: Interesting,
    ) -> Result<Image> {
        let mut out = ptr::null_mut();
        // SAFETY: as in `thumbnail`.
        let rc = unsafe {
            ffi::vips_thumbnail_image(
                self.ptr,
                &mut out,
                width as c_int,
                c"height".as_ptr(),
                height as c_int,
                c"size".as_ptr(),
                size_code(size),
                c"crop".as_ptr(),
                interesting_code(crop),
                ptr::null::<c_char>(),
            )
        };
        self.result(rc, out, "resize failed")
    }

    fn result(&self, rc: c_int, out: *mut ffi::VipsImage, what: &str) -> Result<Image> {
        if rc != 0 || out.is_null() {
            return Err(take_error(what));
        }
        Ok(self.wrap(out))
    }

    /// The header facts of this image.
    pub fn header(&self, loader: &str) -> Header {
        // SAFETY: getters on a valid image.
        unsafe {
            let width = ffi::vips_image_get_width(self.ptr).max(0) as u32;
            let page_height = ffi::vips_image_get_page_height(self.ptr).max(0) as u32;
            let pages = ffi::vips_image_get_n_pages(self.ptr).max(1) as u32;
            let has_alpha = ffi::vips_image_hasalpha(self.ptr) != 0;
            let orientation = ffi::vips_image_get_orientation(self.ptr).clamp(1, 8) as u32;
            Header {
                loader: loader.to_owned(),
                width,
                page_height,
                pages,
                has_alpha,
                orientation,
            }
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        // SAFETY: getter on a valid image.
        unsafe { ffi::vips_image_get_width(self.ptr).max(0) as u32 }
    }

    /// Height in pixels (all frames of an animation).
    pub fn height(&self) -> u32 {
        // SAFETY: getter on a valid image.
        unsafe { ffi::vips_image_get_height(self.ptr).max(0) as u32 }
    }

    /// Height of one frame.
    pub fn page_height(&self) -> u32 {
        // SAFETY: getter on a valid image.
        unsafe { ffi::vips_image_get_page_height(self.ptr).max(0) as u32 }
    }

    /// Whether the image has an alpha channel.
    pub fn has_alpha(&self) -> bool {
        // SAFETY: getter on a valid image.
        unsafe { ffi::vips_image_hasalpha(self.ptr) != 0 }
    }

    /// Applies the EXIF orientation and removes the tag.
    pub fn autorot(&self) -> Result<Image> {
        let mut out = ptr::null_mut();
        // SAFETY: variadic call, NULL-terminated.
        let rc = unsafe { ffi::vips_autorot(self.ptr, &mut out, ptr::null::<c_char>()) };
        self.result(rc, out, "autorotate failed")
    }

    /// Cuts out a rectangle.
    pub fn extract(&self, left: u32, top: u32, width: u32, height: u32) -> Result<Image> {
        let mut out = ptr::null_mut();
        // SAFETY: variadic call, NULL-terminated; libvips checks the bounds.
        let rc = unsafe {
            ffi::vips_extract_area(
                self.ptr,
                &mut out,
                left as c_int,
                top as c_int,
                width as c_int,
                height as c_int,
                ptr::null::<c_char>(),
            )
        };
        self.result(rc, out, "crop failed")
    }

    /// Rotates by a multiple of 90 degrees.
    pub fn rotate(&self, degrees: u16) -> Result<Image> {
        let angle = match degrees {
            90 => ffi::VipsAngle_VIPS_ANGLE_D90,
            180 => ffi::VipsAngle_VIPS_ANGLE_D180,
            270 => ffi::VipsAngle_VIPS_ANGLE_D270,
            _ => ffi::VipsAngle_VIPS_ANGLE_D0,
        };
        let mut out = ptr::null_mut();
        // SAFETY: variadic call, NULL-terminated.
        let rc = unsafe { ffi::vips_rot(self.ptr, &mut out, angle, ptr::null::<c_char>()) };
        self.result(rc, out, "rotate failed")
    }

    /// Mirrors left-right (`horizontal`) or top-bottom.
    pub fn flip(&self, horizontal: bool) -> Result<Image> {
        let dir = if horizontal {
            ffi::VipsDirection_VIPS_DIRECTION_HORIZONTAL
        } else {
            ffi::VipsDirection_VIPS_DIRECTION_VERTICAL
        };
        let mut out = ptr::null_mut();
        // SAFETY: variadic call, NULL-terminated.
        let rc = unsafe { ffi::vips_flip(self.ptr, &mut out, dir, ptr::null::<c_char>()) };
        self.result(rc, out, "flip failed")
    }

    /// Gaussian blur.
    pub fn blur(&self, sigma: f32) -> Result<Image> {
        let mut out = ptr::null_mut();
        // SAFETY: variadic call, NULL-terminated; sigma passed as a C double.
        let rc =
            unsafe { ffi::vips_gaussblur(self.ptr, &mut out, sigma as f64, ptr::null::<c_char>()) };
        self.result(rc, out, "blur failed")
    }

    /// Unsharp-mask sharpening with the given sigma.
    pub fn sharpen(&self, sigma: f32) -> Result<Image> {
        let mut out = ptr::null_mut();
        // SAFETY: variadic call, NULL-terminated; sigma is a gdouble option.
        let rc = unsafe {
            ffi::vips_sharpen(
                self.ptr,
                &mut out,
                c"sigma".as_ptr(),
                sigma as f64,
                ptr::null::<c_char>(),
            )
        };
        self.result(rc, out, "sharpen failed")
    }

    /// Places the image at (`x`, `y`) on a `width`×`height` canvas of `background`
    /// (one value per band).
    pub fn embed(
        &self,
        x: u32,
        y: u32,
        width: u32,
        height: u32,
        background: &[f64],
    ) -> Result<Image> {
        let mut out = ptr::null_mut();
        // SAFETY: the array is created, passed and released here; libvips refs it if kept.
        let rc = unsafe {
            let arr = ffi::vips_array_double_new(background.as_ptr(), background.len() as c_int);
            let rc = ffi::vips_embed(
                self.ptr,
                &mut out,
                x as c_int,
                y as c_int,
                width as c_int,
                height as c_int,
                c"extend".as_ptr(),
                ffi::VipsExtend_VIPS_EXTEND_BACKGROUND,
                c"background".as_ptr(),
                arr,
                ptr::null::<c_char>(),
            );
            ffi::vips_area_unref(arr as *mut ffi::VipsArea);
            rc
        };
        self.result(rc, out, "pad failed")
    }

    /// Composites alpha onto an RGB `background`.
    pub fn flatten(&self, background: [f64; 3]) -> Result<Image> {
        let mut out = ptr::null_mut();
        // SAFETY: as in `embed`.
        let rc = unsafe {
            let arr = ffi::vips_array_double_new(background.as_ptr(), 3);
            let rc = ffi::vips_flatten(
                self.ptr,
                &mut out,
                c"background".as_ptr(),
                arr,
                ptr::null::<c_char>(),
            );
            ffi::vips_area_unref(arr as *mut ffi::VipsArea);
            rc
        };
        self.result(rc, out, "flatten failed")
    }

    /// Adds an opaque alpha channel (for padding with a transparent colour).
    pub fn add_alpha(&self) -> Result<Image> {
        let mut out = ptr::null_mut();
        // SAFETY: variadic call, NULL-terminated.
        let rc = unsafe { ffi::vips_addalpha(self.ptr, &mut out, ptr::null::<c_char>()) };
        self.result(rc, out, "add alpha failed")
    }

    /// Number of bands.
    pub fn bands(&self) -> u32 {
        // SAFETY: getter on a valid image.
        unsafe { ffi::vips_image_get_bands(self.ptr).max(0) as u32 }
    }

    /// Converts to sRGB: through the embedded ICC profile when there is one, else by
    /// interpretation (CMYK, 16-bit, greyscale stay correct). The profile is dropped after.
    pub fn to_srgb(&self) -> Result<Image> {
        // An embedded sRGB profile needs no transform (and building an lcms transform per
        // image is costly); only other profiles are converted.
        let convert_profile = self.has_field(c"icc-profile-data")
            && !self
                .blob(c"icc-profile-data")
                .is_some_and(|icc| is_srgb_profile(&icc));
        let converted = if convert_profile {
            // A broken or unusable profile: fall back to plain interpretation conversion.
            self.icc_transform_to(crate::srgb_profile::output_profile())
                .or_else(|_| self.colourspace_srgb())
        } else {
            self.colourspace_srgb()
        };
        converted?.without_fields(|n| n == "icc-profile-data")
    }

    /// Converts to sRGB by interpretation, ignoring any profile.
    fn colourspace_srgb(&self) -> Result<Image> {
        let mut out = ptr::null_mut();
        // SAFETY: variadic call, NULL-terminated; the output is a new image we own.
        let rc = unsafe {
            ffi::vips_colourspace(
                self.ptr,
                &mut out,
                ffi::VipsInterpretation_VIPS_INTERPRETATION_sRGB,
                ptr::null::<c_char>(),
            )
        };
        self.result(rc, out, "colour conversion failed")
    }

    /// Converts through the embedded profile into the profile `output` names (a file or one
    /// of libvips' built-in names), keeping it attached.
    pub(crate) fn icc_transform_to(&self, output: &CStr) -> Result<Image> {
        let mut out = ptr::null_mut();
        // SAFETY: variadic call, NULL-terminated; the output is a new image we own.
        let rc = unsafe {
            ffi::vips_icc_transform(
                self.ptr,
                &mut out,
                output.as_ptr(),
                c"embedded".as_ptr(),
                1 as c_int,
                c"intent".as_ptr(),
                ffi::VipsIntent_VIPS_INTENT_PERCEPTUAL,
                ptr::null::<c_char>(),
            )
        };
        self.result(rc, out, "icc transform failed")
    }

    /// Whether pixels are 8-bit unsigned, so [`Image::pixels`] gives `bands` bytes per pixel.
    pub fn is_uchar(&self) -> bool {
        // SAFETY: getter on a valid image.
        unsafe { ffi::vips_image_get_format(self.ptr) == ffi::VipsBandFormat_VIPS_FORMAT_UCHAR }
    }

    /// Whether the pixels are RGB or greyscale (not CMYK, Lab, or other spaces).
    pub fn is_rgb_or_grey(&self) -> bool {
        // SAFETY: getter on a valid image.
        let i = unsafe { ffi::vips_image_get_interpretation(self.ptr) };
        i == ffi::VipsInterpretation_VIPS_INTERPRETATION_sRGB
            || i == ffi::VipsInterpretation_VIPS_INTERPRETATION_B_W
            || i == ffi::VipsInterpretation_VIPS_INTERPRETATION_RGB
    }

    /// The embedded ICC profile, if any.
    pub fn icc_profile(&self) -> Option<Vec<u8>> {
        self.blob(c"icc-profile-data")
    }

    /// A copy of a binary field such as `icc-profile-data`.
    fn blob(&self, name: &CStr) -> Option<Vec<u8>> {
        let mut data: *const c_void = ptr::null();
        let mut len: ffi::size_t = 0;
        // SAFETY: the blob is owned by the image; we copy it before returning.
        unsafe {
            if ffi::vips_image_get_blob(self.ptr, name.as_ptr(), &mut data, &mut len) != 0
                || data.is_null()
            {
                ffi::vips_error_clear();
                return None;
            }
            Some(std::slice::from_raw_parts(data as *const u8, len as usize).to_vec())
        }
    }

    fn has_field(&self, name: &CStr) -> bool {
        // SAFETY: getter on a valid image with a valid C string.
        unsafe { ffi::vips_image_get_typeof(self.ptr, name.as_ptr()) != 0 }
    }

    /// The names of all metadata fields.
    pub fn field_names(&self) -> Vec<String> {
        // SAFETY: returns a NULL-terminated array we must free with g_strfreev.
        unsafe {
            let arr = ffi::vips_image_get_fields(self.ptr);
            let mut names = Vec::new();
            if arr.is_null() {
                return names;
            }
            let mut i = 0;
            loop {
                let p = *arr.add(i);
                if p.is_null() {
                    break;
                }
                names.push(CStr::from_ptr(p).to_string_lossy().into_owned());
                i += 1;
            }
            ffi::g_strfreev(arr);
            names
        }
    }

    /// A string field, if present.
    pub fn string_field(&self, name: &str) -> Option<String> {
        let cname = CString::new(name).ok()?;
        let mut out: *const c_char = ptr::null();
        // SAFETY: the returned string is owned by the image and copied at once.
        unsafe {
            if ffi::vips_image_get_typeof(self.ptr, cname.as_ptr()) == 0 {
                return None;
            }
            if ffi::vips_image_get_string(self.ptr, cname.as_ptr(), &mut out) != 0 || out.is_null()
            {
                ffi::vips_error_clear();
                return None;
            }
            Some(CStr::from_ptr(out).to_string_lossy().into_owned())
        }
    }

    /// A copy of this image (sharing pixels) with the fields `drop` selects removed.
    pub fn without_fields(&self, drop: impl Fn(&str) -> bool) -> Result<Image> {
        let mut out = ptr::null_mut();
        // SAFETY: vips_copy makes a new header we own, so removing fields does not touch
        // images other threads or the cache might share.
        let rc = unsafe { ffi::vips_copy(self.ptr, &mut out, ptr::null::<c_char>()) };
        let img = self.result(rc, out, "copy failed")?;
        for name in img.field_names() {
            if drop(&name) {
                if let Ok(c) = CString::new(name) {
                    // SAFETY: removing a metadata field from our own copy.
                    unsafe { ffi::vips_image_remove(img.ptr, c.as_ptr()) };
                }
            }
        }
        Ok(img)
    }

    /// Sets an integer field (e.g. `orientation`, `page-height`) on this image.
    pub fn set_int(&self, name: &str, value: i32) {
        if let Ok(c) = CString::new(name) {
            // SAFETY: sets a metadata field on an image we own a reference to.
            unsafe { ffi::vips_image_set_int(self.ptr, c.as_ptr(), value as c_int) }
        }
    }

    /// Sets a binary field (e.g. `exif-data`) on this image, copying `data`.
    pub fn set_blob(&self, name: &str, data: &[u8]) {
        if let Ok(c) = CString::new(name) {
            // SAFETY: libvips copies `data`.
            unsafe {
                ffi::vips_image_set_blob_copy(
                    self.ptr,
                    c.as_ptr(),
                    data.as_ptr() as *const c_void,
                    data.len() as _,
                )
            }
        }
    }

    /// Decodes to packed pixels (`bands` bytes per pixel for 8-bit images), row-major.
    pub fn pixels(&self) -> Result<Bytes> {
        self.pixels_cancellable(&Cancel::new())
    }

    /// [`Image::pixels`], stopped by `cancel`.
    pub fn pixels_cancellable(&self, cancel: &Cancel) -> Result<Bytes> {
        let Some(_guard) = cancel.register(self) else {
            return Err(killed());
        };
        let mut len: ffi::size_t = 0;
        // SAFETY: on success libvips returns a g_malloc'd buffer of `len` bytes.
        let p = unsafe { ffi::vips_image_write_to_memory(self.ptr, &mut len) };
        if p.is_null() {
            let e = take_error("decode failed");
            return Err(if cancel.is_killed() { killed() } else { e });
        }
        Ok(Bytes::from_owner(GBuffer {
            ptr: p,
            len: len as usize,
        }))
    }

    /// Encodes the image; `suffix` names the saver and its options, e.g. `.webp[Q=75]`.
    /// The bytes come back in an allocation of their own size.
    pub fn save(&self, suffix: &str) -> Result<Bytes> {
        self.save_cancellable(suffix, &Cancel::new())
    }

    /// [`Image::save`], stopped by `cancel`.
    pub fn save_cancellable(&self, suffix: &str, cancel: &Cancel) -> Result<Bytes> {
        let Some(_guard) = cancel.register(self) else {
            return Err(killed());
        };
        let csuffix = CString::new(suffix).map_err(|_| VipsError("bad save options".into()))?;
        let mut buf: *mut c_void = ptr::null_mut();
        let mut len: ffi::size_t = 0;
        // SAFETY: on success libvips hands us a g_malloc'd buffer of `len` bytes.
        let rc = unsafe {
            ffi::vips_image_write_to_buffer(
                self.ptr,
                csuffix.as_ptr(),
                &mut buf,
                &mut len,
                ptr::null::<c_char>(),
            )
        };
        if rc != 0 || buf.is_null() {
            let e = take_error("encode failed");
            return Err(if cancel.is_killed() { killed() } else { e });
        }
        // Copied to an allocation of its exact size: libvips' growing output buffer is up to
        // 16 times larger than what it holds (a 1 KB JPEG in a 16 KB block, 162 KB in 256 KB),
        // and caches keep outputs weighed by their length.
        let grown = GBuffer {
            ptr: buf,
            len: len as usize,
        };
        Ok(Bytes::copy_from_slice(grown.as_ref()))
    }
}

/// The error of an evaluation stopped by [`Cancel::kill`].
pub const KILLED: &str = "stopped: the time limit passed";

fn killed() -> VipsError {
    VipsError(KILLED.to_owned())
}

/// Whether an ICC profile describes sRGB: an RGB profile whose device model or description
/// says sRGB (the IEC 61966-2.1 profile cameras and editors embed).
pub fn is_srgb_profile(icc: &[u8]) -> bool {
    if icc.len() < 132 || &icc[16..20] != b"RGB " {
        return false;
    }
    if &icc[48..52] == b"sRGB" {
        return true;
    }
    let count = u32::from_be_bytes([icc[128], icc[129], icc[130], icc[131]]) as usize;
    for i in 0..count.min(64) {
        let e = 132 + i * 12;
        let Some(entry) = icc.get(e..e + 12) else {
            break;
        };
        if &entry[..4] != b"desc" {
            continue;
        }
        let off = u32::from_be_bytes([entry[4], entry[5], entry[6], entry[7]]) as usize;
        let size = u32::from_be_bytes([entry[8], entry[9], entry[10], entry[11]]) as usize;
        let Some(text) = icc.get(off..off.saturating_add(size.min(512))) else {
            return false;
        };
        // ASCII (v2 'desc') or UTF-16BE (v4 'mluc').
        return text.windows(4).any(|w| w == b"sRGB")
            || text.windows(8).any(|w| w == b"\0s\0R\0G\0B");
    }
    false
}

/// A buffer allocated by glib, freed with `g_free`.
struct GBuffer {
    ptr: *mut c_void,
    len: usize,
}

// SAFETY: the buffer is plain bytes owned solely by this value; g_free is thread-safe.
unsafe impl Send for GBuffer {}
// SAFETY: shared access is read-only.
unsafe impl Sync for GBuffer {}

impl AsRef<[u8]> for GBuffer {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: ptr/len describe a live allocation until Drop.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for GBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated by glib; freed exactly once.
        unsafe { ffi::g_free(self.ptr) }
    }
}

fn size_code(s: Size) -> ffi::VipsSize {
    match s {
        Size::Both => ffi::VipsSize_VIPS_SIZE_BOTH,
        Size::Down => ffi::VipsSize_VIPS_SIZE_DOWN,
        Size::Force => ffi::VipsSize_VIPS_SIZE_FORCE,
    }
}

fn interesting_code(i: Interesting) -> ffi::VipsInteresting {
    match i {
        Interesting::None => ffi::VipsInteresting_VIPS_INTERESTING_NONE,
        Interesting::Centre => ffi::VipsInteresting_VIPS_INTERESTING_CENTRE,
        Interesting::Entropy => ffi::VipsInteresting_VIPS_INTERESTING_ENTROPY,
        Interesting::Attention => ffi::VipsInteresting_VIPS_INTERESTING_ATTENTION,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(model: &[u8; 4], desc: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 132 + 12];
        p[16..20].copy_from_slice(b"RGB ");
        p[48..52].copy_from_slice(model);
        p[128..132].copy_from_slice(&1u32.to_be_bytes());
        let off = p.len() as u32;
        p[132..136].copy_from_slice(b"desc");
        p[136..140].copy_from_slice(&off.to_be_bytes());
        p[140..144].copy_from_slice(&(desc.len() as u32).to_be_bytes());
        p.extend_from_slice(desc);
        p
    }

    /// libvips' output buffer grows in steps (a 1 KB JPEG came back in 16 KB); what callers
    /// cache must not hold the slack.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn encoded_bytes_are_held_in_an_allocation_of_their_size() {
        extern "C" {
            fn malloc_usable_size(p: *const c_void) -> usize;
        }
        init(1).unwrap();
        let img = Image::from_pixels(&vec![128u8; 64 * 64 * 3], 64, 64, 3).unwrap();
        let out = img.save(".jpg").unwrap();
        // SAFETY: `out` points at the start of a live malloc allocation.
        let usable = unsafe { malloc_usable_size(out.as_ptr() as *const c_void) };
        assert!(usable < out.len() + 64, "{} bytes in {usable}", out.len());
    }

    #[test]
    fn recognises_srgb_profiles() {
        assert!(is_srgb_profile(&profile(b"sRGB", b"whatever")));
        assert!(is_srgb_profile(&profile(
            b"\0\0\0\0",
            b"desc....sRGB IEC61966-2.1"
        )));
        assert!(is_srgb_profile(&profile(
            b"\0\0\0\0",
            b"mluc....\0s\0R\0G\0B\0 \0v\x004"
        )));
        assert!(!is_srgb_profile(&profile(
            b"\0\0\0\0",
            b"desc....Adobe RGB (1998)"
        )));
        let mut cmyk = profile(b"sRGB", b"sRGB");
        cmyk[16..20].copy_from_slice(b"CMYK");
        assert!(!is_srgb_profile(&cmyk));
        assert!(!is_srgb_profile(b"short"));
    }

    #[test]
    fn loader_names_are_normalised() {
        assert_eq!(
            loader_nickname("VipsForeignLoadJpegBuffer"),
            "jpegload_buffer"
        );
        assert_eq!(
            loader_nickname("VipsForeignLoadNsgifBuffer"),
            "gifload_buffer"
        );
        assert_eq!(loader_nickname("pngload_buffer"), "pngload_buffer");
    }
}
