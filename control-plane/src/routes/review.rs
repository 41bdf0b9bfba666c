//! The review queue: `GET /v1/review/queue` (items waiting, each with why, oldest first or by
//! priority), `POST /v1/review/decisions` (bulk approve, reject, request changes, publish,
//! acknowledge, confirm suggested tags; each item with the version the reviewer saw, so two
//! reviewers cannot overwrite each other: a stale one gets 409), `GET /v1/review/metrics`
//! (waiting count and age by reason), and `GET /v1/rights/expiring` (rights ending soon).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::extract::{ApiJson, ApiQuery};
use super::images::requested_owner;
use super::views::{edge_url, ErrorBody, Page};
use crate::auth::{Caller, Role};
use crate::catalog::corrections;
use crate::catalog::review::ReasonView;
use crate::domain::{ImageId, ReasonKind, WorkflowState};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::catalog::{QueueOrder, QueueStat};

/// Query of `GET /v1/review/queue`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct QueueQuery {
    /// Only this owner's images (a scoped key implies its own).
    owner: Option<String>,
    /// Only this collection (id or name).
    collection: Option<String>,
    /// Only images with an open reason of this kind (`validation`, `near_duplicate`,
    /// `low_confidence`, `rights_ending`, `suggested_tags`, `submitted`, `legacy`).
    reason: Option<String>,
    /// `oldest` (default: longest waiting first) or `priority`.
    sort: Option<String>,
    /// Page size, 1–200 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// An image waiting for review.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueItem {
    /// The image.
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    /// Its owner.
    pub owner: String,
    /// Its workflow state.
    pub workflow_state: String,
    /// Its version: send it back with the decision.
    pub version: i64,
    /// In the queue since.
    pub queued_at: DateTime<Utc>,
    /// Seconds waiting.
    pub waiting_secs: i64,
    /// Highest priority among its reasons.
    pub priority: i32,
    /// Why it is here.
    pub reasons: Vec<ReasonView>,
    /// Its caption.
    pub caption: Option<String>,
    /// Its keywords.
    pub keywords: Vec<String>,
    /// A thumbnail on the edge (ready images).
    pub thumb: Option<String>,
}

fn queue_cursor(order: QueueOrder, prio: i32, t: DateTime<Utc>, id: Uuid) -> String {
    match order {
        QueueOrder::Oldest => format!("qo{}_{}", t.timestamp_micros(), id.simple()),
        QueueOrder::Priority => format!("qp{prio}_{}_{}", t.timestamp_micros(), id.simple()),
    }
}

fn decode_queue_cursor(order: QueueOrder, c: &str) -> Option<(i32, DateTime<Utc>, Uuid)> {
    let bad = || None;
    match order {
        QueueOrder::Oldest => {
            let (t, id) = c.strip_prefix("qo")?.split_once('_')?;
            Some((
                0,
                DateTime::from_timestamp_micros(t.parse().ok()?)?,
                Uuid::parse_str(id).ok()?,
            ))
        }
        QueueOrder::Priority => {
            let mut p = c.strip_prefix("qp")?.splitn(3, '_');
            let (pr, t, id) = (p.next()?, p.next()?, p.next()?);
            if pr.is_empty() {
                return bad();
            }
            Some((
                pr.parse().ok()?,
                DateTime::from_timestamp_micros(t.parse().ok()?)?,
                Uuid::parse_str(id).ok()?,
            ))
        }
    }
}

