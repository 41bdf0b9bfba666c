//! Operations: queue statistics, health, metrics and the OpenAPI document.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::views::ErrorBody;
use crate::auth::{Caller, Role};
use crate::error::ApiResult;
use crate::state::AppState;
use crate::store::jobs::QueueStats;

/// The queue and the images, counted.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobStats {
    /// `postgres` or `sqlite`.
    pub backend: String,
    /// Jobs this process runs at once.
    pub workers: u32,
    /// Counts.
    pub queue: QueueStats,
}

/// `GET /v1/jobs/stats` (admin): jobs by state and kind, expired leases, queue age, images by
/// status.
#[utoipa::path(get, path = "/v1/jobs/stats", tag = "operations",
    responses((status = 200, body = JobStats), (status = 403, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn job_stats(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<JobStats>> {
    caller.require(Role::Admin)?;
    let queue = state.db.queue_stats().await?;
    Ok(Json(JobStats {
        backend: state.db.backend().to_owned(),
        workers: state.cfg.workers,
        queue,
    }))
}

/// A deployment-wide role and the process holding it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoleHolder {
    /// `index-owner`, `sweeper`, `reconcile`, `reembed` …
    pub role: String,
    /// The holding process (`null` when its description is unreadable).
    pub holder: Option<crate::cluster::Instance>,
    /// Whether the lease is in force (a lapsed one is taken by the next process to ask).
    pub live: bool,
    /// Whether this process (the one answering) holds it.
    pub held_here: bool,
    /// When the holder took it.
    pub acquired_at: chrono::DateTime<chrono::Utc>,
    /// Seconds since the holder last renewed it.
    pub renewed_secs_ago: f64,
    /// Seconds until it lapses unless renewed (negative: lapsed).
    pub expires_in_secs: f64,
}

/// The processes of a deployment as this one sees them.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterView {
    /// The process answering.
    pub this: crate::cluster::Instance,
    /// Every role taken so far, by name.
    pub roles: Vec<RoleHolder>,
    /// The edges known from their access-statistics pushes, most recent first.
    pub edges: Vec<crate::store::lifecycle::EdgeRow>,
}

/// `GET /v1/cluster` (admin): which process holds each deployment-wide role (the embedded
/// index's owner and the schedulers), and since when.
#[utoipa::path(get, path = "/v1/cluster", tag = "operations",
    responses((status = 200, body = ClusterView), (status = 403, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn cluster(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<ClusterView>> {
    caller.require(Role::Admin)?;
    let roles = state
        .db
        .all_leases()
        .await?
        .into_iter()
        .map(|l| {
            let holder = crate::cluster::Instance::from_json(&l.holder_info);
            RoleHolder {
                held_here: holder.as_ref().is_some_and(|h| h.id == state.instance.id),
                holder,
                live: l.live(),
                role: l.name.clone(),
                acquired_at: chrono::DateTime::from_timestamp_millis(l.acquired_at)
                    .unwrap_or_default(),
                renewed_secs_ago: (l.now - l.renewed_at) as f64 / 1000.0,
                expires_in_secs: (l.expires_at - l.now) as f64 / 1000.0,
            }
        })
        .collect();
    Ok(Json(ClusterView {
        this: state.instance.clone(),
        roles,
        edges: state.db.edges().await?,
    }))
}

/// `GET /metrics` (admin key; scrape with a bearer credential): Prometheus text format. Queue
/// and image counts are read from the database at each scrape.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 403, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn metrics(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<impl IntoResponse> {
    caller.require(Role::Admin)?;
    let s = state.db.queue_stats().await?;
    state.metrics.set_queue(&s);
    super::review::refresh_metrics(&state).await?;
    state.metrics.set_storage(&state.db.storage_usage().await?);
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    ))
}

/// Health.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// `postgres` or `sqlite`.
    pub database: String,
}

/// `GET /healthz` (open): the database answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
pub async fn healthz(State(state): State<Arc<AppState>>) -> ApiResult<Json<Health>> {
    state.db.image_counts().await?;
    Ok(Json(Health {
        status: "ok".into(),
        database: state.db.backend().to_owned(),
    }))
}

/// `GET /openapi.json` (open): this API's OpenAPI 3.1 document, generated from the handlers'
/// request and response types.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi::ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|_| "{}".into()),
    )
}
