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

use super::{Object, ObjectMeta, ObjectStore, OriginError};
use crate::config::S3Config;
use crate::url::ImageKey;

/// Objects in one bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    label: String,
}

fn sdk_err<E, R>(key: &ImageKey, e: SdkError<E, R>) -> OriginError
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
        return OriginError::NotFound(key.to_string());
    }
    match e {
        SdkError::TimeoutError(_) => OriginError::Timeout,
        other => OriginError::Failed(format!(
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
    /// Builds a client from config; credentials fall back to the standard AWS environment
    /// variables when the config has none.
    pub fn new(cfg: &S3Config) -> Result<Self, OriginError> {
        let creds = match &cfg.credentials {
            Some((ak, sk)) => Credentials::new(ak, sk, None, None, "flexphoto-config"),
            None => {
                let ak = std::env::var("AWS_ACCESS_KEY_ID").map_err(|_| {
                    OriginError::Failed("no S3 credentials: set origin.s3.access_key/secret_key or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY".into())
                })?;
                let sk = std::env::var("AWS_SECRET_ACCESS_KEY")
                    .map_err(|_| OriginError::Failed("AWS_SECRET_ACCESS_KEY is not set".into()))?;
                let token = std::env::var("AWS_SESSION_TOKEN").ok();
                Credentials::new(ak, sk, token, None, "environment")
            }
        };
        let region = std::env::var("AWS_REGION")
            .ok()
            .filter(|_| cfg.region.is_empty())
            .unwrap_or_else(|| cfg.region.clone());
        let mut b = aws_sdk_s3::Config::builder()
            .region(Region::new(region))
            .credentials_provider(creds)
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
    async fn head(&self, key: &ImageKey) -> Result<ObjectMeta, OriginError> {
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

    async fn get(&self, key: &ImageKey, max_bytes: u64) -> Result<Object, OriginError> {
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
            return Err(OriginError::TooLarge {
                size: declared,
                limit: max_bytes,
            });
        }
        let meta_identity = identity(r.e_tag(), r.version_id(), declared);
        let content_type = r.content_type().map(str::to_owned);
        let mut body = r.body;
        let mut buf = Vec::with_capacity(declared as usize);
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| OriginError::Failed(format!("s3 {key}: reading body: {e}")))?
        {
            if (buf.len() + chunk.len()) as u64 > max_bytes {
                return Err(OriginError::TooLarge {
                    size: (buf.len() + chunk.len()) as u64,
                    limit: max_bytes,
                });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Object {
            meta: ObjectMeta {
                size: buf.len() as u64,
                identity: meta_identity,
                content_type,
            },
            bytes: Bytes::from(buf),
        })
    }

    async fn put(
        &self,
        key: &ImageKey,
        body: Bytes,
        content_type: &str,
    ) -> Result<ObjectMeta, OriginError> {
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
    ) -> Result<ObjectMeta, OriginError> {
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| OriginError::Failed(format!("reading {}: {e}", path.display())))?;
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

    async fn delete(&self, key: &ImageKey) -> Result<(), OriginError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| sdk_err(key, e))?;
        Ok(())
    }

    fn describe(&self) -> String {
        self.label.clone()
    }
}
