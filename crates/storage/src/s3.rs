//! An S3-protocol bucket as the origin, through `aws-sdk-s3`.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use bytes::Bytes;

use crate::body_buffer::BodyBuffer;
use crate::{ArchiveState, Object, ObjectMeta, ObjectStore, StorageError};
use crate::{ImageKey, S3Config};

/// Objects in one bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    label: String,
}

fn sdk_err<E, R>(key: &ImageKey, e: SdkError<E, R>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let not_found = match &e {
        SdkError::ServiceError(se) => {
            matches!(se.err().code(), Some("NoSuchKey" | "NotFound" | "404"))
                || format!("{:?}", se.raw()).contains("status: StatusCode(404)")
        }
        _ => false,
    };
    if not_found {
        return StorageError::NotFound(key.to_string());
    }
    if let SdkError::ServiceError(se) = &e {
        if se.err().code() == Some("InvalidObjectState") {
            return StorageError::Archived(key.to_string());
        }
        if matches!(
            se.err().code(),
            Some("QuotaExceeded" | "XMinioStorageFull" | "StorageFull" | "InsufficientStorage")
        ) {
            return StorageError::Full;
        }
    }
    match e {
        SdkError::TimeoutError(_) => StorageError::Timeout,
        other => StorageError::Failed(format!(
            "s3 {key}: {}",
            aws_sdk_s3::error::DisplayErrorContext(&other)
        )),
    }
}

fn identity(etag: Option<&str>, version: Option<&str>, len: u64) -> String {
    match (version, etag) {
        (Some(v), _) if !v.is_empty() && v != "null" => format!("v:{v}"),
        (_, Some(e)) => format!("e:{}", e.trim_matches('"')),
        _ => format!("len:{len}"),
    }
}

