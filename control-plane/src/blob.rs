//! Object storage for the control plane: the shared [`ObjectStore`] backends, plus the object
//! layout and presigned uploads.
//!
//! Layout: `YYYY/MM/DD/{id}-original.{ext}` and `YYYY/MM/DD/{id}-{variant}.{ext}`, dated by
//! the upload time in UTC.
//!
//! Presigned uploads: on S3, an `aws-sdk-s3` presigned `PUT` whose signature covers the
//! content type and length; on the local store, a URL to the control plane's own
//! `PUT /v1/uploads/{id}` carrying an expiry and an HMAC-SHA256 over the method, image id,
//! expiry, content type and size.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use flexphoto_media::ImageFormat;
use flexphoto_storage::s3::S3Store;
use flexphoto_storage::{ObjectStore, StorageConfig, StorageError};
use flexphoto_url::ImageKey;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::domain::ImageId;

type HmacSha256 = Hmac<Sha256>;

/// Why storage setup or presigning failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The backend could not be built.
    #[error("object store setup failed: {0}")]
    Setup(String),
    /// The backend failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A key did not parse (a bug: keys are built here).
    #[error("bad object key: {0}")]
    Key(String),
    /// Presigning failed.
    #[error("presigning failed: {0}")]
    Presign(String),
}

/// A presigned upload as the client receives it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PresignedUpload {
    /// HTTP method (`PUT`).
    pub method: String,
    /// Absolute URL.
    pub url: String,
    /// Headers the client must send as given.
    pub headers: std::collections::BTreeMap<String, String>,
    /// When the URL stops working.
    pub expires_at: DateTime<Utc>,
}

enum Presigner {
    Local {
        secret: Vec<u8>,
        api_base: String,
    },
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
    },
}

/// The object store and how uploads to it are presigned.
pub struct Blobs {
    /// What everything reads and writes through: the hot store, with the cold store behind
    /// it when cold objects live in a store of their own.
    store: Arc<dyn ObjectStore>,
    hot: Arc<dyn ObjectStore>,
    cold: Option<Arc<dyn ObjectStore>>,
    presigner: Presigner,
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.store.describe())
    }
}

/// The key of an image's original.
pub fn original_key(
    id: ImageId,
    uploaded_at: DateTime<Utc>,
    format: Option<ImageFormat>,
) -> String {
    format!(
        "{}/{id}-original.{}",
        date_prefix(uploaded_at),
        format.map_or("bin", ImageFormat::extension)
    )
}

/// The staging key a presigned upload of an image lands under. Processing copies what it
/// read from here to the original's own key, which no presigned URL names.
pub fn staging_key(id: ImageId, format: Option<ImageFormat>) -> String {
    format!(
        "uploads/{id}.{}",
        format.map_or("bin", ImageFormat::extension)
    )
}

