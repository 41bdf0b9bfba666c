//! Lifecycle tables: every stored object of an image with its size and tier
//! (`image_objects`), traffic per image and day (`access_daily`) from the edges' pushes
//! (`access_batches` makes a retried push count once, `edges` remembers who pushed), and the
//! queries the tiering policy, the mover, restores and the cost model run.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use futures_util::TryStreamExt;
use sqlx::types::Json;
use sqlx::FromRow;

use super::{BeginWrite, Db, Result};
use crate::domain::{ImageId, Owner};
use crate::on_db;
use crate::on_db_retrying;

/// One stored object of an image.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ObjectRow {
    /// `original` or the variant's name.
    pub kind: String,
    /// Object key.
    pub key: String,
    /// Size, once known.
    pub bytes: Option<i64>,
    /// `standard` or `cold`.
    pub tier: String,
}

/// Traffic one edge reports for one object key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTraffic {
    /// The object key served (an original or a variant).
    pub key: String,
    /// Requests answered (all sizes and formats).
    pub requests: i64,
    /// Body bytes sent.
    pub bytes: i64,
    /// Requests answered from the edge's caches.
    pub edge_hits: i64,
}

/// What recording a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, utoipa::ToSchema)]
pub struct BatchOutcome {
    /// The batch id was seen before: nothing was counted again.
    pub duplicate: bool,
    /// Items whose key belongs to an image.
    pub matched: u64,
    /// Items whose key belongs to no image (objects outside the catalog).
    pub unmatched: u64,
}

/// Which owners a policy query covers.
#[derive(Debug, Clone)]
pub enum Owners<'a> {
    /// One owner (an override).
    Only(&'a Owner),
    /// Everyone but these (the default policy).
    Except(&'a [Owner]),
}

impl Owners<'_> {
    /// Binds this set takes.
    fn len(&self) -> usize {
        match self {
            Owners::Only(_) => 1,
            Owners::Except(list) => list.len(),
        }
    }

    /// The condition on `i.owner`, its binds from `$first`.
    fn sql(&self, first: usize) -> String {
        match self {
            Owners::Only(_) => format!("i.owner = ${first}"),
            Owners::Except([]) => "1 = 1".to_owned(),
            Owners::Except(list) => format!("i.owner NOT IN ({})", placeholders(first, list.len())),
        }
    }

    /// Binds the owners, in the order `sql` numbered them.
    fn bind<'q, DB, O>(
        &self,
        mut q: sqlx::query::QueryAs<'q, DB, O, <DB as sqlx::Database>::Arguments>,
    ) -> sqlx::query::QueryAs<'q, DB, O, <DB as sqlx::Database>::Arguments>
    where
        DB: sqlx::Database,
        Owner: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    {
        match self {
            Owners::Only(o) => q = q.bind((*o).clone()),
            Owners::Except(list) => {
                for o in list.iter() {
                    q = q.bind(o.clone());
                }
            }
        }
        q
    }
}

/// Which images one policy picks in one direction.
#[derive(Debug, Clone)]
pub enum Selection<'a> {
    /// Ready hot images uploaded before `cutoff` with fewer than `max_hits` requests since
    /// `window_start`; `kinds` are the object kinds that would move.
    ToCold {
        /// The owners the policy covers.
        owners: Owners<'a>,
        /// Uploaded before this.
        cutoff: DateTime<Utc>,
        /// First day of the traffic window.
        window_start: NaiveDate,
        /// Fewer requests than this in the window.
        max_hits: u64,
        /// Object kinds that move.
        kinds: &'a [String],
    },
    /// Cold images with at least `min_hits` requests since `window_start`.
    ToHot {
        /// The owners the policy covers.
        owners: Owners<'a>,
        /// First day of the traffic window.
        window_start: NaiveDate,
        /// At least this many requests in the window.
        min_hits: u64,
    },
}

/// The SQL pieces of a [`Selection`], over `images i`.
struct SelectionSql {
    /// Joins per-image traffic `h` (hits) to `i`.
    traffic: String,
    /// Which images qualify (after `WHERE`).
    condition: String,
    /// Which of their objects would move (a condition on `image_objects`).
    objects: String,
    /// The next free placeholder number.
    next: usize,
}

