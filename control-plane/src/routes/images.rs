//! Reading and editing images: `GET /v1/images/{id}`, `GET /v1/images`,
//! `PATCH /v1/images/{id}`, `DELETE /v1/images/{id}`, `GET /v1/images/{id}/url`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::catalog::{ImageDoc, RawCatalogFilter};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::views::{edge_url, ErrorBody, Page};
use crate::auth::{Caller, Role};
use crate::cursor::Cursor;
use crate::domain::{ImageId, ImageStatus, Owner, ReviewState};
use crate::error::{ApiError, ApiResult};
use crate::filter::ImageFilter;
use crate::state::AppState;
use crate::store::images::{ImageRow, ListOrder};

/// Loads an image and checks the caller may act on it with `role`.
pub async fn load_for(
    state: &AppState,
    caller: &Caller,
    id: &str,
    role: Role,
) -> ApiResult<ImageRow> {
    caller.require(role)?;
    let id: ImageId = id.parse().map_err(|_| ApiError::NotFound("image"))?;
    let img = state
        .db
        .get_image(id)
        .await?
        .ok_or(ApiError::NotFound("image"))?;
    // A scoped key learns nothing about other owners' images: same answer as a missing one.
    if caller.owner_scope.as_ref().is_some_and(|s| *s != img.owner) {
        return Err(ApiError::NotFound("image"));
    }
    Ok(img)
}

/// `GET /v1/images/{id}`: one image, with descriptive metadata, workflow state and technical
/// metadata shown apart (and its rights, lineage and review).
#[utoipa::path(get, path = "/v1/images/{id}", tag = "images",
    params(("id" = String, Path, description = "Image id")),
    responses((status = 200, body = ImageDoc), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get_image(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ImageDoc>> {
    let img = load_for(&state, &caller, &id, Role::Viewer).await?;
    let mut doc = super::catalog::document(&state, &img).await?;
    let today = state.clock.now().date_naive();
    let access = state.db.access_summary(img.id, today).await?;
    doc.image.lifecycle.last_accessed_at = access.last_accessed_at;
    doc.image.lifecycle.access = Some(access);
    doc.image.lifecycle.objects = Some(
        state
            .db
            .objects_of(img.id)
            .await?
            .into_iter()
            .map(|o| super::views::ObjectView {
                kind: o.kind,
                key: o.key,
                bytes: o.bytes,
                tier: o.tier,
            })
            .collect(),
    );
    Ok(Json(doc))
}

/// Filters and paging of `GET /v1/images`; the filter names are the ones `POST /v1/search`
/// takes.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Owner (a scoped key implies its own).
    owner: Option<String>,
    /// `uploading`, `processing`, `ready` or `failed`.
    status: Option<String>,
    /// `unreviewed`, `needs_review`, `approved` or `rejected`.
    review_state: Option<String>,
    /// Uploaded at or after (RFC 3339). `since` is accepted too.
    #[serde(alias = "since")]
    uploaded_after: Option<String>,
    /// Uploaded before (RFC 3339). `until` is accepted too.
    #[serde(alias = "until")]
    uploaded_before: Option<String>,
    /// Exact camera make, case-insensitive.
    camera_make: Option<String>,
    /// Exact camera model, case-insensitive.
    camera_model: Option<String>,
    /// Comma-separated tags; every one must be present.
    tags: Option<String>,
    /// A collection (id, or name of the owner's).
    collection: Option<String>,
    /// Comma-separated vocabulary terms; each must be carried, itself or a narrower term.
    terms: Option<String>,
    /// `draft`, `in_review`, `approved`, `published`, `rejected`, `changes_requested` or
    /// `withdrawn`.
    workflow_state: Option<String>,
    /// `usable` (default: inside the rights window), `withheld` or `any` (admins).
    rights: Option<String>,
    /// `current` (default: current versions only) or `all`.
    versions: Option<String>,
    /// Conditions on schema fields, `;`-separated: `usage=editorial;shots>=5;title~dune`
    /// (`=`, `!=`, `<`, `<=`, `>`, `>=`, `~` contains).
    fields: Option<String>,
    /// Only images in review for this reason.
    reason: Option<String>,
    /// Not requested by any edge since this time (RFC 3339); never requested counts.
    not_accessed_since: Option<String>,
    /// Fewer than this many requests in the last 30 days.
    max_hits_30d: Option<i64>,
    /// `standard` (hot) or `cold`.
    storage_tier: Option<String>,
    /// `newest` (default), `oldest`, or `field:NAME[:asc|:desc]` (a schema field; images
    /// without a value last).
    sort: Option<String>,
    /// Page size, 1–200 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Parses an RFC 3339 time named `name`.
pub fn parse_time(name: &str, v: &str) -> ApiResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::Invalid(format!(
                "{name} must be an RFC 3339 time such as 2026-01-31T00:00:00Z"
            ))
        })
}

