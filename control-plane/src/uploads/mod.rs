//! The upload pipeline apart from its HTTP handlers: spooling bodies to disk
//! ([`spool`]), confirming that a presigned upload's object is what was declared and
//! queueing it ([`complete`]), S3 bucket notifications ([`webhook`]), and the sweeper for
//! uploads never completed ([`sweeper`]).

pub mod complete;
pub mod spool;
pub mod sweeper;
pub mod webhook;

use flexphoto_storage::StorageError;

use crate::blob::BlobError;
use crate::store::StoreError;

/// Why an upload step failed; `error.rs` gives each its HTTP face.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The object is missing or is not what was declared; the text says how.
    #[error("{0}")]
    Incomplete(String),
    /// Object storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A stored key did not parse.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