/// `GET /v1/review/queue`: images waiting for review, each with every reason (validation
/// failures, near-duplicate of X with distance, low classifier confidence, rights ending,
/// model-suggested tags, submitted), oldest first or by priority; keyset-paged.
#[utoipa::path(get, path = "/v1/review/queue", tag = "review", params(QueueQuery),
    responses((status = 200, body = Page<QueueItem>), (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn queue(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<QueueQuery>,
) -> ApiResult<Json<Page<QueueItem>>> {
    let owner = requested_owner(&caller, q.owner.as_deref())?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::Invalid("limit must be between 1 and 200".into()));
    }
    let order = match q.sort.as_deref().unwrap_or("oldest") {
        "oldest" => QueueOrder::Oldest,
        "priority" => QueueOrder::Priority,
        other => {
            return Err(ApiError::Invalid(format!(
                "sort must be oldest or priority, not {other:?}"
            )))
        }
    };
    let collection = match q.collection.as_deref() {
        None => None,
        Some(c) => {
            let raw = super::catalog::RawCatalogFilter {
                collection: Some(c.to_owned()),
                ..Default::default()
            };
            super::catalog::catalog_filter(&state, &caller, owner.as_ref(), raw)
                .await?
                .collection
        }
    };
    let kind = q
        .reason
        .as_deref()
        .map(str::parse::<ReasonKind>)
        .transpose()?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| {
            decode_queue_cursor(order, c)
                .ok_or_else(|| ApiError::Invalid("cursor is not one this API returned".into()))
        })
        .transpose()?;
    let mut rows = state
        .db
        .review_queue(owner.as_ref(), collection, kind, order, after, limit + 1)
        .await?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last()
            .map(|r| queue_cursor(order, r.review_priority, r.queued_at, r.image.id.0))
    } else {
        None
    };
    let ids: Vec<ImageId> = rows.iter().map(|r| r.image.id).collect();
    let reasons = state.db.open_reasons(&ids).await?;
    let now = crate::store::now();
    let items = rows
        .into_iter()
        .map(|r| {
            let img = &r.image;
            QueueItem {
                id: img.id.0,
                owner: img.owner.as_str().to_owned(),
                workflow_state: r.workflow.as_str().to_owned(),
                version: i64::from(r.catalog_version),
                queued_at: r.queued_at,
                waiting_secs: (now - r.queued_at).num_seconds().max(0),
                priority: r.review_priority,
                reasons: reasons
                    .iter()
                    .filter(|x| x.image_id == img.id)
                    .map(|x| ReasonView {
                        id: x.id,
                        kind: x.kind.as_str().to_owned(),
                        summary: crate::catalog::review::summary(x.kind, &x.detail.0),
                        detail: x.detail.0.clone(),
                        priority: x.priority,
                        since: x.created_at,
                    })
                    .collect(),
                caption: img.caption.clone(),
                keywords: img.tags.0.clone(),
                thumb: img
                    .variant_keys
                    .0
                    .get("thumb")
                    .filter(|_| img.status == crate::domain::ImageStatus::Ready)
                    .map(|k| edge_url(&state, k, "")),
            }
        })
        .collect();
    Ok(Json(Page { items, next_cursor }))
}

/// One image of a bulk decision.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionItem {
    /// The image.
    #[schema(value_type = String, format = Uuid)]
    pub id: ImageId,
    /// The version the reviewer saw; a stale one gets 409 for this item.
    pub version: i64,
}

/// Body of `POST /v1/review/decisions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decisions {
    /// `approve`, `reject`, `request_changes`, `publish`, `withdraw`, `reopen`,
    /// `acknowledge` (resolve the reasons without a transition) or `accept_suggestions`
    /// (confirm the model's suggested tags).
    pub action: String,
    /// Why (kept in each image's history).
    pub reason: Option<String>,
    /// The images (1–200).
    pub items: Vec<DecisionItem>,
}

/// The outcome of one item.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionResult {
    /// The image.
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    /// HTTP status for this item (200, 403, 404, 409).
    pub status: u16,
    /// `ok` or the error code (`stale_version`, `conflict`, `forbidden`, `not_found`).
    pub code: String,
    /// Its version after the decision (or now, when stale).
    pub version: Option<i64>,
    /// What went wrong.
    pub message: Option<String>,
}

