//! The search query plan: one plan for text, "more like this" and query-image searches, and
//! for deterministic filtered listing. It returns domain results; `routes::search` renders
//! them.
//!
//! - With a similarity query (`text`, `like_image_id` or an uploaded image) the filters go
//!   into the vector search itself (filtered HNSW), so a selective filter still fills the page;
//!   hits are then read back from SQL in rank order (an image whose SQL row is not ready yet,
//!   after a crash between the vector write and the SQL commit, is hidden).
//! - Without one, SQL answers with the same filters sorted newest or oldest first.
//!
//! Each result carries an explanation: the concepts that matched (default model), what the
//! query image and the hit share, the vocabulary terms of a text query it carries, which
//! filters applied and how it met each, and why it is in review when it is.
//!
//! Catalog filters the index holds (collection, terms, workflow, rights window, versions) run
//! inside the vector search; the others (schema fields, review reasons) run in SQL: when they
//! select few images, their ids go into the vector search as a filter; otherwise ranked hits
//! are checked against SQL in batches until the page is full. Either way every page is full
//! unless the ranking is exhausted, and every hit is checked against SQL, the truth.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use super::embed::Concept;
use super::index::{CatalogConditions, IndexError, SearchFilter, VectorName, VectorQuery};
use super::Search;
use crate::catalog::explain::{MatchedFilter, PageFacts, TermExplained};
use crate::catalog::query::{CatalogFilter, FieldSort, RightsFilter, SortPosition, VersionFilter};
use crate::cursor::Cursor;
use crate::domain::{ImageId, ImageStatus, Owner};
use crate::filter::ImageFilter;
use crate::state::AppState;
use crate::store::images::{ImageRow, ListOrder};
use crate::store::StoreError;

/// What to search for, beside the filters.
#[derive(Debug, Clone)]
pub enum Similar {
    /// Images matching this description.
    Text(String),
    /// Images that look like this image.
    Like(ImageId),
    /// Images that look like these encoded bytes.
    Image(Bytes),
}

/// A validated search.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    /// The similarity side; `None` lists by the filters alone.
    pub similar: Option<Similar>,
    /// The filters (status defaults to `ready` before this is built).
    pub filter: ImageFilter,
    /// Order of a filter-only search.
    pub order: ListOrder,
    /// Page size.
    pub limit: u32,
    /// Where the previous page ended.
    pub cursor: Option<String>,
    /// Drop hits scoring below this cosine similarity.
    pub min_score: Option<f32>,
    /// Sort a filter-only search by a descriptive field instead of upload time.
    pub sort_field: Option<FieldSort>,
}

/// Most ids a SQL-only filter may select to be passed into the vector search; past it,
/// ranked hits are checked against SQL in batches.
const MAX_CANDIDATES: usize = 10_000;
/// Most ranked hits one page may check against SQL.
const MAX_SCANNED: usize = 20_000;

/// Why a search failed; `error.rs` gives each its HTTP face.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The request cannot be answered as asked.
    #[error("{0}")]
    Invalid(String),
    /// The image a query names does not exist (or belongs to another owner).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request conflicts with the current state (search off, image not embedded yet).
    #[error("{0}")]
    Conflict(String),
    /// The query image cannot be decoded.
    #[error("{0}")]
    Unprocessable(String),
    /// The image threads are saturated.
    #[error("the image threads are busy; retry shortly")]
    Busy,
    /// The vector index failed.
    #[error("the vector index is unavailable: {0}")]
    Index(#[from] IndexError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug or an environment failure.
    #[error("{0}")]
    Internal(String),
}

/// Why one result was returned, in words and concepts.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Explanation {
    /// One line: what matched, or how the list is sorted.
    pub summary: String,
    /// Concepts of the result that matched the query, strongest first.
    pub concepts: Vec<Concept>,
    /// The result's own strongest concepts.
    pub image_concepts: Vec<Concept>,
    /// The filters applied, in words.
    pub filters: Vec<String>,
    /// Vocabulary terms named in a text query that the result carries (itself or through a
    /// narrower term).
    pub terms: Vec<TermExplained>,
    /// Each catalog filter and how the result meets it.
    pub matched_filters: Vec<MatchedFilter>,
    /// Why the result is in review (empty when it is not).
    pub in_review_because: Vec<String>,
}

