//! Lifecycle routes: `POST /v1/access/batches` (edges push traffic), `GET /v1/cost` and
//! `POST /v1/cost/projection` (the bill), `GET /v1/tiering/plan` (what the policy would
//! move now), `POST /v1/images/{id}/restore` (archive restores).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::images::load_for;
use super::views::ErrorBody;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};
use crate::lifecycle::access::AccessBatch;
use crate::lifecycle::cost::{self, MonthProjection, ProjectionInput};
use crate::lifecycle::policy::{self, Plan};
use crate::lifecycle::report::{self, CostReport};
use crate::lifecycle::restore::{self, RestoreStatus};
use crate::state::AppState;
use crate::store::lifecycle::BatchOutcome;

/// `POST /v1/access/batches` (an `edge` key, or admin): records one batch of traffic an
/// edge counted. Idempotent by `batch_id`: a retried push answers `duplicate: true` and
/// counts nothing again.
#[utoipa::path(post, path = "/v1/access/batches", tag = "lifecycle", request_body = AccessBatch,
    responses((status = 200, body = BatchOutcome), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn push_access(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(batch): ApiJson<AccessBatch>,
) -> ApiResult<Json<BatchOutcome>> {
    if caller.role != Role::Edge && (caller.role != Role::Admin || caller.owner_scope.is_some()) {
        return Err(ApiError::Forbidden(
            "access statistics are pushed with an edge key (or an unscoped admin key)".into(),
        ));
    }
    let now = state.clock.now();
    let items = batch
        .check(state.cfg.access_max_batch_items, now)
        .map_err(|e| {
            state
                .metrics
                .access_batches
                .with_label_values(&["refused"])
                .inc();
            ApiError::Invalid(e.0)
        })?;
    let outcome = state
        .db
        .record_access(
            &batch.batch_id,
            &batch.edge,
            batch.edge_url.as_deref(),
            batch.period_end.date_naive(),
            batch.period_end,
            &items,
            i64::try_from(batch.dropped).unwrap_or(i64::MAX),
        )
        .await?;
    let label = if outcome.duplicate {
        "duplicate"
    } else {
        "recorded"
    };
    state
        .metrics
        .access_batches
        .with_label_values(&[label])
        .inc();
    Ok(Json(outcome))
}

/// A different policy to compare with in `GET /v1/cost` (unset fields keep the
/// configured ones).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WhatIfQuery {
    /// Images older than this many days may go cold.
    cold_after_days: Option<u32>,
    /// … with fewer than this many requests …
    cold_max_hits: Option<u64>,
    /// … in this many days.
    cold_window_days: Option<u32>,
}

/// `GET /v1/cost` (admin): storage by tier and kind, the last 30 days of traffic, the
/// monthly bill by line item, and the bill with the tiering policy applied (the configured
/// one, or the one the query gives) with its saving.
#[utoipa::path(get, path = "/v1/cost", tag = "lifecycle", params(WhatIfQuery),
    responses((status = 200, body = CostReport), (status = 403, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn cost_report(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<WhatIfQuery>,
) -> ApiResult<Json<CostReport>> {
    caller.require(Role::Admin)?;
    let mut tiering = state.cfg.tiering.clone();
    let p = &mut tiering.default_policy;
    p.enabled = true;
    if let Some(v) = q.cold_after_days {
        p.cold_after_days = v;
    }
    if let Some(v) = q.cold_max_hits {
        p.cold_max_hits = v;
    }
    if let Some(v) = q.cold_window_days {
        if v == 0 {
            return Err(ApiError::Invalid(
                "cold_window_days must be at least 1".into(),
            ));
        }
        p.cold_window_days = v;
    }
    let now = state.clock.now();
    Ok(Json(
        report::report(&state.db, &tiering, &state.cfg.prices, now).await?,
    ))
}

/// A projection: the bill month by month, and its sum.
#[derive(Debug, Serialize, ToSchema)]
pub struct Projection {
    /// The inputs, with defaults filled in.
    pub input: ProjectionInput,
    /// Month by month.
    pub months: Vec<MonthProjection>,
    /// Sum of the monthly totals.
    pub total: f64,
}

/// `POST /v1/cost/projection` (admin): plans a bill month by month from daily uploads,
/// sizes, storage class, views and CDN settings, at the configured prices.
#[utoipa::path(post, path = "/v1/cost/projection", tag = "lifecycle", request_body = ProjectionInput,
    responses((status = 200, body = Projection), (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn cost_projection(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(input): ApiJson<ProjectionInput>,
) -> ApiResult<Json<Projection>> {
    caller.require(Role::Admin)?;
    let months = cost::project(&input, &state.cfg.prices).map_err(|e| ApiError::Invalid(e.0))?;
    let total = months.iter().map(|m| m.bill.total).sum();
    Ok(Json(Projection {
        input,
        months,
        total,
    }))
}

/// Options of `GET /v1/tiering/plan`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PlanQuery {
    /// Most moves listed per direction (default 1000, at most 100000).
    limit: Option<usize>,
}

/// `GET /v1/tiering/plan` (admin): what the policy would move now and why; moves nothing.
#[utoipa::path(get, path = "/v1/tiering/plan", tag = "lifecycle", params(PlanQuery),
    responses((status = 200, body = Plan), (status = 403, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn tiering_plan(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PlanQuery>,
) -> ApiResult<Json<Plan>> {
    caller.require(Role::Admin)?;
    let limit = q.limit.unwrap_or(1000);
    if !(1..=100_000).contains(&limit) {
        return Err(ApiError::Invalid(
            "limit must be between 1 and 100000".into(),
        ));
    }
    let mut tiering = state.cfg.tiering.clone();
    tiering.default_policy.enabled = true;
    Ok(Json(
        policy::plan(&state.db, &tiering, state.clock.now(), Some(limit)).await?,
    ))
}

/// Where a restore stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct RestoreAnswer {
    /// `not_archived`, `restoring` or `restored`.
    pub status: RestoreStatus,
}

/// `POST /v1/images/{id}/restore` (uploader of the image's owner): asks for the image's
/// archived objects to be restored; once readable they move back to hot storage. 202 while
/// the restore runs, 200 when there is nothing (more) to wait for.
#[utoipa::path(post, path = "/v1/images/{id}/restore", tag = "lifecycle",
    params(("id" = String, Path, description = "Image id")),
    responses((status = 202, body = RestoreAnswer), (status = 200, body = RestoreAnswer),
        (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn restore_image(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<RestoreAnswer>)> {
    let img = load_for(&state, &caller, &id, Role::Uploader).await?;
    let status = restore::request(&state, img.id)
        .await
        .map_err(|e| match e {
            restore::RestoreError::Store(s) => ApiError::from(s),
            restore::RestoreError::Storage(s) => ApiError::from(s),
            restore::RestoreError::Key(k) => ApiError::Internal(k),
        })?;
    let code = if status == RestoreStatus::Restoring {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(RestoreAnswer { status })))
}
