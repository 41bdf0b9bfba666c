//! FlexPhotoDB's pixels: everything that decodes, transforms, encodes or measures images.
//! Synchronous and CPU-bound: call it from the bounded [`pool::ImagePool`], never from an async
//! runtime thread. The edge serves requests with it; the control plane's workers make
//! variants and fingerprints with it, from typed [`flexphoto_url::TransformSpec`]s.
//!
//! # Layout
//! - [`vips`]: the only module that touches libvips; owns images and their buffers safely.
//! - [`format`]: the one table of image formats (loaders, magic bytes, MIME types,
//!   extensions).
//! - [`transform`]: the pipeline from source bytes and a transform spec to encoded bytes:
//!   probing, geometry, SIMD resampling, working copies, metadata policy.
//! - [`decode_memory`]: the memory a source's decode will hold, read from its header.
//! - `jpeg_decode`: scaled JPEG decoding through libjpeg into a buffer, for cold misses.
//! - `jpeg_segments`: a JPEG's marker segments and scans, walked without decoding.
//! - `srgb_profile`: the sRGB profile colour conversions write into.
//! - `icc_transforms`: conversions of RGB pixels into sRGB through kept lcms transforms.
//! - [`pool`]: the bounded pool of image threads with a bounded queue in front.
//! - [`exif`], [`xmp`]: what the catalogue reads from a file's metadata.
//! - [`fingerprint`]: SHA-256 and the perceptual difference hash.
//! - [`pixels`]: decoded RGB pixels for code outside libvips (embedders).
//! - [`malloc`]: glibc allocator tuning for image workloads.
#![deny(missing_docs)]

pub mod decode_memory;
pub mod exif;
pub mod fingerprint;
pub mod format;
mod icc_transforms;
mod jpeg_decode;
mod jpeg_segments;
pub mod malloc;
pub mod pixels;
pub mod pool;
mod srgb_profile;
pub mod transform;
pub mod vips;
pub mod xmp;

pub use format::{FormatSet, ImageFormat};
pub use transform::{probe, TransformError};