/// One result.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The image, as SQL has it now.
    pub image: ImageRow,
    /// Cosine similarity for similarity searches.
    pub score: Option<f32>,
    /// Why it is here.
    pub explanation: Explanation,
}

/// One page of results.
#[derive(Debug, Clone)]
pub struct SearchPage {
    /// Best first (or in list order).
    pub hits: Vec<Hit>,
    /// The cursor of the next page, when there may be one.
    pub next_cursor: Option<String>,
    /// `text`, `like_image`, `image` or `filter`.
    pub mode: &'static str,
    /// `relevance`, `newest` or `oldest`.
    pub sort: &'static str,
    /// The model that made the vectors, for similarity searches.
    pub model: Option<String>,
}

/// What the similarity side of a query is, for explanations.
struct QueryContext {
    mode: &'static str,
    text_vector: Option<Vec<f32>>,
    concepts: Vec<Concept>,
    /// The query text (text searches).
    text: Option<String>,
}

/// Runs a search. `scope` is the owner a scoped key is limited to (the caller has already
/// checked that the filter's owner agrees).
pub async fn run(
    state: &Arc<AppState>,
    query: SearchQuery,
    scope: Option<&Owner>,
) -> Result<SearchPage, SearchError> {
    query
        .filter
        .check()
        .map_err(|e| SearchError::Invalid(e.to_string()))?;
    match query.similar.clone() {
        None => filter_page(state, &query).await,
        Some(similar) => similarity_page(state, &query, similar, scope).await,
    }
}

async fn filter_page(state: &AppState, q: &SearchQuery) -> Result<SearchPage, SearchError> {
    let invalid = |e: String| SearchError::Invalid(e);
    let (rows, next_cursor, sorted): (Vec<ImageRow>, Option<String>, String) = match &q.sort_field {
        Some(sort) => {
            let after = q
                .cursor
                .as_deref()
                .map(|c| Cursor::decode_field(c).map_err(|e| invalid(e.to_string())))
                .transpose()?;
            let mut rows = state
                .db
                .list_by_field(&q.filter, sort, after.as_ref(), q.limit + 1)
                .await?;
            let next = if rows.len() > q.limit as usize {
                rows.truncate(q.limit as usize);
                rows.last().map(|(r, v)| {
                    Cursor::Field(SortPosition {
                        value: v.clone(),
                        id: r.id.0,
                    })
                    .encode()
                })
            } else {
                None
            };
            let order = if sort.descending {
                "largest first"
            } else {
                "smallest first"
            };
            (
                rows.into_iter().map(|(r, _)| r).collect(),
                next,
                format!(
                    "sorted by {} ({order}; images without a value last)",
                    sort.field
                ),
            )
        }
        None => {
            let after = q
                .cursor
                .as_deref()
                .map(Cursor::decode_after)
                .transpose()
                .map_err(|e| SearchError::Invalid(e.to_string()))?;
            let mut rows = state
                .db
                .list_images(&q.filter, q.order, after, q.limit + 1)
                .await?;
            let next = if rows.len() > q.limit as usize {
                rows.truncate(q.limit as usize);
                rows.last()
                    .map(|r| Cursor::After(r.uploaded_at, r.id.0).encode())
            } else {
                None
            };
            let oldest = q.order == ListOrder::OldestFirst;
            (
                rows,
                next,
                format!(
                    "sorted {}",
                    if oldest {
                        "oldest first"
                    } else {
                        "newest first"
                    }
                ),
            )
        }
    };
    let ids: Vec<ImageId> = rows.iter().map(|r| r.id).collect();
    let facts = PageFacts::load(&state.db, &ids)
        .await
        .map_err(|e| SearchError::Internal(e.to_string()))?;
    let filters = q.filter.describe();
    let oldest = q.order == ListOrder::OldestFirst;
    Ok(SearchPage {
        hits: rows
            .into_iter()
            .map(|image| Hit {
                explanation: Explanation {
                    summary: sorted.clone(),
                    concepts: Vec::new(),
                    image_concepts: Vec::new(),
                    filters: filters.clone(),
                    terms: Vec::new(),
                    matched_filters: facts.matched_filters(&q.filter.catalog, &image),
                    in_review_because: facts.in_review_because(image.id),
                },
                image,
                score: None,
            })
            .collect(),
        next_cursor,
        mode: "filter",
        sort: match &q.sort_field {
            Some(_) => "field",
            None if oldest => "oldest",
            None => "newest",
        },
        model: None,
    })
}

