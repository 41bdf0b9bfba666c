//! Reading request bodies without trusting the client's pace or sizes: every read waits at
//! most `server.upload_idle_timeout_secs` for the next piece, and text parts of a multipart
//! form are capped while they are read, not after.

use axum::body::{Body, Bytes};
use axum::extract::multipart::{Field, MultipartError};
use axum::extract::Multipart;
use http_body_util::BodyExt;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Largest text part of a multipart form (owner, caption, metadata, search fields…), bytes.
pub const MAX_TEXT_FIELD: usize = 64 << 10;

/// Waits for the next piece of a request body, refusing a client that goes quiet for
/// `server.upload_idle_timeout_secs` (a slow-body attack).
pub async fn idle_limit<T>(
    state: &AppState,
    next: impl std::future::Future<Output = T>,
) -> ApiResult<T> {
    tokio::time::timeout(state.cfg.upload_idle_timeout, next)
        .await
        .map_err(|_| {
            ApiError::Invalid(format!(
                "the request body sent nothing for {} s and was stopped",
                state.cfg.upload_idle_timeout.as_secs()
            ))
        })
}

/// A malformed multipart body as the API's error.
pub fn bad_multipart(e: MultipartError) -> ApiError {
    ApiError::Invalid(format!("bad multipart body: {}", e.body_text()))
}

/// The next part of a multipart form, under the idle limit (skipping the rest of an unread
/// part is reading too).
pub async fn next_field<'a>(
    state: &AppState,
    mp: &'a mut Multipart,
) -> ApiResult<Option<Field<'a>>> {
    idle_limit(state, mp.next_field())
        .await?
        .map_err(bad_multipart)
}

/// The next chunk of a part, under the idle limit.
pub async fn chunk(state: &AppState, field: &mut Field<'_>) -> ApiResult<Option<Bytes>> {
    idle_limit(state, field.chunk())
        .await?
        .map_err(bad_multipart)
}

/// A text part, read chunk by chunk under the idle limit and refused (413, naming the part)
/// as soon as it passes [`MAX_TEXT_FIELD`].
pub async fn text(state: &AppState, field: &mut Field<'_>) -> ApiResult<String> {
    let name = field.name().unwrap_or("").to_owned();
    let mut buf = Vec::new();
    while let Some(c) = chunk(state, field).await? {
        if buf.len() + c.len() > MAX_TEXT_FIELD {
            return Err(ApiError::TooLarge(format!(
                "the form field {name:?} is over {MAX_TEXT_FIELD} bytes"
            )));
        }
        buf.extend_from_slice(&c);
    }
    String::from_utf8(buf)
        .map_err(|_| ApiError::Invalid(format!("the form field {name:?} is not UTF-8 text")))
}

/// A whole body of at most `limit` bytes, each frame under the idle limit.
pub async fn bytes(state: &AppState, body: Body, limit: usize, what: &str) -> ApiResult<Bytes> {
    let mut body = body;
    let mut buf = Vec::new();
    while let Some(frame) = idle_limit(state, body.frame()).await? {
        let frame = frame.map_err(|e| frame_error(&e, what, limit))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(too_large(what, limit));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}

/// A body that failed mid-read: over the route's limit (413) or broken off (400).
fn frame_error(e: &axum::Error, what: &str, limit: usize) -> ApiError {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if s.is::<http_body_util::LengthLimitError>() {
            return too_large(what, limit);
        }
        src = s.source();
    }
    ApiError::Invalid(format!("reading the {what} failed: {e}"))
}

fn too_large(what: &str, limit: usize) -> ApiError {
    ApiError::TooLarge(format!("the {what} is over {limit} bytes"))
}
