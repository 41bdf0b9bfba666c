//! FlexPhotoDB control plane: image metadata in SQL, bytes in object storage, presigned and
//! one-shot uploads, a durable job queue whose workers extract metadata, render variants and
//! fingerprint each image, and search.
//!
//! Pixels, URLs, object stores and configuration loading are crates of their own
//! (`flexphoto_media`, `flexphoto_url`, `flexphoto_storage`, `flexphoto_settings`), shared
//! with the edge; this crate never links the edge.
//!
//! # Layout
//! - [`domain`]: ids, owners, statuses, review states, job kinds and roles as types.
//! - [`config`]: raw configuration → validated [`config::Config`] that names the bad key.
//! - [`store`]: SQL for Postgres and SQLite ([`store::Db`]); migrations embedded; the queue's
//!   table.
//! - [`blob`]: object layout and presigned uploads over the shared object stores.
//! - [`uploads`]: spooling, completion, the S3 webhook and the sweeper.
//! - [`ingest`]: what a worker does to an original (EXIF, variants, fingerprints).
//! - [`catalog`]: governance: collections, schemas and validation at ingest, vocabularies,
//!   rights windows, the review workflow and queue, correction history, lineage.
//! - [`jobs`]: the job runner (claim, lease renewal, retry with backoff, dead jobs, shutdown)
//!   and one handler per job kind.
//! - [`search`]: embedders, vector index backends, indexing, the query plan, reconcile, eval.
//! - [`filter`], [`cursor`]: the filters and page cursors listing and search share.
//! - [`routes`]: the HTTP API and its OpenAPI document; [`auth`]: API keys;
//!   [`rate_limit`]: per-key rate limits;
//!   [`error`]: errors → HTTP in one place.
//! - [`app`]: serving with graceful shutdown; [`state`]: what handlers and workers share.
//! - [`purge`], [`http_client`], [`import`]: calls out (edge purges, `flexphoto import`).
//! - [`cluster`]: several processes on one database (roles under leases, the embedded index's
//!   single owner, search forwarding).
//! - [`lifecycle`]: access statistics from the edges, hot/cold tiering, restores, the cost
//!   model; [`clock`]: the time its decisions are made at; [`failpoint`]: crash points for
//!   fault-injection tests.
//! - [`metrics`]: Prometheus metrics; [`rng`]: deterministic random numbers (intervals,
//!   generated test and benchmark data).
//! - [`admin_ui`]: the admin web UI at `/admin` (embedded pages, browser sessions).
#![deny(missing_docs)]

pub mod admin_ui;
pub mod app;
pub mod auth;
pub mod blob;
pub mod catalog;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod cursor;
pub mod domain;
pub mod error;
pub mod failed_auth;
pub mod failpoint;
pub mod filter;
pub mod http_client;
pub mod import;
pub mod ingest;
pub mod jobs;
pub mod key_lineage;
pub mod lifecycle;
pub mod metrics;
pub mod privacy;
pub mod purge;
pub mod rate_limit;
pub mod rng;
pub mod routes;
pub mod search;
pub mod state;
pub mod store;
#[cfg(test)]
#[path = "../../tests/support/skip.rs"]
mod test_skip;
pub mod uploads;