/// Every key an image can have objects under: the original, its staging key, the variants
/// recorded, and the variants the current configuration would make (a job may have written
/// them before the image was deleted).
pub fn all_keys(
    id: ImageId,
    uploaded_at: DateTime<Utc>,
    original: &str,
    staging: Option<&str>,
    recorded_variants: &[String],
    configured: &[(String, &'static str)],
) -> Vec<String> {
    let mut keys = vec![original.to_owned()];
    keys.extend(staging.map(str::to_owned));
    keys.extend(recorded_variants.iter().cloned());
    for (name, ext) in configured {
        let k = variant_key(id, uploaded_at, name, ext);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys
}

/// The key of one of an image's variants.
pub fn variant_key(id: ImageId, uploaded_at: DateTime<Utc>, name: &str, ext: &str) -> String {
    format!("{}/{id}-{name}.{ext}", date_prefix(uploaded_at))
}

fn date_prefix(t: DateTime<Utc>) -> String {
    format!("{:04}/{:02}/{:02}", t.year(), t.month(), t.day())
}

/// Parses a key built by this module.
pub fn key(k: &str) -> Result<ImageKey, BlobError> {
    ImageKey::parse(k).map_err(|e| BlobError::Key(e.to_string()))
}

/// The message a local upload signature covers.
fn upload_message(id: ImageId, expires: i64, content_type: &str, size: u64) -> String {
    format!("PUT\n{id}\n{expires}\n{content_type}\n{size}")
}

impl Blobs {
    /// Builds the configured store. `signing_secret` keys local upload URLs; `api_base` is the
    /// API's absolute base URL they point at.
    pub async fn new(
        cfg: &StorageConfig,
        signing_secret: &[u8],
        api_base: &str,
    ) -> Result<Self, BlobError> {
        match cfg {
            StorageConfig::Local { .. } => {
                let store = flexphoto_storage::open(cfg)
                    .await
                    .map_err(|e| BlobError::Setup(e.to_string()))?;
                Ok(Self {
                    hot: Arc::clone(&store),
                    store,
                    cold: None,
                    presigner: Presigner::Local {
                        secret: signing_secret.to_vec(),
                        api_base: api_base.trim_end_matches('/').to_owned(),
                    },
                })
            }
            StorageConfig::S3(s3) => {
                let store = S3Store::new(s3).await?;
                let client = store.client().clone();
                let store: Arc<dyn ObjectStore> = Arc::new(store);
                Ok(Self {
                    hot: Arc::clone(&store),
                    store,
                    cold: None,
                    presigner: Presigner::S3 {
                        client,
                        bucket: s3.bucket.clone(),
                    },
                })
            }
        }
    }

    /// A local-store `Blobs` over any store (tests put fakes behind it).
    #[cfg(test)]
    pub(crate) fn over(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            hot: Arc::clone(&store),
            store,
            cold: None,
            presigner: Presigner::Local {
                secret: b"test-secret-0123456789".to_vec(),
                api_base: "http://127.0.0.1:1".into(),
            },
        }
    }

    /// The store: reads find an object wherever its tier keeps it; writes go hot.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The hot store alone.
    pub fn hot(&self) -> &Arc<dyn ObjectStore> {
        &self.hot
    }

    /// The cold store, when cold objects live in a store of their own.
    pub fn cold(&self) -> Option<&Arc<dyn ObjectStore>> {
        self.cold.as_ref()
    }

    /// Puts `cold` behind the hot store: reads fall back to it, deletes reach it.
    pub fn with_cold(mut self, cold: Arc<dyn ObjectStore>) -> Self {
        self.store = Arc::new(flexphoto_storage::tiered::TieredStore::new(
            Arc::clone(&self.hot),
            Arc::clone(&cold),
        ));
        self.cold = Some(cold);
        self
    }

    /// Whether uploads go to the control plane's own upload route (local store).
    pub fn is_local(&self) -> bool {
        matches!(self.presigner, Presigner::Local { .. })
    }

    /// A presigned upload of exactly `size` bytes of `content_type` to `object_key`.
    pub async fn presign_put(
        &self,
        id: ImageId,
        object_key: &str,
        content_type: &str,
        size: u64,
        ttl: Duration,
    ) -> Result<PresignedUpload, BlobError> {
        let expires_at =
            Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::minutes(15));
        match &self.presigner {
            Presigner::Local { secret, api_base } => {
                let exp = expires_at.timestamp();
                let sig = sign(secret, &upload_message(id, exp, content_type, size));
                let mut headers = std::collections::BTreeMap::new();
                headers.insert("content-type".to_owned(), content_type.to_owned());
                Ok(PresignedUpload {
                    method: "PUT".into(),
                    url: format!("{api_base}/v1/uploads/{id}?exp={exp}&sig={sig}"),
                    headers,
                    expires_at,
                })
            }
            Presigner::S3 { client, bucket } => {
                let cfg = aws_sdk_s3::presigning::PresigningConfig::expires_in(ttl)
                    .map_err(|e| BlobError::Presign(e.to_string()))?;
                let req = client
                    .put_object()
                    .bucket(bucket)
                    .key(object_key)
                    .content_type(content_type)
                    .content_length(
                        i64::try_from(size)
                            .map_err(|_| BlobError::Presign("size too large".into()))?,
                    )
                    .presigned(cfg)
                    .await
                    .map_err(|e| {
                        BlobError::Presign(aws_sdk_s3::error::DisplayErrorContext(&e).to_string())
                    })?;
                let headers = req
                    .headers()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
                    .collect();
                Ok(PresignedUpload {
                    method: req.method().to_owned(),
                    url: req.uri().to_owned(),
                    headers,
                    expires_at,
                })
            }
        }
    }

    /// Checks a local upload URL's signature and expiry for the image's declared type and size.
    pub fn verify_local_upload(
        &self,
        id: ImageId,
        expires: i64,
        sig: &str,
        content_type: &str,
        size: u64,
        now: DateTime<Utc>,
    ) -> Result<(), &'static str> {
        let Presigner::Local { secret, .. } = &self.presigner else {
            return Err("uploads go directly to object storage");
        };
        let given = hex::decode(sig).map_err(|_| "the upload signature is malformed")?;
        let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| "no signing key")?;
        mac.update(upload_message(id, expires, content_type, size).as_bytes());
        mac.verify_slice(&given)
            .map_err(|_| "the upload signature is not valid")?;
        if now.timestamp() > expires {
            return Err("the upload URL has expired");
        }
        Ok(())
    }
}

