//! Reading and editing images: `GET /v1/images/{id}`, `GET /v1/images?owner=…`,
//! `PATCH /v1/images/{id}`, `DELETE /v1/images/{id}`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::{Caller, Role};
use crate::blob;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::images::{status, ImagePatch, ImageRow, ListFilter};
use crate::store::search::review;

/// Parses an image id from a path segment.
pub fn parse_id(s: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(s).map_err(|_| ApiError::NotFound("image"))
}

/// An edge URL for `key` with `query` options, signed when the edge has keys.
fn edge_url(state: &AppState, key: &str, query: &str) -> String {
    let path = if query.is_empty() {
        format!("/img/{}", encode_key(key))
    } else {
        format!("/img/{}?{query}", encode_key(key))
    };
    let path = if state.edge_signer.enabled() {
        match state.edge_signer.sign_path(&path, state.cfg.max_dimension) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "could not sign an edge URL");
                path
            }
        }
    } else {
        path
    };
    format!("{}{path}", state.cfg.edge_public_url)
}

fn encode_key(key: &str) -> String {
    key.split('/')
        .map(|seg| {
            seg.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The public JSON view of an image.
pub fn view(state: &AppState, img: &ImageRow) -> Value {
    let ready = img.status == status::READY;
    let variants: serde_json::Map<String, Value> = if ready {
        img.variant_keys
            .0
            .iter()
            .map(|(name, key)| (name.clone(), Value::String(edge_url(state, key, ""))))
            .collect()
    } else {
        serde_json::Map::new()
    };
    let (original_url, sizes) = if ready {
        let sized = |w: u32| edge_url(state, &img.original_key, &format!("w={w}"));
        (
            Value::String(edge_url(state, &img.original_key, "")),
            json!({ "320": sized(320), "640": sized(640), "1280": sized(1280), "1920": sized(1920) }),
        )
    } else {
        (Value::Null, Value::Null)
    };
    json!({
        "id": img.id,
        "owner": img.owner,
        "status": img.status,
        "error": img.error,
        "attempts": img.attempts,
        "uploaded_at": img.uploaded_at,
        "processed_at": img.processed_at,
        "bytes": img.bytes.or(img.declared_bytes),
        "sha256": img.sha256,
        "mime": img.mime.clone().unwrap_or_else(|| img.declared_mime.clone()),
        "format": img.format,
        "width": img.width,
        "height": img.height,
        "storage_tier": img.storage_tier,
        "phash": img.phash.map(|p| format!("{:016x}", p as u64)),
        "caption": img.caption,
        "tags": img.tags.0,
        "camera_make": img.camera_make,
        "camera_model": img.camera_model,
        "lens": img.lens,
        "taken_at": img.taken_at,
        "iso": img.iso,
        "exposure_time": img.exposure_time,
        "f_number": img.f_number,
        "focal_length": img.focal_length,
        "gps": match (img.gps_lat, img.gps_lon) {
            (Some(lat), Some(lon)) => json!({ "lat": lat, "lon": lon }),
            _ => Value::Null,
        },
        "orientation": img.orientation,
        "exif": img.exif.as_ref().map(|e| e.0.clone()),
        "keys": { "original": img.original_key, "variants": img.variant_keys.0 },
        "variants": variants,
        "original_url": original_url,
        "sized_urls": sizes,
        "url_template": if ready {
            Value::String(format!("{}/img/{}?w={{width}}&h={{height}}&fit=cover", state.cfg.edge_public_url, encode_key(&img.original_key)))
        } else {
            Value::Null
        },
    })
}

/// Loads an image and checks the caller may act on it with `role`.
pub async fn load_for(
    state: &AppState,
    caller: &Caller,
    id: &str,
    role: Role,
) -> ApiResult<ImageRow> {
    caller.require(role)?;
    let id = parse_id(id)?;
    let img = state
        .db
        .get_image(id)
        .await?
        .ok_or(ApiError::NotFound("image"))?;
    // A scoped key learns nothing about other owners' images: same answer as a missing one.
    if caller
        .owner_scope
        .as_deref()
        .is_some_and(|s| s != img.owner)
    {
        return Err(ApiError::NotFound("image"));
    }
    Ok(img)
}

/// `GET /v1/images/{id}`.
pub async fn get_image(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let img = load_for(&state, &caller, &id, Role::Viewer).await?;
    Ok(Json(view(&state, &img)))
}

/// Query of `GET /v1/images`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    owner: Option<String>,
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    camera: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

fn parse_time(name: &str, v: &str) -> ApiResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::Invalid(format!(
                "{name} must be an RFC 3339 time such as 2026-01-31T00:00:00Z"
            ))
        })
}

fn encode_cursor(t: DateTime<Utc>, id: Uuid) -> String {
    format!("{}_{}", t.timestamp_micros(), id.simple())
}

