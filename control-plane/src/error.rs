//! The API's one error type and its mapping to HTTP. Every error answers
//! `{"error": {"code": "...", "message": "..."}}` with a stable `code`; internal details are
//! logged, never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use uuid::Uuid;

use crate::blob::BlobError;
use crate::store::StoreError;
use flexphoto_edge::origin::OriginError;

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
    Duplicate(Uuid),
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
    /// A dependency (database, object store) failed; the text is logged only.
    #[error("service temporarily unavailable")]
    Unavailable(String),
    /// A bug; the text is logged only.
    #[error("internal error")]
    Internal(String),
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
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::UploadIncomplete(_) => (StatusCode::CONFLICT, "upload_incomplete"),
            ApiError::UnsupportedType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::BadSignature(_) => (StatusCode::FORBIDDEN, "bad_signature"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
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
        let mut body = json!({ "error": { "code": code, "message": self.to_string() } });
        if let ApiError::Duplicate(id) = &self {
            body["id"] = json!(id);
            body["existing_id"] = json!(id);
        }
        (status, Json(body)).into_response()
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

impl From<OriginError> for ApiError {
    fn from(e: OriginError) -> Self {
        match e {
            OriginError::TooLarge { size, limit } => ApiError::TooLarge(format!(
                "the object is {size} bytes, over the limit of {limit} bytes"
            )),
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::Origin(o) => o.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Result of handlers.
pub type ApiResult<T> = Result<T, ApiError>;