fn sign(secret: &[u8], msg: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail; an empty MAC would never verify.
    match HmacSha256::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(msg.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn layout_is_dated() {
        let id = ImageId(Uuid::nil());
        let t = DateTime::parse_from_rfc3339("2026-03-04T05:06:07Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            original_key(id, t, Some(ImageFormat::Jpeg)),
            "2026/03/04/00000000-0000-0000-0000-000000000000-original.jpg"
        );
        assert_eq!(
            variant_key(id, t, "thumb", "webp"),
            "2026/03/04/00000000-0000-0000-0000-000000000000-thumb.webp"
        );
        assert!(key(&original_key(id, t, Some(ImageFormat::Png))).is_ok());
    }

    #[tokio::test]
    async fn local_upload_urls_verify_only_as_signed() {
        let dir = std::env::temp_dir().join(format!("fp-blob-{}", Uuid::new_v4()));
        let b = Blobs::new(
            &StorageConfig::Local { dir: dir.clone() },
            b"0123456789abcdef",
            "http://api:1/",
        )
        .await
        .unwrap();
        let id = ImageId::new();
        let up = b
            .presign_put(id, "k", "image/png", 42, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(up
            .url
            .starts_with(&format!("http://api:1/v1/uploads/{id}?exp=")));
        let q = up.url.split_once('?').unwrap().1;
        let exp: i64 = q
            .split('&')
            .next()
            .unwrap()
            .trim_start_matches("exp=")
            .parse()
            .unwrap();
        let sig = q.split("sig=").nth(1).unwrap();
        let now = Utc::now();
        assert!(b
            .verify_local_upload(id, exp, sig, "image/png", 42, now)
            .is_ok());
        assert!(b
            .verify_local_upload(id, exp, sig, "image/jpeg", 42, now)
            .is_err());
        assert!(b
            .verify_local_upload(id, exp, sig, "image/png", 43, now)
            .is_err());
        assert!(b
            .verify_local_upload(ImageId::new(), exp, sig, "image/png", 42, now)
            .is_err());
        assert!(b
            .verify_local_upload(id, exp + 1, sig, "image/png", 42, now)
            .is_err());
        let later = now + chrono::Duration::seconds(120);
        assert_eq!(
            b.verify_local_upload(id, exp, sig, "image/png", 42, later),
            Err("the upload URL has expired")
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
