//! Keys, queue stats, health and the OpenAPI document.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::{generate_key, Caller, Role};
use crate::error::{ApiError, ApiResult};
use crate::media::sha256_hex;
use crate::state::AppState;

/// Body of `POST /v1/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    name: String,
    role: String,
    owner: Option<String>,
}

/// `POST /v1/keys` (admin): creates a key; its secret is in this answer only.
pub async fn create_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(req): Json<CreateKey>,
) -> ApiResult<impl IntoResponse> {
    caller.require(Role::Admin)?;
    let role = Role::parse(&req.role)
        .ok_or_else(|| ApiError::Invalid("role must be admin, uploader or viewer".into()))?;
    if req.name.is_empty() || req.name.chars().count() > 200 {
        return Err(ApiError::Invalid("name must be 1 to 200 characters".into()));
    }
    if let Some(o) = &req.owner {
        super::uploads::check_owner(o)?;
    }
    let secret = generate_key();
    let row = state
        .db
        .insert_api_key(
            &req.name,
            &sha256_hex(secret.as_bytes()),
            role.name(),
            req.owner.as_deref(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "id": row.id, "key": secret, "name": row.name, "role": row.role, "owner": row.owner_scope }),
        ),
    ))
}

/// `DELETE /v1/keys/{id}` (admin): revokes a key.
pub async fn revoke_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin)?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound("key"))?;
    if state.db.revoke_api_key(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("key"))
    }
}

/// `GET /v1/jobs/stats` (admin): jobs by state, expired leases, queue age, images by status.
pub async fn job_stats(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Admin)?;
    let s = state.db.queue_stats().await?;
    Ok(Json(
        json!({ "backend": state.db.backend(), "workers": state.cfg.workers, "queue": s }),
    ))
}

/// `GET /metrics`: Prometheus text format (admin key; scrape with a bearer credential). Queue
/// and image counts are read from the database at each scrape.
pub async fn metrics(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<([(axum::http::HeaderName, &'static str); 1], String)> {
    caller.require(Role::Admin)?;
    let s = state.db.queue_stats().await?;
    state.metrics.set_queue(&s);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    ))
}

/// `GET /healthz` (open): the database answers.
pub async fn healthz(State(state): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    state.db.image_counts().await?;
    Ok(Json(
        json!({ "status": "ok", "database": state.db.backend() }),
    ))
}

/// `GET /openapi.json` (open).
pub async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../../openapi.json"),
    )
}
