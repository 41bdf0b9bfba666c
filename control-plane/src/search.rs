//! Search: one query plan for text, "more like this" and query-image searches, and for
//! deterministic filtered listing.
//!
//! - With a similarity query (`text`, `like_image_id` or an uploaded image) the filters go
//!   into the vector search itself (filtered HNSW), so a selective filter still fills the page;
//!   hits are then read back from SQL in rank order (an image whose SQL row is not ready yet,
//!   after a crash between the vector write and the SQL commit, is hidden).
//! - Without one, SQL answers with the same filters sorted newest or oldest first.
//!
//! Each result carries an explanation: the concepts that matched (default model), what the
//! query image and the hit share, and which filters applied.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::{Caller, Role};
use crate::embed::Concept;
use crate::error::{ApiError, ApiResult};
use crate::index::{SearchFilter, VectorName, VectorQuery};
use crate::indexing::Search;
use crate::media;
use crate::routes::images::view;
use crate::state::AppState;
use crate::store::images::{status, ImageRow};
use crate::store::search::{review, SqlFilter};

/// A search request (JSON body of `POST /v1/search`, or the text fields of its multipart form).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// Find images matching this description.
    pub text: Option<String>,
    /// Find images that look like this image.
    pub like_image_id: Option<Uuid>,
    /// Only this owner's images (a scoped key implies its owner).
    pub owner: Option<String>,
    /// Uploaded at or after (RFC 3339).
    pub uploaded_after: Option<DateTime<Utc>>,
    /// Uploaded before (RFC 3339).
    pub uploaded_before: Option<DateTime<Utc>>,
    /// Exact camera make.
    pub camera_make: Option<String>,
    /// Exact camera model.
    pub camera_model: Option<String>,
    /// Every one of these tags.
    pub tags: Option<Vec<String>>,
    /// Status (default `ready`).
    pub status: Option<String>,
    /// Review state.
    pub review_state: Option<String>,
    /// Page size (default 20).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `relevance` (similarity queries), `newest` or `oldest` (filter-only queries).
    pub sort: Option<String>,
    /// Drop hits scoring below this cosine similarity.
    pub min_score: Option<f32>,
}

/// How a request is answered.
enum Plan {
    Text(String),
    Like(Uuid),
    Image(Bytes),
    Filter { oldest_first: bool },
}

/// What the similarity side of a query is, for explanations.
struct QueryContext {
    mode: &'static str,
    text_vector: Option<Vec<f32>>,
    concepts: Vec<Concept>,
}

/// Runs a search for `caller`; `query_image` is an uploaded query image, if any.
pub async fn run(
    state: &Arc<AppState>,
    caller: &Caller,
    mut req: SearchRequest,
    query_image: Option<Bytes>,
) -> ApiResult<Value> {
    caller.require(Role::Viewer)?;
    match (&req.owner, &caller.owner_scope) {
        (Some(o), Some(s)) if o != s => {
            return Err(ApiError::Forbidden(
                "this API key is limited to another owner".into(),
            ))
        }
        (None, Some(s)) => req.owner = Some(s.clone()),
        _ => {}
    }
    let limit = req.limit.unwrap_or(20);
    if limit == 0 || limit > state.cfg.search.max_limit {
        return Err(ApiError::Invalid(format!(
            "limit must be between 1 and {}",
            state.cfg.search.max_limit
        )));
    }
    let plan = plan(&req, query_image)?;
    let filter = Filters::from_request(&req)?;
    match plan {
        Plan::Filter { oldest_first } => {
            filter_page(state, &req, &filter, oldest_first, limit).await
        }
        similar => {
            let scope = caller.owner_scope.as_deref();
            similarity_page(state, &req, &filter, similar, limit, scope).await
        }
    }
}

