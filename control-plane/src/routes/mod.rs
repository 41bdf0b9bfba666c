//! The HTTP API. Every route under `/v1` needs an API key except the signed local upload URL
//! (its signature is the credential); `/healthz` and `/openapi.json` are open on purpose.
//! `/metrics` needs an admin key. Every response is counted by route in the metrics.
//!
//! One file per resource: [`uploads`], [`images`], [`search`] (search and review), [`keys`],
//! [`admin`] (operations), [`collections`] (collections and schemas), [`catalog`] (an
//! image's catalog: metadata, rights, workflow, lineage, restore), [`review`] (the review
//! queue), [`storage_history`] (storage by tier over time); [`views`] renders domain rows as
//! the API's documents, [`extract`] turns malformed requests into JSON errors, [`openapi`]
//! generates the document from the handlers.

pub mod admin;
pub mod body;
pub mod catalog;
pub mod collections;
pub mod extract;
pub mod images;
pub mod jobs;
pub mod keys;
pub mod lifecycle;
pub mod openapi;
pub mod owners;
pub mod review;
pub mod search;
pub mod storage_history;
pub mod uploads;
pub mod views;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, patch, post, put};
use axum::Router;

use crate::error::ApiError;
use crate::state::AppState;

/// The API router.
pub fn router(state: Arc<AppState>) -> Router {
    // Bodies: small everywhere, except the routes that take an image (uploads stream to disk;
    // the limit bounds what the multipart extractor may read; a query image is held in
    // memory, within the same limit as an upload).
    let upload_limit = DefaultBodyLimit::max(
        usize::try_from(state.cfg.max_upload_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(1 << 20),
    );
    let json_limit = DefaultBodyLimit::max(state.cfg.max_json_bytes);
    // Without an index here, searches are answered by the index owner.
    let search_route = if state.cfg.search.index == crate::config::IndexChoice::Forward {
        post(forward_search)
    } else {
        post(search::search)
    };
    // Edges push up to access.max_batch_items items per batch.
    let access_routes = Router::new()
        .route("/v1/access/batches", post(lifecycle::push_access))
        .layer(DefaultBodyLimit::max(16 << 20));
    let image_routes = Router::new()
        .route("/v1/images", post(uploads::create))
        .route("/v1/uploads/{id}", put(uploads::local_put))
        .route("/v1/search", search_route)
        .layer(upload_limit);
    Router::new()
        .route("/v1/images", get(images::list_images))
        .route(
            "/v1/images/{id}",
            get(images::get_image)
                .patch(images::patch_image)
                .delete(images::delete_image),
        )
        .route("/v1/images/{id}/complete", post(uploads::complete))
        .route("/v1/images/{id}/url", get(images::sized_url))
        .route("/v1/images/{id}/duplicates", get(search::duplicates_of))
        .route("/v1/images/{id}/history", get(search::history))
        .route("/v1/duplicates", get(search::list_duplicates))
        .route("/v1/images/{id}/metadata", patch(catalog::patch_metadata))
        .route("/v1/images/{id}/rights", put(catalog::put_rights))
        .route("/v1/images/{id}/workflow", post(catalog::post_workflow))
        .route(
            "/v1/images/{id}/lineage",
            get(catalog::get_lineage).put(catalog::put_lineage),
        )
        .route(
            "/v1/images/{id}/history/{entry}/restore",
            post(catalog::restore),
        )
        .route(
            "/v1/collections",
            post(collections::create).get(collections::list),
        )
        .route(
            "/v1/collections/{id}",
            get(collections::get).patch(collections::patch),
        )
        .route(
            "/v1/collections/{id}/schema",
            get(collections::get_schema).put(collections::put_schema),
        )
        .route(
            "/v1/collections/{id}/schema/versions",
            get(collections::schema_versions),
        )
        .route(
            "/v1/collections/{id}/vocabulary",
            put(collections::put_vocabulary),
        )
        .route("/v1/review/queue", get(review::queue))
        .route("/v1/review/decisions", post(review::decisions))
        .route("/v1/review/metrics", get(review::metrics))
        .route("/v1/rights/expiring", get(review::expiring))
        .route("/v1/webhooks/s3", post(uploads::s3_webhook))
        .route("/v1/keys", post(keys::create_key).get(keys::list_keys))
        .route("/v1/keys/{id}", delete(keys::revoke_key))
        .route("/v1/jobs/stats", get(admin::job_stats))
        .route("/v1/jobs", get(jobs::list_jobs))
        .route("/v1/owners", get(owners::list_owners))
        .route("/v1/jobs/{id}/retry", post(jobs::retry_job))
        .route("/v1/cluster", get(admin::cluster))
        .route("/v1/cost", get(lifecycle::cost_report))
        .route("/v1/cost/projection", post(lifecycle::cost_projection))
        .route("/v1/tiering/plan", get(lifecycle::tiering_plan))
        .route("/v1/storage/history", get(storage_history::storage_history))
        .route("/v1/images/{id}/restore", post(lifecycle::restore_image))
        .route("/healthz", get(admin::healthz))
        .route("/openapi.json", get(admin::openapi))
        .route("/metrics", get(admin::metrics))
        .layer(json_limit)
        .merge(image_routes)
        .merge(access_routes)
        .merge(crate::admin_ui::router(&state))
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("this route does not take that method".into())
        })
        .route_layer(middleware::from_fn_with_state(state.clone(), time_limit))
        .route_layer(middleware::from_fn_with_state(state.clone(), count_request))
        .with_state(state)
}

