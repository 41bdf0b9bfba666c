//! The HTTP API. Every route under `/v1` needs an API key except the signed local upload URL
//! (its signature is the credential); `/healthz` and `/openapi.json` are open on purpose.
//! `/metrics` needs an admin key. Every response is counted by route in the metrics.

pub mod admin;
pub mod images;
pub mod search;
pub mod uploads;

use std::sync::Arc;

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;

use crate::error::ApiError;
use crate::state::AppState;

/// The API router.
pub fn router(state: Arc<AppState>) -> Router {
    // Uploads stream to disk; the limit only bounds what the multipart extractor may read.
    let body_limit = usize::try_from(state.cfg.max_upload_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(1 << 20);
    Router::new()
        .route("/v1/images", post(uploads::create).get(images::list_images))
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
        .route("/v1/search", post(search::search))
        .route("/v1/uploads/{id}", put(uploads::local_put))
        .route("/v1/webhooks/s3", post(uploads::s3_webhook))
        .route("/v1/keys", post(admin::create_key))
        .route("/v1/keys/{id}", axum::routing::delete(admin::revoke_key))
        .route("/v1/jobs/stats", get(admin::job_stats))
        .route("/healthz", get(admin::healthz))
        .route("/openapi.json", get(admin::openapi))
        .route("/metrics", get(admin::metrics))
        .fallback(|| async { ApiError::NotFound("route") })
        .layer(DefaultBodyLimit::max(body_limit))
        .route_layer(middleware::from_fn_with_state(state.clone(), count_request))
        .with_state(state)
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
