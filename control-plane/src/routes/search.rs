//! Search and review routes: `POST /v1/search`, `GET /v1/images/{id}/duplicates`,
//! `GET /v1/duplicates`, `GET /v1/images/{id}/history`.

use std::sync::Arc;

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::header;
use axum::Json;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::body as read;
use super::extract::{ApiPath, ApiQuery};
use super::images::{load_for, parse_order, requested_owner};
use super::views::{self, ErrorBody, Page, SearchResults};
use crate::auth::{Caller, Role};
use crate::cursor::Cursor;
use crate::domain::{ImageId, ImageStatus, ReviewState};
use crate::error::{ApiError, ApiResult};
use crate::filter::ImageFilter;
use crate::search::plan::{self, SearchQuery, Similar};
use crate::state::AppState;
use crate::store::images::ListOrder;

/// A search: JSON body of `POST /v1/search`, or the text fields of its multipart form. The
/// filters have the names `GET /v1/images` takes.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// Find images matching this description.
    pub text: Option<String>,
    /// Find images that look like this image.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub like_image_id: Option<ImageId>,
    /// Only this owner's images (a scoped key implies its owner).
    pub owner: Option<String>,
    /// Uploaded at or after (RFC 3339).
    pub uploaded_after: Option<DateTime<Utc>>,
    /// Uploaded before (RFC 3339).
    pub uploaded_before: Option<DateTime<Utc>>,
    /// Exact camera make, case-insensitive.
    pub camera_make: Option<String>,
    /// Exact camera model, case-insensitive.
    pub camera_model: Option<String>,
    /// Every one of these tags.
    pub tags: Option<Vec<String>>,
    /// Status (default `ready`).
    pub status: Option<String>,
    /// Review state.
    pub review_state: Option<String>,
    /// At least this many frontal faces (1: a person is in the picture). Counted by the
    /// default model's face detector; images without a count never match.
    pub faces_min: Option<u32>,
    /// At most this many frontal faces (0: nobody facing the camera).
    pub faces_max: Option<u32>,
    /// At least this many people in any pose, seen from the front, the back or far away
    /// (1: a person is in the picture). Counted by the default model's object detector;
    /// images without a count never match.
    pub people_min: Option<u32>,
    /// At most this many people (0: nobody in the picture).
    pub people_max: Option<u32>,
    /// A collection (id, or name of the owner's).
    pub collection: Option<String>,
    /// Vocabulary terms; each must be carried, itself or a narrower term.
    pub terms: Option<Vec<String>>,
    /// Workflow state.
    pub workflow_state: Option<String>,
    /// `usable` (default), `withheld` or `any` (admins).
    pub rights: Option<String>,
    /// `current` (default) or `all`.
    pub versions: Option<String>,
    /// Conditions on schema fields (`usage=editorial`, `shots>=5`, `title~dune`).
    pub fields: Option<Vec<String>>,
    /// Only images in review for this reason.
    pub reason: Option<String>,
    /// Page size (default 20).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `relevance` (similarity queries), `newest`, `oldest` or `field:NAME[:asc|:desc]`
    /// (filter-only queries).
    pub sort: Option<String>,
    /// Drop hits scoring below this cosine similarity.
    pub min_score: Option<f32>,
}

