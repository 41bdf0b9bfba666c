//! The catalog's tables: collections and their schema versions, each image's catalog record
//! (descriptive values with sources, rights, workflow, validation, lineage), the field and term
//! indexes listing filters and sorts on, review reasons, and correction history with sources.
//!
//! Every change to an image's descriptive metadata, rights or workflow goes through one
//! transaction that checks the image's version (optimistic concurrency), writes the new state,
//! records each field's before and after with who, when, why and the source, updates the
//! review queue, and queues a payload sync so the vector index filters on the new values.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, FromRow};
use uuid::Uuid;

use super::images::ImageRow;
use super::jobs::enqueue_job;
use super::{now, BeginWrite, Db, Result, StoreError};
use crate::catalog::query::{Bind, CatalogFilter, FieldSort, Plan, SortPosition, SortValue, Sql};
use crate::catalog::review::NewReason;
use crate::catalog::sources::SourceInfo;
use crate::catalog::validate::Failure;
use crate::domain::{ImageId, JobKind, Owner, ReasonKind, WorkflowState};
use crate::filter::ImageFilter;
use crate::{bind_catalog, on_db, on_db_retrying};

/// A collection.
#[derive(Debug, Clone, FromRow)]
pub struct CollectionRow {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub owner: Owner,
    /// Name, unique per owner.
    pub name: String,
    /// For people.
    pub description: Option<String>,
    /// The owner's default collection.
    pub is_default: bool,
    /// `refuse` or `review`.
    pub on_invalid: String,
    /// Publishing needs approval.
    pub publish_requires_approval: bool,
    /// The current schema version (0: none).
    pub schema_version: i32,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl CollectionRow {
    /// Whether failing uploads are refused (else routed to review).
    pub fn refuses_invalid(&self) -> bool {
        self.on_invalid == "refuse"
    }
}

/// One version of a collection's schema.
#[derive(Debug, Clone, FromRow)]
pub struct SchemaRow {
    /// Version.
    pub version: i32,
    /// Field definitions (JSON array of `FieldDef`).
    pub fields: Json<Value>,
    /// Vocabulary (JSON array of `TermDef`).
    pub terms: Json<Value>,
    /// Who wrote it.
    pub created_by: String,
    /// Why.
    pub reason: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// An image's catalog record.
#[derive(Debug, Clone, FromRow)]
pub struct CatalogRow {
    /// The image.
    pub image_id: ImageId,
    /// Its owner.
    pub owner: Owner,
    /// Its collection.
    pub collection_id: Uuid,
    /// Descriptive values other than caption and keywords.
    pub fields: Json<BTreeMap<String, Value>>,
    /// Where each value came from (caption and keywords included).
    pub sources: Json<BTreeMap<String, SourceInfo>>,
    /// Vocabulary terms carried (without ancestors).
    pub terms: Json<Vec<String>>,
    /// Rights window start.
    pub rights_from: Option<DateTime<Utc>>,
    /// Rights window end.
    pub rights_until: Option<DateTime<Utc>>,
    /// `clear` or `withheld`, as the scheduler last applied it.
    pub rights_applied: String,
    /// Edges and CDN purged since it became withheld.
    pub rights_purged: bool,
    /// When the scheduler applied the current rights state.
    pub rights_applied_at: Option<DateTime<Utc>>,
    /// Workflow state.
    pub workflow_state: WorkflowState,
    /// Version (optimistic concurrency).
    pub version: i32,
    /// In the review queue since.
    pub queued_at: Option<DateTime<Utc>>,
    /// Highest open reason's priority.
    pub review_priority: i32,
    /// Failures of the last validation.
    pub validation: Json<Vec<Failure>>,
    /// Schema version last validated against.
    pub validated_version: i32,
    /// Source image.
    pub derived_from: Option<Uuid>,
    /// `version` or `derivative`.
    pub relation: Option<String>,
    /// First version of its chain.
    pub lineage_root: Option<Uuid>,
    /// Number in its chain.
    pub version_number: i32,
    /// The chain's current version.
    pub is_current: bool,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl CatalogRow {
    /// The chain this image belongs to (its root, or itself).
    pub fn root(&self) -> Uuid {
        self.lineage_root.unwrap_or(self.image_id.0)
    }
}

/// An open or resolved review reason.
#[derive(Debug, Clone, FromRow)]
pub struct ReasonRow {
    /// Id.
    pub id: i64,
    /// The image.
    pub image_id: ImageId,
    /// Kind.
    pub kind: ReasonKind,
    /// Details.
    pub detail: Json<Value>,
    /// Priority.
    pub priority: i32,
    /// Since.
    pub created_at: DateTime<Utc>,
}

/// An image in the review queue.
#[derive(Debug, Clone, FromRow)]
pub struct QueueRow {
    /// The image.
    #[sqlx(flatten)]
    pub image: ImageRow,
    /// In the queue since.
    pub queued_at: DateTime<Utc>,
    /// Highest open reason's priority.
    pub review_priority: i32,
    /// Catalog version.
    pub catalog_version: i32,
    /// Workflow state.
    pub workflow: WorkflowState,
}

/// Order of the review queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueOrder {
    /// Longest waiting first.
    Oldest,
    /// Highest priority first, then longest waiting.
    Priority,
}

/// Where a queue page ended: `(priority, queued_at, id)` of its last item.
pub type QueuePos = (i32, DateTime<Utc>, Uuid);

/// Waiting items of one reason kind.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct QueueStat {
    /// The reason kind.
    pub reason: String,
    /// Images waiting with it.
    pub waiting: i64,
    /// Since when the oldest has waited.
    pub oldest: Option<DateTime<Utc>>,
    /// Waiting under an hour.
    pub under_1h: i64,
    /// Waiting an hour to a day.
    pub under_1d: i64,
    /// Waiting a day to a week.
    pub under_7d: i64,
    /// Waiting a week or more.
    pub over_7d: i64,
}

/// One recorded change.
#[derive(Debug, Clone, FromRow)]
pub struct ChangeRow {
    /// Sequence number.
    pub id: i64,
    /// The field.
    pub field: String,
    /// Before.
    pub old_value: Option<Json<Value>>,
    /// After.
    pub new_value: Option<Json<Value>>,
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
    /// Where the new value came from.
    pub source: Option<String>,
    /// The change it belonged to (the image's version after it).
    pub change_id: Option<String>,
}

/// A field's change inside a larger change.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    /// Field (history name).
    pub field: String,
    /// Before.
    pub old: Option<Value>,
    /// After.
    pub new: Option<Value>,
    /// Source of the new value.
    pub source: String,
}

/// What to write for an image's descriptive metadata.
#[derive(Debug, Clone, Default)]
pub struct DescriptiveWrite {
    /// Caption (on the image row).
    pub caption: Option<String>,
    /// Keywords (the image's tags).
    pub keywords: Vec<String>,
    /// Other values.
    pub fields: BTreeMap<String, Value>,
    /// Sources of every value.
    pub sources: BTreeMap<String, SourceInfo>,
    /// Terms carried.
    pub terms: Vec<String>,
    /// Terms with ancestors, and whether given directly.
    pub expanded_terms: Vec<(String, bool)>,
    /// Field-index rows `(field, item, text, number)`.
    pub index_rows: Vec<(String, i32, String, Option<f64>)>,
    /// Rights window.
    pub rights_from: Option<DateTime<Utc>>,
    /// Rights window end.
    pub rights_until: Option<DateTime<Utc>>,
    /// Validation failures.
    pub failures: Vec<Failure>,
    /// Schema version validated against.
    pub schema_version: i32,
}

/// A new image's catalog record, written with the image in one transaction.
#[derive(Debug, Clone)]
pub struct CatalogInsert {
    /// Collection.
    pub collection_id: Uuid,
    /// Descriptive metadata.
    pub write: DescriptiveWrite,
    /// Initial workflow state.
    pub workflow: WorkflowState,
    /// Reasons to route it to review with.
    pub reasons: Vec<NewReason>,
    /// Lineage: the source image and how this relates to it.
    pub derived_from: Option<(Uuid, crate::catalog::lineage::Relation)>,
    /// History entries for the initial values.
    pub changes: Vec<FieldChange>,
    /// Who.
    pub actor: String,
}

