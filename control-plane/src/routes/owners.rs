//! `GET /v1/owners`: the owners a key may list, with their image counts, a page at a time.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::extract::ApiQuery;
use super::views::{ErrorBody, Page};
use crate::auth::{Caller, Role};
use crate::cursor::Cursor;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::owners::OwnerCount;

/// Query of `GET /v1/owners`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OwnersQuery {
    /// Page size, 1–1000 (default 1000).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// `GET /v1/owners`: the owners that have images and how many, by name (a scoped key: only
/// its own).
#[utoipa::path(get, path = "/v1/owners", tag = "images", params(OwnersQuery),
    responses((status = 200, body = Page<OwnerCount>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list_owners(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<OwnersQuery>,
) -> ApiResult<Json<Page<OwnerCount>>> {
    caller.require(Role::Viewer)?;
    let limit = q.limit.unwrap_or(1000);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::Invalid("limit must be between 1 and 1000".into()));
    }
    let after = match &q.cursor {
        Some(c) => Some(Cursor::decode_owner(c).map_err(|e| ApiError::Invalid(e.to_string()))?),
        None => None,
    };
    let only = caller.owner_scope.as_ref().map(|o| o.as_str());
    let items = state.db.owners(only, after.as_deref(), limit).await?;
    let next_cursor = (items.len() == limit as usize)
        .then(|| {
            items
                .last()
                .map(|o| Cursor::Owner(o.owner.clone()).encode())
        })
        .flatten();
    Ok(Json(Page { items, next_cursor }))
}
