//! Origins: where original image bytes live.
//!
//! One trait, [`ObjectStore`], serves the edge (which only reads) and the control plane (which
//! also writes and deletes). Two backends: [`local::LocalDirStore`] (the embedded default) and
//! [`s3::S3Store`] (any S3-protocol service through `aws-sdk-s3`).

pub mod local;
pub mod s3;

use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;

use crate::url::ImageKey;

/// Facts about a stored object that do not need its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Size in bytes.
    pub size: u64,
    /// A token that changes whenever the object's bytes change (ETag, version id, or
    /// modification time and size for a plain file).
    pub identity: String,
    /// The stored content type, when the store keeps one.
    pub content_type: Option<String>,
}

/// An object's bytes with its metadata.
#[derive(Debug, Clone)]
pub struct Object {
    /// What the store says about the object.
    pub meta: ObjectMeta,
    /// The whole object.
    pub bytes: Bytes,
}

/// Why an origin could not answer.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// No object under that key.
    #[error("no object with key {0}")]
    NotFound(String),
    /// The object is larger than the caller allows; nothing was read past the limit.
    #[error("object is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// Declared or observed size.
        size: u64,
        /// The caller's limit.
        limit: u64,
    },
    /// The origin did not answer in time.
    #[error("origin timed out")]
    Timeout,
    /// The origin failed (network, permissions, I/O); the text is for logs, not clients.
    #[error("origin failure: {0}")]
    Failed(String),
}

/// Object storage as the edge and the control plane use it.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Reads an object's metadata without its bytes.
    async fn head(&self, key: &ImageKey) -> Result<ObjectMeta, OriginError>;

    /// Reads a whole object, refusing (before reading it all) one larger than `max_bytes`.
    async fn get(&self, key: &ImageKey, max_bytes: u64) -> Result<Object, OriginError>;

    /// Stores `body` under `key`, replacing any object there.
    async fn put(
        &self,
        key: &ImageKey,
        body: Bytes,
        content_type: &str,
    ) -> Result<ObjectMeta, OriginError>;

    /// Stores the file at `path` under `key` without reading it all into memory.
    async fn put_file(
        &self,
        key: &ImageKey,
        path: &Path,
        content_type: &str,
    ) -> Result<ObjectMeta, OriginError>;

    /// Removes an object; removing a missing object is not an error.
    async fn delete(&self, key: &ImageKey) -> Result<(), OriginError>;

    /// A short description for logs (`dir:/srv/photos`, `s3:bucket@endpoint`).
    fn describe(&self) -> String;
}
