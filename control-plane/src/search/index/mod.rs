//! Vector index: one trait, [`VectorIndex`], over the embedded Qdrant engine (`qdrant-edge`,
//! the default) and a Qdrant server (`qdrant-client`).
//!
//! One point per image (point id = image id) with two named vectors, [`VectorName::Semantic`]
//! and [`VectorName::Visual`], and a [`PointPayload`] holding what filters need. Filters are
//! applied inside the vector search (filtered HNSW), never after it.

use std::sync::Arc;

use uuid::Uuid;

pub mod embedded;
pub mod server;

#[cfg(test)]
mod tests;

pub use embedded::{
    open_embedded, open_embedded_index, open_embedded_with, EmbeddedIndex, EmbeddedOptions,
    VisualStorage,
};
pub use server::{connect_server, ServerIndex};

/// An opened index and whether opening it had to recreate it (dimensions changed: every point
/// is gone and must be re-indexed).
pub struct Opened {
    /// The index.
    pub index: Arc<dyn VectorIndex>,
    /// The existing index had other vector sizes and was wiped and created anew.
    pub recreated: bool,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("backend", &self.index.backend())
            .field("recreated", &self.recreated)
            .finish()
    }
}

/// Why an index operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The index could not be opened or created (path, dimensions, server unreachable).
    #[error("vector index unavailable: {0}")]
    Unavailable(String),
    /// The operation failed.
    #[error("vector index: {0}")]
    Operation(String),
    /// A vector had the wrong length for the collection.
    #[error("vector {name} has {got} dimensions, the collection expects {expected}")]
    Dimensions {
        /// Which vector.
        name: &'static str,
        /// Its length.
        got: usize,
        /// The collection's.
        expected: usize,
    },
}

/// Result of index operations.
pub type Result<T> = std::result::Result<T, IndexError>;

/// The two vectors each point carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorName {
    /// Text-image space (text queries).
    Semantic,
    /// Image features (image queries, near-duplicates).
    Visual,
}

impl VectorName {
    /// The vector's name in the collection.
    pub fn as_str(self) -> &'static str {
        match self {
            VectorName::Semantic => "semantic",
            VectorName::Visual => "visual",
        }
    }
}

/// Vector sizes of the collection (both cosine distance).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VectorSpace {
    /// Length of semantic vectors.
    pub semantic_dims: usize,
    /// Length of visual vectors.
    pub visual_dims: usize,
}

/// Keyword payload fields that get an index (exact-match filters), in both backends.
const KEYWORD_FIELDS: [&str; 11] = [
    "owner",
    "status",
    "tags",
    "camera_make",
    "camera_model",
    "review_state",
    "model",
    "collection",
    "terms",
    "workflow_state",
    "lineage",
];

/// Integer payload fields that get a range index, in both backends.
const INTEGER_FIELDS: [&str; 5] = [
    "uploaded_at",
    "faces",
    "people",
    "rights_from",
    "rights_until",
];

/// The catalog fields a point carries for filtering (`catalog::query` decides them). Points
/// written before the catalog existed have none until their payload is synced; the default
/// filters (`usable_at`, `current_only`) exclude only what is marked, so they still match.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CatalogPayload {
    /// Collection id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// Vocabulary terms with their ancestors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub terms: Vec<String>,
    /// Workflow state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_state: Option<String>,
    /// Rights window start, microseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rights_from: Option<i64>,
    /// Rights window end, microseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rights_until: Option<i64>,
    /// `superseded` for versions that are not their chain's current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<String>,
}

/// Catalog conditions applied inside the search.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CatalogConditions {
    /// Exact collection.
    pub collection: Option<String>,
    /// Every one of these terms (points carry ancestors, so a term matches its descendants).
    pub terms: Vec<String>,
    /// Exact workflow state.
    pub workflow_state: Option<String>,
    /// Leave out points withheld at this time (microseconds).
    pub usable_at: Option<i64>,
    /// Only points withheld at this time (microseconds).
    pub withheld_at: Option<i64>,
    /// Leave out superseded versions.
    pub current_only: bool,
    /// Only these points (candidates a SQL filter selected).
    pub only: Option<Vec<Uuid>>,
}

