//! Searches on a process without an index (`search.index = "forward"`) go to the process
//! that owns the embedded index, found through the owner's lease. The request is passed on
//! as it came (method, path, query, credentials, body) and the owner's answer returned as it
//! is, so both processes give the same results by construction.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;

use super::{Instance, Role};
use crate::error::ApiError;
use crate::state::AppState;

/// Marks a forwarded request, so that a misconfigured owner never forwards it again.
pub const FORWARDED: HeaderName = HeaderName::from_static("x-flexphoto-forwarded");

/// Headers passed on to the owner, and back from it.
const REQUEST_HEADERS: [HeaderName; 3] =
    [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT];
const RESPONSE_HEADERS: [HeaderName; 2] = [header::CONTENT_TYPE, header::RETRY_AFTER];

/// The owner's API URL, from its live lease.
async fn owner_url(state: &AppState) -> Result<String, ApiError> {
    let unavailable = |why: &str| {
        ApiError::Unavailable(format!(
            "search is answered by the process that owns the embedded index, and {why}; \
             it is taken over within cluster.lease_secs when a process with search.index = \
             \"embedded\" runs"
        ))
    };
    let lease = state
        .db
        .lease(Role::IndexOwner.as_str())
        .await?
        .ok_or_else(|| unavailable("no process owns it"))?;
    if !lease.live() {
        return Err(unavailable("its owner stopped renewing its lease"));
    }
    let owner = Instance::from_json(&lease.holder_info)
        .ok_or_else(|| unavailable("its owner's address is unreadable"))?;
    Ok(owner.url)
}

/// Passes `req` (bodies up to `max_body` bytes) to the index owner and returns its answer.
pub async fn forward(
    state: &AppState,
    req: Request,
    max_body: usize,
) -> Result<Response, ApiError> {
    if req.headers().contains_key(&FORWARDED) {
        return Err(ApiError::Unavailable(
            "a forwarded search reached a process without an index: the index owner's \
             cluster.advertise_url points at a forwarding process"
                .into(),
        ));
    }
    let base = owner_url(state).await?;
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let body = axum::body::to_bytes(body, max_body)
        .await
        .map_err(|_| ApiError::TooLarge(format!("the request is over {max_body} bytes")))?;
    let mut out = state
        .http
        .request(parts.method.clone(), format!("{base}{path}"))
        .header(FORWARDED, HeaderValue::from_static("1"))
        .body(body);
    for name in REQUEST_HEADERS {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name, v.clone());
        }
    }
    let answer = out.send().await.map_err(|e| {
        ApiError::Unavailable(format!(
            "forwarding the search to the index owner at {base}: {e}"
        ))
    })?;
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = Vec::new();
    for name in RESPONSE_HEADERS {
        if let Some(v) = answer.headers().get(name.as_str()) {
            if let Ok(v) = HeaderValue::from_bytes(v.as_bytes()) {
                headers.push((name, v));
            }
        }
    }
    let bytes = answer.bytes().await.map_err(|e| {
        ApiError::Unavailable(format!("reading the index owner's answer from {base}: {e}"))
    })?;
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    for (k, v) in headers {
        resp.headers_mut().insert(k, v);
    }
    Ok(resp)
}