/// `POST /v1/search`: JSON (`text` or `like_image_id`, filters, `limit`, `cursor`, `sort`), or
/// `multipart/form-data` with an `image` (or `file`) part for a reverse-image search and the
/// same fields as text parts (`tags` comma-separated or repeated).
#[utoipa::path(post, path = "/v1/search", tag = "search",
    request_body(content(
        (SearchRequest = "application/json"),
        (String = "multipart/form-data")
    )),
    responses((status = 200, body = SearchResults), (status = 400, body = ErrorBody),
        (status = 409, description = "Search is off, or the image has no vectors yet", body = ErrorBody),
        (status = 422, description = "The query image cannot be decoded", body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn search(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    req: Request,
) -> ApiResult<Json<SearchResults>> {
    caller.require(Role::Viewer)?;
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let (body, image) = if ct.starts_with("multipart/form-data") {
        let mp = Multipart::from_request(req, &state)
            .await
            .map_err(|e| ApiError::Invalid(format!("bad multipart body: {}", e.body_text())))?;
        read_form(&state, mp).await?
    } else if ct.starts_with("application/json") || ct.is_empty() {
        let bytes = read::bytes(
            &state,
            req.into_body(),
            state.cfg.max_json_bytes,
            "JSON body",
        )
        .await?;
        let v: SearchRequest = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::Invalid(format!("bad JSON body: {e}")))?;
        (v, None)
    } else {
        return Err(ApiError::UnsupportedType(
            "send application/json, or multipart/form-data with an image part".into(),
        ));
    };
    let query = to_query(&state, &caller, body, image).await?;
    let page = plan::run(&state, query, caller.owner_scope.as_ref()).await?;
    Ok(Json(views::search_results(&state, page).await?))
}

/// Checks a request and turns it into a query.
async fn to_query(
    state: &AppState,
    caller: &Caller,
    req: SearchRequest,
    image: Option<Bytes>,
) -> ApiResult<SearchQuery> {
    let owner = requested_owner(caller, req.owner.as_deref())?;
    let limit = req.limit.unwrap_or(20);
    if limit == 0 || limit > state.cfg.search.max_limit {
        return Err(ApiError::Invalid(format!(
            "limit must be between 1 and {}",
            state.cfg.search.max_limit
        )));
    }
    let text = req
        .text
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    if text.as_ref().is_some_and(|t| t.chars().count() > 1000) {
        return Err(ApiError::Invalid(
            "text must be at most 1000 characters".into(),
        ));
    }
    let given = usize::from(text.is_some())
        + usize::from(req.like_image_id.is_some())
        + usize::from(image.is_some());
    if given > 1 {
        return Err(ApiError::Invalid(
            "give one of text, like_image_id or a query image, not several".into(),
        ));
    }
    let similar = match (text, req.like_image_id, image) {
        (Some(t), _, _) => Some(Similar::Text(t)),
        (_, Some(id), _) => Some(Similar::Like(id)),
        (_, _, Some(img)) => Some(Similar::Image(img)),
        _ => None,
    };
    let catalog = super::catalog::catalog_filter(
        state,
        caller,
        owner.as_ref(),
        super::catalog::RawCatalogFilter {
            collection: req.collection.clone(),
            terms: req.terms.clone().unwrap_or_default(),
            workflow_state: req.workflow_state.clone(),
            rights: req.rights.clone(),
            versions: req.versions.clone(),
            fields: req.fields.clone().unwrap_or_default(),
            reason: req.reason.clone(),
        },
    )
    .await?;
    let field_sort = match (&similar, req.sort.as_deref()) {
        (Some(_), Some(s)) if s.starts_with("field:") => {
            return Err(ApiError::Invalid(
                "similarity results are sorted by relevance; sort=field:NAME is for searches by filters only".into(),
            ))
        }
        (None, sort) => {
            super::catalog::field_sort(state, sort, catalog.collection, owner.as_ref()).await?
        }
        _ => None,
    };
    let sort_for_order = if field_sort.is_some() {
        None
    } else {
        req.sort.as_deref()
    };
    let order = match (sort_for_order, &similar) {
        (None | Some("relevance"), Some(_)) => ListOrder::NewestFirst,
        (Some("relevance"), None) => {
            return Err(ApiError::Invalid(
                "sort=relevance needs text, like_image_id or a query image".into(),
            ))
        }
        (Some("newest" | "oldest"), Some(_)) => {
            return Err(ApiError::Invalid(
                "similarity results are sorted by relevance; sort=newest|oldest is for searches by filters only".into(),
            ))
        }
        (Some(other), Some(_)) => {
            return Err(ApiError::Invalid(format!(
                "sort must be relevance, newest or oldest, not {other:?}"
            )))
        }
        (sort, None) => parse_order(sort).map_err(|_| {
            ApiError::Invalid(format!(
                "sort must be relevance, newest or oldest, not {:?}",
                sort.unwrap_or("")
            ))
        })?,
    };
    let nonempty = |o: Option<String>| o.filter(|s| !s.is_empty());
    let filter = ImageFilter {
        owner,
        uploaded_after: req.uploaded_after,
        uploaded_before: req.uploaded_before,
        camera_make: nonempty(req.camera_make),
        camera_model: nonempty(req.camera_model),
        tags: req.tags.unwrap_or_default(),
        status: Some(match req.status.as_deref() {
            Some(s) => s.parse::<ImageStatus>()?,
            None => ImageStatus::Ready,
        }),
        review_state: req
            .review_state
            .as_deref()
            .map(str::parse::<ReviewState>)
            .transpose()?,
        faces_min: req.faces_min,
        faces_max: req.faces_max,
        people_min: req.people_min,
        people_max: req.people_max,
        catalog,
        lifecycle: Default::default(),
    };
    Ok(SearchQuery {
        similar,
        filter,
        order,
        limit,
        cursor: req.cursor,
        min_score: req.min_score,
        sort_field: field_sort,
    })
}

async fn read_form(
    state: &AppState,
    mut mp: Multipart,
) -> ApiResult<(SearchRequest, Option<Bytes>)> {
    let max_image = usize::try_from(state.cfg.max_upload_bytes).unwrap_or(usize::MAX);
    let mut fields = Map::new();
    let mut tags: Vec<Value> = Vec::new();
    let mut lists: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    let mut image: Option<Bytes> = None;
    while let Some(mut field) = read::next_field(state, &mut mp).await? {
        let name = field.name().unwrap_or("").to_owned();
        match name.as_str() {
            "image" | "file" => {
                if image.is_some() {
                    return Err(ApiError::Invalid("send one query image".into()));
                }
                let mut buf = BytesMut::new();
                while let Some(chunk) = read::chunk(state, &mut field).await? {
                    if buf.len() + chunk.len() > max_image {
                        return Err(ApiError::TooLarge(format!(
                            "the query image is over {max_image} bytes (upload.max_bytes)"
                        )));
                    }
                    buf.extend_from_slice(&chunk);
                }
                if buf.is_empty() {
                    return Err(ApiError::Invalid("the query image is empty".into()));
                }
                image = Some(buf.freeze());
            }
            "terms" | "fields" => {
                let text = read::text(state, &mut field).await?;
                let sep = if name == "terms" { ',' } else { ';' };
                let list = lists.entry(name.clone()).or_default();
                list.extend(
                    text.split(sep)
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(|t| Value::String(t.to_owned())),
                );
            }
            "tags" => {
                let text = read::text(state, &mut field).await?;
                tags.extend(
                    text.split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(|t| Value::String(t.to_owned())),
                );
            }
            "limit" | "faces_min" | "faces_max" | "people_min" | "people_max" => {
                let text = read::text(state, &mut field).await?;
                let n: u32 = text
                    .trim()
                    .parse()
                    .map_err(|_| ApiError::Invalid(format!("{name} must be a whole number")))?;
                fields.insert(name, json!(n));
            }
            "min_score" => {
                let text = read::text(state, &mut field).await?;
                let n: f32 = text
                    .trim()
                    .parse()
                    .map_err(|_| ApiError::Invalid("min_score must be a number".into()))?;
                fields.insert(name, json!(n));
            }
            _ => {
                let text = read::text(state, &mut field).await?;
                fields.insert(name, Value::String(text.trim().to_owned()));
            }
        }
    }
    if !tags.is_empty() {
        fields.insert("tags".into(), Value::Array(tags));
    }
    for (k, v) in lists {
        fields.insert(k, Value::Array(v));
    }
    let req: SearchRequest = serde_json::from_value(Value::Object(fields))
        .map_err(|e| ApiError::Invalid(format!("bad form field: {e}")))?;
    Ok((req, image))
}

/// One near-duplicate of an image.
#[derive(Debug, Serialize, ToSchema)]
pub struct DuplicateView {
    /// The other image.
    #[schema(value_type = String, format = Uuid)]
    pub id: ImageId,
    /// `phash` or `embedding`.
    pub method: String,
    /// Bits for `phash`, 1 − cosine for `embedding`.
    pub distance: f64,
    /// When the pair was found.
    pub found_at: DateTime<Utc>,
    /// The other image's status.
    pub status: Option<String>,
    /// The other image's variant URLs.
    pub variants: Option<std::collections::BTreeMap<String, String>>,
}

/// The near-duplicates of one image, closest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DuplicatesOf {
    /// The image asked about.
    #[schema(value_type = String, format = Uuid)]
    pub id: ImageId,
    /// Its near-duplicates.
    pub items: Vec<DuplicateView>,
    /// Always `null`: every pair is on this page.
    pub next_cursor: Option<String>,
}