/// The fields stored with each point for filtering.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PointPayload {
    /// Owner of the image.
    pub owner: String,
    /// Upload time, microseconds since the Unix epoch (range filters).
    pub uploaded_at: i64,
    /// Workflow status ("ready" once searchable).
    pub status: String,
    /// Tags (keyword match).
    pub tags: Vec<String>,
    /// Camera make as in EXIF.
    pub camera_make: Option<String>,
    /// Camera model as in EXIF.
    pub camera_model: Option<String>,
    /// Review state ("unreviewed", "approved", "rejected", …).
    pub review_state: String,
    /// `ModelInfo::id()` of the model that made the vectors.
    pub model: String,
    /// Frontal faces the embedder found (range filters; absent when not counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faces: Option<i64>,
    /// People the embedder found in any pose (range filters; absent when not counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub people: Option<i64>,
    /// Catalog filter fields.
    #[serde(flatten)]
    pub catalog: CatalogPayload,
}

/// One point to write.
#[derive(Debug, Clone)]
pub struct IndexPoint {
    /// The image id.
    pub id: Uuid,
    /// Semantic vector.
    pub semantic: Vec<f32>,
    /// Visual vector.
    pub visual: Vec<f32>,
    /// Filter fields.
    pub payload: PointPayload,
}

/// Conditions every hit must meet (all that are set, combined with AND).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchFilter {
    /// Exact owner.
    pub owner: Option<String>,
    /// `uploaded_at >= from` (microseconds since the epoch).
    pub uploaded_from: Option<i64>,
    /// `uploaded_at < to` (microseconds since the epoch).
    pub uploaded_to: Option<i64>,
    /// Exact camera make.
    pub camera_make: Option<String>,
    /// Exact camera model.
    pub camera_model: Option<String>,
    /// Every one of these tags.
    pub tags: Vec<String>,
    /// Exact status.
    pub status: Option<String>,
    /// Exact review state.
    pub review_state: Option<String>,
    /// At least this many faces (points without a count do not match).
    pub faces_min: Option<i64>,
    /// At most this many faces (points without a count do not match).
    pub faces_max: Option<i64>,
    /// At least this many people (points without a count do not match).
    pub people_min: Option<i64>,
    /// At most this many people (points without a count do not match).
    pub people_max: Option<i64>,
    /// Points that must not be returned (e.g. the query image itself).
    pub exclude: Vec<Uuid>,
    /// Catalog conditions.
    pub catalog: CatalogConditions,
}

/// One condition of a [`SearchFilter`] on the points' payload, the same for every backend;
/// each spells it in its own client's types.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Clause<'a> {
    /// The keyword field has this value.
    Keyword(&'static str, &'a str),
    /// The numeric field lies in this range (microsecond timestamps are below 2^53, so f64
    /// holds them exactly).
    Range {
        /// The field.
        field: &'static str,
        /// Greater than.
        gt: Option<f64>,
        /// At least.
        gte: Option<f64>,
        /// Less than.
        lt: Option<f64>,
        /// At most.
        lte: Option<f64>,
    },
    /// The point is one of these.
    Ids(&'a [Uuid]),
}

/// A [`SearchFilter`] as clauses: every `must`, no `must_not`, and one of `should` when there
/// are any.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Clauses<'a> {
    /// Every one must hold.
    pub must: Vec<Clause<'a>>,
    /// None may hold.
    pub must_not: Vec<Clause<'a>>,
    /// At least one must hold (when there are any).
    pub should: Vec<Clause<'a>>,
}

impl Clauses<'_> {
    /// Whether nothing is filtered.
    pub fn is_empty(&self) -> bool {
        self.must.is_empty() && self.must_not.is_empty() && self.should.is_empty()
    }
}