/// The outcome of a bulk decision.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionResults {
    /// One per item, in order.
    pub results: Vec<DecisionResult>,
    /// Items decided.
    pub succeeded: usize,
    /// Items refused.
    pub failed: usize,
}

/// `POST /v1/review/decisions`: the same decision on many images. Each item is its own
/// transaction and carries the version the reviewer saw: a stale one is refused (409) and
/// the others go through. 200 when every item succeeded, 207 when some did not (each item
/// says why).
#[utoipa::path(post, path = "/v1/review/decisions", tag = "review", request_body = Decisions,
    responses((status = 200, body = DecisionResults),
        (status = 207, description = "Some items were refused", body = DecisionResults),
        (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn decisions(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<Decisions>,
) -> ApiResult<Response> {
    caller.require(Role::Uploader)?;
    if body.items.is_empty() || body.items.len() > 200 {
        return Err(ApiError::Invalid("items must hold 1 to 200 images".into()));
    }
    if body
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > 2000)
    {
        return Err(ApiError::Invalid(
            "reason must be at most 2000 characters".into(),
        ));
    }
    let target = match body.action.as_str() {
        "approve" => Some(WorkflowState::Approved),
        "reject" => Some(WorkflowState::Rejected),
        "request_changes" => Some(WorkflowState::ChangesRequested),
        "publish" => Some(WorkflowState::Published),
        "withdraw" => Some(WorkflowState::Withdrawn),
        "reopen" => Some(WorkflowState::InReview),
        "acknowledge" | "accept_suggestions" => None,
        other => {
            return Err(ApiError::Invalid(format!(
                "action must be approve, reject, request_changes, publish, withdraw, reopen, acknowledge or accept_suggestions, not {other:?}"
            )))
        }
    };
    let mut results = Vec::with_capacity(body.items.len());
    for it in &body.items {
        let expected = i32::try_from(it.version).ok();
        let outcome: ApiResult<i32> = async {
            let img = super::images::load_for(&state, &caller, &it.id.to_string(), Role::Uploader)
                .await?;
            let r = match (target, body.action.as_str()) {
                (Some(to), _) => {
                    corrections::transition(
                        &state,
                        &img,
                        &caller,
                        to,
                        expected,
                        body.reason.as_deref(),
                    )
                    .await
                }
                (None, "accept_suggestions") => {
                    corrections::accept_suggestions(
                        &state,
                        &img,
                        &caller,
                        expected,
                        body.reason.as_deref(),
                    )
                    .await
                }
                (None, _) => {
                    corrections::acknowledge(
                        &state,
                        &img,
                        &caller,
                        None,
                        expected,
                        body.reason.as_deref(),
                    )
                    .await
                }
            };
            Ok(r?)
        }
        .await;
        results.push(match outcome {
            Ok(v) => DecisionResult {
                id: it.id.0,
                status: 200,
                code: "ok".into(),
                version: Some(i64::from(v)),
                message: None,
            },
            Err(e) => {
                let (status, code) = e.status_and_code();
                DecisionResult {
                    id: it.id.0,
                    status: status.as_u16(),
                    code: code.to_owned(),
                    version: match &e {
                        ApiError::Stale { current, .. } => Some(*current),
                        _ => None,
                    },
                    message: Some(e.to_string()),
                }
            }
        });
    }
    let failed = results.iter().filter(|r| r.status != 200).count();
    let out = DecisionResults {
        succeeded: results.len() - failed,
        failed,
        results,
    };
    let status = if failed == 0 {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    Ok((status, Json(out)).into_response())
}

/// Query of `GET /v1/review/metrics`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    /// Only this owner's images (a scoped key implies its own).
    owner: Option<String>,
}

/// Queue metrics by reason.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueMetrics {
    /// Images in the queue.
    pub waiting: i64,
    /// Per reason kind: waiting count, the oldest, and how long they have waited.
    pub by_reason: Vec<ReasonMetrics>,
}