impl S3Store {
    /// Builds a client from config. Static credentials from the config win; otherwise the
    /// standard AWS provider chain answers (environment, shared profile, web identity,
    /// container and instance roles), and so does the region when the config leaves it empty.
    pub async fn new(cfg: &S3Config) -> Result<Self, StorageError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some((ak, sk)) = &cfg.credentials {
            loader = loader.credentials_provider(Credentials::new(
                ak,
                sk,
                None,
                None,
                "flexphoto-config",
            ));
        }
        if !cfg.region.is_empty() {
            loader = loader.region(Region::new(cfg.region.clone()));
        }
        let shared = loader.load().await;
        if shared.credentials_provider().is_none() {
            return Err(StorageError::Failed(
                "no S3 credentials: set the access and secret keys in the config, or provide \
                 them the AWS way (environment, profile, web identity or instance role)"
                    .into(),
            ));
        }
        if shared.region().is_none() {
            return Err(StorageError::Failed(
                "no S3 region: set it in the config or in AWS_REGION".into(),
            ));
        }
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(cfg.path_style)
            // One quick retry; the edge's own timeout bounds the whole request.
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(2)
                    .with_initial_backoff(Duration::from_millis(50)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(2))
                    .build(),
            );
        if let Some(ep) = &cfg.endpoint {
            b = b.endpoint_url(ep);
        }
        let label = format!(
            "s3:{}@{}",
            cfg.bucket,
            cfg.endpoint.as_deref().unwrap_or("aws")
        );
        Ok(Self {
            client: Client::from_conf(b.build()),
            bucket: cfg.bucket.clone(),
            label,
        })
    }

    /// The SDK client, for operations beyond the trait (presigning).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn head(&self, key: &ImageKey) -> Result<ObjectMeta, StorageError> {
        let r = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| sdk_err(key, e))?;
        let size = r.content_length().unwrap_or(0).max(0) as u64;
        Ok(ObjectMeta {
            size,
            identity: identity(r.e_tag(), r.version_id(), size),
            content_type: r.content_type().map(str::to_owned),
        })
    }

    async fn get(&self, key: &ImageKey, max_bytes: u64) -> Result<Object, StorageError> {
        let r = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| sdk_err(key, e))?;
        let declared = r.content_length().unwrap_or(0).max(0) as u64;
        if declared > max_bytes {
            return Err(StorageError::TooLarge {
                size: declared,
                limit: max_bytes,
            });
        }
        let meta_identity = identity(r.e_tag(), r.version_id(), declared);
        let content_type = r.content_type().map(str::to_owned);
        let mut body = r.body;
        let failed =
            |e: std::io::Error| StorageError::Failed(format!("s3 {key}: buffering body: {e}"));
        let mut buf = BodyBuffer::with_capacity(declared as usize).map_err(failed)?;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| StorageError::Failed(format!("s3 {key}: reading body: {e}")))?
        {
            if (buf.len() + chunk.len()) as u64 > max_bytes {
                return Err(StorageError::TooLarge {
                    size: (buf.len() + chunk.len()) as u64,
                    limit: max_bytes,
                });
            }
            buf.extend_from_slice(&chunk).map_err(failed)?;
        }
        Ok(Object {
            meta: ObjectMeta {
                size: buf.len() as u64,
                identity: meta_identity,
                content_type,
            },
            bytes: buf.freeze().map_err(failed)?,
        })
    }

    async fn put(
        &self,
        key: &ImageKey,
        body: Bytes,
        content_type: &str,
    ) -> Result<ObjectMeta, StorageError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| sdk_err(key, e))?;
        self.head(key).await
    }

    async fn put_file(
        &self,
        key: &ImageKey,
        path: &Path,
        content_type: &str,
    ) -> Result<ObjectMeta, StorageError> {
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| StorageError::Failed(format!("reading {}: {e}", path.display())))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_type(content_type)
            .body(body)
            .send()
            .await
            .map_err(|e| sdk_err(key, e))?;
        self.head(key).await
    }

    async fn delete(&self, key: &ImageKey) -> Result<(), StorageError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| sdk_err(key, e))?;
        Ok(())
    }

    async fn set_storage_class(
        &self,
        key: &ImageKey,
        class: &str,
    ) -> Result<ObjectMeta, StorageError> {
        let source = format!(
            "{}/{}",
            self.bucket,
            percent_encoding::utf8_percent_encode(key.as_str(), COPY_SOURCE)
        );
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .copy_source(source)
            .storage_class(aws_sdk_s3::types::StorageClass::from(class))
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Copy)
            .send()
            .await
            .map_err(|e| sdk_err(key, e))?;
        self.head(key).await
    }

    async fn archive_state(&self, key: &ImageKey) -> Result<ArchiveState, StorageError> {
        let r = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| sdk_err(key, e))?;
        let archived = matches!(
            r.storage_class().map(|c| c.as_str()),
            Some("GLACIER" | "DEEP_ARCHIVE")
        );
        Ok(archive_state(archived, r.restore()))
    }

    async fn restore(&self, key: &ImageKey, days: u32) -> Result<ArchiveState, StorageError> {
        let request = aws_sdk_s3::types::RestoreRequest::builder()
            .days(i32::try_from(days).unwrap_or(i32::MAX))
            .build();
        match self
            .client
            .restore_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .restore_request(request)
            .send()
            .await
        {
            Ok(_) => {}
            // Already under way: S3 says RestoreAlreadyInProgress.
            Err(SdkError::ServiceError(se))
                if se.err().meta().code() == Some("RestoreAlreadyInProgress") => {}
            Err(e) => return Err(sdk_err(key, e)),
        }
        self.archive_state(key).await
    }

    fn describe(&self) -> String {
        self.label.clone()
    }
}

/// Characters escaped in a `CopySource` key (everything but the unreserved set and `/`).
const COPY_SOURCE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// An archived object's state from its storage class and `x-amz-restore` header
/// (`ongoing-request="true"`, or `ongoing-request="false", expiry-date="…"`).
fn archive_state(archived: bool, restore: Option<&str>) -> ArchiveState {
    match restore {
        Some(r) if r.contains("ongoing-request=\"true\"") => ArchiveState::Restoring,
        Some(r) if r.contains("ongoing-request=\"false\"") => ArchiveState::Restored {
            until: r
                .split("expiry-date=\"")
                .nth(1)
                .and_then(|t| t.split('"').next())
                .map(str::to_owned),
        },
        _ if archived => ArchiveState::Archived,
        _ => ArchiveState::Online,
    }
}

#[cfg(test)]
mod archive_tests {
    use super::*;

    #[test]
    fn restore_header_is_read() {
        assert_eq!(archive_state(false, None), ArchiveState::Online);
        assert_eq!(archive_state(true, None), ArchiveState::Archived);
        assert_eq!(
            archive_state(true, Some("ongoing-request=\"true\"")),
            ArchiveState::Restoring
        );
        assert_eq!(
            archive_state(
                true,
                Some("ongoing-request=\"false\", expiry-date=\"Fri, 21 Dec 2012 00:00:00 GMT\"")
            ),
            ArchiveState::Restored {
                until: Some("Fri, 21 Dec 2012 00:00:00 GMT".into())
            }
        );
    }
}
