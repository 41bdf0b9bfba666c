//! The `api_keys` table. Only the SHA-256 of a key's secret is stored.

use chrono::{DateTime, Utc};
use sqlx::FromRow;
use uuid::Uuid;

use super::{now, Db, Result, StoreError};
use crate::on_db;

/// A stored API key (without its secret).
#[derive(Debug, Clone, FromRow, serde::Serialize)]
pub struct ApiKeyRow {
    /// Key id.
    pub id: Uuid,
    /// Human name.
    pub name: String,
    /// `admin`, `uploader` or `viewer`.
    pub role: String,
    /// Owner the key is limited to; `None` for every owner.
    pub owner_scope: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl Db {
    /// Stores a key by the hash of its secret. A key with the same hash is a conflict.
    pub async fn insert_api_key(
        &self,
        name: &str,
        key_hash: &str,
        role: &str,
        owner_scope: Option<&str>,
    ) -> Result<ApiKeyRow> {
        let row = ApiKeyRow {
            id: Uuid::new_v4(),
            name: name.to_owned(),
            role: role.to_owned(),
            owner_scope: owner_scope.map(str::to_owned),
            created_at: now(),
        };
        on_db!(self, |p, _pg| {
            sqlx::query(
                "INSERT INTO api_keys (id, name, key_hash, role, owner_scope, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(row.id)
            .bind(&row.name)
            .bind(key_hash)
            .bind(&row.role)
            .bind(&row.owner_scope)
            .bind(row.created_at)
            .execute(p)
            .await
            .map_err(StoreError::classify)?
            .rows_affected()
        });
        Ok(row)
    }

    /// Finds a live key by the hash of its secret.
    pub async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKeyRow>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as::<_, ApiKeyRow>(
                "SELECT id, name, role, owner_scope, created_at FROM api_keys \
                 WHERE key_hash = $1 AND revoked_at IS NULL",
            )
            .bind(key_hash)
            .fetch_optional(p)
            .await?
        }))
    }

    /// Whether any live admin key exists.
    pub async fn has_admin_key(&self) -> Result<bool> {
        let r: Option<(Uuid,)> = on_db!(self, |p, _pg| {
            sqlx::query_as(
                "SELECT id FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL LIMIT 1",
            )
            .fetch_optional(p)
            .await?
        });
        Ok(r.is_some())
    }

    /// Revokes a key; false when there is no such live key.
    pub async fn revoke_api_key(&self, id: Uuid) -> Result<bool> {
        let t = now();
        let n = on_db!(self, |p, _pg| {
            sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(t)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }
}
