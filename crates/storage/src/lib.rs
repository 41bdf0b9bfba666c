//! Object storage: where image bytes live.
//!
//! One trait, [`ObjectStore`], serves the edge (which only reads) and the control plane (which
//! also writes and deletes). Two backends: [`local::LocalDirStore`] (the embedded default) and
//! [`s3::S3Store`] (any S3-protocol service through `aws-sdk-s3`). [`StorageConfig`] is the
//! one description of a store both services read from their configuration, and [`open`]
//! builds it.
#![deny(missing_docs)]

pub mod body_buffer;
pub mod local;
pub mod s3;
pub mod tiered;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

pub use flexphoto_url::ImageKey;

/// Which object store, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConfig {
    /// A local directory.
    Local {
        /// Root directory.
        dir: PathBuf,
    },
    /// An S3-protocol bucket.
    S3(S3Config),
}

/// S3 connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// Endpoint URL; `None` for AWS itself.
    pub endpoint: Option<String>,
    /// Region name; empty takes the provider chain's region (`AWS_REGION`, profile).
    pub region: String,
    /// Bucket.
    pub bucket: String,
    /// Path-style addressing (most S3-compatible servers need it).
    pub path_style: bool,
    /// Static credentials; `None` uses the standard AWS provider chain (environment, profile,
    /// web identity, container and instance roles).
    pub credentials: Option<(String, String)>,
}

/// The `[…s3]` section of a config file, as written; both services read it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawS3 {
    /// Endpoint URL; empty for AWS itself.
    pub endpoint: String,
    /// Region; empty takes `AWS_REGION` or the profile's.
    pub region: String,
    /// Bucket.
    pub bucket: String,
    /// Path-style addressing (MinIO, s3s-fs and most S3-compatible servers need it).
    pub path_style: bool,
    /// Access key id; empty uses the AWS provider chain.
    pub access_key: String,
    /// Secret key; set together with `access_key`.
    pub secret_key: String,
}

impl Default for RawS3 {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: String::new(),
            path_style: true,
            access_key: String::new(),
            secret_key: String::new(),
        }
    }
}

/// A storage setting refused at validation: the key below the section, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfigError {
    /// Key relative to the section, e.g. `kind` or `s3.bucket`.
    pub key: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl StorageConfig {
    /// Validates a store description as config files write it: `kind` is `local` (objects
    /// under `dir`) or `s3` (the `s3` section).
    pub fn from_parts(kind: &str, dir: &Path, s3: &RawS3) -> Result<Self, StorageConfigError> {
        let bad = |key, reason: String| StorageConfigError { key, reason };
        match kind {
            "local" => {
                if dir.as_os_str().is_empty() {
                    return Err(bad("dir", "must name a directory".into()));
                }
                Ok(StorageConfig::Local {
                    dir: dir.to_owned(),
                })
            }
            "s3" => {
                if s3.bucket.is_empty() {
                    return Err(bad("s3.bucket", "must be set when kind = \"s3\"".into()));
                }
                if s3.access_key.is_empty() != s3.secret_key.is_empty() {
                    return Err(bad(
                        "s3.secret_key",
                        "access_key and secret_key must be set together".into(),
                    ));
                }
                if !(s3.endpoint.is_empty()
                    || s3.endpoint.starts_with("http://")
                    || s3.endpoint.starts_with("https://"))
                {
                    return Err(bad(
                        "s3.endpoint",
                        format!("must be an http:// or https:// URL, got {:?}", s3.endpoint),
                    ));
                }
                Ok(StorageConfig::S3(S3Config {
                    endpoint: (!s3.endpoint.is_empty())
                        .then(|| s3.endpoint.trim_end_matches('/').to_owned()),
                    region: s3.region.clone(),
                    bucket: s3.bucket.clone(),
                    path_style: s3.path_style,
                    credentials: (!s3.access_key.is_empty())
                        .then(|| (s3.access_key.clone(), s3.secret_key.clone())),
                }))
            }
            other => Err(bad("kind", format!("must be local or s3, got {other:?}"))),
        }
    }
}