fn search_of(state: &AppState) -> Result<&Search, SearchError> {
    state.search.as_ref().ok_or_else(|| {
        SearchError::Conflict(
            "similarity search is off (search.model = \"none\"); search by filters only".into(),
        )
    })
}

/// Runs CPU-bound embedding on the blocking pool (not the image workers' pool, so queries do
/// not queue behind ingest).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SearchError> + Send + 'static,
) -> Result<T, SearchError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SearchError::Internal(format!("embedding task failed: {e}")))?
}

/// The filter as the vector index applies it.
fn index_filter(f: &ImageFilter) -> SearchFilter {
    SearchFilter {
        owner: f.owner.as_ref().map(|o| o.as_str().to_owned()),
        uploaded_from: f.uploaded_after.map(|t| t.timestamp_micros()),
        uploaded_to: f.uploaded_before.map(|t| t.timestamp_micros()),
        camera_make: f.camera_make.clone(),
        camera_model: f.camera_model.clone(),
        tags: f.tags.clone(),
        status: f.status.map(|s| s.as_str().to_owned()),
        review_state: f.review_state.map(|r| r.as_str().to_owned()),
        faces_min: f.faces_min.map(i64::from),
        faces_max: f.faces_max.map(i64::from),
        people_min: f.people_min.map(i64::from),
        people_max: f.people_max.map(i64::from),
        exclude: Vec::new(),
        catalog: catalog_conditions(&f.catalog),
    }
}

/// The catalog filters the index holds, as it applies them.
fn catalog_conditions(c: &CatalogFilter) -> CatalogConditions {
    let now = c.now().timestamp_micros();
    CatalogConditions {
        collection: c.collection.map(|u| u.to_string()),
        terms: c
            .terms
            .iter()
            .map(|t| crate::catalog::vocab::normalise(t))
            .collect(),
        workflow_state: c.workflow_state.map(|w| w.as_str().to_owned()),
        usable_at: (c.rights == RightsFilter::Usable).then_some(now),
        withheld_at: (c.rights == RightsFilter::Withheld).then_some(now),
        current_only: c.versions == VersionFilter::Current,
        only: None,
    }
}

