//! The owners that have images, with how many each (for pickers in the admin UI).

use super::{Db, Result};
use crate::on_db;

/// An owner and its live images.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct OwnerCount {
    /// The owner.
    pub owner: String,
    /// Images not deleted.
    pub images: i64,
}

impl Db {
    /// Owners with live images, by name; at most `limit`.
    pub async fn owners(&self, limit: u32) -> Result<Vec<OwnerCount>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as::<_, OwnerCount>(
                "SELECT owner, COUNT(*) AS images FROM images WHERE deleted_at IS NULL \
                 GROUP BY owner ORDER BY owner LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?
        }))
    }
}