impl SelectionSql {
    /// `FROM … WHERE …` with the objects that would move aggregated per image as `o`
    /// (bytes, objects). Traffic and objects are aggregated per image and joined in one
    /// pass, so a full evaluation reads each table once and a limited one stops after its
    /// first rows.
    fn per_image(&self) -> String {
        format!(
            "FROM images i {traffic} \
             LEFT JOIN (SELECT image_id, SUM(bytes) AS bytes, COUNT(*) AS objects \
                        FROM image_objects WHERE {objects} GROUP BY image_id) o \
                  ON o.image_id = i.id \
             WHERE {condition}",
            traffic = self.traffic,
            objects = self.objects,
            condition = self.condition,
        )
    }

    /// One row: images, bytes and objects in total. The qualifying ids are found once, then
    /// their objects are summed row by row (no per-image grouping of the objects).
    fn totals(&self) -> String {
        format!(
            "WITH c AS (SELECT i.id FROM images i {traffic} WHERE {condition}) \
             SELECT CAST((SELECT COUNT(*) FROM c) AS BIGINT) AS images, \
             CAST(COALESCE(SUM(o.bytes), 0) AS BIGINT) AS bytes, \
             CAST(COUNT(o.image_id) AS BIGINT) AS objects \
             FROM image_objects o JOIN c ON c.id = o.image_id WHERE {objects}",
            traffic = self.traffic,
            objects = self.objects,
            condition = self.condition,
        )
    }
}

impl Selection<'_> {
    /// The SQL of this selection; its binds come from [`Selection::bind`].
    fn sql(&self) -> SelectionSql {
        match self {
            Selection::ToCold { owners, kinds, .. } => {
                // $1 cutoff, $2 window day, $3 max hits, then the kinds and the owners.
                let kinds_sql = if kinds.is_empty() {
                    "1 = 0".to_owned()
                } else {
                    format!("kind IN ({})", placeholders(4, kinds.len()))
                };
                let owners_at = 4 + kinds.len();
                SelectionSql {
                    traffic: "LEFT JOIN (SELECT image_id, SUM(requests) AS hits \
                              FROM access_daily WHERE day >= $2 GROUP BY image_id) h \
                              ON h.image_id = i.id"
                        .to_owned(),
                    condition: format!(
                        "i.storage_tier = 'standard' AND i.status = 'ready' \
                         AND i.deleted_at IS NULL AND i.uploaded_at < $1 AND {owners} \
                         AND COALESCE(h.hits, 0) < $3",
                        owners = owners.sql(owners_at),
                    ),
                    objects: format!("tier = 'standard' AND {kinds_sql}"),
                    next: owners_at + owners.len(),
                }
            }
            Selection::ToHot { owners, .. } => {
                // $1 window day, $2 min hits, then the owners.
                SelectionSql {
                    traffic: "JOIN (SELECT image_id, SUM(requests) AS hits FROM access_daily \
                              WHERE day >= $1 GROUP BY image_id HAVING SUM(requests) >= $2) h \
                              ON h.image_id = i.id"
                        .to_owned(),
                    condition: format!(
                        "i.storage_tier = 'cold' AND i.deleted_at IS NULL AND {owners}",
                        owners = owners.sql(3),
                    ),
                    objects: "tier = 'cold'".to_owned(),
                    next: 3 + owners.len(),
                }
            }
        }
    }

    /// Binds what `sql` numbered, in its order.
    fn bind<'q, DB, O>(
        &self,
        q: sqlx::query::QueryAs<'q, DB, O, <DB as sqlx::Database>::Arguments>,
    ) -> sqlx::query::QueryAs<'q, DB, O, <DB as sqlx::Database>::Arguments>
    where
        DB: sqlx::Database,
        DateTime<Utc>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        NaiveDate: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        Owner: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    {
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        match self {
            Selection::ToCold {
                owners,
                cutoff,
                window_start,
                max_hits,
                kinds,
            } => {
                let mut q = q.bind(*cutoff).bind(*window_start).bind(count(*max_hits));
                for k in kinds.iter() {
                    q = q.bind(k.clone());
                }
                owners.bind(q)
            }
            Selection::ToHot {
                owners,
                window_start,
                min_hits,
            } => owners.bind(q.bind(*window_start).bind(count(*min_hits))),
        }
    }
}

/// What one selection would move, in total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, FromRow)]
pub struct CandidateTotals {
    /// Images.
    pub images: i64,
    /// Bytes of the objects that would move (known sizes only).
    pub bytes: i64,
    /// Objects that would move.
    pub objects: i64,
}