fn plan(req: &SearchRequest, query_image: Option<Bytes>) -> ApiResult<Plan> {
    let text = req
        .text
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    if let Some(t) = &text {
        if t.chars().count() > 1000 {
            return Err(ApiError::Invalid(
                "text must be at most 1000 characters".into(),
            ));
        }
    }
    let given = usize::from(text.is_some())
        + usize::from(req.like_image_id.is_some())
        + usize::from(query_image.is_some());
    if given > 1 {
        return Err(ApiError::Invalid(
            "give one of text, like_image_id or a query image, not several".into(),
        ));
    }
    let sort = req
        .sort
        .as_deref()
        .unwrap_or(if given == 1 { "relevance" } else { "newest" });
    match (sort, given) {
        ("relevance", 1) | ("newest" | "oldest", 0) => {}
        ("relevance", _) => {
            return Err(ApiError::Invalid(
                "sort=relevance needs text, like_image_id or a query image".into(),
            ))
        }
        ("newest" | "oldest", _) => {
            return Err(ApiError::Invalid(
                "similarity results are sorted by relevance; sort=newest|oldest is for searches by filters only".into(),
            ))
        }
        (other, _) => {
            return Err(ApiError::Invalid(format!(
                "sort must be relevance, newest or oldest, not {other:?}"
            )))
        }
    }
    Ok(match (text, req.like_image_id, query_image) {
        (Some(t), _, _) => Plan::Text(t),
        (_, Some(id), _) => Plan::Like(id),
        (_, _, Some(img)) => Plan::Image(img),
        _ => Plan::Filter {
            oldest_first: sort == "oldest",
        },
    })
}

/// The request's filters in both the index's and SQL's terms, and in words.
struct Filters {
    index: SearchFilter,
    sql: SqlFilter,
    described: Vec<String>,
}

impl Filters {
    fn from_request(req: &SearchRequest) -> ApiResult<Self> {
        let status = req
            .status
            .clone()
            .unwrap_or_else(|| status::READY.to_owned());
        if ![
            status::UPLOADING,
            status::PROCESSING,
            status::READY,
            status::FAILED,
        ]
        .contains(&status.as_str())
        {
            return Err(ApiError::Invalid(
                "status must be uploading, processing, ready or failed".into(),
            ));
        }
        if let Some(r) = &req.review_state {
            if !review::ALL.contains(&r.as_str()) {
                return Err(ApiError::Invalid(format!(
                    "review_state must be one of {}",
                    review::ALL.join(", ")
                )));
            }
        }
        if let (Some(a), Some(b)) = (req.uploaded_after, req.uploaded_before) {
            if a >= b {
                return Err(ApiError::Invalid(
                    "uploaded_after must be before uploaded_before".into(),
                ));
            }
        }
        let tags: Vec<String> = req.tags.clone().unwrap_or_default();
        if tags.len() > 20 || tags.iter().any(|t| t.is_empty() || t.chars().count() > 100) {
            return Err(ApiError::Invalid(
                "tags must be at most 20 strings of 1 to 100 characters".into(),
            ));
        }
        let nonempty = |o: &Option<String>| o.clone().filter(|s| !s.is_empty());
        let mut described = Vec::new();
        if let Some(o) = &req.owner {
            described.push(format!("owner = {o}"));
        }
        if let Some(t) = req.uploaded_after {
            described.push(format!("uploaded_at >= {}", t.to_rfc3339()));
        }
        if let Some(t) = req.uploaded_before {
            described.push(format!("uploaded_at < {}", t.to_rfc3339()));
        }
        if let Some(m) = nonempty(&req.camera_make) {
            described.push(format!("camera_make = {m}"));
        }
        if let Some(m) = nonempty(&req.camera_model) {
            described.push(format!("camera_model = {m}"));
        }
        for t in &tags {
            described.push(format!("tag {t}"));
        }
        described.push(format!("status = {status}"));
        if let Some(r) = &req.review_state {
            described.push(format!("review_state = {r}"));
        }
        Ok(Filters {
            index: SearchFilter {
                owner: req.owner.clone(),
                uploaded_from: req.uploaded_after.map(|t| t.timestamp_micros()),
                uploaded_to: req.uploaded_before.map(|t| t.timestamp_micros()),
                camera_make: nonempty(&req.camera_make),
                camera_model: nonempty(&req.camera_model),
                tags: tags.clone(),
                status: Some(status.clone()),
                review_state: req.review_state.clone(),
                exclude: Vec::new(),
            },
            sql: SqlFilter {
                owner: req.owner.clone(),
                since: req.uploaded_after,
                until: req.uploaded_before,
                camera_make: nonempty(&req.camera_make),
                camera_model: nonempty(&req.camera_model),
                tags,
                status: Some(status),
                review_state: req.review_state.clone(),
            },
            described,
        })
    }
}

