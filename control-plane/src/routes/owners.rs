//! `GET /v1/owners`: the owners a key may list, with their image counts.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::views::ErrorBody;
use crate::auth::{Caller, Role};
use crate::error::ApiResult;
use crate::state::AppState;
use crate::store::owners::OwnerCount;

/// Owners with images.
#[derive(Debug, Serialize, ToSchema)]
pub struct Owners {
    /// By name (a scoped key sees only its owner); at most 1000.
    pub items: Vec<OwnerCount>,
}

/// `GET /v1/owners`: the owners that have images and how many, by name (a scoped key: only
/// its own).
#[utoipa::path(get, path = "/v1/owners", tag = "images",
    responses((status = 200, body = Owners), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list_owners(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Owners>> {
    caller.require(Role::Viewer)?;
    let mut items = state.db.owners(1000).await?;
    if let Some(scope) = &caller.owner_scope {
        items.retain(|o| o.owner == scope.as_str());
    }
    Ok(Json(Owners { items }))
}
