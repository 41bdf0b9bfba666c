//! Collections and their schemas: `POST|GET /v1/collections`, `GET|PATCH
//! /v1/collections/{id}`, `PUT|GET /v1/collections/{id}/schema` (a new version each time;
//! images are re-validated in the background), `GET /v1/collections/{id}/schema/versions`,
//! `PUT|GET /v1/collections/{id}/vocabulary`. Schemas and collection files are accepted as
//! JSON or TOML (`Content-Type: application/toml`), in the same shape.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::images::requested_owner;
use super::views::{ErrorBody, Page};
use crate::auth::{Caller, Role};
use crate::catalog::load;
use crate::catalog::schema::{FieldDef, SchemaDoc};
use crate::catalog::vocab::TermDef;
use crate::domain::Owner;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::catalog::CollectionRow;
use crate::store::StoreError;

/// A collection file or creation request: settings, and optionally a schema and vocabulary.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectionFile {
    /// Owner (a scoped key implies its own).
    pub owner: Option<String>,
    /// Name, unique per owner (1–100 characters).
    pub name: String,
    /// For people.
    pub description: Option<String>,
    /// `review` (default: accept and route failures to review) or `refuse` (422).
    pub on_invalid: Option<String>,
    /// Publishing needs an approved image (default true).
    pub publish_requires_approval: Option<bool>,
    /// The schema's fields.
    #[serde(default)]
    pub fields: Vec<FieldDef>,
    /// The vocabulary.
    #[serde(default)]
    pub terms: Vec<TermDef>,
    /// Why (kept with the schema version).
    pub reason: Option<String>,
}

/// A schema version.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchemaView {
    /// Its number (0: no schema yet).
    pub version: i32,
    /// Its fields.
    pub fields: Vec<FieldDef>,
    /// Its vocabulary.
    pub terms: Vec<TermDef>,
    /// Who wrote it.
    pub created_by: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// When.
    pub created_at: Option<DateTime<Utc>>,
}

/// A collection.
#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionView {
    /// Id.
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    /// Owner.
    pub owner: String,
    /// Name.
    pub name: String,
    /// For people.
    pub description: Option<String>,
    /// The owner's default collection.
    pub is_default: bool,
    /// `refuse` or `review`.
    pub on_invalid: String,
    /// Publishing needs approval.
    pub publish_requires_approval: bool,
    /// The current schema.
    pub schema: SchemaView,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

fn check_settings(
    name: Option<&str>,
    description: Option<&str>,
    on_invalid: Option<&str>,
) -> ApiResult<()> {
    if let Some(n) = name {
        if n.trim().is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control) {
            return Err(ApiError::Invalid(
                "name must be 1 to 100 characters without control characters".into(),
            ));
        }
        if Uuid::parse_str(n).is_ok() {
            return Err(ApiError::Invalid("name must not be a UUID".into()));
        }
    }
    if description.is_some_and(|d| d.chars().count() > 2000) {
        return Err(ApiError::Invalid(
            "description must be at most 2000 characters".into(),
        ));
    }
    if let Some(o) = on_invalid {
        if o != "refuse" && o != "review" {
            return Err(ApiError::Invalid(format!(
                "on_invalid must be refuse or review, not {o:?}"
            )));
        }
    }
    Ok(())
}

/// Reads a JSON or TOML body into `T`.
async fn body_of<T: serde::de::DeserializeOwned>(state: &AppState, req: Request) -> ApiResult<T> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    let bytes = axum::body::to_bytes(req.into_body(), state.cfg.max_json_bytes)
        .await
        .map_err(|_| ApiError::TooLarge("the body is too large".into()))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::Invalid("the body is not UTF-8".into()))?;
    if ct.starts_with("application/toml") || ct.starts_with("text/toml") {
        toml::from_str(text).map_err(|e| ApiError::Invalid(format!("bad TOML body: {e}")))
    } else if ct.starts_with("application/json") {
        serde_json::from_str(text).map_err(|e| ApiError::Invalid(format!("bad JSON body: {e}")))
    } else {
        Err(ApiError::UnsupportedType(
            "send application/json or application/toml".into(),
        ))
    }
}

