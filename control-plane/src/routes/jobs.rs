//! Jobs for operators: `GET /v1/jobs` (by state and kind) and `POST /v1/jobs/{id}/retry`
//! (a dead job back in the queue).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiPath, ApiQuery};
use super::views::ErrorBody;
use crate::auth::{Caller, Role};
use crate::domain::JobKind;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::dead_jobs::{JobRow, Retry};

/// Query of `GET /v1/jobs`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// `queued`, `running`, `done` or `dead` (default `dead`).
    state: Option<String>,
    /// Only this kind.
    kind: Option<String>,
    /// Page size, 1–200 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A page of jobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobPage {
    /// Most recently queued first.
    pub items: Vec<JobRow>,
    /// The next page's cursor; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /v1/jobs?state=dead&kind=…` (admin): jobs in one state, newest first, with their
/// last error.
#[utoipa::path(get, path = "/v1/jobs", tag = "operations", params(JobsQuery),
    responses((status = 200, body = JobPage), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list_jobs(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<JobsQuery>,
) -> ApiResult<Json<JobPage>> {
    caller.require(Role::Admin)?;
    let st = q.state.as_deref().unwrap_or("dead");
    if !matches!(st, "queued" | "running" | "done" | "dead") {
        return Err(ApiError::Invalid(
            "state must be queued, running, done or dead".into(),
        ));
    }
    if let Some(k) = &q.kind {
        k.parse::<JobKind>()?;
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::Invalid("limit must be between 1 and 200".into()));
    }
    let before = match &q.cursor {
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| ApiError::Invalid("cursor is not one this API gave".into()))?,
        ),
        None => None,
    };
    let items = state
        .db
        .list_jobs(st, q.kind.as_deref(), before, limit)
        .await?;
    let next_cursor = (items.len() == limit as usize)
        .then(|| items.last().map(|j| j.id.to_string()))
        .flatten();
    Ok(Json(JobPage { items, next_cursor }))
}

/// The job after a retry.
#[derive(Debug, Serialize, ToSchema)]
pub struct Retried {
    /// The job.
    pub id: i64,
    /// `queued`.
    pub state: String,
}

/// `POST /v1/jobs/{id}/retry` (admin): puts a dead job back in the queue with fresh attempts
/// (a failed image being processed goes back to `processing`). 409 when the job is not dead.
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "operations",
    params(("id" = i64, Path, description = "Job id")),
    responses((status = 200, body = Retried), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn retry_job(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Retried>> {
    caller.require(Role::Admin)?;
    match state.db.retry_dead_job(id).await? {
        Retry::Queued => {
            tracing::info!(job = id, actor = %caller.actor, "dead job queued again");
            Ok(Json(Retried {
                id,
                state: "queued".into(),
            }))
        }
        Retry::NotFound => Err(ApiError::NotFound("job")),
        Retry::NotDead => Err(ApiError::Conflict("only a dead job can be retried".into())),
    }
}
