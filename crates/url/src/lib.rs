//! FlexPhotoDB's image URL grammar: which image, and what to do to it. Pure: no I/O, no HTTP
//! types, no unsafe code. The edge parses requests with it; the control plane builds and
//! signs the URLs it hands out with it, so both always agree on what a URL means.
//!
//! # Layout
//! - [`key`]: object keys, parsed once and safe for any store afterwards.
//! - [`options`]: the option model (fit, gravity, format, …) and the `name=value` parser both
//!   URL forms share.
//! - [`grammar`]: the two URL forms (`/img/{key}?…` and Cloudflare's `/cdn-cgi/image/…`).
//! - [`canonical`]: from what a URL said to the canonical [`TransformSpec`] that names a
//!   cache entry (presets, `dpr`, defaults, format negotiation, output caps).
//! - [`sign`]: URL signatures over the canonical form, with key rotation and expiry.
//! - [`encode`]: writing keys back into URL paths.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod canonical;
pub mod encode;
pub mod grammar;
pub mod key;
pub mod options;
pub mod sign;

pub use canonical::{resolve, FormatPlan, QualityDefaults, ResolveContext, TransformSpec};
pub use grammar::{parse_path, ParsedUrl, UrlError, UrlForm, CF_PREFIX, IMG_PREFIX};
pub use key::{ImageKey, KeyError};
pub use options::{
    Colour, Fit, Flip, FormatChoice, Gravity, Meta, OptionError, OutputFormat, Rect, RequestOptions,
};
pub use sign::{SignError, Signer};
