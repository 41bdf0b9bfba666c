//! `GET /v1/storage/history`: stored bytes and objects by tier and kind, a snapshot a day.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::ApiQuery;
use super::views::ErrorBody;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};
use crate::lifecycle::history::{by_tier, TierTotal, MAX_DAYS};
use crate::state::AppState;
use crate::store::lifecycle::StorageUsage;

/// Query of `GET /v1/storage/history`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Today and the days before it, 1–3650 (default 90).
    #[param(minimum = 1, maximum = 3650)]
    days: Option<u32>,
}

/// Storage by tier over time.
#[derive(Debug, Serialize, ToSchema)]
pub struct StorageHistory {
    /// The days asked for (today, UTC, and the ones before it).
    pub days: u32,
    /// Days snapshots are kept (`storage_history.retention_days`).
    pub retention_days: u32,
    /// One per recorded day, oldest first; a day the tiering pass did not run is missing.
    pub items: Vec<DayStorage>,
}

/// One day's snapshot.
#[derive(Debug, Serialize, ToSchema)]
pub struct DayStorage {
    /// The UTC day.
    pub day: NaiveDate,
    /// When the snapshot was taken.
    pub recorded_at: DateTime<Utc>,
    /// Bytes and objects by tier, all kinds together.
    pub tiers: Vec<TierTotal>,
    /// By tier and kind, as `GET /v1/cost` gives `storage`.
    pub usage: Vec<StorageUsage>,
}

/// `GET /v1/storage/history?days=N` (admin, not owner-scoped: it covers every owner): the
/// bytes and objects stored by tier and kind, as recorded once a day by the tiering pass,
/// oldest day first.
#[utoipa::path(get, path = "/v1/storage/history", tag = "lifecycle", params(HistoryQuery),
    responses((status = 200, body = StorageHistory), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn storage_history(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<StorageHistory>> {
    caller.require(Role::Admin)?;
    if caller.owner_scope.is_some() {
        return Err(ApiError::Forbidden(
            "the storage history covers every owner: use an admin key without an owner scope"
                .into(),
        ));
    }
    let days = q.days.unwrap_or(90);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ApiError::Invalid(format!(
            "days must be between 1 and {MAX_DAYS}"
        )));
    }
    let today = state.clock.now().date_naive();
    let since = today - Duration::days(i64::from(days) - 1);
    let items = state
        .db
        .storage_snapshots_since(since)
        .await?
        .into_iter()
        .map(|s| DayStorage {
            day: s.day,
            recorded_at: s.recorded_at,
            tiers: by_tier(&s.usage),
            usage: s.usage,
        })
        .collect();
    Ok(Json(StorageHistory {
        days,
        retention_days: state.cfg.storage_history.retention_days,
        items,
    }))
}