/// A compact result: the image's view without the full EXIF, plus score and explanation.
fn result(state: &AppState, img: &ImageRow, score: Option<f32>, explanation: Value) -> Value {
    let mut v = view(state, img);
    if let Some(o) = v.as_object_mut() {
        o.remove("exif");
        o.insert("review_state".into(), json!(img.review_state));
        o.insert("review_reason".into(), json!(img.review_reason));
        o.insert("score".into(), json!(score));
        o.insert("explanation".into(), explanation);
    }
    v
}

async fn filter_page(
    state: &AppState,
    req: &SearchRequest,
    filter: &Filters,
    oldest_first: bool,
    limit: u32,
) -> ApiResult<Value> {
    let after = req.cursor.as_deref().map(decode_time_cursor).transpose()?;
    let mut rows = state
        .db
        .search_sql(&filter.sql, oldest_first, after, limit + 1)
        .await?;
    let next = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last()
            .map(|r| format!("t{}_{}", r.uploaded_at.timestamp_micros(), r.id.simple()))
    } else {
        None
    };
    let explanation = json!({
        "summary": format!("sorted {}", if oldest_first { "oldest first" } else { "newest first" }),
        "filters": filter.described,
    });
    Ok(json!({
        "results": rows.iter().map(|r| result(state, r, None, explanation.clone())).collect::<Vec<_>>(),
        "next_cursor": next,
        "mode": "filter",
        "sort": if oldest_first { "oldest" } else { "newest" },
    }))
}

fn decode_time_cursor(c: &str) -> ApiResult<(DateTime<Utc>, Uuid)> {
    let bad = || ApiError::Invalid("cursor is not one this search returned".into());
    let rest = c.strip_prefix('t').ok_or_else(bad)?;
    let (t, id) = rest.split_once('_').ok_or_else(bad)?;
    let t = DateTime::from_timestamp_micros(t.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    Ok((t, Uuid::parse_str(id).map_err(|_| bad())?))
}

fn decode_offset_cursor(c: &str) -> ApiResult<usize> {
    c.strip_prefix('s')
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n <= 100_000)
        .ok_or_else(|| ApiError::Invalid("cursor is not one this search returned".into()))
}

fn search_of(state: &AppState) -> ApiResult<&Search> {
    state.search.as_ref().ok_or_else(|| {
        ApiError::Conflict(
            "similarity search is off (search.model = \"none\"); search by filters only".into(),
        )
    })
}

/// Runs CPU-bound embedding on the blocking pool (not the image workers' pool, so queries do
/// not queue behind ingest).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("embedding task failed: {e}")))?
}

