//! API keys: `Authorization: Bearer KEY` (or the admin UI's session cookie, which acts as
//! the key it was signed in with). Keys are stored as the SHA-256 of the secret, each
//! with a role (admin ⊃ uploader ⊃ viewer) and an optional owner scope.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use flexphoto_media::fingerprint::sha256_hex;

use crate::domain::Owner;
pub use crate::domain::Role;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::Db;
use crate::store::StoreError;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's role.
    pub role: Role,
    /// The only owner the key may touch; `None` for all.
    pub owner_scope: Option<Owner>,
    /// The key's name and id, recorded in correction history.
    pub actor: String,
    /// The key's id.
    pub key_id: uuid::Uuid,
}

impl Caller {
    /// Requires at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this API key's role ({}) may not do this; {} is required",
                self.role, role
            )))
        }
    }

    /// Requires at least `role` over `owner`'s images.
    pub fn require_owner(&self, role: Role, owner: &Owner) -> Result<(), ApiError> {
        self.require(role)?;
        match &self.owner_scope {
            Some(s) if s != owner => Err(ApiError::Forbidden(
                "this API key is limited to another owner".into(),
            )),
            _ => Ok(()),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let Some(header) = parts.headers.get(http::header::AUTHORIZATION) else {
            // A browser signed in to the admin UI (CSRF-checked for changes).
            return crate::admin_ui::session::caller_from_cookie(parts, state).await;
        };
        let header = header.to_str().map_err(|_| ApiError::Unauthorized)?;
        let key = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let row = state
            .db
            .find_api_key(&sha256_hex(key.as_bytes()))
            .await?
            .ok_or(ApiError::Unauthorized)?;
        state.rate_limits.check(row.id)?;
        Ok(Caller {
            role: row.role,
            owner_scope: row.owner_scope,
            actor: format!("{} ({})", row.name, row.id),
            key_id: row.id,
        })
    }
}

/// A new random key secret (256 bits, hex, prefixed `fpk_`).
pub fn generate_key() -> String {
    format!(
        "fpk_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Makes sure a key with this secret exists with `role` (a service key the process made
/// for itself, e.g. the in-process edge's); an existing key is left as it is.
pub async fn ensure_key(db: &Db, secret: &str, role: Role, name: &str) -> Result<(), StoreError> {
    match db
        .insert_api_key(name, &sha256_hex(secret.as_bytes()), role, None, None)
        .await
    {
        Ok(_) | Err(StoreError::Conflict(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Seeds the admin key: `FLEXPHOTO_ADMIN_KEY` when given (idempotent), otherwise a fresh key
/// when no admin key exists yet. Returns a freshly generated key so the caller can print it
/// once; `None` when nothing new was generated.
pub async fn seed_admin_key(db: &Db, from_env: Option<&str>) -> Result<Option<String>, StoreError> {
    if let Some(k) = from_env.filter(|k| !k.is_empty()) {
        match db
            .insert_api_key(
                "admin (FLEXPHOTO_ADMIN_KEY)",
                &sha256_hex(k.as_bytes()),
                Role::Admin,
                None,
                None,
            )
            .await
        {
            Ok(_) | Err(StoreError::Conflict(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    if db.has_admin_key().await? {
        return Ok(None);
    }
    let k = generate_key();
    db.insert_api_key(
        "admin (generated on first start)",
        &sha256_hex(k.as_bytes()),
        Role::Admin,
        None,
        None,
    )
    .await?;
    Ok(Some(k))
}