/// An image the policy picked, with what it found.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct Candidate {
    /// The image.
    pub id: ImageId,
    /// Its owner.
    pub owner: Owner,
    /// When it was uploaded.
    pub uploaded_at: DateTime<Utc>,
    /// Requests in the policy's window.
    pub hits: i64,
    /// Bytes of the objects that would move (known sizes only).
    pub bytes: i64,
    /// Objects that would move.
    pub objects: i64,
}

/// Stored bytes and objects for one tier and kind.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct StorageUsage {
    /// `standard` or `cold`.
    pub tier: String,
    /// `original` or a variant's name.
    pub kind: String,
    /// Objects.
    pub objects: i64,
    /// Bytes (objects of unknown size count 0 until measured).
    pub bytes: i64,
    /// Objects whose size is not known yet.
    pub unmeasured: i64,
}

/// Traffic over a period.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromRow, serde::Serialize, utoipa::ToSchema,
)]
pub struct Traffic {
    /// Requests the edges answered.
    pub requests: i64,
    /// Bytes they sent.
    pub bytes: i64,
    /// Requests answered from their caches.
    pub edge_hits: i64,
}

/// One image's recent traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, utoipa::ToSchema)]
pub struct AccessSummary {
    /// Requests in the last 7 days.
    pub requests_7d: i64,
    /// Requests in the last 30 days.
    pub requests_30d: i64,
    /// Bytes sent in the last 30 days.
    pub bytes_30d: i64,
    /// When an edge last served the image, read with the counts so that the two agree
    /// (shown beside them in the image's lifecycle, not inside `access`).
    #[serde(skip)]
    pub last_accessed_at: Option<DateTime<Utc>>,
}

/// An edge known from its pushes.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct EdgeRow {
    /// The edge's name.
    pub name: String,
    /// Where it said it serves.
    pub url: Option<String>,
    /// First push.
    pub first_seen_at: DateTime<Utc>,
    /// Latest push.
    pub last_push_at: DateTime<Utc>,
    /// Requests it reported in total.
    pub requests: i64,
    /// Bytes it reported.
    pub bytes: i64,
    /// Cache hits it reported.
    pub edge_hits: i64,
    /// Requests it could not report (its buffer overflowed while we were away).
    pub dropped: i64,
}

/// `$first, $first+1, …` for `n` binds.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Postgres settings for the policy's aggregate queries, for their transaction only: they
/// hash one row per image, so they get the memory to do it without spilling to disk, and no
/// JIT (compiling them costs more than it saves).
const PG_AGGREGATE_SESSION: [&str; 2] = ["SET LOCAL jit = off", "SET LOCAL work_mem = '128MB'"];