/// Compiles a schema document and writes it as the collection's next version (then images
/// are re-validated in the background). Returns the version.
pub async fn write_schema(
    state: &AppState,
    coll: &CollectionRow,
    doc: SchemaDoc,
    actor: &str,
    reason: Option<&str>,
) -> ApiResult<i32> {
    let current = load::schema(&state.db, coll, None).await?;
    let terms = doc
        .terms
        .clone()
        .unwrap_or_else(|| current.vocabulary.defs().to_vec());
    let compiled = doc
        .compile(i64::from(coll.schema_version) + 1, terms.clone())
        .map_err(ApiError::Invalid)?;
    let kinds: Vec<(String, &'static str)> = compiled
        .fields
        .values()
        .map(|f| (f.def.name.clone(), f.kind.as_str()))
        .collect();
    let fields =
        serde_json::to_value(&doc.fields).map_err(|e| ApiError::Internal(e.to_string()))?;
    let terms = serde_json::to_value(compiled.vocabulary.defs())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(state
        .db
        .put_schema(coll.id, &fields, &terms, &kinds, actor, reason)
        .await?)
}

async fn view(state: &AppState, c: CollectionRow) -> ApiResult<CollectionView> {
    let schema = schema_view(state, &c, None).await?;
    Ok(CollectionView {
        id: c.id,
        owner: c.owner.as_str().to_owned(),
        name: c.name,
        description: c.description,
        is_default: c.is_default,
        on_invalid: c.on_invalid,
        publish_requires_approval: c.publish_requires_approval,
        schema,
        created_at: c.created_at,
        updated_at: c.updated_at,
    })
}

async fn schema_view(
    state: &AppState,
    c: &CollectionRow,
    version: Option<i32>,
) -> ApiResult<SchemaView> {
    let v = version.unwrap_or(c.schema_version);
    if v == 0 {
        return Ok(SchemaView {
            version: 0,
            fields: Vec::new(),
            terms: Vec::new(),
            created_by: None,
            reason: None,
            created_at: None,
        });
    }
    let row = state
        .db
        .schema_version(c.id, Some(v))
        .await?
        .ok_or(ApiError::NotFound("schema version"))?;
    Ok(SchemaView {
        version: row.version,
        fields: serde_json::from_value(row.fields.0).unwrap_or_default(),
        terms: serde_json::from_value(row.terms.0).unwrap_or_default(),
        created_by: Some(row.created_by),
        reason: row.reason,
        created_at: Some(row.created_at),
    })
}

/// Loads a collection the caller may act on with `role`.
async fn load_collection(
    state: &AppState,
    caller: &Caller,
    id: &str,
    role: Role,
) -> ApiResult<CollectionRow> {
    caller.require(role)?;
    let id = Uuid::parse_str(id).map_err(|_| ApiError::NotFound("collection"))?;
    let c = state
        .db
        .get_collection(id)
        .await?
        .ok_or(ApiError::NotFound("collection"))?;
    if caller.owner_scope.as_ref().is_some_and(|s| *s != c.owner) {
        return Err(ApiError::NotFound("collection"));
    }
    Ok(c)
}

/// `POST /v1/collections`: creates a collection, with its first schema version when the
/// body has fields or terms. JSON or TOML. Needs the reviewer role for the owner.
#[utoipa::path(post, path = "/v1/collections", tag = "collections",
    request_body(content(
        (CollectionFile = "application/json"),
        (String = "application/toml")
    )),
    responses((status = 201, body = CollectionView), (status = 400, body = ErrorBody),
        (status = 409, description = "The owner has a collection of that name", body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    req: Request,
) -> ApiResult<Response> {
    caller.require(Role::Reviewer)?;
    let file: CollectionFile = body_of(&state, req).await?;
    let owner = requested_owner(&caller, file.owner.as_deref())?
        .ok_or_else(|| ApiError::Invalid("owner is required".into()))?;
    caller.require_owner(Role::Reviewer, &owner)?;
    check_settings(
        Some(&file.name),
        file.description.as_deref(),
        file.on_invalid.as_deref(),
    )?;
    // The schema is checked before anything is written.
    let doc = SchemaDoc {
        fields: file.fields.clone(),
        terms: Some(file.terms.clone()),
    };
    doc.compile(1, Vec::new()).map_err(ApiError::Invalid)?;
    let coll = match state
        .db
        .create_collection(
            &owner,
            file.name.trim(),
            file.description.as_deref(),
            file.on_invalid.as_deref().unwrap_or("review"),
            file.publish_requires_approval.unwrap_or(true),
            false,
        )
        .await
    {
        Ok(c) => c,
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::Conflict(format!(
                "owner {owner} already has a collection named {:?}",
                file.name.trim()
            )))
        }
        Err(e) => return Err(e.into()),
    };
    if !file.fields.is_empty() || !file.terms.is_empty() {
        write_schema(&state, &coll, doc, &caller.actor, file.reason.as_deref()).await?;
    }
    let c = state
        .db
        .get_collection(coll.id)
        .await?
        .ok_or(ApiError::NotFound("collection"))?;
    Ok((StatusCode::CREATED, Json(view(&state, c).await?)).into_response())
}