/// Inserts history rows inside `$tx`: `$changes` iterates over `&FieldChange`.
macro_rules! history {
    ($tx:expr, $image:expr, $changes:expr, $actor:expr, $reason:expr, $change_id:expr, $t:expr) => {{
        for c in $changes {
            let c: &$crate::store::catalog::FieldChange = c;
            sqlx::query(
                "INSERT INTO image_history (image_id, field, old_value, new_value, actor, reason, at, source, change_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind($image)
            .bind(&c.field)
            .bind(c.old.clone().map(sqlx::types::Json))
            .bind(c.new.clone().map(sqlx::types::Json))
            .bind($actor)
            .bind($reason)
            .bind($t)
            .bind(&c.source)
            .bind($change_id)
            .execute(&mut *$tx)
            .await?;
        }
    }};
}
pub(crate) use history;

/// Writes the field and term indexes of an image inside `$tx` (replacing what was there).
macro_rules! write_indexes {
    ($tx:expr, $image:expr, $w:expr) => {{
        let w: &$crate::store::catalog::DescriptiveWrite = $w;
        sqlx::query("DELETE FROM image_fields WHERE image_id = $1")
            .bind($image)
            .execute(&mut *$tx)
            .await?;
        // Each row carries its image's owner and upload time, for walks in upload order
        // (migration 0091); read only when there are rows to write.
        if !w.index_rows.is_empty() {
            let (owner, uploaded_at): (String, chrono::DateTime<chrono::Utc>) =
                sqlx::query_as("SELECT owner, uploaded_at FROM images WHERE id = $1")
                    .bind($image)
                    .fetch_one(&mut *$tx)
                    .await?;
            for chunk in w.index_rows.chunks(100) {
                let mut sql = String::from(
                    "INSERT INTO image_fields \
                     (image_id, img_owner, img_uploaded_at, field, item, text_value, num_value) VALUES ",
                );
                for i in 0..chunk.len() {
                    let b = 3 + i * 4;
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    sql += &format!("($1, $2, $3, ${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4);
                }
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind($image)
                    .bind(&owner)
                    .bind(uploaded_at);
                for (f, item, text, num) in chunk {
                    q = q.bind(f.clone()).bind(*item).bind(text.clone()).bind(*num);
                }
                q.execute(&mut *$tx).await?;
            }
        }
        sqlx::query("DELETE FROM image_terms WHERE image_id = $1")
            .bind($image)
            .execute(&mut *$tx)
            .await?;
        for (term, direct) in &w.expanded_terms {
            sqlx::query("INSERT INTO image_terms (image_id, term, direct) VALUES ($1, $2, $3)")
                .bind($image)
                .bind(term)
                .bind(*direct)
                .execute(&mut *$tx)
                .await?;
        }
    }};
}
pub(crate) use write_indexes;

/// Recomputes an image's place in the review queue from its open reasons, inside `$tx`.
macro_rules! refresh_queue {
    ($tx:expr, $image:expr) => {{
        sqlx::query(
            "UPDATE image_catalog SET \
             queued_at = (SELECT MIN(created_at) FROM review_reasons r WHERE r.image_id = $1 AND r.resolved_at IS NULL), \
             review_priority = COALESCE((SELECT MAX(priority) FROM review_reasons r WHERE r.image_id = $1 AND r.resolved_at IS NULL), 0) \
             WHERE image_id = $1",
        )
        .bind($image)
        .execute(&mut *$tx)
        .await?;
    }};
}
pub(crate) use refresh_queue;

/// Moves an image's workflow state inside `$tx` (catalog and the legacy review state), with
/// its history entry.
macro_rules! set_workflow {
    ($tx:expr, $image:expr, $from:expr, $to:expr, $actor:expr, $reason:expr, $change_id:expr, $t:expr) => {{
        let to: $crate::domain::WorkflowState = $to;
        let from: $crate::domain::WorkflowState = $from;
        sqlx::query("UPDATE image_catalog SET workflow_state = $2, updated_at = $3 WHERE image_id = $1")
            .bind($image)
            .bind(to)
            .bind($t)
            .execute(&mut *$tx)
            .await?;
        sqlx::query(
            "UPDATE images SET review_state = $2, review_reason = COALESCE($3, review_reason), updated_at = $4 WHERE id = $1",
        )
        .bind($image)
        .bind($crate::catalog::workflow::review_state_of(to))
        .bind($reason)
        .bind($t)
        .execute(&mut *$tx)
        .await?;
        let change = $crate::store::catalog::FieldChange {
            field: "workflow_state".into(),
            old: Some(serde_json::Value::String(from.as_str().into())),
            new: Some(serde_json::Value::String(to.as_str().into())),
            source: "person".into(),
        };
        $crate::store::catalog::history!($tx, $image, [&change], $actor, $reason, $change_id, $t);
    }};
}
pub(crate) use set_workflow;

/// Adds review reasons inside `$tx`; a blocking reason moves a draft to `in_review`. Reasons
/// of a kind the image already has open are refreshed instead of repeated. Evaluates to
/// whether the workflow moved.
macro_rules! add_reasons {
    ($tx:expr, $image:expr, $reasons:expr, $actor:expr, $t:expr) => {{
        let mut moved = false;
        for r in $reasons {
            let r: &$crate::catalog::review::NewReason = r;
            let open: Option<(i64,)> = sqlx::query_as(
                "SELECT id FROM review_reasons WHERE image_id = $1 AND kind = $2 AND resolved_at IS NULL",
            )
            .bind($image)
            .bind(r.kind)
            .fetch_optional(&mut *$tx)
            .await?;
            match open {
                Some((id,)) => {
                    sqlx::query("UPDATE review_reasons SET detail = $2, priority = $3 WHERE id = $1")
                        .bind(id)
                        .bind(sqlx::types::Json(&r.detail))
                        .bind(r.priority)
                        .execute(&mut *$tx)
                        .await?;
                }
                None => {
                    sqlx::query(
                        "INSERT INTO review_reasons (image_id, kind, detail, priority, created_at, owner) \
                         VALUES ($1, $2, $3, $4, $5, (SELECT owner FROM images WHERE id = $1))",
                    )
                    .bind($image)
                    .bind(r.kind)
                    .bind(sqlx::types::Json(&r.detail))
                    .bind(r.priority)
                    .bind($t)
                    .execute(&mut *$tx)
                    .await?;
                }
            }
            if $crate::catalog::review::blocks(r.kind) && !moved {
                let cur: Option<($crate::domain::WorkflowState,)> = sqlx::query_as(
                    "SELECT workflow_state FROM image_catalog WHERE image_id = $1",
                )
                .bind($image)
                .fetch_optional(&mut *$tx)
                .await?;
                if let Some(($crate::domain::WorkflowState::Draft,)) = cur {
                    let why = Some($crate::catalog::review::summary(r.kind, &r.detail));
                    $crate::store::catalog::set_workflow!(
                        $tx,
                        $image,
                        $crate::domain::WorkflowState::Draft,
                        $crate::domain::WorkflowState::InReview,
                        $actor,
                        &why,
                        None::<String>,
                        $t
                    );
                    moved = true;
                }
            }
        }
        $crate::store::catalog::refresh_queue!($tx, $image);
        moved
    }};
}
pub(crate) use add_reasons;

/// Writes the validation reason of `$w` inside `$tx`: refreshed when there are failures,
/// resolved when there are none.
macro_rules! validation_reason {
    ($tx:expr, $image:expr, $w:expr, $actor:expr, $t:expr) => {{
        let w: &$crate::store::catalog::DescriptiveWrite = $w;
        if w.failures.is_empty() {
            sqlx::query(
                "UPDATE review_reasons SET resolved_at = $2, resolved_by = $3 WHERE image_id = $1 \
                 AND kind = 'validation' AND resolved_at IS NULL",
            )
            .bind($image)
            .bind($t)
            .bind($actor)
            .execute(&mut *$tx)
            .await?;
            $crate::store::catalog::refresh_queue!($tx, $image);
        } else {
            let r = $crate::catalog::review::NewReason::validation(
                &w.failures,
                i64::from(w.schema_version),
            );
            let _ = $crate::store::catalog::add_reasons!($tx, $image, [&r], $actor, $t);
        }
    }};
}
#[allow(unused_imports)]
pub(crate) use validation_reason;

/// Inserts a new image's catalog record inside `$tx` (both backends): the record, its field
/// and term indexes, lineage, review reasons and the history of its initial values. Used by
/// the insert paths of `store::images`.
macro_rules! insert_catalog {
    ($tx:expr, $image:expr, $owner:expr, $c:expr, $t:expr) => {{
        let c: &$crate::store::catalog::CatalogInsert = $c;
        let w = &c.write;
        // Lineage: a version joins its source's chain and becomes current.
        let mut root = None::<uuid::Uuid>;
        let mut number = 1i32;
        let mut relation = None::<&str>;
        let mut derived = None::<uuid::Uuid>;
        if let Some((parent, rel)) = c.derived_from {
            derived = Some(parent);
            relation = Some(rel.as_str());
            if rel == $crate::catalog::lineage::Relation::Version {
                let p: Option<(Option<uuid::Uuid>,)> = sqlx::query_as(
                    "SELECT lineage_root FROM image_catalog WHERE image_id = $1",
                )
                .bind(parent)
                .fetch_optional(&mut *$tx)
                .await?;
                let r = p.and_then(|p| p.0).unwrap_or(parent);
                let max: (Option<i32>,) = sqlx::query_as(
                    "SELECT MAX(version_number) FROM image_catalog WHERE image_id = $1 OR lineage_root = $1",
                )
                .bind(r)
                .fetch_one(&mut *$tx)
                .await?;
                root = Some(r);
                number = max.0.unwrap_or(0) + 1;
            }
        }
        sqlx::query(
            "INSERT INTO image_catalog (image_id, owner, collection_id, fields, sources, terms, rights_from, \
             rights_until, workflow_state, validation, validated_version, derived_from, relation, lineage_root, \
             version_number, is_current, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, TRUE, $16)",
        )
        .bind($image)
        .bind($owner)
        .bind(c.collection_id)
        .bind(sqlx::types::Json(&w.fields))
        .bind(sqlx::types::Json(&w.sources))
        .bind(sqlx::types::Json(&w.terms))
        .bind(w.rights_from)
        .bind(w.rights_until)
        .bind(c.workflow)
        .bind(sqlx::types::Json(&w.failures))
        .bind(w.schema_version)
        .bind(derived)
        .bind(relation)
        .bind(root)
        .bind(number)
        .bind($t)
        .execute(&mut *$tx)
        .await?;
        if !w.keywords.is_empty() {
            sqlx::query("UPDATE images SET tags = $2 WHERE id = $1")
                .bind($image)
                .bind(sqlx::types::Json(&w.keywords))
                .execute(&mut *$tx)
                .await?;
        }
        $crate::store::catalog::write_indexes!($tx, $image, w);
        let change_id = Some("1".to_owned());
        $crate::store::catalog::history!($tx, $image, &c.changes, &c.actor, None::<String>, &change_id, $t);
        if let Some(r) = root {
            // The chain's earlier versions are no longer current.
            let older: Vec<(uuid::Uuid,)> = sqlx::query_as(
                "SELECT image_id FROM image_catalog WHERE (image_id = $1 OR lineage_root = $1) \
                 AND image_id <> $2 AND is_current = TRUE",
            )
            .bind(r)
            .bind($image)
            .fetch_all(&mut *$tx)
            .await?;
            for (o,) in older {
                sqlx::query(
                    "UPDATE image_catalog SET is_current = FALSE, lineage_root = $2, version = version + 1, updated_at = $3 \
                     WHERE image_id = $1",
                )
                .bind(o)
                .bind(r)
                .bind($t)
                .execute(&mut *$tx)
                .await?;
                let ch = $crate::store::catalog::FieldChange {
                    field: "current".into(),
                    old: Some(serde_json::Value::Bool(true)),
                    new: Some(serde_json::Value::Bool(false)),
                    source: "system".into(),
                };
                let why = Some(format!("superseded by version {number} ({})", $image));
                $crate::store::catalog::history!($tx, o, [&ch], &c.actor, &why, None::<String>, $t);
                $crate::store::jobs::enqueue_job!($tx, o, $crate::domain::JobKind::SyncPayload, 5, $t);
            }
        }
        let _ = $crate::store::catalog::add_reasons!($tx, $image, &c.reasons, &c.actor, $t);
    }};
}
pub(crate) use insert_catalog;

/// Routes an image with near-duplicates to review with the closest pair as the reason
/// (the others listed in it), inside `$tx`: called where the pairs are recorded.
macro_rules! route_near_duplicates {
    ($tx:expr, $image:expr, $dups:expr, $t:expr) => {{
        let dups: &[$crate::store::search::NearDuplicate] = $dups;
        if let Some(first) = dups.first() {
            let has_row: Option<(i32,)> =
                sqlx::query_as("SELECT version FROM image_catalog WHERE image_id = $1")
                    .bind($image)
                    .fetch_optional(&mut *$tx)
                    .await?;
            if has_row.is_some() {
                let mut reason = $crate::catalog::review::NewReason::near_duplicate(
                    first.other.0,
                    first.method,
                    first.distance,
                );
                reason.detail["others"] = serde_json::json!(dups
                    .iter()
                    .map(|d| serde_json::json!({"id": d.other, "method": d.method, "distance": d.distance}))
                    .collect::<Vec<_>>());
                let _ = $crate::store::catalog::add_reasons!($tx, $image, [&reason], "ingest", $t);
            }
        }
    }};
}
pub(crate) use route_near_duplicates;

/// What a write reads from the catalog row it locks ([`lock_catalog_row!`]).
#[derive(Debug, Clone, FromRow)]
pub(crate) struct LockedRow {
    /// Version (optimistic concurrency).
    pub version: i32,
    /// Workflow state.
    pub workflow_state: WorkflowState,
    /// Source image.
    pub derived_from: Option<Uuid>,
    /// `version` or `derivative`.
    pub relation: Option<String>,
    /// The image's processing status.
    pub status: String,
}

/// Locks an image's catalog row for the rest of the write transaction `$tx` and reads it
/// (`FOR UPDATE` on Postgres; SQLite's write transaction already keeps other writers out).
/// `live`: only a live image counts, and its image row is locked too; `any`: deleted images
/// count, and only the catalog row is locked. Rolls back and returns `Written::Missing` from
/// the calling function when there is no such row, `Written::Stale` when `$expected`
/// (`Option<i32>`) is not its version; else evaluates to the [`LockedRow`].
macro_rules! lock_catalog_row {
    ($tx:expr, $id:expr, $pg:expr, $expected:expr, live) => {
        $crate::store::catalog::lock_catalog_row!(
            @run $tx, $id, $expected,
            if $pg { " AND i.deleted_at IS NULL FOR UPDATE" } else { " AND i.deleted_at IS NULL" }
        )
    };
    ($tx:expr, $id:expr, $pg:expr, $expected:expr, any) => {
        $crate::store::catalog::lock_catalog_row!(
            @run $tx, $id, $expected,
            if $pg { " FOR UPDATE OF c" } else { "" }
        )
    };
    (@run $tx:expr, $id:expr, $expected:expr, $tail:expr) => {{
        let row: Option<$crate::store::catalog::LockedRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT c.version, c.workflow_state, c.derived_from, c.relation, i.status \
             FROM image_catalog c JOIN images i ON i.id = c.image_id WHERE c.image_id = $1{}",
            $tail
        )))
        .bind($id)
        .fetch_optional(&mut *$tx)
        .await?;
        let Some(row) = row else {
            $tx.rollback().await?;
            return Ok($crate::store::catalog::Written::Missing);
        };
        let expected: Option<i32> = $expected;
        if expected.is_some_and(|e| e != row.version) {
            $tx.rollback().await?;
            return Ok($crate::store::catalog::Written::Stale(row.version));
        }
        row
    }};
}
pub(crate) use lock_catalog_row;