/// Waiting images of one reason kind.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReasonMetrics {
    /// The counts.
    #[serde(flatten)]
    pub stat: QueueStat,
    /// Seconds the oldest has waited.
    pub oldest_age_secs: i64,
}

/// `GET /v1/review/metrics`: images waiting, and by reason their count and age (the oldest,
/// and how many waited under an hour, a day, a week, or longer). The same figures are in
/// `/metrics` as `flexphoto_review_waiting{reason}` and `flexphoto_review_oldest_seconds`.
#[utoipa::path(get, path = "/v1/review/metrics", tag = "review", params(MetricsQuery),
    responses((status = 200, body = QueueMetrics)),
    security(("api_key" = [])))]
pub async fn metrics(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<MetricsQuery>,
) -> ApiResult<Json<QueueMetrics>> {
    let owner = requested_owner(&caller, q.owner.as_deref())?;
    let stats = state.db.queue_stats_by_reason(owner.as_ref()).await?;
    let waiting = state.db.queue_waiting(owner.as_ref()).await?;
    let now = crate::store::now();
    Ok(Json(QueueMetrics {
        waiting,
        by_reason: stats
            .into_iter()
            .map(|s| ReasonMetrics {
                oldest_age_secs: s.oldest.map_or(0, |o| (now - o).num_seconds().max(0)),
                stat: s,
            })
            .collect(),
    }))
}

/// Sets the review gauges of `/metrics` (at scrape time).
pub async fn refresh_metrics(state: &AppState) -> ApiResult<()> {
    let now = crate::store::now();
    let stats = state.db.queue_stats_by_reason(None).await?;
    let rows: Vec<(String, i64, i64)> = stats
        .into_iter()
        .map(|s| {
            let age = s.oldest.map_or(0, |o| (now - o).num_seconds().max(0));
            (s.reason, s.waiting, age)
        })
        .collect();
    state.metrics.set_review(&rows);
    Ok(())
}

/// Query of `GET /v1/rights/expiring`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExpiringQuery {
    /// Only this owner's images (a scoped key implies its own).
    owner: Option<String>,
    /// Days ahead (default `catalog.rights_ending_days`, 1–3650).
    days: Option<u32>,
    /// Page size, 1–500 (default 100).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// An image whose rights end soon.
#[derive(Debug, Serialize, ToSchema)]
pub struct Expiring {
    /// The image.
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    /// When its rights end.
    pub rights_valid_until: DateTime<Utc>,
    /// Whole days left.
    pub days_left: i64,
}

/// `GET /v1/rights/expiring?days=N`: images whose rights end within N days, soonest first.
#[utoipa::path(get, path = "/v1/rights/expiring", tag = "review", params(ExpiringQuery),
    responses((status = 200, body = Page<Expiring>), (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn expiring(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ExpiringQuery>,
) -> ApiResult<Json<Page<Expiring>>> {
    let owner = requested_owner(&caller, q.owner.as_deref())?;
    let days = q
        .days
        .unwrap_or(state.cfg.catalog.rights_ending_days.max(1));
    if !(1..=3650).contains(&days) {
        return Err(ApiError::Invalid("days must be between 1 and 3650".into()));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::Invalid("limit must be between 1 and 500".into()));
    }
    let after = q
        .cursor
        .as_deref()
        .map(crate::cursor::Cursor::decode_after)
        .transpose()
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    let now = crate::store::now();
    let until = now + chrono::Duration::days(i64::from(days));
    let mut rows = state
        .db
        .list_rights_ending(owner.as_ref(), now, until, after, limit + 1)
        .await?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last()
            .map(|(id, t)| crate::cursor::Cursor::After(*t, id.0).encode())
    } else {
        None
    };
    Ok(Json(Page {
        items: rows
            .into_iter()
            .map(|(id, t)| Expiring {
                id: id.0,
                rights_valid_until: t,
                days_left: (t - now).num_days(),
            })
            .collect(),
        next_cursor,
    }))
}