async fn similarity_page(
    state: &Arc<AppState>,
    q: &SearchQuery,
    similar: Similar,
    scope: Option<&Owner>,
) -> Result<SearchPage, SearchError> {
    let search = search_of(state)?.clone();
    let offset = q
        .cursor
        .as_deref()
        .map(Cursor::decode_offset)
        .transpose()
        .map_err(|e| SearchError::Invalid(e.to_string()))?
        .unwrap_or(0);
    let mut filter = index_filter(&q.filter);
    let (using, vector, ctx) = match similar {
        Similar::Text(text) => {
            let query_text = text.clone();
            let e = Arc::clone(&search.embedder);
            let v = blocking(move || {
                e.embed_text(&text)
                    .map_err(|e| SearchError::Invalid(format!("text cannot be searched: {e}")))
            })
            .await?;
            let ctx = QueryContext {
                mode: "text",
                text_vector: Some(v.clone()),
                concepts: Vec::new(),
                text: Some(query_text),
            };
            (VectorName::Semantic, v, ctx)
        }
        Similar::Like(id) => {
            let img = state
                .db
                .get_image(id)
                .await?
                .ok_or(SearchError::NotFound("like_image_id image"))?;
            // A scoped key learns nothing about other owners' images.
            if scope.is_some_and(|s| *s != img.owner) {
                return Err(SearchError::NotFound("like_image_id image"));
            }
            let stored = search.index.get(id.0).await?.ok_or_else(|| {
                SearchError::Conflict(format!(
                    "image {id} has no vectors yet (it is {}); try again when it is ready",
                    img.status
                ))
            })?;
            let concepts = state
                .db
                .embeddings_of(&[id])
                .await?
                .pop()
                .map(|e| e.concepts)
                .unwrap_or_default();
            filter.exclude.push(id.0);
            let ctx = QueryContext {
                mode: "like_image",
                text_vector: None,
                concepts,
                text: None,
            };
            (VectorName::Visual, stored.visual, ctx)
        }
        Similar::Image(bytes) => {
            // A query image is untrusted input like an upload: the same formats and pixel
            // limit, decoded on the bounded image pool under the processing time limit.
            let e = Arc::clone(&search.embedder);
            let side = e.input_size();
            let limits = *state.ingest.limits();
            let deadline = std::time::Instant::now() + state.ingest.timeout();
            let emb = state
                .pool
                .submit(Some(deadline), move |budget| {
                    let rgb =
                        flexphoto_media::pixels::rgb_for_embedding(&bytes, side, &limits, budget)
                            .map_err(|err| match err {
                            flexphoto_media::TransformError::Internal(m) => {
                                SearchError::Internal(m)
                            }
                            flexphoto_media::TransformError::DeadlineExceeded => {
                                SearchError::Unprocessable(
                                    "the query image took too long to decode".into(),
                                )
                            }
                            other => SearchError::Unprocessable(other.to_string()),
                        })?;
                    e.embed_image(&rgb).map_err(|err| {
                        SearchError::Internal(format!("embedding the query image: {err}"))
                    })
                })
                .map_err(|_| SearchError::Busy)?
                .await
                .map_err(query_image_pool_error)??;
            let ctx = QueryContext {
                mode: "image",
                text_vector: None,
                concepts: emb.concepts,
                text: None,
            };
            (VectorName::Visual, emb.visual, ctx)
        }
    };
    // Filters the index does not hold: few matching images go into the search as ids.
    if q.filter.catalog.needs_sql() {
        let cands = state
            .db
            .matching_ids(&q.filter, None, MAX_CANDIDATES as u32 + 1)
            .await?;
        if cands.len() <= MAX_CANDIDATES {
            filter.catalog.only = Some(cands.iter().map(|i| i.0).collect());
        }
    }
    let (hits, next_cursor) =
        ranked_page(state, &search, q, using, &vector, &filter, offset).await?;
    let ids: Vec<ImageId> = hits.iter().map(|h| ImageId(h.id)).collect();
    let mut rows: HashMap<ImageId, ImageRow> = state
        .db
        .get_images(&ids)
        .await?
        .into_iter()
        .map(|r| (r.id, r))
        .collect();
    let concepts: HashMap<ImageId, Vec<Concept>> = state
        .db
        .embeddings_of(&ids)
        .await?
        .into_iter()
        .map(|e| (e.image_id, e.concepts))
        .collect();
    let described = q.filter.describe();
    let facts = PageFacts::load(&state.db, &ids)
        .await
        .map_err(|e| SearchError::Internal(e.to_string()))?;
    let wanted: Option<ImageStatus> = q.filter.status;
    let mut results = Vec::with_capacity(hits.len());
    for h in &hits {
        let id = ImageId(h.id);
        let Some(row) = rows.remove(&id) else {
            continue;
        };
        // The SQL row is the truth: hide points whose image is not (or no longer) in the
        // requested state.
        if wanted.is_some_and(|s| s != row.status) {
            continue;
        }
        let hit_concepts = concepts.get(&id).map(Vec::as_slice).unwrap_or(&[]);
        let mut explanation = explain(&search, &ctx, h.score, hit_concepts, &described);
        if let Some(text) = &ctx.text {
            explanation.terms = facts.query_terms(text, id);
            if !explanation.terms.is_empty() {
                explanation.summary += &format!(
                    "; terms: {}",
                    explanation
                        .terms
                        .iter()
                        .map(|t| if t.image_term == t.term {
                            format!("{} ({})", t.term, t.matched)
                        } else {
                            format!("{} ({}, via {})", t.term, t.matched, t.image_term)
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        explanation.matched_filters = facts.matched_filters(&q.filter.catalog, &row);
        explanation.in_review_because = facts.in_review_because(id);
        results.push(Hit {
            image: row,
            score: Some(h.score),
            explanation,
        });
    }
    Ok(SearchPage {
        hits: results,
        next_cursor,
        mode: ctx.mode,
        sort: "relevance",
        model: Some(search.model_id.clone()),
    })
}

fn fmt_concepts(c: &[Concept]) -> String {
    c.iter()
        .map(|c| format!("{} {:.2}", c.label, c.weight))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A person-readable explanation of one hit.
fn explain(
    search: &Search,
    ctx: &QueryContext,
    score: f32,
    hit_concepts: &[Concept],
    filters: &[String],
) -> Explanation {
    let (matched, summary): (Vec<Concept>, String) = match &ctx.text_vector {
        Some(q) => {
            let mut m = search.embedder.explain(q, hit_concepts);
            m.truncate(3);
            let s = if m.is_empty() {
                format!("text similarity {score:.2}")
            } else {
                format!("matched {}", fmt_concepts(&m))
            };
            (m, s)
        }
        None => {
            let shared: Vec<Concept> = hit_concepts
                .iter()
                .filter(|c| ctx.concepts.iter().any(|q| q.label == c.label))
                .take(3)
                .cloned()
                .collect();
            let s = if shared.is_empty() {
                format!("visual similarity {score:.2}")
            } else {
                format!(
                    "visual similarity {score:.2}; both show {}",
                    shared
                        .iter()
                        .map(|c| c.label.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            (shared, s)
        }
    };
    Explanation {
        summary,
        concepts: matched,
        image_concepts: hit_concepts.iter().take(5).cloned().collect(),
        filters: filters.to_vec(),
        terms: Vec::new(),
        matched_filters: Vec::new(),
        in_review_because: Vec::new(),
    }
}

/// One page of ranked hits that SQL confirms match every filter, starting at `offset` of the
/// ranking: batches are fetched and checked until the page is full or the ranking ends, so a
/// page is short only at the end. Returns the hits and the next page's cursor.
async fn ranked_page(
    state: &AppState,
    search: &Search,
    q: &SearchQuery,
    using: VectorName,
    vector: &[f32],
    filter: &SearchFilter,
    offset: usize,
) -> Result<(Vec<super::index::Hit>, Option<String>), SearchError> {
    let limit = q.limit as usize;
    let mut raw = offset;
    let mut out = Vec::with_capacity(limit);
    let mut scanned = 0usize;
    let mut batch = limit;
    loop {
        let hits = search
            .index
            .search(VectorQuery {
                using,
                vector,
                filter,
                limit: batch,
                offset: raw,
                score_threshold: q.min_score,
            })
            .await?;
        let ids: Vec<ImageId> = hits.iter().map(|h| ImageId(h.id)).collect();
        let ok: std::collections::HashSet<ImageId> = state
            .db
            .matching_ids(&q.filter, Some(&ids), ids.len() as u32)
            .await?
            .into_iter()
            .collect();
        for (i, h) in hits.iter().enumerate() {
            if ok.contains(&ImageId(h.id)) {
                out.push(h.clone());
                if out.len() == limit {
                    let next = raw + i + 1;
                    return Ok((out, Some(Cursor::Offset(next).encode())));
                }
            }
        }
        raw += hits.len();
        scanned += hits.len();
        if hits.len() < batch {
            return Ok((out, None));
        }
        if scanned >= MAX_SCANNED {
            // Bounded work per request: the cursor continues where this page stopped.
            return Ok((out, Some(Cursor::Offset(raw).encode())));
        }
        // Most hits were filtered out: look further ahead each time.
        batch = (batch * 4).min(2_000);
    }
}

/// A query image's job that never ran to an answer: the pool was too slow to start it
/// before its deadline (busy: 503, retry later) or it crashed on the bytes (422; the worker
/// survived, and the same bytes would crash it again).
fn query_image_pool_error(e: flexphoto_media::pool::PoolError) -> SearchError {
    use flexphoto_media::pool::PoolError;
    match e {
        PoolError::Expired | PoolError::Full => SearchError::Busy,
        PoolError::Panicked => {
            SearchError::Unprocessable("the query image could not be decoded".into())
        }
    }
}

#[cfg(test)]
mod query_image_tests {
    use super::*;
    use crate::error::ApiError;
    use flexphoto_media::pool::PoolError;

    #[test]
    fn query_images_that_never_ran_are_busy_or_unprocessable_never_internal() {
        let busy = ApiError::from(query_image_pool_error(PoolError::Expired));
        assert_eq!(busy.status_and_code().0.as_u16(), 503);
        let crashed = ApiError::from(query_image_pool_error(PoolError::Panicked));
        assert_eq!(crashed.status_and_code().0.as_u16(), 422);
    }
}