/// Result of writing a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Written; the image's version now.
    Done(i32),
    /// The version given is not the current one.
    Stale(i32),
    /// Nothing changed (the version is unchanged).
    Unchanged(i32),
    /// No such image (or no catalog record).
    Missing,
    /// Refused by a rule checked against the locked row (the text says why).
    Refused(String),
    /// Forbidden by a rule checked against the locked row.
    Forbidden(String),
}

impl Db {
    // ---- collections -------------------------------------------------------------------

    /// Creates a collection; a taken name is a conflict.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_collection(
        &self,
        owner: &Owner,
        name: &str,
        description: Option<&str>,
        on_invalid: &str,
        publish_requires_approval: bool,
        is_default: bool,
    ) -> Result<CollectionRow> {
        let t = now();
        let id = Uuid::new_v4();
        on_db!(self, |p, _pg| {
            sqlx::query(
                "INSERT INTO collections (id, owner, name, description, is_default, on_invalid, \
                 publish_requires_approval, schema_version, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8)",
            )
            .bind(id)
            .bind(owner)
            .bind(name)
            .bind(description)
            .bind(is_default)
            .bind(on_invalid)
            .bind(publish_requires_approval)
            .bind(t)
            .execute(p)
            .await
            .map_err(StoreError::classify)?;
        });
        self.get_collection(id)
            .await?
            .ok_or_else(|| StoreError::Conflict("collections".into()))
    }

    /// The owner's default collection, created on first use.
    pub async fn default_collection(&self, owner: &Owner) -> Result<CollectionRow> {
        let find = || async {
            Ok::<_, StoreError>(on_db!(self, |p, _pg| {
                sqlx::query_as::<_, CollectionRow>(
                    "SELECT * FROM collections WHERE owner = $1 AND is_default",
                )
                .bind(owner)
                .fetch_optional(p)
                .await?
            }))
        };
        if let Some(c) = find().await? {
            return Ok(c);
        }
        let t = now();
        on_db!(self, |p, _pg| {
            sqlx::query(
                "INSERT INTO collections (id, owner, name, is_default, on_invalid, publish_requires_approval, \
                 schema_version, created_at, updated_at) VALUES ($1, $2, 'default', TRUE, 'review', TRUE, 0, $3, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(Uuid::new_v4())
            .bind(owner)
            .bind(t)
            .execute(p)
            .await?;
        });
        find()
            .await?
            .ok_or_else(|| StoreError::Conflict("collections_default".into()))
    }

    /// One collection.
    pub async fn get_collection(&self, id: Uuid) -> Result<Option<CollectionRow>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as::<_, CollectionRow>("SELECT * FROM collections WHERE id = $1")
                .bind(id)
                .fetch_optional(p)
                .await?
        }))
    }

    /// An owner's collection by name.
    pub async fn find_collection(
        &self,
        owner: &Owner,
        name: &str,
    ) -> Result<Option<CollectionRow>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as::<_, CollectionRow>(
                "SELECT * FROM collections WHERE owner = $1 AND name = $2",
            )
            .bind(owner)
            .bind(name)
            .fetch_optional(p)
            .await?
        }))
    }

    /// Collections by owner and name, after `(owner, name)`.
    pub async fn list_collections(
        &self,
        owner: Option<&Owner>,
        after: Option<(String, String)>,
        limit: u32,
    ) -> Result<Vec<CollectionRow>> {
        let mut sql = String::from("SELECT * FROM collections WHERE TRUE");
        let mut n = 0;
        if owner.is_some() {
            n += 1;
            sql += &format!(" AND owner = ${n}");
        }
        if after.is_some() {
            sql += &format!(
                " AND (owner > ${a} OR (owner = ${a} AND name > ${b}))",
                a = n + 1,
                b = n + 2
            );
        }
        sql += &format!(" ORDER BY owner, name LIMIT {}", limit.clamp(1, 1001));
        Ok(on_db!(self, |p, _pg| {
            let mut q = sqlx::query_as::<_, CollectionRow>(AssertSqlSafe(sql));
            if let Some(o) = owner {
                q = q.bind(o.clone());
            }
            if let Some((o, n)) = after {
                q = q.bind(o).bind(n);
            }
            q.fetch_all(p).await?
        }))
    }

    /// Changes a collection's settings; `None` leaves one.
    pub async fn update_collection(
        &self,
        id: Uuid,
        description: Option<Option<String>>,
        on_invalid: Option<&str>,
        publish_requires_approval: Option<bool>,
    ) -> Result<Option<CollectionRow>> {
        let t = now();
        on_db!(self, |p, _pg| {
            sqlx::query(
                "UPDATE collections SET description = CASE WHEN $2 THEN $3 ELSE description END, \
                 on_invalid = COALESCE($4, on_invalid), \
                 publish_requires_approval = COALESCE($5, publish_requires_approval), updated_at = $6 \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(description.is_some())
            .bind(description.flatten())
            .bind(on_invalid)
            .bind(publish_requires_approval)
            .bind(t)
            .execute(p)
            .await?;
        });
        self.get_collection(id).await
    }

    /// Writes a new schema version (fields, vocabulary and the field types filters use) and
    /// makes it current; returns its number.
    pub async fn put_schema(
        &self,
        collection: Uuid,
        fields: &Value,
        terms: &Value,
        kinds: &[(String, &'static str)],
        actor: &str,
        reason: Option<&str>,
    ) -> Result<i32> {
        let t = now();
        Ok(on_db_retrying!(self, |p, _pg| {
            let mut tx = p.begin_write().await?;
            let cur: (i32,) =
                sqlx::query_as("SELECT schema_version FROM collections WHERE id = $1")
                    .bind(collection)
                    .fetch_one(&mut *tx)
                    .await?;
            let v = cur.0 + 1;
            sqlx::query(
                "INSERT INTO collection_schemas (collection_id, version, fields, terms, created_by, reason, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(collection)
            .bind(v)
            .bind(Json(fields))
            .bind(Json(terms))
            .bind(actor)
            .bind(reason)
            .bind(t)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::classify)?;
            sqlx::query(
                "UPDATE collections SET schema_version = $2, updated_at = $3 WHERE id = $1",
            )
            .bind(collection)
            .bind(v)
            .bind(t)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM collection_fields WHERE collection_id = $1")
                .bind(collection)
                .execute(&mut *tx)
                .await?;
            for (name, kind) in kinds {
                sqlx::query("INSERT INTO collection_fields (collection_id, field, kind) VALUES ($1, $2, $3)")
                    .bind(collection)
                    .bind(name)
                    .bind(*kind)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            v
        }))
    }

    /// One schema version (`None`: the current one); `None` when there is none.
    pub async fn schema_version(
        &self,
        collection: Uuid,
        version: Option<i32>,
    ) -> Result<Option<SchemaRow>> {
        Ok(on_db!(self, |p, _pg| {
            match version {
                Some(v) => sqlx::query_as::<_, SchemaRow>(
                    "SELECT version, fields, terms, created_by, reason, created_at FROM collection_schemas \
                     WHERE collection_id = $1 AND version = $2",
                )
                .bind(collection)
                .bind(v)
                .fetch_optional(p)
                .await?,
                None => sqlx::query_as::<_, SchemaRow>(
                    "SELECT s.version, s.fields, s.terms, s.created_by, s.reason, s.created_at \
                     FROM collection_schemas s JOIN collections c ON c.id = s.collection_id \
                     AND c.schema_version = s.version WHERE s.collection_id = $1",
                )
                .bind(collection)
                .fetch_optional(p)
                .await?,
            }
        }))
    }

    /// Every schema version of a collection, newest first (without the definitions' bodies
    /// being parsed).
    pub async fn schema_versions(&self, collection: Uuid) -> Result<Vec<SchemaRow>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as::<_, SchemaRow>(
                "SELECT version, fields, terms, created_by, reason, created_at FROM collection_schemas \
                 WHERE collection_id = $1 ORDER BY version DESC",
            )
            .bind(collection)
            .fetch_all(p)
            .await?
        }))
    }

    /// The types fields called `names` have in the current schemas of the collections in
    /// scope (one collection, an owner's, or all), as declared: `(field, kind)` pairs.
    pub async fn field_kinds(
        &self,
        names: &[String],
        collection: Option<Uuid>,
        owner: Option<&Owner>,
    ) -> Result<Vec<(String, String)>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = String::from(
            "SELECT DISTINCT f.field, f.kind FROM collection_fields f JOIN collections c ON c.id = f.collection_id WHERE f.field IN (",
        );
        for i in 0..names.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql += &format!("${}", i + 1);
        }
        sql.push(')');
        let mut n = names.len();
        if collection.is_some() {
            n += 1;
            sql += &format!(" AND c.id = ${n}");
        }
        if owner.is_some() {
            n += 1;
            sql += &format!(" AND c.owner = ${n}");
        }
        Ok(on_db!(self, |p, _pg| {
            let mut q = sqlx::query_as::<_, (String, String)>(AssertSqlSafe(sql));
            for name in names {
                q = q.bind(name.clone());
            }
            if let Some(c) = collection {
                q = q.bind(c);
            }
            if let Some(o) = owner {
                q = q.bind(o.clone());
            }
            q.fetch_all(p).await?
        }))
    }

    // ---- image records -----------------------------------------------------------------

    /// An image's catalog record.
    pub async fn catalog_of(&self, id: ImageId) -> Result<Option<CatalogRow>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as::<_, CatalogRow>("SELECT * FROM image_catalog WHERE image_id = $1")
                .bind(id)
                .fetch_optional(p)
                .await?
        }))
    }

    /// Catalog records of several images (missing ones skipped).
    pub async fn catalogs_of(&self, ids: &[ImageId]) -> Result<Vec<CatalogRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT * FROM image_catalog WHERE image_id IN ({})",
            marks.join(", ")
        );
        Ok(on_db!(self, |p, _pg| {
            let mut q = sqlx::query_as::<_, CatalogRow>(AssertSqlSafe(sql));
            for id in ids {
                q = q.bind(*id);
            }
            q.fetch_all(p).await?
        }))
    }

    /// The terms several images carry with their ancestors: `(image, term, given directly)`.
    pub async fn terms_of(&self, ids: &[ImageId]) -> Result<Vec<(ImageId, String, bool)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT image_id, term, direct FROM image_terms WHERE image_id IN ({}) ORDER BY term",
            marks.join(", ")
        );
        Ok(on_db!(self, |p, _pg| {
            let mut q = sqlx::query_as::<_, (ImageId, String, bool)>(AssertSqlSafe(sql));
            for id in ids {
                q = q.bind(*id);
            }
            q.fetch_all(p).await?
        }))
    }

    /// The terms an image carries with their ancestors.
    pub async fn terms_with_ancestors(&self, id: ImageId) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = on_db!(self, |p, _pg| {
            sqlx::query_as("SELECT term FROM image_terms WHERE image_id = $1 ORDER BY term")
                .bind(id)
                .fetch_all(p)
                .await?
        });
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// Writes an image's descriptive metadata if its version is still `expected` (`None`:
    /// any): values, indexes, validation reason, history and a payload sync, in one
    /// transaction. `changes` are the per-field differences the caller computed; nothing is
    /// written when they are empty.
    #[allow(clippy::too_many_arguments)]
    pub async fn write_descriptive(
        &self,
        id: ImageId,
        expected: Option<i32>,
        w: &DescriptiveWrite,
        changes: &[FieldChange],
        actor: &str,
        reason: Option<&str>,
        max_attempts: u32,
    ) -> Result<Written> {
        let t = now();
        Ok(on_db_retrying!(self, |p, pg| {
            let mut tx = p.begin_write().await?;
            let LockedRow {
                version, status, ..
            } = lock_catalog_row!(tx, id, pg, expected, live);
            if changes.is_empty() {
                tx.rollback().await?;
                return Ok(Written::Unchanged(version));
            }
            let new_version = version + 1;
            sqlx::query("UPDATE images SET caption = $2, tags = $3, updated_at = $4 WHERE id = $1")
                .bind(id)
                .bind(&w.caption)
                .bind(Json(&w.keywords))
                .bind(t)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE image_catalog SET fields = $2, sources = $3, terms = $4, rights_from = $5, rights_until = $6, \
                 validation = $7, validated_version = $8, version = $9, updated_at = $10 WHERE image_id = $1",
            )
            .bind(id)
            .bind(Json(&w.fields))
            .bind(Json(&w.sources))
            .bind(Json(&w.terms))
            .bind(w.rights_from)
            .bind(w.rights_until)
            .bind(Json(&w.failures))
            .bind(w.schema_version)
            .bind(new_version)
            .bind(t)
            .execute(&mut *tx)
            .await?;
            write_indexes!(tx, id, w);
            let change_id = Some(new_version.to_string());
            history!(tx, id, changes, actor, reason, &change_id, t);
            validation_reason!(tx, id, w, actor, t);
            if status == "ready" {
                enqueue_job!(tx, id, JobKind::SyncPayload, max_attempts as i32, t);
            }
            tx.commit().await?;
            Written::Done(new_version)
        }))
    }

    /// Moves an image's workflow from its current state to `to` if its version is still
    /// `expected` (`None`: any) and `check` allows it from the state found; resolves every
    /// open reason on a decision, adds a `submitted` reason on submission. One transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn transition(
        &self,
        id: ImageId,
        expected: Option<i32>,
        to: WorkflowState,
        check: impl Fn(WorkflowState) -> std::result::Result<(), crate::catalog::workflow::Refusal>,
        actor: &str,
        reason: Option<&str>,
        max_attempts: u32,
    ) -> Result<Written> {
        let t = now();
        Ok(on_db_retrying!(self, |p, pg| {
            let mut tx = p.begin_write().await?;
            let LockedRow {
                version,
                workflow_state: from,
                status,
                ..
            } = lock_catalog_row!(tx, id, pg, expected, live);
            if let Err(refusal) = check(from) {
                tx.rollback().await?;
                return Ok(match refusal {
                    crate::catalog::workflow::Refusal::NotAllowed(m) => Written::Refused(m),
                    crate::catalog::workflow::Refusal::Forbidden(m) => Written::Forbidden(m),
                });
            }
            let new_version = version + 1;
            let change_id = Some(new_version.to_string());
            let reason_owned = reason.map(str::to_owned);
            set_workflow!(tx, id, from, to, actor, &reason_owned, &change_id, t);
            sqlx::query("UPDATE image_catalog SET version = $2 WHERE image_id = $1")
                .bind(id)
                .bind(new_version)
                .execute(&mut *tx)
                .await?;
            if crate::catalog::workflow::is_decision(to)
                || matches!(
                    to,
                    WorkflowState::Published | WorkflowState::Withdrawn | WorkflowState::Draft
                )
            {
                sqlx::query(
                    "UPDATE review_reasons SET resolved_at = $2, resolved_by = $3 WHERE image_id = $1 AND resolved_at IS NULL \
                     AND kind <> 'rights_ending'",
                )
                .bind(id)
                .bind(t)
                .bind(actor)
                .execute(&mut *tx)
                .await?;
            }
            if to == WorkflowState::InReview {
                let r = NewReason::submitted(actor, reason);
                let has_open: Option<(i64,)> = sqlx::query_as(
                    "SELECT id FROM review_reasons WHERE image_id = $1 AND resolved_at IS NULL AND kind <> 'rights_ending' \
                     AND kind <> 'suggested_tags' LIMIT 1",
                )
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                if has_open.is_none() {
                    sqlx::query(
                        "INSERT INTO review_reasons (image_id, kind, detail, priority, created_at, owner) \
                         VALUES ($1, $2, $3, $4, $5, (SELECT owner FROM images WHERE id = $1))",
                    )
                    .bind(id)
                    .bind(r.kind)
                    .bind(Json(&r.detail))
                    .bind(r.priority)
                    .bind(t)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            refresh_queue!(tx, id);
            if status == "ready" {
                enqueue_job!(tx, id, JobKind::SyncPayload, max_attempts as i32, t);
            }
            tx.commit().await?;
            Written::Done(new_version)
        }))
    }

    /// Resolves an image's open reasons (all, or of `kinds`) without a transition, if its
    /// version is still `expected`; bumps the version.
    pub async fn resolve_reasons(
        &self,
        id: ImageId,
        expected: Option<i32>,
        kinds: Option<&[ReasonKind]>,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<Written> {
        let t = now();
        Ok(on_db_retrying!(self, |p, pg| {
            let mut tx = p.begin_write().await?;
            let version = lock_catalog_row!(tx, id, pg, expected, any).version;
            let open: Vec<(i64, ReasonKind)> = sqlx::query_as(
                "SELECT id, kind FROM review_reasons WHERE image_id = $1 AND resolved_at IS NULL",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            let chosen: Vec<i64> = open
                .iter()
                .filter(|(_, k)| kinds.is_none_or(|ks| ks.contains(k)))
                .map(|(i, _)| *i)
                .collect();
            if chosen.is_empty() {
                tx.rollback().await?;
                return Ok(Written::Unchanged(version));
            }
            for rid in &chosen {
                sqlx::query(
                    "UPDATE review_reasons SET resolved_at = $2, resolved_by = $3 WHERE id = $1",
                )
                .bind(*rid)
                .bind(t)
                .bind(actor)
                .execute(&mut *tx)
                .await?;
            }
            let v = version + 1;
            sqlx::query(
                "UPDATE image_catalog SET version = $2, updated_at = $3 WHERE image_id = $1",
            )
            .bind(id)
            .bind(v)
            .bind(t)
            .execute(&mut *tx)
            .await?;
            let ch = FieldChange {
                field: "review_reasons".into(),
                old: Some(Value::from(chosen.len() as i64)),
                new: Some(Value::from(0)),
                source: "person".into(),
            };
            let reason_owned = reason
                .map(str::to_owned)
                .or(Some("acknowledged".to_owned()));
            history!(tx, id, [&ch], actor, &reason_owned, &Some(v.to_string()), t);
            refresh_queue!(tx, id);
            tx.commit().await?;
            Written::Done(v)
        }))
    }

    /// Adds review reasons to an image (a blocking one moves a draft to `in_review`).
    pub async fn add_reasons(
        &self,
        id: ImageId,
        reasons: &[NewReason],
        actor: &str,
        max_attempts: u32,
    ) -> Result<bool> {
        let t = now();
        Ok(on_db_retrying!(self, |p, _pg| {
            let mut tx = p.begin_write().await?;
            let row: Option<(String,)> = sqlx::query_as(
                "SELECT i.status FROM image_catalog c JOIN images i ON i.id = c.image_id WHERE c.image_id = $1",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((status,)) = row else {
                tx.rollback().await?;
                return Ok(false);
            };
            let moved = add_reasons!(tx, id, reasons, actor, t);
            if moved && status == "ready" {
                enqueue_job!(tx, id, JobKind::SyncPayload, max_attempts as i32, t);
            }
            tx.commit().await?;
            true
        }))
    }

    /// Open review reasons of images, oldest first.
    pub async fn open_reasons(&self, ids: &[ImageId]) -> Result<Vec<ReasonRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id, image_id, kind, detail, priority, created_at FROM review_reasons \
             WHERE resolved_at IS NULL AND image_id IN ({}) ORDER BY created_at, id",
            marks.join(", ")
        );
        Ok(on_db!(self, |p, _pg| {
            let mut q = sqlx::query_as::<_, ReasonRow>(AssertSqlSafe(sql));
            for id in ids {
                q = q.bind(*id);
            }
            q.fetch_all(p).await?
        }))
    }

    /// The review queue: live images with open reasons, by `order`, after `after`.
    pub async fn review_queue(
        &self,
        owner: Option<&Owner>,
        collection: Option<Uuid>,
        kind: Option<ReasonKind>,
        order: QueueOrder,
        after: Option<QueuePos>,
        limit: u32,
    ) -> Result<Vec<QueueRow>> {
        let mut sql = String::from(
            "SELECT images.*, c.queued_at AS queued_at, c.review_priority AS review_priority, \
             c.version AS catalog_version, c.workflow_state AS workflow \
             FROM image_catalog c JOIN images ON images.id = c.image_id \
             WHERE c.queued_at IS NOT NULL AND images.deleted_at IS NULL",
        );
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        if owner.is_some() {
            sql += &format!(" AND c.owner = ${}", next());
        }
        if collection.is_some() {
            sql += &format!(" AND c.collection_id = ${}", next());
        }
        if kind.is_some() {
            sql += &format!(
                " AND EXISTS (SELECT 1 FROM review_reasons r WHERE r.image_id = c.image_id \
                 AND r.resolved_at IS NULL AND r.kind = ${})",
                next()
            );
        }
        if after.is_some() {
            sql += &match order {
                QueueOrder::Oldest => {
                    let (tq, id) = (next(), next());
                    format!(" AND (c.queued_at > ${tq} OR (c.queued_at = ${tq} AND c.image_id > ${id}))")
                }
                QueueOrder::Priority => {
                    let (pr, tq, id) = (next(), next(), next());
                    format!(
                        " AND (c.review_priority < ${pr} OR (c.review_priority = ${pr} AND (c.queued_at > ${tq} \
                         OR (c.queued_at = ${tq} AND c.image_id > ${id}))))"
                    )
                }
            };
        }
        sql += match order {
            QueueOrder::Oldest => " ORDER BY c.queued_at, c.image_id",
            QueueOrder::Priority => " ORDER BY c.review_priority DESC, c.queued_at, c.image_id",
        };
        sql += &format!(" LIMIT {}", limit.clamp(1, 1001));
        Ok(on_db!(self, |p, _pg| {
            let mut q = sqlx::query_as::<_, QueueRow>(AssertSqlSafe(sql));
            if let Some(o) = owner {
                q = q.bind(o.clone());
            }
            if let Some(c) = collection {
                q = q.bind(c);
            }
            if let Some(k) = kind {
                q = q.bind(k);
            }
            if let Some((pr, tq, id)) = after {
                if order == QueueOrder::Priority {
                    q = q.bind(pr);
                }
                q = q.bind(tq).bind(id);
            }
            q.fetch_all(p).await?
        }))
    }

    /// Waiting count and age buckets by reason kind (`owner` narrows it): the open reasons
    /// of live images. Counted from an index of open reasons alone, less the reasons of
    /// deleted images not purged yet (few, from their own index); cheap enough for every
    /// metrics scrape.
    pub async fn queue_stats_by_reason(&self, owner: Option<&Owner>) -> Result<Vec<QueueStat>> {
        let t = now();
        let h = t - chrono::Duration::hours(1);
        let d = t - chrono::Duration::days(1);
        let w = t - chrono::Duration::days(7);
        let cols = "r.kind, COUNT(*), MIN(r.created_at), \
             SUM(CASE WHEN r.created_at > $1 THEN 1 ELSE 0 END), \
             SUM(CASE WHEN r.created_at <= $1 AND r.created_at > $2 THEN 1 ELSE 0 END), \
             SUM(CASE WHEN r.created_at <= $2 AND r.created_at > $3 THEN 1 ELSE 0 END), \
             SUM(CASE WHEN r.created_at <= $3 THEN 1 ELSE 0 END)";
        let by_owner = if owner.is_some() {
            " AND r.owner = $4"
        } else {
            ""
        };
        let open = format!(
            "SELECT {cols} FROM review_reasons r WHERE r.resolved_at IS NULL{by_owner} \
             GROUP BY r.kind ORDER BY r.kind"
        );
        let deleted = format!(
            "SELECT {cols} FROM images i JOIN review_reasons r ON r.image_id = i.id \
             WHERE i.deleted_at IS NOT NULL AND r.resolved_at IS NULL{by_owner} GROUP BY r.kind"
        );
        type StatRow = (String, i64, Option<DateTime<Utc>>, i64, i64, i64, i64);
        let (open, deleted): (Vec<StatRow>, Vec<StatRow>) = on_db!(self, |p, _pg| {
            let mut out = Vec::new();
            for sql in [open, deleted] {
                let mut q = sqlx::query_as::<_, StatRow>(AssertSqlSafe(sql))
                    .bind(h)
                    .bind(d)
                    .bind(w);
                if let Some(o) = owner {
                    q = q.bind(o.clone());
                }
                out.push(q.fetch_all(p).await?);
            }
            let deleted = out.pop().unwrap_or_default();
            (out.pop().unwrap_or_default(), deleted)
        });
        let mut stats = Vec::new();
        for (reason, waiting, oldest, a, b, c, e) in open {
            let mut s = QueueStat {
                reason,
                waiting,
                oldest,
                under_1h: a,
                under_1d: b,
                under_7d: c,
                over_7d: e,
            };
            if let Some(x) = deleted.iter().find(|x| x.0 == s.reason) {
                s.waiting -= x.1;
                s.under_1h -= x.3;
                s.under_1d -= x.4;
                s.under_7d -= x.5;
                s.over_7d -= x.6;
                if s.waiting <= 0 {
                    continue;
                }
                // The oldest may be a deleted image's: the oldest live one instead.
                let sql = format!(
                    "SELECT MIN(r.created_at) FROM review_reasons r JOIN images i ON i.id = r.image_id \
                     WHERE r.resolved_at IS NULL AND r.kind = $1 AND i.deleted_at IS NULL{}",
                    if owner.is_some() { " AND r.owner = $2" } else { "" }
                );
                s.oldest = on_db!(self, |p, _pg| {
                    let mut q = sqlx::query_as::<_, (Option<DateTime<Utc>>,)>(AssertSqlSafe(sql))
                        .bind(&s.reason);
                    if let Some(o) = owner {
                        q = q.bind(o.clone());
                    }
                    q.fetch_one(p).await?.0
                });
            }
            stats.push(s);
        }
        Ok(stats)
    }

    /// Live images in the review queue (`owner` narrows it): the queue's index alone, less
    /// the deleted images not purged yet.
    pub async fn queue_waiting(&self, owner: Option<&Owner>) -> Result<i64> {
        let by_owner = if owner.is_some() {
            " AND c.owner = $1"
        } else {
            ""
        };
        let sql = format!(
            "SELECT (SELECT COUNT(*) FROM image_catalog c WHERE c.queued_at IS NOT NULL{by_owner}) - \
             (SELECT COUNT(*) FROM images i JOIN image_catalog c ON c.image_id = i.id \
             WHERE i.deleted_at IS NOT NULL AND c.queued_at IS NOT NULL{by_owner})"
        );
        let n: (i64,) = on_db!(self, |p, _pg| {
            let mut q = sqlx::query_as(AssertSqlSafe(sql));
            if let Some(o) = owner {
                q = q.bind(o.clone());
            }
            q.fetch_one(p).await?
        });
        Ok(n.0)
    }

    /// An image's changes, oldest first, as the catalog records them.
    pub async fn changes_of(&self, id: ImageId) -> Result<Vec<ChangeRow>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as::<_, ChangeRow>(
                "SELECT id, field, old_value, new_value, actor, reason, at, source, change_id FROM image_history \
                 WHERE image_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(p)
            .await?
        }))
    }

    /// Records a re-validation against a newer schema: the normalised values, indexes and
    /// failures, the validation reason (new failures go to review), history entries for what
    /// changed, and a version bump; one transaction.
    pub async fn write_revalidation(
        &self,
        id: ImageId,
        w: &DescriptiveWrite,
        changes: &[FieldChange],
        max_attempts: u32,
    ) -> Result<Written> {
        let t = now();
        Ok(on_db_retrying!(self, |p, pg| {
            let mut tx = p.begin_write().await?;
            let LockedRow {
                version, status, ..
            } = lock_catalog_row!(tx, id, pg, None, live);
            let v = version + 1;
            sqlx::query("UPDATE images SET caption = $2, tags = $3 WHERE id = $1")
                .bind(id)
                .bind(&w.caption)
                .bind(Json(&w.keywords))
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE image_catalog SET fields = $2, sources = $3, terms = $4, validation = $5, validated_version = $6, \
                 version = $7, updated_at = $8 WHERE image_id = $1",
            )
            .bind(id)
            .bind(Json(&w.fields))
            .bind(Json(&w.sources))
            .bind(Json(&w.terms))
            .bind(Json(&w.failures))
            .bind(w.schema_version)
            .bind(v)
            .bind(t)
            .execute(&mut *tx)
            .await?;
            write_indexes!(tx, id, w);
            let why = Some(format!(
                "re-validated against schema version {}",
                w.schema_version
            ));
            history!(
                tx,
                id,
                changes,
                "revalidation",
                &why,
                &Some(v.to_string()),
                t
            );
            validation_reason!(tx, id, w, "revalidation", t);
            if status == "ready" {
                enqueue_job!(tx, id, JobKind::SyncPayload, max_attempts as i32, t);
            }
            tx.commit().await?;
            Written::Done(v)
        }))
    }

    /// Gives an image without a catalog record one, in `collection` (rows from before the
    /// catalog existed, made by paths that do not write one).
    pub async fn ensure_catalog(&self, id: ImageId, owner: &Owner, collection: Uuid) -> Result<()> {
        let t = now();
        on_db!(self, |p, _pg| {
            sqlx::query(
                "INSERT INTO image_catalog (image_id, owner, collection_id, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(owner)
            .bind(collection)
            .bind(t)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    // ---- lineage -----------------------------------------------------------------------

    /// The images of a chain (root and versions), and derivatives of any of them, by version.
    pub async fn lineage_of(&self, root: Uuid) -> Result<Vec<CatalogRow>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as::<_, CatalogRow>(
                "SELECT c.* FROM image_catalog c JOIN images i ON i.id = c.image_id \
                 WHERE (c.image_id = $1 OR c.lineage_root = $1 OR c.derived_from = $1 \
                 OR c.derived_from IN (SELECT image_id FROM image_catalog WHERE lineage_root = $1)) \
                 AND i.deleted_at IS NULL ORDER BY c.version_number, c.image_id",
            )
            .bind(root)
            .fetch_all(p)
            .await?
        }))
    }

    /// Links an existing image into another's lineage (as a version or derivative), if its
    /// version is still `expected`. A version joins the chain and becomes current.
    #[allow(clippy::too_many_arguments)]
    pub async fn link_lineage(
        &self,
        id: ImageId,
        expected: Option<i32>,
        parent: Uuid,
        relation: crate::catalog::lineage::Relation,
        actor: &str,
        reason: Option<&str>,
        max_attempts: u32,
    ) -> Result<Written> {
        let t = now();
        Ok(on_db_retrying!(self, |p, pg| {
            let mut tx = p.begin_write().await?;
            let LockedRow {
                version,
                derived_from: old_parent,
                relation: old_rel,
                status,
                ..
            } = lock_catalog_row!(tx, id, pg, expected, live);
            let proot: Option<(Option<Uuid>,)> =
                sqlx::query_as("SELECT lineage_root FROM image_catalog WHERE image_id = $1")
                    .bind(parent)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some((proot,)) = proot else {
                tx.rollback().await?;
                return Ok(Written::Refused(format!(
                    "image {parent} has no catalog record"
                )));
            };
            let root = proot.unwrap_or(parent);
            if root == id.0 || parent == id.0 {
                tx.rollback().await?;
                return Ok(Written::Refused(
                    "an image cannot derive from itself or its own chain".into(),
                ));
            }
            let v = version + 1;
            let change_id = Some(v.to_string());
            let mut changes = vec![FieldChange {
                field: "derived_from".into(),
                old: old_parent.map(|u| Value::String(u.to_string())),
                new: Some(Value::String(parent.to_string())),
                source: "person".into(),
            }];
            changes.push(FieldChange {
                field: "relation".into(),
                old: old_rel.map(Value::String),
                new: Some(Value::String(relation.as_str().into())),
                source: "person".into(),
            });
            if relation == crate::catalog::lineage::Relation::Version {
                let max: (Option<i32>,) = sqlx::query_as(
                    "SELECT MAX(version_number) FROM image_catalog WHERE image_id = $1 OR lineage_root = $1",
                )
                .bind(root)
                .fetch_one(&mut *tx)
                .await?;
                let number = max.0.unwrap_or(0) + 1;
                let older: Vec<(Uuid,)> = sqlx::query_as(
                    "SELECT image_id FROM image_catalog WHERE (image_id = $1 OR lineage_root = $1) AND is_current = TRUE",
                )
                .bind(root)
                .fetch_all(&mut *tx)
                .await?;
                for (o,) in older {
                    sqlx::query(
                        "UPDATE image_catalog SET is_current = FALSE, lineage_root = $2, version = version + 1, \
                         updated_at = $3 WHERE image_id = $1",
                    )
                    .bind(o)
                    .bind(root)
                    .bind(t)
                    .execute(&mut *tx)
                    .await?;
                    let ch = FieldChange {
                        field: "current".into(),
                        old: Some(Value::Bool(true)),
                        new: Some(Value::Bool(false)),
                        source: "system".into(),
                    };
                    let why = Some(format!("superseded by version {number} ({id})"));
                    history!(tx, o, [&ch], actor, &why, None::<String>, t);
                    enqueue_job!(tx, o, JobKind::SyncPayload, max_attempts as i32, t);
                }
                sqlx::query(
                    "UPDATE image_catalog SET derived_from = $2, relation = 'version', lineage_root = $3, \
                     version_number = $4, is_current = TRUE, version = $5, updated_at = $6 WHERE image_id = $1",
                )
                .bind(id)
                .bind(parent)
                .bind(root)
                .bind(number)
                .bind(v)
                .bind(t)
                .execute(&mut *tx)
                .await?;
                changes.push(FieldChange {
                    field: "version_number".into(),
                    old: None,
                    new: Some(Value::from(number)),
                    source: "person".into(),
                });
            } else {
                sqlx::query(
                    "UPDATE image_catalog SET derived_from = $2, relation = 'derivative', version = $3, updated_at = $4 \
                     WHERE image_id = $1",
                )
                .bind(id)
                .bind(parent)
                .bind(v)
                .bind(t)
                .execute(&mut *tx)
                .await?;
            }
            let reason_owned = reason.map(str::to_owned);
            history!(tx, id, &changes, actor, &reason_owned, &change_id, t);
            if status == "ready" {
                enqueue_job!(tx, id, JobKind::SyncPayload, max_attempts as i32, t);
            }
            tx.commit().await?;
            Written::Done(v)
        }))
    }

    // ---- listing -----------------------------------------------------------------------

    /// How to run `f`'s catalog conditions: one query counts, up to a cap, the images each
    /// indexable condition matches and the images the default check leaves out
    /// ([`crate::catalog::query::plan`] chooses from those counts).
    pub async fn catalog_plan(&self, f: &CatalogFilter) -> Result<Plan> {
        let sql = crate::catalog::query::estimate_sql(f).map_err(StoreError::Conflict)?;
        if sql.text.is_empty() {
            return Ok(Plan {
                per_image: matches!(self, Db::Pg(_)),
                ..Plan::default()
            });
        }
        let counts: Vec<i64> = on_db!(self, |p, _pg| {
            let q = sqlx::query(AssertSqlSafe(sql.text));
            let row = bind_catalog!(q, &sql.binds).fetch_one(p).await?;
            (0..sqlx::Row::len(&row))
                .map(|i| sqlx::Row::try_get::<i64, _>(&row, i))
                .collect::<std::result::Result<_, _>>()?
        });
        let mut plan = crate::catalog::query::plan(f, &counts).map_err(StoreError::Conflict)?;
        plan.per_image = matches!(self, Db::Pg(_));
        Ok(plan)
    }

    /// Images matching `filter` (its catalog part included) sorted by a descriptive field:
    /// images with a value first, in value order, then those without one, by id; keyset-paged
    /// after `after`. Returns each row with its sort value.
    pub async fn list_by_field(
        &self,
        filter: &ImageFilter,
        sort: &FieldSort,
        after: Option<&SortPosition>,
        limit: u32,
    ) -> Result<Vec<(ImageRow, Option<SortValue>)>> {
        let plan = self.catalog_plan(&filter.catalog).await?;
        self.list_by_field_planned(filter, &plan, sort, after, limit)
            .await
    }

    /// [`Db::list_by_field`] with its catalog conditions run as `plan` says.
    pub(crate) async fn list_by_field_planned(
        &self,
        filter: &ImageFilter,
        plan: &Plan,
        sort: &FieldSort,
        after: Option<&SortPosition>,
        limit: u32,
    ) -> Result<Vec<(ImageRow, Option<SortValue>)>> {
        let numeric = sort.kind.is_numeric();
        let mut out: Vec<(ImageRow, Option<SortValue>)> = Vec::new();
        let in_missing = after.is_some_and(|a| a.value.is_none());
        if !in_missing {
            let mut n = 0;
            let mut next = || {
                n += 1;
                n
            };
            let mut sql = Sql::default();
            let col = if numeric {
                "s.num_value"
            } else {
                "s.text_value"
            };
            let cat = crate::catalog::query::planned(&filter.catalog, plan, &mut next)
                .map_err(StoreError::Conflict)?;
            sql.binds.extend(cat.binds);
            sql.push(
                &format!(
                    "SELECT images.*, {col} AS sort_value FROM {}images JOIN image_fields s ON s.image_id = images.id \
                     AND s.field = ? AND s.item = 0 WHERE images.deleted_at IS NULL",
                    cat.from
                ),
                vec![Bind::Text(sort.field.clone())],
                &mut next,
            );
            base_conditions(filter, matches!(self, Db::Pg(_)), &mut sql, &mut next);
            sql.text += &cat.text;
            let (cmp, dir) = if sort.descending {
                ("<", "DESC")
            } else {
                (">", "ASC")
            };
            if let Some(SortPosition { value: Some(v), id }) = after {
                let b = match v {
                    SortValue::Num(x) => Bind::Num(*x),
                    SortValue::Text(s) => Bind::Text(s.clone()),
                };
                sql.push(
                    &format!(" AND ({col}, s.image_id) {cmp} (?, ?)"),
                    vec![b, Bind::Uuid(*id)],
                    &mut next,
                );
            }
            sql.text += &format!(
                " ORDER BY {col} {dir}, s.image_id {dir} LIMIT {}",
                limit.clamp(1, 1001)
            );
            if numeric {
                let rows: Vec<SortedRow<f64>> = on_db!(self, |p, _pg| {
                    let q = sqlx::query_as::<_, SortedRow<f64>>(AssertSqlSafe(sql.text));
                    bind_catalog!(q, &sql.binds).fetch_all(p).await?
                });
                out.extend(
                    rows.into_iter()
                        .map(|r| (r.image, r.sort_value.map(SortValue::Num))),
                );
            } else {
                let rows: Vec<SortedRow<String>> = on_db!(self, |p, _pg| {
                    let q = sqlx::query_as::<_, SortedRow<String>>(AssertSqlSafe(sql.text));
                    bind_catalog!(q, &sql.binds).fetch_all(p).await?
                });
                out.extend(
                    rows.into_iter()
                        .map(|r| (r.image, r.sort_value.map(SortValue::Text))),
                );
            }
            if out.len() >= limit as usize {
                return Ok(out);
            }
        }
        // Then the images without a value, by id.
        let rest = limit as usize - out.len();
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        let mut sql = Sql::default();
        let cat = crate::catalog::query::planned(&filter.catalog, plan, &mut next)
            .map_err(StoreError::Conflict)?;
        sql.binds.extend(cat.binds);
        sql.push(
            &format!(
                "SELECT images.* FROM {}images WHERE images.deleted_at IS NULL AND NOT EXISTS \
                 (SELECT 1 FROM image_fields s WHERE s.image_id = images.id AND s.field = ?)",
                cat.from
            ),
            vec![Bind::Text(sort.field.clone())],
            &mut next,
        );
        base_conditions(filter, matches!(self, Db::Pg(_)), &mut sql, &mut next);
        sql.text += &cat.text;
        if let Some(SortPosition { value: None, id }) = after {
            sql.push(" AND images.id > ?", vec![Bind::Uuid(*id)], &mut next);
        }
        sql.text += &format!(" ORDER BY images.id LIMIT {}", rest.clamp(1, 1001));
        let rows: Vec<ImageRow> = on_db!(self, |p, _pg| {
            let q = sqlx::query_as::<_, ImageRow>(AssertSqlSafe(sql.text));
            bind_catalog!(q, &sql.binds).fetch_all(p).await?
        });
        out.extend(rows.into_iter().map(|r| (r, None)));
        Ok(out)
    }

    /// Ids of live images matching `filter` entirely in SQL, at most `limit` (for similarity
    /// searches whose filters the vector index does not hold).
    pub async fn matching_ids(
        &self,
        filter: &ImageFilter,
        among: Option<&[ImageId]>,
        limit: u32,
    ) -> Result<Vec<ImageId>> {
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        // Among a few given ids the walk is short; otherwise plan as a listing does.
        let plan = match among {
            Some(_) => Plan::default(),
            None => self.catalog_plan(&filter.catalog).await?,
        };
        let mut sql = Sql::default();
        let cat = crate::catalog::query::planned(&filter.catalog, &plan, &mut next)
            .map_err(StoreError::Conflict)?;
        sql.binds.extend(cat.binds);
        sql.push(
            &format!(
                "SELECT images.id FROM {}images WHERE images.deleted_at IS NULL",
                cat.from
            ),
            vec![],
            &mut next,
        );
        base_conditions(filter, matches!(self, Db::Pg(_)), &mut sql, &mut next);
        sql.text += &cat.text;
        if let Some(ids) = among {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let marks: Vec<String> = ids.iter().map(|_| format!("${}", next())).collect();
            sql.text += &format!(" AND images.id IN ({})", marks.join(", "));
            sql.binds.extend(ids.iter().map(|i| Bind::Uuid(i.0)));
        }
        sql.text += &format!(" LIMIT {}", limit.max(1));
        let rows: Vec<(ImageId,)> = on_db!(self, |p, _pg| {
            let q = sqlx::query_as::<_, (ImageId,)>(AssertSqlSafe(sql.text));
            bind_catalog!(q, &sql.binds).fetch_all(p).await?
        });
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    // ---- rights ------------------------------------------------------------------------

    /// Ready images whose applied rights state differs from their window at `now`:
    /// `(id, now withheld)`, at most `limit`.
    pub async fn rights_to_apply(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(ImageId, bool)>> {
        let rows: Vec<(ImageId, bool)> = on_db!(self, |p, _pg| {
            sqlx::query_as(
                "SELECT c.image_id, (COALESCE(c.rights_from > $1, FALSE) OR COALESCE(c.rights_until <= $1, FALSE)) AS withheld \
                 FROM image_catalog c \
                 JOIN images i ON i.id = c.image_id WHERE i.deleted_at IS NULL AND \
                 ((c.rights_applied = 'clear' AND (c.rights_from > $1 OR c.rights_until <= $1)) OR \
                  (c.rights_applied = 'withheld' AND NOT (COALESCE(c.rights_from > $1, FALSE) OR COALESCE(c.rights_until <= $1, FALSE)))) \
                 LIMIT $2",
            )
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?
        });
        Ok(rows)
    }

    /// Records the rights state the scheduler applied, with its history entry.
    pub async fn apply_rights(
        &self,
        id: ImageId,
        withheld: bool,
        why: &str,
        max_attempts: u32,
    ) -> Result<()> {
        let t = now();
        on_db_retrying!(self, |p, _pg| {
            let mut tx = p.begin_write().await?;
            let state = if withheld { "withheld" } else { "clear" };
            let n = sqlx::query(
                "UPDATE image_catalog SET rights_applied = $2, rights_purged = $3, rights_applied_at = $4, \
                 version = version + 1, updated_at = $4 WHERE image_id = $1 AND rights_applied <> $2",
            )
            .bind(id)
            .bind(state)
            .bind(!withheld)
            .bind(t)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n > 0 {
                let ch = FieldChange {
                    field: "rights_state".into(),
                    old: Some(Value::String(
                        if withheld { "clear" } else { "withheld" }.into(),
                    )),
                    new: Some(Value::String(state.into())),
                    source: "system".into(),
                };
                let why = Some(why.to_owned());
                history!(tx, id, [&ch], "rights-scheduler", &why, None::<String>, t);
                let status: Option<(String,)> =
                    sqlx::query_as("SELECT status FROM images WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                if status.is_some_and(|s| s.0 == "ready") {
                    enqueue_job!(tx, id, JobKind::SyncPayload, max_attempts as i32, t);
                }
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Every object key of every withheld image (original and variants), sorted.
    pub async fn withheld_keys(&self) -> Result<Vec<String>> {
        let rows: Vec<(String, Json<BTreeMap<String, String>>)> = on_db!(self, |p, _pg| {
            sqlx::query_as(
                "SELECT i.original_key, i.variant_keys FROM image_catalog c JOIN images i ON i.id = c.image_id \
                 WHERE c.rights_applied = 'withheld' AND i.deleted_at IS NULL ORDER BY i.original_key",
            )
            .fetch_all(p)
            .await?
        });
        let mut keys: Vec<String> = Vec::with_capacity(rows.len() * 4);
        for (o, v) in rows {
            keys.push(o);
            keys.extend(v.0.into_values());
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// Images withheld before `cutoff` whose edges and CDN have not been purged yet:
    /// `(id, keys)`.
    pub async fn unpurged_withheld(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(ImageId, Vec<String>)>> {
        type Row = (ImageId, String, Json<BTreeMap<String, String>>);
        let rows: Vec<Row> = on_db!(self, |p, _pg| {
            sqlx::query_as(
                "SELECT i.id, i.original_key, i.variant_keys FROM image_catalog c JOIN images i ON i.id = c.image_id \
                 WHERE c.rights_applied = 'withheld' AND c.rights_purged = FALSE AND c.rights_applied_at <= $1 \
                 AND i.deleted_at IS NULL LIMIT $2",
            )
            .bind(cutoff)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(id, o, v)| {
                let mut k = vec![o];
                k.extend(v.0.into_values());
                (id, k)
            })
            .collect())
    }

    /// Marks withheld images as purged everywhere.
    pub async fn mark_purged(&self, ids: &[ImageId]) -> Result<()> {
        on_db!(self, |p, _pg| {
            for id in ids {
                sqlx::query("UPDATE image_catalog SET rights_purged = TRUE WHERE image_id = $1")
                    .bind(*id)
                    .execute(p)
                    .await?;
            }
        });
        Ok(())
    }

    /// Images whose rights end within `(now, until]` without an open `rights_ending` reason:
    /// `(id, end)`.
    pub async fn rights_ending(
        &self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(ImageId, DateTime<Utc>)>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as(
                "SELECT c.image_id, c.rights_until FROM image_catalog c JOIN images i ON i.id = c.image_id \
                 WHERE c.rights_until > $1 AND c.rights_until <= $2 AND i.deleted_at IS NULL AND NOT EXISTS \
                 (SELECT 1 FROM review_reasons r WHERE r.image_id = c.image_id AND r.kind = 'rights_ending' \
                 AND r.resolved_at IS NULL) ORDER BY c.rights_until LIMIT $3",
            )
            .bind(now)
            .bind(until)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?
        }))
    }

    /// Images whose rights end within `(now, until]`, soonest first, after `(end, id)`.
    pub async fn list_rights_ending(
        &self,
        owner: Option<&Owner>,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: u32,
    ) -> Result<Vec<(ImageId, DateTime<Utc>)>> {
        let mut sql = String::from(
            "SELECT c.image_id, c.rights_until FROM image_catalog c JOIN images i ON i.id = c.image_id \
             WHERE c.rights_until > $1 AND c.rights_until <= $2 AND i.deleted_at IS NULL",
        );
        let mut n = 2;
        if owner.is_some() {
            n += 1;
            sql += &format!(" AND c.owner = ${n}");
        }
        if after.is_some() {
            sql += &format!(
                " AND (c.rights_until > ${a} OR (c.rights_until = ${a} AND c.image_id > ${b}))",
                a = n + 1,
                b = n + 2
            );
        }
        sql += &format!(
            " ORDER BY c.rights_until, c.image_id LIMIT {}",
            limit.clamp(1, 1001)
        );
        Ok(on_db!(self, |p, _pg| {
            let mut q = sqlx::query_as::<_, (ImageId, DateTime<Utc>)>(AssertSqlSafe(sql))
                .bind(now)
                .bind(until);
            if let Some(o) = owner {
                q = q.bind(o.clone());
            }
            if let Some((t, id)) = after {
                q = q.bind(t).bind(id);
            }
            q.fetch_all(p).await?
        }))
    }

    // ---- re-validation -----------------------------------------------------------------

    /// Images validated against an older schema version than their collection's current
    /// one: `(id, collection)`, at most `limit`.
    pub async fn needing_validation(&self, limit: u32) -> Result<Vec<(ImageId, Uuid)>> {
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as(
                "SELECT c.image_id, c.collection_id FROM image_catalog c JOIN collections k ON k.id = c.collection_id \
                 JOIN images i ON i.id = c.image_id \
                 WHERE c.validated_version < k.schema_version AND i.deleted_at IS NULL LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?
        }))
    }
}

/// A row of a field-sorted listing.
#[derive(Debug, FromRow)]
struct SortedRow<T> {
    #[sqlx(flatten)]
    image: ImageRow,
    sort_value: Option<T>,
}

/// Appends the conditions of the image filter (not its catalog part) to `sql`: the same
/// filters `Db::list_images` applies.
pub fn base_conditions(f: &ImageFilter, pg: bool, sql: &mut Sql, next: &mut dyn FnMut() -> usize) {
    if let Some(o) = &f.owner {
        sql.push(
            " AND images.owner = ?",
            vec![Bind::Text(o.as_str().to_owned())],
            next,
        );
    }
    if let Some(t) = f.uploaded_after {
        sql.push(" AND images.uploaded_at >= ?", vec![Bind::Time(t)], next);
    }
    if let Some(t) = f.uploaded_before {
        sql.push(" AND images.uploaded_at < ?", vec![Bind::Time(t)], next);
    }
    if let Some(m) = &f.camera_make {
        sql.push(
            " AND LOWER(images.camera_make) = LOWER(?)",
            vec![Bind::Text(m.clone())],
            next,
        );
    }
    if let Some(m) = &f.camera_model {
        sql.push(
            " AND LOWER(images.camera_model) = LOWER(?)",
            vec![Bind::Text(m.clone())],
            next,
        );
    }
    for t in &f.tags {
        if pg {
            // `?` is Postgres's JSONB key-exists operator here, not a placeholder.
            let n = next();
            sql.text += &format!(" AND images.tags ? ${n}");
            sql.binds.push(Bind::Text(t.clone()));
        } else {
            sql.push(
                " AND EXISTS (SELECT 1 FROM json_each(images.tags) WHERE value = ?)",
                vec![Bind::Text(t.clone())],
                next,
            );
        }
    }
    if let Some(s) = f.status {
        sql.push(
            " AND images.status = ?",
            vec![Bind::Text(s.as_str().to_owned())],
            next,
        );
    }
    if let Some(r) = f.review_state {
        sql.push(
            " AND images.review_state = ?",
            vec![Bind::Text(r.as_str().to_owned())],
            next,
        );
    }
}

#[cfg(test)]
mod plan_tests {
    //! Every way of running a listing's catalog conditions returns the same images.
    use super::*;
    use crate::catalog::fields::FieldType;
    use crate::catalog::query::{self, FieldCondition, RightsFilter, VersionFilter};
    use crate::config::DatabaseUrl;
    use crate::store::images::{ListOrder, NewImage};

    /// 60 images in one collection: `usage` cycles a/b/c, `shots` = i, terms dogs (< animals)
    /// on every fourth and cats on every sixth; some withheld, some superseded, two in review.
    async fn fixture(db: Db) -> (Db, Owner, Uuid) {
        let owner = Owner::parse("planner").unwrap();
        let coll = db
            .create_collection(&owner, "c", None, "review", true, false)
            .await
            .unwrap();
        let t0 = now() - chrono::Duration::hours(2);
        for i in 0..60i64 {
            let usage = ["a", "b", "c"][i as usize % 3];
            let mut terms = Vec::new();
            if i % 4 == 0 {
                terms = vec![("dogs".to_owned(), true), ("animals".to_owned(), false)];
            } else if i % 6 == 1 {
                terms = vec![("cats".to_owned(), true), ("animals".to_owned(), false)];
            }
            let write = DescriptiveWrite {
                index_rows: vec![
                    ("usage".into(), 0, usage.into(), None),
                    ("shots".into(), 0, i.to_string(), Some(i as f64)),
                ],
                expanded_terms: terms,
                rights_until: (i % 7 == 3).then_some(t0),
                ..Default::default()
            };
            let reasons = if i % 10 == 5 {
                vec![NewReason::submitted("t", None)]
            } else {
                vec![]
            };
            let id = ImageId(Uuid::new_v4());
            db.insert_stored_and_enqueue(
                &NewImage {
                    id,
                    owner: owner.clone(),
                    mime: "image/jpeg".into(),
                    bytes: Some(1),
                    sha256: None,
                    caption: None,
                    original_key: format!("k/{}", id.0),
                    // Pairs share an upload time: the id breaks the tie.
                    uploaded_at: crate::store::trunc(t0 + chrono::Duration::seconds(i / 2)),
                    upload_expires_at: None,
                    uploaded_by: None,
                    upload_key: None,
                    private: false,
                    catalog: Some(CatalogInsert {
                        collection_id: coll.id,
                        write,
                        workflow: WorkflowState::Draft,
                        reasons,
                        derived_from: None,
                        changes: vec![],
                        actor: "t".into(),
                    }),
                },
                3,
            )
            .await
            .unwrap();
            if i % 9 == 2 {
                on_db!(&db, |p, _pg| {
                    sqlx::query("UPDATE image_catalog SET is_current = FALSE WHERE image_id = $1")
                        .bind(id)
                        .execute(p)
                        .await
                        .unwrap();
                });
            }
        }
        (db, owner, coll.id)
    }

    fn cond(text: &str, kind: FieldType) -> FieldCondition {
        let mut c = FieldCondition::parse(text).unwrap();
        c.kind = Some(kind);
        c
    }

    #[tokio::test]
    async fn every_plan_returns_the_same_images() {
        let dir = std::env::temp_dir().join(format!("fp-plan-{}", Uuid::new_v4().simple()));
        let sqlite = Db::connect(&DatabaseUrl::Sqlite(dir.join("p.db")), 2)
            .await
            .unwrap();
        every_plan_returns_the_same_images_on(sqlite).await;
        let _ = std::fs::remove_dir_all(dir);
        if let Some(pg) = crate::store::scratch::ScratchPg::create("fp_plans").await {
            let db = Db::connect(&DatabaseUrl::Postgres(pg.url.clone()), 2)
                .await
                .unwrap();
            every_plan_returns_the_same_images_on(db).await;
        }
    }

    async fn every_plan_returns_the_same_images_on(db: Db) {
        let (db, owner, coll) = fixture(db).await;
        let pg = matches!(db, Db::Pg(_));
        let filters = vec![
            CatalogFilter::default(),
            CatalogFilter {
                fields: vec![cond("usage=a", FieldType::Text)],
                ..Default::default()
            },
            CatalogFilter {
                collection: Some(coll),
                fields: vec![
                    cond("usage=b", FieldType::Text),
                    cond("shots>=20", FieldType::Number),
                ],
                ..Default::default()
            },
            CatalogFilter {
                terms: vec!["animals".into()],
                workflow_state: Some(WorkflowState::Draft),
                fields: vec![cond("usage!=c", FieldType::Text)],
                ..Default::default()
            },
            CatalogFilter {
                terms: vec!["animals".into(), "dogs".into()],
                fields: vec![cond("shots<40", FieldType::Number)],
                rights: RightsFilter::Any,
                ..Default::default()
            },
            CatalogFilter {
                rights: RightsFilter::Withheld,
                fields: vec![cond("usage~A", FieldType::Text)],
                ..Default::default()
            },
            CatalogFilter {
                rights: RightsFilter::Withheld,
                versions: VersionFilter::All,
                collection: Some(coll),
                ..Default::default()
            },
            CatalogFilter {
                versions: VersionFilter::All,
                reason: Some(ReasonKind::Submitted),
                ..Default::default()
            },
            CatalogFilter {
                rights: RightsFilter::Any,
                versions: VersionFilter::All,
                fields: vec![cond("shots>30", FieldType::Number)],
                ..Default::default()
            },
        ];
        let sort = FieldSort {
            field: "shots".into(),
            kind: FieldType::Number,
            descending: true,
        };
        for catalog in filters {
            let f = ImageFilter {
                owner: Some(owner.clone()),
                catalog,
                ..Default::default()
            };
            let mut plans = vec![Plan::default()];
            for c in query::candidates(&f.catalog).unwrap() {
                plans.push(Plan {
                    driver: Some(c.key),
                    ..Plan::default()
                });
            }
            let with_set: Vec<Plan> = plans
                .iter()
                .map(|p| Plan {
                    excluded_as_set: true,
                    ..*p
                })
                .collect();
            plans.extend(with_set);
            if pg {
                // Postgres runs its checks as per-image subqueries (SQLite does anyway).
                let per_image: Vec<Plan> = plans
                    .iter()
                    .map(|p| Plan {
                        per_image: true,
                        ..*p
                    })
                    .collect();
                plans.extend(per_image);
            }
            if let Some(i) = query::walk_field(&f.catalog) {
                // Walking the equality's rows in upload order (listings in upload order).
                plans.push(Plan {
                    walk: Some(i),
                    ..Plan::default()
                });
                plans.push(Plan {
                    walk: Some(i),
                    excluded_as_set: true,
                    per_image: pg,
                    ..Plan::default()
                });
            }
            let auto = db.catalog_plan(&f.catalog).await.unwrap();
            assert!(
                query::candidates(&f.catalog).unwrap().is_empty() || auto.driver.is_some(),
                "few matches: the listing starts from an index ({:?})",
                f.catalog
            );
            let ids = |rows: Vec<ImageRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
            let want = ids(db
                .list_images_planned(&f, &Plan::default(), ListOrder::NewestFirst, None, 100)
                .await
                .unwrap());
            let want_sorted: Vec<ImageId> = db
                .list_by_field_planned(&f, &Plan::default(), &sort, None, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.0.id)
                .collect();
            assert_eq!(want.len(), want_sorted.len(), "{:?}", f.catalog);
            for plan in &plans {
                for order in [ListOrder::NewestFirst, ListOrder::OldestFirst] {
                    let mut got = ids(db
                        .list_images_planned(&f, plan, order, None, 100)
                        .await
                        .unwrap());
                    if order == ListOrder::OldestFirst {
                        got.reverse();
                    }
                    assert_eq!(got, want, "{plan:?} {order:?} {:?}", f.catalog);
                }
                // Pages of 7 (keyset) add up to the whole listing.
                let mut paged = Vec::new();
                let mut after = None;
                loop {
                    let page = db
                        .list_images_planned(&f, plan, ListOrder::NewestFirst, after, 7)
                        .await
                        .unwrap();
                    let Some(last) = page.last() else { break };
                    after = Some((last.uploaded_at, last.id.0));
                    paged.extend(page.iter().map(|r| r.id));
                }
                assert_eq!(paged, want, "{plan:?} paged {:?}", f.catalog);
                let sorted: Vec<ImageId> = db
                    .list_by_field_planned(&f, plan, &sort, None, 100)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| r.0.id)
                    .collect();
                assert_eq!(sorted, want_sorted, "{plan:?} by field {:?}", f.catalog);
                let mut paged = Vec::new();
                let mut after: Option<SortPosition> = None;
                loop {
                    let page = db
                        .list_by_field_planned(&f, plan, &sort, after.as_ref(), 7)
                        .await
                        .unwrap();
                    let Some(last) = page.last() else { break };
                    after = Some(SortPosition {
                        value: last.1.clone(),
                        id: last.0.id.0,
                    });
                    paged.extend(page.iter().map(|r| r.0.id));
                }
                assert_eq!(
                    paged, want_sorted,
                    "{plan:?} by field, paged {:?}",
                    f.catalog
                );
            }
        }
        // The filters are not vacuous: usage=a and usable, current.
        let f = ImageFilter {
            owner: Some(owner.clone()),
            catalog: CatalogFilter {
                fields: vec![cond("usage=a", FieldType::Text)],
                ..Default::default()
            },
            ..Default::default()
        };
        let n = db
            .list_images(&f, ListOrder::NewestFirst, None, 100)
            .await
            .unwrap()
            .len();
        // i % 3 == 0 of 60: 20, less withheld (i % 7 == 3: 3, 24, 45) and superseded
        // (i % 9 == 2: none divisible by 3).
        assert_eq!(n, 17, "{}", db.backend());
    }
}
