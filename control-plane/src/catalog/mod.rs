//! Catalog governance: the deterministic rules a content, archive or commerce team runs on
//! beside the AI search. Collections with versioned metadata schemas and vocabularies, values
//! validated at ingest with the source of each kept, rights windows that withhold images,
//! a review workflow with a queue, corrections that are never silent, and lineage.
//!
//! Pure rules live here (no SQL, no HTTP); `store::catalog` keeps them in the database and
//! `routes::collections` / `routes::review` / `routes::catalog` speak HTTP.
//!
//! # Layout
//! - [`fields`]: field types, the built-in descriptive fields and typed values.
//! - [`schema`]: a collection's schema (fields with rules) and its file format (TOML/JSON).
//! - [`vocab`]: hierarchical terms with synonyms; keyword normalisation; ancestors.
//! - [`validate`]: values against a schema: every failing field and rule.
//! - [`sources`]: where a value came from, and how sources merge at ingest.
//! - [`embedded`]: XMP (embedded or sidecar) and IPTC IIM values mapped to fields.
//! - [`record`]: an image's descriptive metadata as one checked record.
//! - [`rights`]: rights windows, withholding, signed-URL expiry and the deny-list edges read.
//! - [`workflow`]: review states, allowed transitions and who may make them.
//! - [`review`]: why an image is in the review queue, and priorities.
//! - [`history`]: readable diffs of recorded changes, and restoring a past version.
//! - [`lineage`]: derivatives and versions.
//! - [`query`]: catalog filters and sorts, and the SQL they become; [`explain`]: which
//!   filters a result matched and how, and why it is in review.
//! - [`load`]: collections, compiled schemas (cached by version) and records read back.
//! - [`ingest`], [`corrections`], [`scheduler`]: the flows that tie these to the database.
//! - [`csv`]: CSV manifests for `flexphoto import`; [`settings`]: `[catalog]` configuration.

pub mod corrections;
pub mod csv;
pub mod embedded;
pub mod explain;
pub mod fields;
pub mod history;
pub mod ingest;
pub mod lineage;
pub mod load;
pub mod query;
pub mod record;
pub mod review;
pub mod rights;
pub mod scheduler;
pub mod schema;
pub mod settings;
pub mod sources;
pub mod validate;
pub mod vocab;
pub mod workflow;

/// Why a catalog operation was refused; `error.rs` gives each its HTTP face.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The request is malformed (a bad schema, filter or value); the text says what.
    #[error("{0}")]
    Invalid(String),
    /// Values failed the collection's rules (422 with every failure listed).
    #[error("{} field(s) failed validation", .0.len())]
    Validation(Vec<validate::Failure>),
    /// A stale version, a transition from another state, a name already taken.
    #[error("{0}")]
    Conflict(String),
    /// The version given is not the current one (409 with the current version).
    #[error("the image changed since version {given}; it is at version {current} now")]
    Stale {
        /// The version the client had.
        given: i64,
        /// The version now.
        current: i64,
    },
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such collection, image or change.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl From<sqlx::Error> for CatalogError {
    fn from(e: sqlx::Error) -> Self {
        CatalogError::Store(crate::store::StoreError::classify(e))
    }
}
