//! Why a transform failed.

use crate::vips::VipsError;

/// Why a transform failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransformError {
    /// Zero bytes.
    #[error("the source image is empty")]
    Empty,
    /// No decoder recognises the bytes.
    #[error("the source is not an image in a supported format")]
    NotAnImage,
    /// The header declares more pixels than allowed.
    #[error("the source image is {width}x{height} ({} megapixels), over the limit of {} megapixels", (*.width as u64 * *.height as u64) / 1_000_000, .limit / 1_000_000)]
    TooManyPixels {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// Configured limit.
        limit: u64,
    },
    /// The bytes are an image in a format this service does not decode.
    #[error("the source is a {format} image, which is not accepted here (accepted: {allowed})")]
    FormatNotAllowed {
        /// What the bytes are.
        format: String,
        /// What is accepted.
        allowed: String,
    },
    /// The output would be larger than the caps allow.
    #[error(
        "the output would be {width}x{height}{}, over the limits of {max_dimension} pixels a side \
         and {} megapixels (limits.max_dimension, limits.max_output_pixels); ask for a smaller size",
        if *.frames > 1 { format!(" with {} frames", .frames) } else { String::new() },
        .max_pixels / 1_000_000
    )]
    OutputTooLarge {
        /// Output width.
        width: u32,
        /// Output height.
        height: u32,
        /// Frames.
        frames: u32,
        /// Largest side allowed.
        max_dimension: u32,
        /// Largest output pixels allowed, all frames together.
        max_pixels: u64,
    },
    /// AVIF, WebP or GIF was asked for at a size whose encode cannot be bounded (those
    /// encoders run to the end once started, whatever the deadline).
    #[error(
        "a {format} output of {width}x{height} is over the limit of {} megapixels for {format} \
         ({key}); ask for a smaller size or another format",
        .max_pixels / 1_000_000
    )]
    EncodeTooLarge {
        /// The output format's name.
        format: &'static str,
        /// Output width.
        width: u32,
        /// Output height.
        height: u32,
        /// Largest output of that format allowed, pixels.
        max_pixels: u64,
        /// The config key of the cap.
        key: &'static str,
    },
    /// Blur or sharpen would cost more than allowed at this size.
    #[error(
        "blur and sharpen with sigma {sigma} on a {width}x{height} output cost more than the \
         limit of {limit:.0} pixel-sigmas (limits.max_filter_cost); use a smaller sigma or size"
    )]
    FilterTooCostly {
        /// Output width.
        width: u32,
        /// Output height.
        height: u32,
        /// Blur and sharpen sigmas together.
        sigma: f64,
        /// The cost limit.
        limit: f64,
    },
    /// The decoder failed: truncated or corrupt data.
    #[error("the source image could not be decoded: {0}")]
    Undecodable(String),
    /// A request option does not fit this image (e.g. a crop outside it).
    #[error("{0}")]
    BadOption(String),
    /// The request's deadline passed.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// A bug or environment failure.
    #[error("internal transform failure: {0}")]
    Internal(String),
}

impl From<VipsError> for TransformError {
    fn from(e: VipsError) -> Self {
        if e.0 == crate::vips::KILLED {
            TransformError::DeadlineExceeded
        } else {
            TransformError::Undecodable(e.0)
        }
    }
}

/// Result of transform steps.
pub type Result<T> = std::result::Result<T, TransformError>;
