//! One error type for the edge, and the only place errors become HTTP statuses.

use std::time::Duration;

use flexphoto_media::transform::TransformError;
use flexphoto_storage::StorageError;
use flexphoto_url::UrlError;

/// Everything that can stop a request, each with its HTTP face.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EdgeError {
    /// The URL or one of its options is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// The signature is missing, wrong or expired.
    #[error("{0}")]
    Forbidden(String),
    /// No such image, or no such route.
    #[error("{0}")]
    NotFound(String),
    /// Method not allowed on this route.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The source is over the byte limit.
    #[error("{0}")]
    SourceTooLarge(String),
    /// The source is not an image we can decode, or is truncated, or is a pixel bomb.
    #[error("{0}")]
    Unprocessable(String),
    /// The origin failed.
    #[error("the origin failed to deliver the image")]
    OriginFailed(String),
    /// The origin, or the whole request, ran out of time.
    #[error("{0}")]
    Timeout(String),
    /// The transform queue is full.
    #[error("the transform queue is full; retry shortly")]
    Overloaded {
        /// What to send in `Retry-After`.
        retry_after: Duration,
    },
    /// This client has too many transforms in flight.
    #[error("too many images are being made for this client; retry shortly")]
    TooManyRequests {
        /// What to send in `Retry-After`.
        retry_after: Duration,
    },
    /// The source sits in an archive storage class until it is restored.
    #[error(
        "this image is in archive storage and cannot be read until it is restored (the \
         control plane's POST /v1/images/{{id}}/restore); retry later"
    )]
    Archived {
        /// What to send in `Retry-After`.
        retry_after: Duration,
    },
    /// A bug or an environment failure; details go to the log only.
    #[error("internal error")]
    Internal(String),
}

/// How long a client should wait before asking again for an archived source: restores take
/// minutes (expedited) to hours.
pub const ARCHIVED_RETRY_AFTER: Duration = Duration::from_secs(3600);

impl EdgeError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            EdgeError::BadRequest(_) => 400,
            EdgeError::Forbidden(_) => 403,
            EdgeError::NotFound(_) => 404,
            EdgeError::MethodNotAllowed => 405,
            EdgeError::SourceTooLarge(_) => 413,
            EdgeError::Unprocessable(_) => 422,
            EdgeError::OriginFailed(_) => 502,
            EdgeError::Overloaded { .. } | EdgeError::Archived { .. } => 503,
            EdgeError::TooManyRequests { .. } => 429,
            EdgeError::Timeout(_) => 504,
            EdgeError::Internal(_) => 500,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            EdgeError::BadRequest(_) => "bad_request",
            EdgeError::Forbidden(_) => "forbidden",
            EdgeError::NotFound(_) => "not_found",
            EdgeError::MethodNotAllowed => "method_not_allowed",
            EdgeError::SourceTooLarge(_) => "source_too_large",
            EdgeError::Unprocessable(_) => "unprocessable_image",
            EdgeError::OriginFailed(_) => "origin_failed",
            EdgeError::Overloaded { .. } => "overloaded",
            EdgeError::Archived { .. } => "archived",
            EdgeError::TooManyRequests { .. } => "too_many_requests",
            EdgeError::Timeout(_) => "timeout",
            EdgeError::Internal(_) => "internal",
        }
    }

    /// The message a client may see; never internal details.
    pub fn public_message(&self) -> String {
        self.to_string()
    }

    /// The JSON body sent to clients.
    pub fn body(&self) -> String {
        serde_json::json!({"error": {"code": self.code(), "message": self.public_message()}})
            .to_string()
    }

    /// Details for the log, including internal ones.
    pub fn log_detail(&self) -> String {
        match self {
            EdgeError::OriginFailed(d) | EdgeError::Internal(d) => d.clone(),
            other => other.to_string(),
        }
    }
}

impl From<UrlError> for EdgeError {
    fn from(e: UrlError) -> Self {
        match e {
            UrlError::NotImagePath => EdgeError::NotFound("no such route".into()),
            other => EdgeError::BadRequest(other.to_string()),
        }
    }
}

impl From<StorageError> for EdgeError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound(k) => EdgeError::NotFound(format!("no image with key {k:?}")),
            StorageError::TooLarge { size, limit } => EdgeError::SourceTooLarge(format!(
                "the source image is {size} bytes, over the limit of {limit} bytes"
            )),
            StorageError::Timeout => EdgeError::Timeout("the origin did not answer in time".into()),
            StorageError::Failed(d) => EdgeError::OriginFailed(d),
            StorageError::Archived(_) => EdgeError::Archived {
                retry_after: ARCHIVED_RETRY_AFTER,
            },
            e @ (StorageError::Full | StorageError::Unsupported(_)) => {
                EdgeError::OriginFailed(e.to_string())
            }
        }
    }
}

impl From<TransformError> for EdgeError {
    fn from(e: TransformError) -> Self {
        match e {
            TransformError::BadOption(m) => EdgeError::BadRequest(m),
            TransformError::Internal(m) => EdgeError::Internal(m),
            TransformError::DeadlineExceeded => {
                EdgeError::Timeout("the image could not be made before the deadline".into())
            }
            other => EdgeError::Unprocessable(other.to_string()),
        }
    }
}
