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
    /// Owners with live images, by name, after `after`; only `only` when given; at most
    /// `limit`.
    pub async fn owners(
        &self,
        only: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<OwnerCount>> {
        // Owners are never empty, so '' stands for "any" and "from the start".
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as::<_, OwnerCount>(
                "SELECT owner, COUNT(*) AS images FROM images \
                 WHERE deleted_at IS NULL AND ($1 = '' OR owner = $1) AND owner > $2 \
                 GROUP BY owner ORDER BY owner LIMIT $3",
            )
            .bind(only.unwrap_or(""))
            .bind(after.unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?
        }))
    }
}
