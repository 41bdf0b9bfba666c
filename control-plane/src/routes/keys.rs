//! API keys: `POST /v1/keys`, `GET /v1/keys`, `DELETE /v1/keys/{id}`.
//!
//! Least privilege: a key may create keys only of its own role or below and only within its
//! own owner scope (an owner-scoped key never mints an unscoped one); it lists and revokes the
//! keys it created, and an admin also those in its scope (every key when unscoped).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use flexphoto_media::fingerprint::sha256_hex;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{ApiJson, ApiPath};
use super::views::{ErrorBody, Page};
use crate::auth::{generate_key, Caller, Role};
use crate::domain::Owner;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::keys::ApiKeyRow;

/// Body of `POST /v1/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A name for people (1–200 characters); recorded as the actor of its changes.
    name: String,
    /// `admin`, `reviewer`, `uploader` or `viewer`: at most the calling key's role; or
    /// `edge` (an edge's key for pushing access statistics; unscoped admins only).
    role: String,
    /// Limit the key to this owner's images; a scoped caller's keys are always in its scope.
    owner: Option<String>,
}

/// A key without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    /// Key id.
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    /// Name.
    pub name: String,
    /// Role.
    pub role: String,
    /// The owner it is limited to.
    pub owner: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// The key that made it.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub created_by: Option<uuid::Uuid>,
}

/// A new key: its secret is in this answer only.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyCreated {
    /// The key.
    #[serde(flatten)]
    pub key: KeyView,
    /// The secret to send as `Authorization: Bearer …`.
    #[serde(rename = "key")]
    pub secret: String,
}

fn view(row: &ApiKeyRow) -> KeyView {
    KeyView {
        id: row.id,
        name: row.name.clone(),
        role: row.role.as_str().to_owned(),
        owner: row.owner_scope.as_ref().map(|o| o.as_str().to_owned()),
        created_at: row.created_at,
        created_by: row.created_by,
    }
}

/// Whether `caller` may see or revoke `key`.
fn manages(caller: &Caller, key: &ApiKeyRow) -> bool {
    if key.role > caller.role {
        return false;
    }
    if key.created_by == Some(caller.key_id) {
        return true;
    }
    caller.role == Role::Admin
        && match &caller.owner_scope {
            None => true,
            Some(scope) => key.owner_scope.as_ref() == Some(scope),
        }
}

/// `POST /v1/keys`: creates a key of the caller's role or below, within the caller's scope;
/// its secret is in this answer only.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = KeyCreated), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn create_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateKey>,
) -> ApiResult<impl IntoResponse> {
    caller.require(Role::Uploader)?;
    let role: Role = req.role.parse()?;
    // Edge keys report traffic for every owner: only an unscoped admin hands them out.
    if role == Role::Edge && (caller.role != Role::Admin || caller.owner_scope.is_some()) {
        return Err(ApiError::Forbidden(
            "only an admin key without an owner scope can create an edge key".into(),
        ));
    }
    if role > caller.role {
        return Err(ApiError::Forbidden(format!(
            "a {} key cannot create a {role} key",
            caller.role
        )));
    }
    if req.name.is_empty() || req.name.chars().count() > 200 {
        return Err(ApiError::Invalid("name must be 1 to 200 characters".into()));
    }
    let requested = req.owner.as_deref().map(Owner::parse).transpose()?;
    let owner = match (&caller.owner_scope, requested) {
        (None, o) => o,
        (Some(scope), None) => Some(scope.clone()),
        (Some(scope), Some(o)) if *scope == o => Some(o),
        (Some(_), Some(_)) => {
            return Err(ApiError::Forbidden(
                "this API key is limited to another owner".into(),
            ))
        }
    };
    let secret = generate_key();
    let row = state
        .db
        .insert_api_key(
            &req.name,
            &sha256_hex(secret.as_bytes()),
            role,
            owner.as_ref(),
            Some(caller.key_id),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(KeyCreated {
            key: view(&row),
            secret,
        }),
    ))
}

/// `GET /v1/keys`: the live keys the caller manages, without secrets.
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, body = Page<KeyView>), (status = 403, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list_keys(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Page<KeyView>>> {
    caller.require(Role::Uploader)?;
    let rows = state.db.list_api_keys().await?;
    Ok(Json(Page {
        items: rows
            .iter()
            .filter(|k| manages(&caller, k))
            .map(view)
            .collect(),
        next_cursor: None,
    }))
}

/// `DELETE /v1/keys/{id}`: revokes a key the caller manages.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "Key id")),
    responses((status = 204, description = "Revoked"), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn revoke_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Uploader)?;
    let id = uuid::Uuid::parse_str(&id).map_err(|_| ApiError::NotFound("key"))?;
    // A key outside the caller's reach looks the same as a missing one.
    let key = state
        .db
        .get_api_key(id)
        .await?
        .filter(|k| manages(&caller, k))
        .ok_or(ApiError::NotFound("key"))?;
    if state.db.revoke_api_key(key.id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("key"))
    }
}