impl Db {
    /// Records a batch of traffic from `edge` for `day` (atomic and idempotent by
    /// `batch_id`): adds to each image's daily counts, moves `last_accessed_at` forward and
    /// updates the edge's row.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_access(
        &self,
        batch_id: &str,
        edge: &str,
        edge_url: Option<&str>,
        day: NaiveDate,
        at: DateTime<Utc>,
        items: &[KeyTraffic],
        dropped: i64,
    ) -> Result<BatchOutcome> {
        Ok(on_db_retrying!(self, |p, _pg| {
            let mut out = BatchOutcome::default();
            let mut tx = p.begin_write().await?;
            let fresh = sqlx::query(
                "INSERT INTO access_batches (batch_id, edge, received_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (batch_id) DO NOTHING",
            )
            .bind(batch_id)
            .bind(edge)
            .bind(at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if fresh == 0 {
                tx.rollback().await?;
                out.duplicate = true;
                return Ok(out);
            }
            // Keys to images, a chunk at a time.
            let mut owner_of: HashMap<String, ImageId> = HashMap::new();
            for chunk in items.chunks(500) {
                let sql = format!(
                    "SELECT key, image_id FROM image_objects WHERE key IN ({})",
                    placeholders(1, chunk.len())
                );
                let mut q = sqlx::query_as::<_, (String, ImageId)>(sqlx::AssertSqlSafe(sql));
                for it in chunk {
                    q = q.bind(&it.key);
                }
                owner_of.extend(q.fetch_all(&mut *tx).await?);
            }
            let mut per_image: HashMap<ImageId, (i64, i64, i64)> = HashMap::new();
            let (mut total_req, mut total_bytes, mut total_hits) = (0i64, 0i64, 0i64);
            for it in items {
                total_req += it.requests;
                total_bytes += it.bytes;
                total_hits += it.edge_hits;
                match owner_of.get(&it.key) {
                    Some(id) => {
                        out.matched += 1;
                        let e = per_image.entry(*id).or_default();
                        e.0 += it.requests;
                        e.1 += it.bytes;
                        e.2 += it.edge_hits;
                    }
                    None => out.unmatched += 1,
                }
            }
            for (id, (req, bytes, hits)) in &per_image {
                sqlx::query(
                    "INSERT INTO access_daily (image_id, day, requests, bytes, edge_hits) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (image_id, day) DO UPDATE SET \
                     requests = access_daily.requests + excluded.requests, \
                     bytes = access_daily.bytes + excluded.bytes, \
                     edge_hits = access_daily.edge_hits + excluded.edge_hits",
                )
                .bind(*id)
                .bind(day)
                .bind(*req)
                .bind(*bytes)
                .bind(*hits)
                .execute(&mut *tx)
                .await?;
                if *req > 0 {
                    sqlx::query(
                        "UPDATE images SET last_accessed_at = $2 \
                         WHERE id = $1 AND (last_accessed_at IS NULL OR last_accessed_at < $2)",
                    )
                    .bind(*id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            sqlx::query(
                "INSERT INTO edges (name, url, first_seen_at, last_push_at, requests, bytes, edge_hits, dropped) \
                 VALUES ($1, $2, $3, $3, $4, $5, $6, $7) ON CONFLICT (name) DO UPDATE SET \
                 url = COALESCE(excluded.url, edges.url), last_push_at = excluded.last_push_at, \
                 requests = edges.requests + excluded.requests, bytes = edges.bytes + excluded.bytes, \
                 edge_hits = edges.edge_hits + excluded.edge_hits, dropped = edges.dropped + excluded.dropped",
            )
            .bind(edge)
            .bind(edge_url)
            .bind(at)
            .bind(total_req)
            .bind(total_bytes)
            .bind(total_hits)
            .bind(dropped)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            out
        }))
    }

    /// The edges that have pushed, most recent first.
    pub async fn edges(&self) -> Result<Vec<EdgeRow>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as::<_, EdgeRow>(
                "SELECT name, url, first_seen_at, last_push_at, requests, bytes, edge_hits, dropped \
                 FROM edges ORDER BY last_push_at DESC, name",
            )
            .fetch_all(p)
            .await?
        }))
    }

    /// One image's traffic in the last 7 and 30 days before `today` (inclusive).
    pub async fn access_summary(&self, id: ImageId, today: NaiveDate) -> Result<AccessSummary> {
        let d7 = today - chrono::Duration::days(6);
        let d30 = today - chrono::Duration::days(29);
        // One statement, so one snapshot: a push between two reads would show counts that
        // include it beside a last-access time that does not.
        let (last, r7, r30, b30): (Option<DateTime<Utc>>, i64, i64, i64) = on_db!(
            self,
            |p, _pg| {
                sqlx::query_as(
                "SELECT (SELECT last_accessed_at FROM images WHERE id = $1), \
                 CAST(COALESCE(SUM(CASE WHEN day >= $2 THEN requests ELSE 0 END), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(requests), 0) AS BIGINT), CAST(COALESCE(SUM(bytes), 0) AS BIGINT) \
                 FROM access_daily WHERE image_id = $1 AND day >= $3",
            )
            .bind(id)
            .bind(d7)
            .bind(d30)
            .fetch_one(p)
            .await?
            }
        );
        Ok(AccessSummary {
            requests_7d: r7,
            requests_30d: r30,
            bytes_30d: b30,
            last_accessed_at: last,
        })
    }

    /// Total traffic since `since` (a day, inclusive).
    pub async fn traffic_since(&self, since: NaiveDate) -> Result<Traffic> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as::<_, Traffic>(
                "SELECT CAST(COALESCE(SUM(d.requests), 0) AS BIGINT) AS requests, \
                 CAST(COALESCE(SUM(d.bytes), 0) AS BIGINT) AS bytes, \
                 CAST(COALESCE(SUM(d.edge_hits), 0) AS BIGINT) AS edge_hits \
                 FROM access_daily d WHERE d.day >= $1",
            )
            .bind(since)
            .fetch_one(p)
            .await?
        }))
    }

    /// Traffic since `since` to objects of images that are cold now (reads that cost
    /// retrieval fees).
    pub async fn cold_traffic_since(&self, since: NaiveDate) -> Result<Traffic> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as::<_, Traffic>(
                "SELECT CAST(COALESCE(SUM(d.requests), 0) AS BIGINT) AS requests, \
                 CAST(COALESCE(SUM(d.bytes), 0) AS BIGINT) AS bytes, \
                 CAST(COALESCE(SUM(d.edge_hits), 0) AS BIGINT) AS edge_hits \
                 FROM access_daily d JOIN images i ON i.id = d.image_id \
                 WHERE d.day >= $1 AND i.storage_tier = 'cold'",
            )
            .bind(since)
            .fetch_one(p)
            .await?
        }))
    }

    /// Stored bytes and objects by tier and kind, live images only.
    pub async fn storage_usage(&self) -> Result<Vec<StorageUsage>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as::<_, StorageUsage>(
                "SELECT o.tier, o.kind, CAST(COUNT(*) AS BIGINT) AS objects, \
                 CAST(COALESCE(SUM(o.bytes), 0) AS BIGINT) AS bytes, \
                 CAST(SUM(CASE WHEN o.bytes IS NULL THEN 1 ELSE 0 END) AS BIGINT) AS unmeasured \
                 FROM image_objects o WHERE NOT EXISTS \
                 (SELECT 1 FROM images i WHERE i.id = o.image_id AND i.deleted_at IS NOT NULL) \
                 GROUP BY o.tier, o.kind ORDER BY o.tier, o.kind",
            )
            .fetch_all(p)
            .await?
        }))
    }

    /// Images uploaded since `t` (new objects a month brings).
    pub async fn uploads_since(&self, t: DateTime<Utc>) -> Result<i64> {
        let (n,): (i64,) = on_db!(self, |p, _pg| {
            sqlx::query_as(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM images WHERE uploaded_at >= $1 AND deleted_at IS NULL",
            )
            .bind(t)
            .fetch_one(p)
            .await?
        });
        Ok(n)
    }

    /// An image's objects.
    pub async fn objects_of(&self, id: ImageId) -> Result<Vec<ObjectRow>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as::<_, ObjectRow>(
                "SELECT kind, key, bytes, tier FROM image_objects WHERE image_id = $1 ORDER BY kind",
            )
            .bind(id)
            .fetch_all(p)
            .await?
        }))
    }

    /// Objects whose size is unknown (rows from before sizes were recorded), a batch.
    pub async fn unmeasured_objects(&self, limit: u32) -> Result<Vec<(ImageId, String, String)>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as(
                "SELECT image_id, kind, key FROM image_objects WHERE bytes IS NULL LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?
        }))
    }

    /// Records an object's size.
    pub async fn set_object_bytes(&self, id: ImageId, kind: &str, bytes: i64) -> Result<()> {
        on_db!(self, |p, _pg| {
            sqlx::query("UPDATE image_objects SET bytes = $3 WHERE image_id = $1 AND kind = $2")
                .bind(id)
                .bind(kind)
                .bind(bytes)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// The images `selection` picks, in id order, the first `limit` when given, each handed
    /// to `each` as it arrives (a full evaluation never holds a million rows at once).
    pub async fn candidates(
        &self,
        selection: &Selection<'_>,
        limit: Option<u32>,
        mut each: impl FnMut(Candidate),
    ) -> Result<()> {
        let parts = selection.sql();
        let sql = format!(
            "SELECT i.id, i.owner, i.uploaded_at, CAST(COALESCE(h.hits, 0) AS BIGINT) AS hits, \
             CAST(COALESCE(o.bytes, 0) AS BIGINT) AS bytes, \
             CAST(COALESCE(o.objects, 0) AS BIGINT) AS objects {core} ORDER BY i.id {limit}",
            core = parts.per_image(),
            limit = limit
                .map(|_| format!("LIMIT ${}", parts.next))
                .unwrap_or_default(),
        );
        on_db!(self, |p, pg| {
            let mut tx = p.begin().await?;
            for set in PG_AGGREGATE_SESSION.iter().filter(|_| pg) {
                sqlx::query(*set).execute(&mut *tx).await?;
            }
            let mut q = selection.bind(sqlx::query_as::<_, Candidate>(sqlx::AssertSqlSafe(sql)));
            if let Some(l) = limit {
                q = q.bind(i64::from(l));
            }
            let mut rows = q.fetch(&mut *tx);
            while let Some(c) = rows.try_next().await? {
                each(c);
            }
            drop(rows);
            tx.commit().await?;
        });
        Ok(())
    }

    /// How many images `selection` picks, with the bytes and objects that would move.
    pub async fn candidate_totals(&self, selection: &Selection<'_>) -> Result<CandidateTotals> {
        let sql = selection.sql().totals();
        on_db!(self, |p, pg| {
            let mut tx = p.begin().await?;
            for set in PG_AGGREGATE_SESSION.iter().filter(|_| pg) {
                sqlx::query(*set).execute(&mut *tx).await?;
            }
            let totals = selection
                .bind(sqlx::query_as::<_, CandidateTotals>(sqlx::AssertSqlSafe(
                    sql,
                )))
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(totals)
        })
    }

    /// Switches `kinds` of an image to `tier` and the image's tier to what its objects say,
    /// in one transaction, with a history entry giving `why`. Returns false when the image
    /// is gone.
    pub async fn switch_tier(
        &self,
        id: ImageId,
        kinds: &[String],
        tier: &str,
        why: &str,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        if kinds.is_empty() {
            return Ok(true);
        }
        let sql = format!(
            "UPDATE image_objects SET tier = $2 WHERE image_id = $1 AND kind IN ({})",
            placeholders(3, kinds.len())
        );
        Ok(on_db_retrying!(self, |p, _pg| {
            let mut tx = p.begin_write().await?;
            let before: Option<(String,)> = sqlx::query_as(
                "SELECT storage_tier FROM images WHERE id = $1 AND deleted_at IS NULL",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((before,)) = before else {
                tx.rollback().await?;
                return Ok(false);
            };
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(id)
                .bind(tier);
            for k in kinds {
                q = q.bind(k);
            }
            q.execute(&mut *tx).await?;
            let (after,): (String,) = sqlx::query_as(
                "SELECT CASE WHEN EXISTS (SELECT 1 FROM image_objects WHERE image_id = $1 AND tier = 'cold') \
                 THEN 'cold' ELSE 'standard' END",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE images SET storage_tier = $2, tier_changed_at = $3, updated_at = $3, \
                 restore_state = CASE WHEN $2 = 'standard' THEN NULL ELSE restore_state END \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(&after)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            if after != before {
                sqlx::query(
                    "INSERT INTO image_history (image_id, field, old_value, new_value, actor, reason, at) \
                     VALUES ($1, 'storage_tier', $2, $3, 'tiering', $4, $5)",
                )
                .bind(id)
                .bind(Json(serde_json::json!(before)))
                .bind(Json(serde_json::json!(after)))
                .bind(why)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            true
        }))
    }

    /// Sets an image's restore state (`None` clears it).
    pub async fn set_restore_state(
        &self,
        id: ImageId,
        state: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<()> {
        on_db!(self, |p, _pg| {
            sqlx::query(
                "UPDATE images SET restore_state = $2, \
                 restore_requested_at = CASE WHEN $2 = 'restoring' THEN $3 ELSE restore_requested_at END, \
                 updated_at = $3 WHERE id = $1",
            )
            .bind(id)
            .bind(state)
            .bind(at)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Images with a restore under way, oldest request first.
    pub async fn restoring_images(&self, limit: u32) -> Result<Vec<ImageId>> {
        let rows: Vec<(ImageId,)> = on_db!(self, |p, _pg| {
            sqlx::query_as(
                "SELECT id FROM images WHERE restore_state = 'restoring' AND deleted_at IS NULL \
                 ORDER BY restore_requested_at LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?
        });
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// Drops daily traffic before `day` and batch ids received before `t`.
    pub async fn prune_access(&self, day: NaiveDate, t: DateTime<Utc>) -> Result<()> {
        on_db!(self, |p, _pg| {
            sqlx::query("DELETE FROM access_daily WHERE day < $1")
                .bind(day)
                .execute(p)
                .await?;
            sqlx::query("DELETE FROM access_batches WHERE received_at < $1")
                .bind(t)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(())
    }
}
