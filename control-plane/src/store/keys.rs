//! The `api_keys` table. Only the SHA-256 of a key's secret is stored.

use chrono::{DateTime, Utc};
use sqlx::FromRow;
use uuid::Uuid;

use super::{now, Db, Result, StoreError};
use crate::domain::{Owner, Role};
use crate::key_lineage::{Chain, Link, MAX_DEPTH};
use crate::on_db;

/// A stored API key (without its secret).
#[derive(Debug, Clone, FromRow, serde::Serialize)]
pub struct ApiKeyRow {
    /// Key id.
    pub id: Uuid,
    /// Human name.
    pub name: String,
    /// What the key may do.
    pub role: Role,
    /// Owner the key is limited to; `None` for every owner.
    pub owner_scope: Option<Owner>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// The key that created it (`None` for seeded admin keys).
    pub created_by: Option<Uuid>,
}

impl Db {
    /// Stores a key by the hash of its secret. A key with the same hash is a conflict.
    pub async fn insert_api_key(
        &self,
        name: &str,
        key_hash: &str,
        role: Role,
        owner_scope: Option<&Owner>,
        created_by: Option<Uuid>,
    ) -> Result<ApiKeyRow> {
        let row = ApiKeyRow {
            id: Uuid::new_v4(),
            name: name.to_owned(),
            role,
            owner_scope: owner_scope.cloned(),
            created_at: now(),
            created_by,
        };
        on_db!(self, |p, _pg| {
            sqlx::query(
                "INSERT INTO api_keys (id, name, key_hash, role, owner_scope, created_at, created_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(row.id)
            .bind(&row.name)
            .bind(key_hash)
            .bind(row.role)
            .bind(&row.owner_scope)
            .bind(row.created_at)
            .bind(row.created_by)
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
                "SELECT id, name, role, owner_scope, created_at, created_by FROM api_keys \
                 WHERE key_hash = $1 AND revoked_at IS NULL",
            )
            .bind(key_hash)
            .fetch_optional(p)
            .await?
        }))
    }

    /// Every live key, oldest first.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRow>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as::<_, ApiKeyRow>(
                "SELECT id, name, role, owner_scope, created_at, created_by FROM api_keys \
                 WHERE revoked_at IS NULL ORDER BY created_at, id",
            )
            .fetch_all(p)
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

    /// One live key by id.
    pub async fn get_api_key(&self, id: Uuid) -> Result<Option<ApiKeyRow>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as::<_, ApiKeyRow>(
                "SELECT id, name, role, owner_scope, created_at, created_by FROM api_keys \
                 WHERE id = $1 AND revoked_at IS NULL",
            )
            .bind(id)
            .fetch_optional(p)
            .await?
        }))
    }

    /// A key and the keys that created it, nearest first, revoked ones included (a revoked
    /// creator is still the same actor); at most [`MAX_DEPTH`] + 1 links.
    pub async fn key_chain(&self, id: Uuid) -> Result<Chain> {
        let rows: Vec<(Uuid, Role, Option<Uuid>)> = on_db!(self, |p, _pg| {
            sqlx::query_as(
                "WITH RECURSIVE chain (id, role, created_by, depth) AS ( \
                   SELECT id, role, created_by, 0 FROM api_keys WHERE id = $1 \
                   UNION ALL \
                   SELECT k.id, k.role, k.created_by, c.depth + 1 \
                   FROM api_keys k JOIN chain c ON k.id = c.created_by \
                   WHERE c.depth < $2) \
                 SELECT id, role, created_by FROM chain ORDER BY depth",
            )
            .bind(id)
            .bind(MAX_DEPTH as i32)
            .fetch_all(p)
            .await?
        });
        Ok(Chain(
            rows.into_iter()
                .map(|(id, role, created_by)| Link {
                    id,
                    role,
                    created_by,
                })
                .collect(),
        ))
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