impl SearchFilter {
    /// The payload conditions this filter stands for.
    pub(crate) fn clauses(&self) -> Clauses<'_> {
        let mut out = Clauses::default();
        let c = &self.catalog;
        let keywords = [
            ("owner", &self.owner),
            ("camera_make", &self.camera_make),
            ("camera_model", &self.camera_model),
            ("status", &self.status),
            ("review_state", &self.review_state),
            ("collection", &c.collection),
            ("workflow_state", &c.workflow_state),
        ];
        for (field, value) in keywords {
            if let Some(value) = value {
                out.must.push(Clause::Keyword(field, value));
            }
        }
        for tag in &self.tags {
            out.must.push(Clause::Keyword("tags", tag));
        }
        for term in &c.terms {
            out.must.push(Clause::Keyword("terms", term));
        }
        let num = |v: Option<i64>| v.map(|v| v as f64);
        let ranges = [
            ("uploaded_at", self.uploaded_from, None, self.uploaded_to),
            ("faces", self.faces_min, self.faces_max, None),
            ("people", self.people_min, self.people_max, None),
        ];
        for (field, gte, lte, lt) in ranges {
            if gte.is_some() || lte.is_some() || lt.is_some() {
                out.must.push(Clause::Range {
                    field,
                    gt: None,
                    gte: num(gte),
                    lt: num(lt),
                    lte: num(lte),
                });
            }
        }
        if let Some(ids) = &c.only {
            out.must.push(Clause::Ids(ids));
        }
        if !self.exclude.is_empty() {
            out.must_not.push(Clause::Ids(&self.exclude));
        }
        // Withheld at `now`: its window has not started, or has ended.
        let withheld = |now: i64| {
            let (now, none) = (Some(now as f64), None);
            [
                Clause::Range {
                    field: "rights_from",
                    gt: now,
                    gte: none,
                    lt: none,
                    lte: none,
                },
                Clause::Range {
                    field: "rights_until",
                    gt: none,
                    gte: none,
                    lt: none,
                    lte: now,
                },
            ]
        };
        if let Some(now) = c.usable_at {
            out.must_not.extend(withheld(now));
        }
        if c.current_only {
            out.must_not.push(Clause::Keyword("lineage", "superseded"));
        }
        if let Some(now) = c.withheld_at {
            out.should.extend(withheld(now));
        }
        out
    }
}

/// A nearest-neighbour query.
#[derive(Debug, Clone)]
pub struct VectorQuery<'a> {
    /// Which vector to compare.
    pub using: VectorName,
    /// The query vector.
    pub vector: &'a [f32],
    /// Applied inside the search.
    pub filter: &'a SearchFilter,
    /// Page size.
    pub limit: usize,
    /// Hits to skip (cursor pagination).
    pub offset: usize,
    /// Only hits scoring at least this (cosine similarity).
    pub score_threshold: Option<f32>,
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The image id.
    pub id: Uuid,
    /// Cosine similarity, higher is closer.
    pub score: f32,
}

/// Stored vectors of one point.
#[derive(Debug, Clone)]
pub struct StoredVectors {
    /// Semantic vector.
    pub semantic: Vec<f32>,
    /// Visual vector.
    pub visual: Vec<f32>,
    /// Its payload.
    pub payload: PointPayload,
}

/// A vector index with filtered nearest-neighbour search.
#[async_trait::async_trait]
pub trait VectorIndex: Send + Sync {
    /// "embedded" or "server".
    fn backend(&self) -> &'static str;
    /// Inserts or replaces points (idempotent); returns once the write is durable, except on
    /// an embedded index with a flush interval, where it is durable within that interval (a
    /// lost upsert is an image reconciliation embeds again; see the embedded backend's docs).
    async fn upsert(&self, points: Vec<IndexPoint>) -> Result<()>;
    /// Replaces the payload of an existing point; a missing point is not an error.
    async fn set_payload(&self, id: Uuid, payload: &PointPayload) -> Result<()>;
    /// Deletes points; missing ones are ignored.
    async fn delete(&self, ids: &[Uuid]) -> Result<()>;
    /// Filtered nearest neighbours, best first.
    async fn search(&self, query: VectorQuery<'_>) -> Result<Vec<Hit>>;
    /// One point's vectors and payload.
    async fn get(&self, id: Uuid) -> Result<Option<StoredVectors>>;
    /// Point ids in id order after `after`, with the model that made each (reconciliation).
    async fn list(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<(Uuid, String)>>;
    /// How many points match `filter`.
    async fn count(&self, filter: &SearchFilter) -> Result<u64>;
    /// Maintenance: brings every point into the search indexes now and waits (the embedded
    /// backend builds HNSW/payload indexes; it also does this by itself in the background after
    /// enough writes). Returns whether anything changed. The server backend optimizes by itself:
    /// the default does nothing.
    async fn optimize(&self) -> Result<bool> {
        Ok(false)
    }
    /// Makes every write made so far durable (at shutdown). Only an embedded index with a
    /// flush interval holds writes that are not: the default does nothing.
    async fn sync(&self) -> Result<()> {
        Ok(())
    }
}
