//! Search and review routes: `POST /v1/search`, `GET /v1/images/{id}/duplicates`,
//! `GET /v1/duplicates`, `GET /v1/images/{id}/history`.

use std::sync::Arc;

use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::header;
use axum::Json;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};
use crate::routes::images::{load_for, view};
use crate::search::{self, SearchRequest};
use crate::state::AppState;

/// Largest query image accepted by `POST /v1/search`.
const MAX_QUERY_IMAGE: usize = 32 << 20;

/// `POST /v1/search`: JSON (`text` or `like_image_id`, filters, `limit`, `cursor`, `sort`), or
/// `multipart/form-data` with an `image` (or `file`) part for a reverse-image search and the
/// same fields as text parts (`tags` comma-separated or repeated).
pub async fn search(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    req: Request,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let (body, image) = if ct.starts_with("multipart/form-data") {
        let mp = Multipart::from_request(req, &state)
            .await
            .map_err(|e| ApiError::Invalid(format!("bad multipart body: {}", e.body_text())))?;
        read_form(mp).await?
    } else if ct.starts_with("application/json") || ct.is_empty() {
        let bytes = axum::body::to_bytes(req.into_body(), state.cfg.max_json_bytes)
            .await
            .map_err(|_| ApiError::TooLarge("the JSON body is too large".into()))?;
        let v: SearchRequest = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::Invalid(format!("bad JSON body: {e}")))?;
        (v, None)
    } else {
        return Err(ApiError::UnsupportedType(
            "send application/json, or multipart/form-data with an image part".into(),
        ));
    };
    Ok(Json(search::run(&state, &caller, body, image).await?))
}

async fn read_form(mut mp: Multipart) -> ApiResult<(SearchRequest, Option<Bytes>)> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::Invalid(format!("bad multipart body: {}", e.body_text()))
    };
    let mut fields = Map::new();
    let mut tags: Vec<Value> = Vec::new();
    let mut image: Option<Bytes> = None;
    while let Some(mut field) = mp.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or("").to_owned();
        match name.as_str() {
            "image" | "file" => {
                if image.is_some() {
                    return Err(ApiError::Invalid("send one query image".into()));
                }
                let mut buf = BytesMut::new();
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    if buf.len() + chunk.len() > MAX_QUERY_IMAGE {
                        return Err(ApiError::TooLarge(format!(
                            "the query image is over {MAX_QUERY_IMAGE} bytes"
                        )));
                    }
                    buf.extend_from_slice(&chunk);
                }
                if buf.is_empty() {
                    return Err(ApiError::Invalid("the query image is empty".into()));
                }
                image = Some(buf.freeze());
            }
            "tags" => {
                let text = field.text().await.map_err(bad)?;
                tags.extend(
                    text.split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(|t| Value::String(t.to_owned())),
                );
            }
            "limit" => {
                let text = field.text().await.map_err(bad)?;
                let n: u32 = text
                    .trim()
                    .parse()
                    .map_err(|_| ApiError::Invalid("limit must be a whole number".into()))?;
                fields.insert(name, json!(n));
            }
            "min_score" => {
                let text = field.text().await.map_err(bad)?;
                let n: f32 = text
                    .trim()
                    .parse()
                    .map_err(|_| ApiError::Invalid("min_score must be a number".into()))?;
                fields.insert(name, json!(n));
            }
            _ => {
                let text = field.text().await.map_err(bad)?;
                fields.insert(name, Value::String(text.trim().to_owned()));
            }
        }
    }
    if !tags.is_empty() {
        fields.insert("tags".into(), Value::Array(tags));
    }
    let req: SearchRequest = serde_json::from_value(Value::Object(fields))
        .map_err(|e| ApiError::Invalid(format!("bad form field: {e}")))?;
    Ok((req, image))
}

/// `GET /v1/images/{id}/duplicates`: the near-duplicates found for an image, closest first.
pub async fn duplicates_of(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let img = load_for(&state, &caller, &id, Role::Viewer).await?;
    let pairs = state.db.duplicates_of(img.id).await?;
    let others: Vec<uuid::Uuid> = pairs.iter().map(|p| p.other_id).collect();
    let rows = state.db.get_images(&others).await?;
    let items: Vec<Value> = pairs
        .iter()
        .map(|p| {
            let other = rows.iter().find(|r| r.id == p.other_id);
            json!({
                "id": p.other_id,
                "method": p.method,
                "distance": p.distance,
                "found_at": p.found_at,
                "status": other.map(|r| r.status.clone()),
                "variants": other.map(|r| view(&state, r)["variants"].clone()),
            })
        })
        .collect();
    Ok(Json(json!({ "id": img.id, "duplicates": items })))
}

/// Query of `GET /v1/duplicates`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DuplicatesQuery {
    owner: Option<String>,
    limit: Option<u32>,
    before: Option<DateTime<Utc>>,
}

/// `GET /v1/duplicates?owner=…&limit=…&before=…`: near-duplicate pairs for review, newest
/// first, each pair once (`before` is the `found_at` of the last pair seen).
pub async fn list_duplicates(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<DuplicatesQuery>,
) -> ApiResult<Json<Value>> {
    let owner = match (q.owner, &caller.owner_scope) {
        (Some(o), _) => Some(o),
        (None, Some(s)) => Some(s.clone()),
        (None, None) => None,
    };
    match &owner {
        Some(o) => caller.require_owner(Role::Viewer, o)?,
        None => caller.require(Role::Viewer)?,
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::Invalid("limit must be between 1 and 500".into()));
    }
    let pairs = state
        .db
        .list_duplicates(owner.as_deref(), limit, q.before)
        .await?;
    let next = (pairs.len() == limit as usize)
        .then(|| pairs.last().map(|p| p.found_at))
        .flatten();
    let items: Vec<Value> = pairs
        .iter()
        .map(|p| {
            json!({
                "image_id": p.image_id,
                "other_id": p.other_id,
                "method": p.method,
                "distance": p.distance,
                "owner": p.owner,
                "found_at": p.found_at,
            })
        })
        .collect();
    Ok(Json(json!({ "pairs": items, "next_before": next })))
}

/// `GET /v1/images/{id}/history`: every recorded change (who, when, why), oldest first, and
/// the current review state with the reason it was routed there.
pub async fn history(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let img = load_for(&state, &caller, &id, Role::Viewer).await?;
    let rows = state.db.history_of(img.id).await?;
    Ok(Json(json!({
        "id": img.id,
        "review_state": img.review_state,
        "review_reason": img.review_reason,
        "history": rows,
    })))
}
