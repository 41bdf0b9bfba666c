//! FlexPhotoDB control plane: image metadata in SQL, bytes in object storage, presigned and
//! one-shot uploads, and a durable job queue whose workers extract metadata, render variants
//! with the edge's transform pipeline and fingerprint each image.
//!
//! # Layout
//! - [`config`]: raw configuration (TOML + `FLEXPHOTO_*` environment) → validated
//!   [`config::Config`] that names the bad key.
//! - [`store`]: SQL for Postgres and SQLite ([`store::Db`]); migrations embedded; the queue.
//! - [`blob`]: object layout and presigned uploads over the edge's `ObjectStore` backends.
//! - [`media`]: EXIF, variants through the edge's transform pipeline, fingerprints.
//! - [`jobs`]: workers (claim, lease renewal, retry with backoff, dead jobs, shutdown).
//! - [`search`]: the search query plan (similarity with filters inside, or SQL order).
//! - [`reconcile`]: SQL ↔ index drift repair and re-embedding after a model change.
//! - [`eval`]: `flexphoto eval-search`, search and near-duplicate quality on labelled photos.
//! - [`routes`]: the HTTP API; [`auth`]: API keys; [`error`]: errors → HTTP in one place.
//! - [`app`]: serving with graceful shutdown; [`state`]: what handlers and workers share.
//! - [`embed`]: image and text embedders behind one trait.
//! - [`index`]: the vector index (embedded Qdrant or a Qdrant server) behind one trait.
//! - [`indexing`]: embedding one image, finding its near-duplicates, writing its point.
//! - [`edge_client`]: a small HTTP client (edge purge, `flexphoto import`).
#![deny(missing_docs)]

pub mod app;
pub mod auth;
pub mod blob;
pub mod config;
pub mod edge_client;
pub mod embed;
pub mod error;
pub mod eval;
pub mod index;
pub mod indexing;
pub mod jobs;
pub mod media;
pub mod metrics;
pub mod reconcile;
pub mod routes;
pub mod search;
pub mod state;
pub mod store;