async fn similarity_page(
    state: &Arc<AppState>,
    req: &SearchRequest,
    filter: &Filters,
    plan: Plan,
    limit: u32,
    scope: Option<&str>,
) -> ApiResult<Value> {
    let search = search_of(state)?.clone();
    let offset = req
        .cursor
        .as_deref()
        .map(decode_offset_cursor)
        .transpose()?
        .unwrap_or(0);
    let mut index_filter = filter.index.clone();
    let (using, vector, ctx) = match plan {
        Plan::Text(text) => {
            let e = Arc::clone(&search.embedder);
            let v = blocking(move || {
                e.embed_text(&text)
                    .map_err(|e| ApiError::Invalid(format!("text cannot be searched: {e}")))
            })
            .await?;
            let ctx = QueryContext {
                mode: "text",
                text_vector: Some(v.clone()),
                concepts: Vec::new(),
            };
            (VectorName::Semantic, v, ctx)
        }
        Plan::Like(id) => {
            let img = state
                .db
                .get_image(id)
                .await?
                .ok_or(ApiError::NotFound("like_image_id image"))?;
            // A scoped key learns nothing about other owners' images.
            if scope.is_some_and(|s| s != img.owner) {
                return Err(ApiError::NotFound("like_image_id image"));
            }
            let stored = search
                .index
                .get(id)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| {
                    ApiError::Conflict(format!(
                        "image {id} has no vectors yet (it is {}); try again when it is ready",
                        img.status
                    ))
                })?;
            let concepts = state
                .db
                .embeddings_of(&[id])
                .await?
                .pop()
                .map(|(_, _, c)| c)
                .unwrap_or_default();
            index_filter.exclude.push(id);
            let ctx = QueryContext {
                mode: "like_image",
                text_vector: None,
                concepts,
            };
            (VectorName::Visual, stored.visual, ctx)
        }
        Plan::Image(bytes) => {
            let e = Arc::clone(&search.embedder);
            let side = e.input_size();
            let emb = blocking(move || {
                let rgb = media::rgb_for_embedding(&bytes, side).map_err(|err| match err {
                    media::MediaError::Rejected(m) => ApiError::Unprocessable(m),
                    media::MediaError::Transient(m) => ApiError::Internal(m),
                })?;
                e.embed_image(&rgb)
                    .map_err(|err| ApiError::Internal(format!("embedding the query image: {err}")))
            })
            .await?;
            let ctx = QueryContext {
                mode: "image",
                text_vector: None,
                concepts: emb.concepts,
            };
            (VectorName::Visual, emb.visual, ctx)
        }
        Plan::Filter { .. } => unreachable_plan()?,
    };
    let hits = search
        .index
        .search(VectorQuery {
            using,
            vector: &vector,
            filter: &index_filter,
            limit: limit as usize,
            offset,
            score_threshold: req.min_score,
        })
        .await
        .map_err(unavailable)?;
    let ids: Vec<Uuid> = hits.iter().map(|h| h.id).collect();
    let rows: HashMap<Uuid, ImageRow> = state
        .db
        .get_images(&ids)
        .await?
        .into_iter()
        .map(|r| (r.id, r))
        .collect();
    let concepts: HashMap<Uuid, Vec<Concept>> = state
        .db
        .embeddings_of(&ids)
        .await?
        .into_iter()
        .map(|(id, _, c)| (id, c))
        .collect();
    let wanted_status = filter.index.status.as_deref();
    let mut results = Vec::with_capacity(hits.len());
    for h in &hits {
        let Some(row) = rows.get(&h.id) else { continue };
        // The SQL row is the truth: hide points whose image is not (or no longer) in the
        // requested state.
        if wanted_status.is_some_and(|s| s != row.status) {
            continue;
        }
        let hit_concepts = concepts.get(&h.id).map(Vec::as_slice).unwrap_or(&[]);
        let explanation = explain(&search, &ctx, h.score, hit_concepts, &filter.described);
        results.push(result(state, row, Some(h.score), explanation));
    }
    let next = (hits.len() == limit as usize).then(|| format!("s{}", offset + hits.len()));
    Ok(json!({
        "results": results,
        "next_cursor": next,
        "mode": ctx.mode,
        "sort": "relevance",
        "model": search.model_id,
    }))
}

fn unreachable_plan() -> ApiResult<(VectorName, Vec<f32>, QueryContext)> {
    Err(ApiError::Internal(
        "filter plan reached the similarity path".into(),
    ))
}

fn unavailable(e: crate::index::IndexError) -> ApiError {
    ApiError::Unavailable(e.to_string())
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
) -> Value {
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
    json!({
        "summary": summary,
        "concepts": matched,
        "image_concepts": hit_concepts.iter().take(5).collect::<Vec<_>>(),
        "filters": filters,
    })
}