/// The owner a request lists: the one given (which a scoped key must match), else the key's.
pub fn requested_owner(caller: &Caller, given: Option<&str>) -> ApiResult<Option<Owner>> {
    let owner = match (given, &caller.owner_scope) {
        (Some(o), _) => Some(Owner::parse(o)?),
        (None, Some(s)) => Some(s.clone()),
        (None, None) => None,
    };
    match &owner {
        Some(o) => caller.require_owner(Role::Viewer, o)?,
        None => caller.require(Role::Viewer)?,
    }
    Ok(owner)
}

/// Parses a listing order.
pub fn parse_order(sort: Option<&str>) -> ApiResult<ListOrder> {
    match sort.unwrap_or("newest") {
        "newest" => Ok(ListOrder::NewestFirst),
        "oldest" => Ok(ListOrder::OldestFirst),
        other => Err(ApiError::Invalid(format!(
            "sort must be newest or oldest, not {other:?}"
        ))),
    }
}

/// `GET /v1/images`: images matching the filters (catalog ones too), newest (or oldest)
/// first or by a schema field, keyset-paged. Withheld images and superseded versions are
/// left out unless asked for.
#[utoipa::path(get, path = "/v1/images", tag = "images", params(ListQuery),
    responses((status = 200, body = Page<ImageDoc>), (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list_images(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<ImageDoc>>> {
    let owner = requested_owner(&caller, q.owner.as_deref())?
        .ok_or_else(|| ApiError::Invalid("owner is required".into()))?;
    let split = |s: &Option<String>| -> Vec<String> {
        s.as_deref()
            .map(|t| {
                t.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let catalog = super::catalog::catalog_filter(
        &state,
        &caller,
        Some(&owner),
        RawCatalogFilter {
            collection: q.collection.clone(),
            terms: split(&q.terms),
            workflow_state: q.workflow_state.clone(),
            rights: q.rights.clone(),
            versions: q.versions.clone(),
            fields: q.fields.iter().cloned().collect(),
            reason: q.reason.clone(),
        },
    )
    .await?;
    let field_sort =
        super::catalog::field_sort(&state, q.sort.as_deref(), catalog.collection, Some(&owner))
            .await?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::Invalid("limit must be between 1 and 200".into()));
    }
    let filter = ImageFilter {
        owner: Some(owner),
        uploaded_after: q
            .uploaded_after
            .as_deref()
            .map(|v| parse_time("uploaded_after", v))
            .transpose()?,
        uploaded_before: q
            .uploaded_before
            .as_deref()
            .map(|v| parse_time("uploaded_before", v))
            .transpose()?,
        camera_make: q.camera_make.filter(|c| !c.is_empty()),
        camera_model: q.camera_model.filter(|c| !c.is_empty()),
        tags: q
            .tags
            .as_deref()
            .map(|t| {
                t.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        status: q
            .status
            .as_deref()
            .map(str::parse::<ImageStatus>)
            .transpose()?,
        review_state: q
            .review_state
            .as_deref()
            .map(str::parse::<ReviewState>)
            .transpose()?,
        catalog,
        lifecycle: crate::filter::LifecycleFilter {
            not_accessed_since: q
                .not_accessed_since
                .as_deref()
                .map(|v| parse_time("not_accessed_since", v))
                .transpose()?,
            max_hits: q.max_hits_30d,
            hits_since: Some(crate::lifecycle::policy::window_start(
                state.clock.now(),
                crate::lifecycle::report::MONTH_DAYS,
            )),
            storage_tier: q.storage_tier.filter(|t| !t.is_empty()),
        },
        ..ImageFilter::default()
    };
    filter.check()?;
    if let Some(sort) = &field_sort {
        let after = q
            .cursor
            .as_deref()
            .map(|c| Cursor::decode_field(c).map_err(|e| ApiError::Invalid(e.to_string())))
            .transpose()?;
        let mut rows = state
            .db
            .list_by_field(&filter, sort, after.as_ref(), limit + 1)
            .await?;
        let next_cursor = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|(r, v)| {
                Cursor::Field(crate::catalog::query::SortPosition {
                    value: v.clone(),
                    id: r.id.0,
                })
                .encode()
            })
        } else {
            None
        };
        let rows: Vec<ImageRow> = rows.into_iter().map(|(r, _)| r).collect();
        return Ok(Json(Page {
            items: super::catalog::documents(&state, &rows).await?,
            next_cursor,
        }));
    }
    let order = parse_order(q.sort.as_deref())?;
    let after = q
        .cursor
        .as_deref()
        .map(Cursor::decode_after)
        .transpose()
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    let mut rows = state
        .db
        .list_images(&filter, order, after, limit + 1)
        .await?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last()
            .map(|r| Cursor::After(r.uploaded_at, r.id.0).encode())
    } else {
        None
    };
    Ok(Json(Page {
        items: super::catalog::documents(&state, &rows).await?,
        next_cursor,
    }))
}

/// Body of `PATCH /v1/images/{id}`: absent fields are left as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchImage {
    /// New caption (at most 2000 characters); `null` clears it.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    caption: Option<Option<String>>,
    /// New tags (at most 100, each 1–100 characters).
    tags: Option<Vec<String>>,
    /// New review state.
    #[schema(value_type = Option<String>)]
    review_state: Option<String>,
    /// Why (kept in the history; becomes the review reason when the review state changes).
    reason: Option<String>,
    /// Private: only signed, expiring URLs serve it. Making an image private also purges what
    /// the edges and the CDN cached of it. An owner listed in `privacy.private_owners` keeps
    /// all its images private whatever this says.
    private: Option<bool>,
}

/// Changes an image's own private flag, with a history entry; when it becomes private, what
/// the edges and the CDN cached of it is purged once they have read the signed-only list (the
/// next rights pass publishes it, and the edges poll it).
async fn set_private(
    state: &AppState,
    caller: &Caller,
    img: &ImageRow,
    private: bool,
    reason: &Option<String>,
) -> ApiResult<()> {
    let catalog = &state.cfg.catalog;
    let wait = catalog.rights_check.unwrap_or_default() + catalog.purge_delay;
    let purge_at = crate::store::now()
        + chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::zero());
    state
        .db
        .set_private(
            img.id,
            private,
            &caller.actor,
            reason,
            purge_at,
            state.cfg.max_attempts,
        )
        .await?
        .ok_or(ApiError::NotFound("image"))?;
    Ok(())
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}

fn check_text(name: &str, v: &Option<String>, max: usize) -> ApiResult<()> {
    if v.as_ref().is_some_and(|c| c.chars().count() > max) {
        return Err(ApiError::Invalid(format!(
            "{name} must be at most {max} characters"
        )));
    }
    Ok(())
}

/// `PATCH /v1/images/{id}`: caption, tags and review state (with a reason). Every change is
/// kept in the image's history (`GET /v1/images/{id}/history`).
#[utoipa::path(patch, path = "/v1/images/{id}", tag = "images",
    params(("id" = String, Path, description = "Image id")), request_body = PatchImage,
    responses((status = 200, body = ImageDoc), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn patch_image(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PatchImage>,
) -> ApiResult<Json<ImageDoc>> {
    let img = load_for(&state, &caller, &id, Role::Uploader).await?;
    if let Some(c) = &body.caption {
        check_text("caption", c, 2000)?;
    }
    check_text("reason", &body.reason, 2000)?;
    if let Some(tags) = &body.tags {
        if tags.len() > 100 || tags.iter().any(|t| t.is_empty() || t.chars().count() > 100) {
            return Err(ApiError::Invalid(
                "tags must be at most 100 strings of 1 to 100 characters".into(),
            ));
        }
    }
    let review_state = body
        .review_state
        .as_deref()
        .map(str::parse::<ReviewState>)
        .transpose()?;
    if let Some(r) = review_state {
        check_review_decision(&state, &caller, &img, r).await?;
    }
    // Through the catalog: corrections are validated and recorded with their source, and a
    // review state is reached by the workflow's transitions.
    super::catalog::legacy_patch(
        &state,
        &caller,
        &img,
        body.caption,
        body.tags,
        review_state,
        body.reason.clone(),
    )
    .await?;
    if let Some(private) = body.private {
        set_private(&state, &caller, &img, private, &body.reason).await?;
    }
    super::catalog::reload(&state, img.id).await
}

/// Approving or rejecting is a review decision: it needs the reviewer role, and nobody
/// decides on an image their own key, or a key in its lineage, uploaded.
async fn check_review_decision(
    state: &AppState,
    caller: &Caller,
    img: &ImageRow,
    to: ReviewState,
) -> ApiResult<()> {
    if !matches!(to, ReviewState::Approved | ReviewState::Rejected) {
        return Ok(());
    }
    caller.require(Role::Reviewer)?;
    if crate::catalog::corrections::is_uploader(state, caller, img).await? {
        return Err(ApiError::Forbidden(
            crate::catalog::workflow::UPLOADER_DECIDES.into(),
        ));
    }
    Ok(())
}

/// A signed edge URL.
#[derive(Debug, Serialize, ToSchema)]
pub struct SizedUrl {
    /// The URL, signed when the edges have keys.
    pub url: String,
}

/// `GET /v1/images/{id}/url?w=…&h=…&fit=…&fmt=…&q=…`: an edge URL for any size and format
/// the edge understands, signed when the edges have signing keys. Options are checked with
/// the edge's own grammar, so a URL this returns is one the edge accepts.
#[utoipa::path(get, path = "/v1/images/{id}/url", tag = "images",
    params(("id" = String, Path, description = "Image id")),
    responses((status = 200, body = SizedUrl), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn sized_url(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> ApiResult<Json<SizedUrl>> {
    let img = load_for(&state, &caller, &id, Role::Viewer).await?;
    if img.status != ImageStatus::Ready {
        return Err(ApiError::Conflict(format!(
            "the image is {}, not ready",
            img.status
        )));
    }
    let query = query.unwrap_or_default();
    let opts = flexphoto_url::options::parse_pairs(&query, '&', state.cfg.max_dimension)
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    if opts.signature.is_some() || opts.expires.is_some() {
        return Err(ApiError::Invalid(
            "sig and exp are set by the server".into(),
        ));
    }
    // Rights: no URL for a withheld image; others expire with their rights window.
    let exp = super::catalog::url_expiry_for(&state, &img).await?;
    let query = crate::catalog::rights::with_expiry(&query, exp);
    Ok(Json(SizedUrl {
        url: edge_url(&state, &img.original_key, &query),
    }))
}

/// `DELETE /v1/images/{id}`: the image disappears from every read at once; a job then
/// removes its vectors, original, variants and edge caches, and finally its row.
#[utoipa::path(delete, path = "/v1/images/{id}", tag = "images",
    params(("id" = String, Path, description = "Image id")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn delete_image(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let img = load_for(&state, &caller, &id, Role::Uploader).await?;
    state
        .db
        .delete_image(img.id, state.cfg.max_attempts)
        .await?
        .ok_or(ApiError::NotFound("image"))?;
    Ok(StatusCode::NO_CONTENT)
}
