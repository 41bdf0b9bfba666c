//! The API's one error type and its mapping to HTTP. Every error answers
//! `{"error": {"code": "...", "message": "..."}}` with a stable `code`; internal details are
//! logged, never sent.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use flexphoto_storage::StorageError;

use crate::blob::BlobError;
use crate::domain::{DomainError, ImageId};
use crate::filter::FilterError;
use crate::routes::views::{ErrorBody, ErrorDetail};
use crate::search::plan::SearchError;
use crate::store::StoreError;
use crate::uploads::spool::SpoolError;
use crate::uploads::UploadError;

/// An API failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or unknown API key.
    #[error("a valid API key is required (Authorization: Bearer KEY)")]
    Unauthorized,
    /// The key may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such resource.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request is malformed; the text says what is wrong.
    #[error("{0}")]
    Invalid(String),
    /// The owner already has an image with these exact bytes.
    #[error("the owner already has an image with the same content ({0})")]
    Duplicate(ImageId),
    /// The route exists but not for this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request conflicts with the resource's state.
    #[error("{0}")]
    Conflict(String),
    /// Completion found no object, or one that does not match the declaration.
    #[error("{0}")]
    UploadIncomplete(String),
    /// The content type is not accepted.
    #[error("{0}")]
    UnsupportedType(String),
    /// The content is well-formed but cannot be used (an undecodable query image).
    #[error("{0}")]
    Unprocessable(String),
    /// The body is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// A signed upload URL is invalid or expired.
    #[error("{0}")]
    BadSignature(String),
    /// Saturated; retry after a moment (503 with `Retry-After`).
    #[error("{0}")]
    Busy(String),
    /// Too many requests from this key (429 with `Retry-After`).
    #[error("{0}")]
    RateLimited(String),
    /// Storage is out of space (507); retrying later may work.
    #[error("{0}")]
    InsufficientStorage(String),
    /// A dependency (database, object store) failed; the text is logged only.
    #[error("service temporarily unavailable")]
    Unavailable(String),
    /// A bug; the text is logged only.
    #[error("internal error")]
    Internal(String),
    /// Values failed the collection's rules (422, every failing field and rule listed).
    #[error("{} field(s) failed the collection's rules", .0.len())]
    Validation(Vec<crate::catalog::validate::Failure>),
    /// The version the client had is not the current one (409 with the current version).
    #[error("the image changed since version {given}; it is at version {current} now: reload it and try again")]
    Stale {
        /// The version sent.
        given: i64,
        /// The current version.
        current: i64,
    },
}

impl ApiError {
    /// The status and the stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::Duplicate(_) => (StatusCode::CONFLICT, "duplicate"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::UploadIncomplete(_) => (StatusCode::CONFLICT, "upload_incomplete"),
            ApiError::UnsupportedType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::BadSignature(_) => (StatusCode::FORBIDDEN, "bad_signature"),
            ApiError::InsufficientStorage(_) => {
                (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
            }
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            ApiError::Stale { .. } => (StatusCode::CONFLICT, "stale_version"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match &self {
            ApiError::Unavailable(d) | ApiError::Internal(d) => {
                tracing::error!(code, detail = %d, "request failed")
            }
            _ => tracing::debug!(code, message = %self, "request refused"),
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message: self.to_string(),
            },
            existing_id: match &self {
                ApiError::Duplicate(id) => Some(id.0),
                _ => None,
            },
            failures: match &self {
                ApiError::Validation(f) => Some(f.clone()),
                _ => None,
            },
            current_version: match &self {
                ApiError::Stale { current, .. } => Some(*current),
                _ => None,
            },
        };
        let mut resp = (status, Json(body)).into_response();
        if matches!(
            self,
            ApiError::Busy(_)
                | ApiError::RateLimited(_)
                | ApiError::Unavailable(_)
                | ApiError::InsufficientStorage(_)
        ) {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(c) => ApiError::Conflict(format!("conflict on {c}")),
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::TooLarge { size, limit } => ApiError::TooLarge(format!(
                "the object is {size} bytes, over the limit of {limit} bytes"
            )),
            StorageError::Full => ApiError::InsufficientStorage(
                "the object store is out of space; nothing was stored, try again later".into(),
            ),
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::Storage(o) => o.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<SearchError> for ApiError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::Invalid(m) => ApiError::Invalid(m),
            SearchError::NotFound(what) => ApiError::NotFound(what),
            SearchError::Conflict(m) => ApiError::Conflict(m),
            SearchError::Unprocessable(m) => ApiError::Unprocessable(m),
            SearchError::Index(e) => ApiError::Unavailable(e.to_string()),
            SearchError::Busy => ApiError::Busy(SearchError::Busy.to_string()),
            SearchError::Store(e) => e.into(),
            SearchError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::Incomplete(m) => ApiError::UploadIncomplete(m),
            UploadError::Storage(e) => e.into(),
            UploadError::Blob(e) => e.into(),
            UploadError::Store(e) => e.into(),
        }
    }
}

impl From<SpoolError> for ApiError {
    fn from(e: SpoolError) -> Self {
        match e {
            SpoolError::TooLarge(_) => ApiError::TooLarge(e.to_string()),
            SpoolError::Full => ApiError::InsufficientStorage(
                "the server is out of disk space for uploads; nothing was stored, try again later"
                    .into(),
            ),
            SpoolError::Io(m) => ApiError::Internal(m),
        }
    }
}

impl From<crate::catalog::CatalogError> for ApiError {
    fn from(e: crate::catalog::CatalogError) -> Self {
        use crate::catalog::CatalogError as C;
        match e {
            C::Invalid(m) => ApiError::Invalid(m),
            C::Validation(f) => ApiError::Validation(f),
            C::Conflict(m) => ApiError::Conflict(m),
            C::Stale { given, current } => ApiError::Stale { given, current },
            C::Forbidden(m) => ApiError::Forbidden(m),
            C::NotFound(what) => ApiError::NotFound(what),
            C::Store(e) => e.into(),
        }
    }
}

impl From<FilterError> for ApiError {
    fn from(e: FilterError) -> Self {
        ApiError::Invalid(e.0)
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        ApiError::Invalid(e.0)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        match e {
            JsonRejection::MissingJsonContentType(_) => {
                ApiError::UnsupportedType("send the body as application/json".into())
            }
            JsonRejection::BytesRejection(_) => {
                ApiError::TooLarge("the JSON body is too large".into())
            }
            other => ApiError::Invalid(format!("bad JSON body: {}", other.body_text())),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::Invalid(format!("bad query string: {}", e.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::Invalid(format!("bad path: {}", e.body_text()))
    }
}

/// Result of handlers.
pub type ApiResult<T> = Result<T, ApiError>;