fn decode_cursor(c: &str) -> ApiResult<(DateTime<Utc>, Uuid)> {
    let bad = || ApiError::Invalid("cursor is not one this API returned".into());
    let (t, id) = c.split_once('_').ok_or_else(bad)?;
    let t = DateTime::from_timestamp_micros(t.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    Ok((t, Uuid::parse_str(id).map_err(|_| bad())?))
}

/// A page of images.
#[derive(Debug, Serialize)]
pub struct Page {
    items: Vec<Value>,
    next_cursor: Option<String>,
}

/// `GET /v1/images?owner=…&status=…&since=…&until=…&camera=…&limit=…&cursor=…`: newest first.
pub async fn list_images(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page>> {
    let owner = match (q.owner, &caller.owner_scope) {
        (Some(o), _) => o,
        (None, Some(s)) => s.clone(),
        (None, None) => return Err(ApiError::Invalid("owner is required".into())),
    };
    caller.require_owner(Role::Viewer, &owner)?;
    if let Some(s) = &q.status {
        if ![
            status::UPLOADING,
            status::PROCESSING,
            status::READY,
            status::FAILED,
        ]
        .contains(&s.as_str())
        {
            return Err(ApiError::Invalid(
                "status must be uploading, processing, ready or failed".into(),
            ));
        }
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::Invalid("limit must be between 1 and 200".into()));
    }
    let filter = ListFilter {
        status: q.status,
        since: q
            .since
            .as_deref()
            .map(|v| parse_time("since", v))
            .transpose()?,
        until: q
            .until
            .as_deref()
            .map(|v| parse_time("until", v))
            .transpose()?,
        camera: q.camera.filter(|c| !c.is_empty()),
        after: q.cursor.as_deref().map(decode_cursor).transpose()?,
        limit: limit + 1,
    };
    let mut rows = state.db.list_images(&owner, &filter).await?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|r| encode_cursor(r.uploaded_at, r.id))
    } else {
        None
    };
    Ok(Json(Page {
        items: rows.iter().map(|r| view(&state, r)).collect(),
        next_cursor,
    }))
}

/// `PATCH /v1/images/{id}` with `{"caption": string|null, "tags": [string], "review_state":
/// string, "reason": string}`; absent fields are left as they are. Every change is kept in the
/// image's history (`GET /v1/images/{id}/history`).
pub async fn patch_image(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let img = load_for(&state, &caller, &id, Role::Uploader).await?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::Invalid(format!("body must be JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::Invalid("body must be a JSON object".into()))?;
    for k in obj.keys() {
        if !["caption", "tags", "review_state", "reason"].contains(&k.as_str()) {
            return Err(ApiError::Invalid(format!(
                "{k} cannot be changed; only caption, tags, review_state (with a reason) can"
            )));
        }
    }
    let review_state = match obj.get("review_state") {
        None => None,
        Some(Value::String(s)) if review::ALL.contains(&s.as_str()) => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::Invalid(format!(
                "review_state must be one of {}",
                review::ALL.join(", ")
            )))
        }
    };
    let reason = match obj.get("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= 2000 => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::Invalid(
                "reason must be a string of at most 2000 characters".into(),
            ))
        }
    };
    let caption = match obj.get("caption") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(s)) if s.chars().count() <= 2000 => Some(Some(s.clone())),
        Some(_) => {
            return Err(ApiError::Invalid(
                "caption must be a string of at most 2000 characters, or null".into(),
            ))
        }
    };
    let tags = match obj.get("tags") {
        None => None,
        Some(Value::Array(a)) if a.len() <= 100 => Some(
            a.iter()
                .map(|t| match t {
                    Value::String(s) if !s.is_empty() && s.chars().count() <= 100 => Ok(s.clone()),
                    _ => Err(ApiError::Invalid(
                        "each tag must be a string of 1 to 100 characters".into(),
                    )),
                })
                .collect::<ApiResult<Vec<_>>>()?,
        ),
        Some(_) => {
            return Err(ApiError::Invalid(
                "tags must be an array of at most 100 strings".into(),
            ))
        }
    };
    let patch = ImagePatch {
        caption,
        tags,
        review_state,
        reason,
        max_attempts: state.cfg.max_attempts,
    };
    state.db.patch_image(img.id, &patch, &caller.actor).await?;
    let img = state
        .db
        .get_image(img.id)
        .await?
        .ok_or(ApiError::NotFound("image"))?;
    Ok(Json(view(&state, &img)))
}

/// `GET /v1/images/{id}/url?w=…&h=…&fit=…&fmt=…&q=…`: an edge URL for any size and format
/// the edge understands, signed when the edge has signing keys. Options are checked with the
/// edge's own grammar, so a URL this returns is one the edge accepts.
pub async fn sized_url(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> ApiResult<Json<Value>> {
    let img = load_for(&state, &caller, &id, Role::Viewer).await?;
    if img.status != status::READY {
        return Err(ApiError::Conflict(format!(
            "the image is {}, not ready",
            img.status
        )));
    }
    let query = query.unwrap_or_default();
    let opts = flexphoto_edge::url::options::parse_pairs(&query, '&', state.cfg.max_dimension)
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    if opts.signature.is_some() || opts.expires.is_some() {
        return Err(ApiError::Invalid(
            "sig and exp are set by the server".into(),
        ));
    }
    Ok(Json(
        json!({ "url": edge_url(&state, &img.original_key, &query) }),
    ))
}

/// `DELETE /v1/images/{id}`: removes the rows, the vectors, the original and the variants,
/// and asks the edge to purge its caches.
pub async fn delete_image(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let img = load_for(&state, &caller, &id, Role::Uploader).await?;
    let Some(img) = state.db.delete_image(img.id).await? else {
        return Err(ApiError::NotFound("image"));
    };
    if let Some(search) = &state.search {
        if let Err(e) = search.index.delete(&[img.id]).await {
            tracing::warn!(image = %img.id, error = %e, "deleting vectors failed; `flexphoto reconcile` removes them");
        }
    }
    let mut keys = vec![img.original_key.clone()];
    keys.extend(img.variant_keys.0.values().cloned());
    for k in &keys {
        match blob::key(k) {
            Ok(key) => {
                if let Err(e) = state.blobs.store().delete(&key).await {
                    tracing::warn!(key = %k, error = %e, "deleting an object failed");
                }
            }
            Err(e) => tracing::warn!(key = %k, error = %e, "bad stored key"),
        }
    }
    crate::edge_client::purge(&state, &keys).await;
    Ok(StatusCode::NO_CONTENT)
}