/// Builds the store `cfg` describes.
pub async fn open(cfg: &StorageConfig) -> Result<Arc<dyn ObjectStore>, StorageError> {
    Ok(match cfg {
        StorageConfig::Local { dir } => Arc::new(
            local::LocalDirStore::new(dir)
                .map_err(|e| StorageError::Failed(format!("local store {}: {e}", dir.display())))?,
        ),
        StorageConfig::S3(s3) => Arc::new(s3::S3Store::new(s3).await?),
    })
}

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

/// Whether an object can be read now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveState {
    /// Readable (any non-archive class).
    Online,
    /// In an archive class; a restore must be asked for.
    Archived,
    /// A restore was asked for and is under way.
    Restoring,
    /// A restored copy is readable until the given time (as the store wrote it).
    Restored {
        /// When the temporary copy goes away.
        until: Option<String>,
    },
}

/// An object's bytes with its metadata.
#[derive(Debug, Clone)]
pub struct Object {
    /// What the store says about the object.
    pub meta: ObjectMeta,
    /// The whole object.
    pub bytes: Bytes,
}

/// Why a store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
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
    /// The store did not answer in time.
    #[error("object store timed out")]
    Timeout,
    /// The store has no room for the object (a full disk or an exhausted quota).
    #[error("the object store is out of space")]
    Full,
    /// The object is in an archive storage class and must be restored before it is read.
    #[error("object {0} is archived; it must be restored before it can be read")]
    Archived(String),
    /// The store cannot do this (e.g. storage classes on a local directory).
    #[error("{0}")]
    Unsupported(String),
    /// The store failed (network, permissions, I/O); the text is for logs, not clients.
    #[error("object store failure: {0}")]
    Failed(String),
}

/// Object storage as the edge and the control plane use it.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Reads an object's metadata without its bytes.
    async fn head(&self, key: &ImageKey) -> Result<ObjectMeta, StorageError>;

    /// Reads a whole object, refusing (before reading it all) one larger than `max_bytes`.
    async fn get(&self, key: &ImageKey, max_bytes: u64) -> Result<Object, StorageError>;

    /// Stores `body` under `key`, replacing any object there.
    async fn put(
        &self,
        key: &ImageKey,
        body: Bytes,
        content_type: &str,
    ) -> Result<ObjectMeta, StorageError>;

    /// Stores the file at `path` under `key` without reading it all into memory.
    async fn put_file(
        &self,
        key: &ImageKey,
        path: &Path,
        content_type: &str,
    ) -> Result<ObjectMeta, StorageError>;

    /// Removes an object; removing a missing object is not an error.
    async fn delete(&self, key: &ImageKey) -> Result<(), StorageError>;

    /// Moves an object to another storage class of the same store, in place (S3's
    /// `STANDARD_IA`, `GLACIER_IR`, `GLACIER`, `DEEP_ARCHIVE` …); stores without classes
    /// refuse.
    async fn set_storage_class(
        &self,
        key: &ImageKey,
        class: &str,
    ) -> Result<ObjectMeta, StorageError> {
        let _ = class;
        Err(StorageError::Unsupported(format!(
            "{}: this store has no storage classes ({key})",
            self.describe()
        )))
    }

    /// Whether an object can be read now or sits in an archive class.
    async fn archive_state(&self, key: &ImageKey) -> Result<ArchiveState, StorageError> {
        self.head(key).await.map(|_| ArchiveState::Online)
    }

    /// Asks for a temporary readable copy of an archived object for `days`; stores without
    /// archive classes refuse.
    async fn restore(&self, key: &ImageKey, days: u32) -> Result<ArchiveState, StorageError> {
        let _ = days;
        Err(StorageError::Unsupported(format!(
            "{}: this store has no archive classes ({key})",
            self.describe()
        )))
    }

    /// A short description for logs (`dir:/srv/photos`, `s3:bucket@endpoint`).
    fn describe(&self) -> String;
}
