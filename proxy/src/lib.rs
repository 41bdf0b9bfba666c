//! FlexPhotoDB's edge proxy: browsers and CDN origin pulls fetch sized image URLs; the edge
//! resizes, crops and re-encodes on the fly behind a tiered cache.
//!
//! The URL grammar, the transform pipeline and the object stores are crates of their own
//! (`flexphoto_url`, `flexphoto_media`, `flexphoto_storage`), shared with the control plane.
//!
//! # Layout
//! - [`edge`]: request logic over the tiers, with coalescing, stale-if-error, backpressure
//!   and purge. No HTTP types.
//! - [`cache`]: memory tier (`moka`), disk tier, source cache, working copies, source
//!   identities.
//! - [`clients`]: per-client limits on transforms in flight.
//! - [`memory_budget`]: memory budgets transforms wait for (large decodes, queued sources).
//! - [`access`]: requests and bytes per source key, pushed to the control plane.
//! - [`app`]: each connection: repeated hits answered from [`ready`] responses straight off
//!   the socket, everything else handed to [`service`], the Pingora glue (HTTP in, HTTP
//!   out); [`server`] starts it, and [`connection_threads`] keeps each connection on one
//!   thread.
//! - [`error`]: one error type and its mapping to HTTP statuses.
//! - [`config`]: raw config → validated [`config::EdgeConfig`] naming the bad key.
//! - [`machine`]: the machine's memory, which the default cache sizes are shares of.
//! - [`withheld`]: keys withheld by their rights, read from a list in the bucket.
//! - [`metrics`], [`samples`].
#![deny(missing_docs)]

pub mod access;
pub mod app;
pub mod cache;
pub mod clients;
pub mod config;
pub mod connection_threads;
pub mod edge;
pub mod error;
pub mod lanes;
pub mod machine;
pub mod memory_budget;
pub mod metrics;
pub mod ready;
pub mod samples;
pub mod server;
pub mod service;
pub mod withheld;