/// `GET /v1/images/{id}/duplicates`: the near-duplicates found for an image, closest first.
#[utoipa::path(get, path = "/v1/images/{id}/duplicates", tag = "review",
    params(("id" = String, Path, description = "Image id")),
    responses((status = 200, body = DuplicatesOf), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn duplicates_of(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<DuplicatesOf>> {
    let img = load_for(&state, &caller, &id, Role::Viewer).await?;
    let pairs = state.db.duplicates_of(img.id).await?;
    let others: Vec<ImageId> = pairs.iter().map(|p| p.other_id).collect();
    let rows = state.db.get_images(&others).await?;
    let items = pairs
        .iter()
        .map(|p| {
            let other = rows.iter().find(|r| r.id == p.other_id);
            DuplicateView {
                id: p.other_id,
                method: p.method.clone(),
                distance: p.distance,
                found_at: p.found_at,
                status: other.map(|r| r.status.as_str().to_owned()),
                variants: other.map(|r| views::image(&state, r).variants),
            }
        })
        .collect();
    Ok(Json(DuplicatesOf {
        id: img.id,
        items,
        next_cursor: None,
    }))
}

/// Query of `GET /v1/duplicates`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DuplicatesQuery {
    /// Only this owner's pairs (a scoped key implies its own).
    owner: Option<String>,
    /// Page size, 1–500 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A near-duplicate pair waiting for review.
#[derive(Debug, Serialize, ToSchema)]
pub struct DuplicatePair {
    /// One image.
    #[schema(value_type = String, format = Uuid)]
    pub image_id: ImageId,
    /// The other.
    #[schema(value_type = String, format = Uuid)]
    pub other_id: ImageId,
    /// `phash` or `embedding`.
    pub method: String,
    /// How far apart.
    pub distance: f64,
    /// Owner of both.
    pub owner: String,
    /// When the pair was found.
    pub found_at: DateTime<Utc>,
}

/// `GET /v1/duplicates?owner=…&limit=…&cursor=…`: near-duplicate pairs for review, newest
/// first, each pair once.
#[utoipa::path(get, path = "/v1/duplicates", tag = "review", params(DuplicatesQuery),
    responses((status = 200, body = Page<DuplicatePair>), (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list_duplicates(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<DuplicatesQuery>,
) -> ApiResult<Json<Page<DuplicatePair>>> {
    let owner = requested_owner(&caller, q.owner.as_deref())?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::Invalid("limit must be between 1 and 500".into()));
    }
    let after = q
        .cursor
        .as_deref()
        .map(Cursor::decode_pair)
        .transpose()
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    let mut pairs = state
        .db
        .list_duplicates(owner.as_ref(), limit + 1, after)
        .await?;
    let next_cursor = if pairs.len() > limit as usize {
        pairs.truncate(limit as usize);
        pairs
            .last()
            .map(|p| Cursor::Pair(p.found_at, p.image_id.0, p.other_id.0).encode())
    } else {
        None
    };
    let items = pairs
        .into_iter()
        .map(|p| DuplicatePair {
            image_id: p.image_id,
            other_id: p.other_id,
            method: p.method,
            distance: p.distance,
            owner: p.owner.as_str().to_owned(),
            found_at: p.found_at,
        })
        .collect();
    Ok(Json(Page { items, next_cursor }))
}

/// One recorded change.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEntry {
    /// Sequence number.
    pub id: i64,
    /// Which field changed.
    pub field: String,
    /// Value before.
    pub old_value: Option<Value>,
    /// Value after.
    pub new_value: Option<Value>,
    /// Who changed it (API key name, or `ingest`).
    pub actor: String,
    /// Why, when given.
    pub reason: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
    /// Where the new value came from (`upload`, `csv`, `sidecar`, `embedded`, `person`,
    /// `model`, `restore`, `system`); absent for changes recorded before sources were kept.
    pub source: Option<String>,
    /// The change this entry belongs to (the image's version after it); entries of one
    /// change share it. Restore any entry with `POST …/history/{id}/restore`.
    pub change: Option<String>,
    /// The change as a readable diff.
    pub diff: crate::catalog::history::Diff,
}

/// An image's change history.
#[derive(Debug, Serialize, ToSchema)]
pub struct History {
    /// The image.
    #[schema(value_type = String, format = Uuid)]
    pub id: ImageId,
    /// Its review state now.
    pub review_state: String,
    /// Why it is in that state.
    pub review_reason: Option<String>,
    /// Every change, oldest first.
    pub items: Vec<HistoryEntry>,
    /// Always `null`: the whole history is on this page.
    pub next_cursor: Option<String>,
    /// Its workflow state now.
    pub workflow_state: String,
    /// Its version now.
    pub version: i64,
    /// Its chain of versions and derivatives, and its near-duplicates.
    pub lineage: super::catalog::Lineage,
}

/// `GET /v1/images/{id}/history`: every recorded change to descriptive metadata, rights and
/// workflow (who, when, why, before, after, source, and a readable diff), oldest first; the
/// current review and workflow state; and the image's lineage.
#[utoipa::path(get, path = "/v1/images/{id}/history", tag = "review",
    params(("id" = String, Path, description = "Image id")),
    responses((status = 200, body = History), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn history(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<History>> {
    let img = load_for(&state, &caller, &id, Role::Viewer).await?;
    let rows = state.db.changes_of(img.id).await?;
    let cat = state.db.catalog_of(img.id).await?;
    let lineage = super::catalog::lineage_of(&state, &img).await?;
    Ok(Json(History {
        id: img.id,
        review_state: img.review_state.as_str().to_owned(),
        review_reason: img.review_reason,
        items: rows
            .into_iter()
            .map(|r| {
                let old = r.old_value.map(|v| v.0);
                let new = r.new_value.map(|v| v.0);
                let name = crate::catalog::history::field_name(&r.field).to_owned();
                HistoryEntry {
                    id: r.id,
                    diff: crate::catalog::history::diff(&name, old.as_ref(), new.as_ref()),
                    field: r.field,
                    old_value: old,
                    new_value: new,
                    actor: r.actor,
                    reason: r.reason,
                    at: r.at,
                    source: r.source,
                    change: r.change_id,
                }
            })
            .collect(),
        next_cursor: None,
        workflow_state: cat
            .as_ref()
            .map_or("draft", |c| c.workflow_state.as_str())
            .to_owned(),
        version: cat.map_or(0, |c| i64::from(c.version)),
        lineage,
    }))
}
