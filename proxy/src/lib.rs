//! FlexPhotoDB's edge proxy: browsers and CDN origin pulls fetch sized image URLs; the edge
//! resizes, crops and re-encodes on the fly behind a tiered cache.
//!
//! # Layout
//! - [`url`]: the URL grammar (query form and Cloudflare form), canonical transform and cache
//!   key inputs. No HTTP types.
//! - [`sign`]: URL signatures (HMAC-SHA256, key rotation, expiry).
//! - [`transform`]: the pipeline as ordered steps, and the bounded worker pool. No HTTP types.
//! - [`vips`]: the only module touching libvips; owns images and their buffers safely.
//! - [`cache`]: memory tier (`moka`), disk tier, source cache.
//! - [`origin`]: the object-store trait; local directory and S3 backends.
//! - [`edge`]: request logic over the tiers, with coalescing, stale-if-error, backpressure
//!   and purge.
//! - [`service`]: the Pingora glue (HTTP in, HTTP out); [`server`] starts it.
//! - [`error`]: one error type and its mapping to HTTP statuses.
//! - [`config`], [`metrics`], [`memory`], [`samples`].
#![deny(missing_docs)]

pub mod cache;
pub mod config;
pub mod edge;
pub mod error;
pub mod memory;
pub mod metrics;
pub mod origin;
pub mod samples;
pub mod server;
pub mod service;
pub mod sign;
pub mod transform;
pub mod url;
pub mod vips;