/// Query of `GET /v1/collections`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListCollections {
    /// Only this owner's (a scoped key implies its own).
    owner: Option<String>,
    /// Page size, 1–200 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// `GET /v1/collections`: collections by owner and name.
#[utoipa::path(get, path = "/v1/collections", tag = "collections", params(ListCollections),
    responses((status = 200, body = Page<CollectionView>), (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListCollections>,
) -> ApiResult<Json<Page<CollectionView>>> {
    let owner = requested_owner(&caller, q.owner.as_deref())?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::Invalid("limit must be between 1 and 200".into()));
    }
    let after = q
        .cursor
        .as_deref()
        .map(|c| {
            let raw = hex::decode(c).ok().and_then(|b| String::from_utf8(b).ok());
            raw.and_then(|r| {
                r.split_once('\n')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
            })
            .ok_or_else(|| ApiError::Invalid("cursor is not one this API returned".into()))
        })
        .transpose()?;
    let mut rows = state
        .db
        .list_collections(owner.as_ref(), after, limit + 1)
        .await?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last()
            .map(|c| hex::encode(format!("{}\n{}", c.owner.as_str(), c.name)))
    } else {
        None
    };
    let mut items = Vec::with_capacity(rows.len());
    for c in rows {
        items.push(view(&state, c).await?);
    }
    Ok(Json(Page { items, next_cursor }))
}

