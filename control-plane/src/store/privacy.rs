//! Private images in the database: changing an image's flag (with a history entry, and a
//! queued purge of what edges and the CDN cached of it while it was public), and the object
//! keys the edges must only serve to signed requests.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use super::catalog::{history, FieldChange};
use super::jobs::enqueue_job;
use super::{BeginWrite, Db, Result};
use crate::domain::{ImageId, JobKind};
use crate::on_db;
use crate::on_db_retrying;

impl Db {
    /// Sets a live image's own private flag as `actor` (a history entry records the change
    /// and `reason`). When it becomes private and it is ready, a purge job is queued to run
    /// at `purge_at`, once the edges have read the new signed-only list. `None`: no such
    /// image; `Some(false)`: the flag already had that value.
    pub async fn set_private(
        &self,
        id: ImageId,
        private: bool,
        actor: &str,
        reason: &Option<String>,
        purge_at: DateTime<Utc>,
        max_attempts: u32,
    ) -> Result<Option<bool>> {
        let t = super::now();
        Ok(on_db_retrying!(self, |p, _pg| {
            let mut tx = p.begin_write().await?;
            let row: Option<(bool, String)> = sqlx::query_as(
                "SELECT private, status FROM images WHERE id = $1 AND deleted_at IS NULL",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            match row {
                None => None,
                Some((old, _)) if old == private => Some(false),
                Some((old, status)) => {
                    sqlx::query("UPDATE images SET private = $2, updated_at = $3 WHERE id = $1")
                        .bind(id)
                        .bind(private)
                        .bind(t)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(
                        "UPDATE image_catalog SET version = version + 1, updated_at = $2 \
                         WHERE image_id = $1",
                    )
                    .bind(id)
                    .bind(t)
                    .execute(&mut *tx)
                    .await?;
                    let ch = FieldChange {
                        field: "private".into(),
                        old: Some(Value::Bool(old)),
                        new: Some(Value::Bool(private)),
                        source: "api".into(),
                    };
                    history!(tx, id, [&ch], actor, reason, None::<String>, t);
                    if private && status == "ready" {
                        enqueue_job!(tx, id, JobKind::PurgePrivate, max_attempts as i32, purge_at);
                    }
                    tx.commit().await?;
                    Some(true)
                }
            }
        }))
    }

    /// Every object key (original and variants) of every live image that is private by its
    /// own flag or because its owner is one of `owners`, sorted.
    pub async fn private_keys(&self, owners: &[String]) -> Result<Vec<String>> {
        type Row = (String, Json<BTreeMap<String, String>>);
        let mut rows: Vec<Row> = on_db!(self, |p, _pg| {
            sqlx::query_as(
                "SELECT original_key, variant_keys FROM images WHERE private AND deleted_at IS NULL",
            )
            .fetch_all(p)
            .await?
        });
        for owner in owners {
            let more: Vec<Row> = on_db!(self, |p, _pg| {
                sqlx::query_as(
                    "SELECT original_key, variant_keys FROM images \
                     WHERE owner = $1 AND NOT private AND deleted_at IS NULL",
                )
                .bind(owner)
                .fetch_all(p)
                .await?
            });
            rows.extend(more);
        }
        let mut keys: Vec<String> = Vec::with_capacity(rows.len() * 4);
        for (o, v) in rows {
            keys.push(o);
            keys.extend(v.0.into_values());
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }
}