/// `POST /v1/search` on a process with `search.index = "forward"`: the caller's key is
/// checked here (so a bad key never travels), then the index owner answers.
async fn forward_search(
    State(state): State<Arc<AppState>>,
    caller: crate::auth::Caller,
    req: Request,
) -> Result<Response, ApiError> {
    caller.require(crate::auth::Role::Viewer)?;
    let limit = usize::try_from(state.cfg.max_upload_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(1 << 20);
    crate::cluster::forward::forward(&state, req, limit).await
}

/// Ends requests that take longer than `server.request_timeout_secs` with 503. A request
/// that carries an image gets, on top, its body's size at `server.upload_min_bytes_per_sec`
/// (the declared Content-Length, else the largest body the route takes): a client that
/// dribbles its body is cut off however steadily it dribbles.
async fn time_limit(
    State(state): State<Arc<AppState>>,
    route: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let carries_image = matches!(
        (req.method().as_str(), route.as_ref().map(|r| r.as_str())),
        ("POST", Some("/v1/images" | "/v1/search")) | ("PUT", Some("/v1/uploads/{id}"))
    );
    let limit = if carries_image {
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let largest = state.cfg.max_upload_bytes.saturating_add(1 << 20);
        request_deadline(
            state.cfg.request_timeout,
            declared.unwrap_or(largest).min(largest),
            state.cfg.upload_min_bytes_per_sec,
        )
    } else {
        state.cfg.request_timeout
    };
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => axum::response::IntoResponse::into_response(ApiError::Busy(format!(
            "the request took longer than {} s and was stopped",
            limit.as_secs()
        ))),
    }
}

/// How long a request carrying `body_bytes` may take: the request timeout plus the body at
/// the slowest allowed rate.
fn request_deadline(request_timeout: Duration, body_bytes: u64, min_rate: u64) -> Duration {
    request_timeout + Duration::from_secs(body_bytes / min_rate.max(1))
}

/// Counts every routed response and its latency by route template (never by raw path, which
/// would hold ids).
async fn count_request(
    State(state): State<Arc<AppState>>,
    route: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let route = route.map_or_else(|| "unmatched".to_owned(), |r| r.as_str().to_owned());
    let method = req.method().clone();
    let started = Instant::now();
    let resp = next.run(req).await;
    let m = &state.metrics;
    m.requests
        .with_label_values(&[route.as_str(), method.as_str(), resp.status().as_str()])
        .inc();
    m.request_seconds
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_requests_get_their_body_at_the_slowest_rate_on_top() {
        let t = Duration::from_secs(60);
        assert_eq!(request_deadline(t, 0, 65536), t);
        assert_eq!(
            request_deadline(t, 64 << 20, 65536),
            t + Duration::from_secs(1024)
        );
        assert_eq!(request_deadline(t, 1000, 0), t + Duration::from_secs(1000));
    }
}