/// `GET /v1/collections/{id}`: a collection with its current schema.
#[utoipa::path(get, path = "/v1/collections/{id}", tag = "collections",
    params(("id" = String, Path, description = "Collection id")),
    responses((status = 200, body = CollectionView), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<CollectionView>> {
    let c = load_collection(&state, &caller, &id, Role::Viewer).await?;
    Ok(Json(view(&state, c).await?))
}

/// Body of `PATCH /v1/collections/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectionChange {
    /// For people (`null` clears it).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// `refuse` or `review`.
    pub on_invalid: Option<String>,
    /// Publishing needs approval.
    pub publish_requires_approval: Option<bool>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `PATCH /v1/collections/{id}`: changes settings (what uploads failing validation get,
/// whether publishing needs approval).
#[utoipa::path(patch, path = "/v1/collections/{id}", tag = "collections",
    params(("id" = String, Path, description = "Collection id")), request_body = CollectionChange,
    responses((status = 200, body = CollectionView), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn patch(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<CollectionChange>,
) -> ApiResult<Json<CollectionView>> {
    let c = load_collection(&state, &caller, &id, Role::Reviewer).await?;
    check_settings(
        None,
        body.description.clone().flatten().as_deref(),
        body.on_invalid.as_deref(),
    )?;
    let c = state
        .db
        .update_collection(
            c.id,
            body.description,
            body.on_invalid.as_deref(),
            body.publish_requires_approval,
        )
        .await?
        .ok_or(ApiError::NotFound("collection"))?;
    Ok(Json(view(&state, c).await?))
}

/// Body of `PUT /v1/collections/{id}/schema` (JSON or TOML).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SchemaPut {
    /// The fields.
    #[serde(default)]
    pub fields: Vec<FieldDef>,
    /// The vocabulary (absent: keep the current one).
    pub terms: Option<Vec<TermDef>>,
    /// Why (kept with the version).
    pub reason: Option<String>,
}

/// `PUT /v1/collections/{id}/schema`: writes the next schema version (fields with rules,
/// optionally the vocabulary). Existing images are re-validated against it in the
/// background; new failures go to review.
#[utoipa::path(put, path = "/v1/collections/{id}/schema", tag = "collections",
    params(("id" = String, Path, description = "Collection id")),
    request_body(content(
        (SchemaPut = "application/json"),
        (String = "application/toml")
    )),
    responses((status = 200, body = SchemaView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn put_schema(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    req: Request,
) -> ApiResult<Json<SchemaView>> {
    let c = load_collection(&state, &caller, &id, Role::Reviewer).await?;
    let body: SchemaPut = body_of(&state, req).await?;
    let doc = SchemaDoc {
        fields: body.fields,
        terms: body.terms,
    };
    let v = write_schema(&state, &c, doc, &caller.actor, body.reason.as_deref()).await?;
    let c = state
        .db
        .get_collection(c.id)
        .await?
        .ok_or(ApiError::NotFound("collection"))?;
    Ok(Json(schema_view(&state, &c, Some(v)).await?))
}

/// Query of `GET /v1/collections/{id}/schema`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SchemaQuery {
    /// A past version (default: the current one).
    version: Option<i32>,
}

/// `GET /v1/collections/{id}/schema?version=N`: a schema version (default the current one).
#[utoipa::path(get, path = "/v1/collections/{id}/schema", tag = "collections",
    params(("id" = String, Path, description = "Collection id"), SchemaQuery),
    responses((status = 200, body = SchemaView), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get_schema(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<SchemaQuery>,
) -> ApiResult<Json<SchemaView>> {
    let c = load_collection(&state, &caller, &id, Role::Viewer).await?;
    Ok(Json(schema_view(&state, &c, q.version).await?))
}

/// `GET /v1/collections/{id}/schema/versions`: every schema version, newest first.
#[utoipa::path(get, path = "/v1/collections/{id}/schema/versions", tag = "collections",
    params(("id" = String, Path, description = "Collection id")),
    responses((status = 200, body = Page<SchemaView>), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn schema_versions(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Page<SchemaView>>> {
    let c = load_collection(&state, &caller, &id, Role::Viewer).await?;
    let items = state
        .db
        .schema_versions(c.id)
        .await?
        .into_iter()
        .map(|row| SchemaView {
            version: row.version,
            fields: serde_json::from_value(row.fields.0).unwrap_or_default(),
            terms: serde_json::from_value(row.terms.0).unwrap_or_default(),
            created_by: Some(row.created_by),
            reason: row.reason,
            created_at: Some(row.created_at),
        })
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// Body of `PUT /v1/collections/{id}/vocabulary` (JSON or TOML).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VocabularyPut {
    /// The terms.
    pub terms: Vec<TermDef>,
    /// Why.
    pub reason: Option<String>,
}

/// `PUT /v1/collections/{id}/vocabulary`: replaces the vocabulary (a new schema version with
/// the same fields); keywords are normalised again in the background.
#[utoipa::path(put, path = "/v1/collections/{id}/vocabulary", tag = "collections",
    params(("id" = String, Path, description = "Collection id")),
    request_body(content(
        (VocabularyPut = "application/json"),
        (String = "application/toml")
    )),
    responses((status = 200, body = SchemaView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn put_vocabulary(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    req: Request,
) -> ApiResult<Json<SchemaView>> {
    let c = load_collection(&state, &caller, &id, Role::Reviewer).await?;
    let body: VocabularyPut = body_of(&state, req).await?;
    let current = schema_view(&state, &c, None).await?;
    let doc = SchemaDoc {
        fields: current.fields,
        terms: Some(body.terms),
    };
    let v = write_schema(&state, &c, doc, &caller.actor, body.reason.as_deref()).await?;
    let c = state
        .db
        .get_collection(c.id)
        .await?
        .ok_or(ApiError::NotFound("collection"))?;
    Ok(Json(schema_view(&state, &c, Some(v)).await?))
}

/// The owner's default collection id (created on first use), for documents and uploads.
pub async fn default_of(state: &AppState, owner: &Owner) -> ApiResult<Uuid> {
    Ok(state.db.default_collection(owner).await?.id)
}
