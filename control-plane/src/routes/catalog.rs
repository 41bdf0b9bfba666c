//! An image's catalog through the API: its document with descriptive metadata, workflow state
//! and technical metadata shown apart (plus rights, lineage and review); corrections
//! (`PATCH /v1/images/{id}/metadata`), rights (`PUT /v1/images/{id}/rights`), workflow
//! transitions (`POST /v1/images/{id}/workflow`), lineage (`GET|PUT /v1/images/{id}/lineage`)
//! and restoring a past version (`POST /v1/images/{id}/history/{entry}/restore`). Also the
//! catalog filters listing and search share, read from either.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::extract::{ApiJson, ApiPath};
use super::images::load_for;
use super::views::{self, ErrorBody, ImageView};
use crate::auth::{Caller, Role};
use crate::catalog::corrections::{self, Correction};
use crate::catalog::explain::PageFacts;
use crate::catalog::lineage::Relation;
use crate::catalog::query::{
    CatalogFilter, FieldCondition, FieldSort, RightsFilter, VersionFilter,
};
use crate::catalog::review::ReasonView;
use crate::catalog::rights::{self, RightsState};
use crate::catalog::sources::{Source, SourceInfo};
use crate::catalog::validate::Failure;
use crate::catalog::{fields, workflow};
use crate::domain::{ImageId, Owner, ReasonKind, WorkflowState};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::catalog::CatalogRow;
use crate::store::images::ImageRow;

// ---- documents -------------------------------------------------------------------------

/// The collection an image belongs to.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CollectionRef {
    /// Id.
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    /// Name.
    pub name: String,
}

/// A vocabulary term an image carries.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TermRef {
    /// The term's id.
    pub id: String,
    /// Its label.
    pub label: String,
    /// Its broader terms, nearest first.
    pub ancestors: Vec<String>,
}

/// Descriptive metadata: title, caption, keywords, credit, creator, rights fields and the
/// schema's own fields, each with its source.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Descriptive {
    /// Every value by field name.
    #[schema(value_type = Object)]
    pub values: BTreeMap<String, Value>,
    /// Where each value came from (`upload`, `csv`, `sidecar`, `embedded`, `person`,
    /// `model`, `restore`) and when.
    pub sources: BTreeMap<String, SourceInfo>,
    /// Vocabulary terms carried (from keywords and term fields).
    pub terms: Vec<TermRef>,
    /// The schema version last checked against, and what failed.
    pub validation: ValidationView,
}

/// The last validation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ValidationView {
    /// Schema version.
    pub schema_version: i32,
    /// Every failing field and rule.
    pub failures: Vec<Failure>,
}

/// The review part of the workflow.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewView {
    /// In the review queue since.
    pub queued_at: DateTime<Utc>,
    /// Highest priority among its reasons.
    pub priority: i32,
    /// Why it is in review.
    pub reasons: Vec<ReasonView>,
}

/// Workflow state: processing status, review workflow, storage tier.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Workflow {
    /// `draft`, `in_review`, `approved`, `published`, `rejected`, `changes_requested` or
    /// `withdrawn`.
    pub state: String,
    /// The states it may move to next.
    pub next_states: Vec<String>,
    /// The legacy review state (`unreviewed`, `needs_review`, `approved`, `rejected`).
    pub review_state: String,
    /// Processing: `uploading`, `processing`, `ready` or `failed`.
    pub status: String,
    /// Why processing failed.
    pub error: Option<String>,
    /// Storage tier of the original.
    pub storage_tier: String,
    /// In the review queue, and why (absent when not).
    pub review: Option<ReviewView>,
}

/// Technical metadata: the file and what the camera recorded.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Technical {
    /// Content type.
    pub mime: String,
    /// Format (`jpeg`, `heif` …).
    pub format: Option<String>,
    /// Size, bytes.
    pub bytes: Option<i64>,
    /// Width after orientation.
    pub width: Option<i32>,
    /// Height after orientation.
    pub height: Option<i32>,
    /// SHA-256.
    pub sha256: Option<String>,
    /// Perceptual hash, hex.
    pub phash: Option<String>,
    /// Camera make.
    pub camera_make: Option<String>,
    /// Camera model.
    pub camera_model: Option<String>,
    /// Lens.
    pub lens: Option<String>,
    /// When the photo was taken.
    pub taken_at: Option<DateTime<Utc>>,
    /// ISO.
    pub iso: Option<i32>,
    /// Exposure, seconds.
    pub exposure_time: Option<f64>,
    /// Aperture.
    pub f_number: Option<f64>,
    /// Focal length, mm.
    pub focal_length: Option<f64>,
    /// Latitude and longitude, degrees.
    pub gps: Option<(f64, f64)>,
}

/// Rights.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RightsView {
    /// Rights holder.
    pub holder: Option<String>,
    /// Licence.
    pub licence: Option<String>,
    /// Usage restrictions.
    pub usage_restrictions: Option<String>,
    /// Window start (absent: open).
    pub valid_from: Option<DateTime<Utc>>,
    /// Window end (absent: open).
    pub valid_until: Option<DateTime<Utc>>,
    /// `clear`, `pending` (not started) or `expired`.
    pub state: RightsState,
    /// Outside the window: no edge serves it and the API gives no URLs for it.
    pub withheld: bool,
    /// When edge URLs handed out for it stop working (the window's end).
    pub urls_expire_at: Option<DateTime<Utc>>,
}

/// Versions and lineage.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LineageView {
    /// The image it derives from.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub derived_from: Option<Uuid>,
    /// `version` or `derivative`.
    pub relation: Option<String>,
    /// The first version of its chain.
    #[schema(value_type = String, format = Uuid)]
    pub root: Uuid,
    /// Its number in the chain.
    pub version_number: i32,
    /// Whether it is the chain's current version.
    pub current: bool,
}

/// The catalog's view of an image.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CatalogParts {
    /// Optimistic concurrency: send it back with a change; a stale one gets 409.
    pub version: i64,
    /// Its collection.
    pub collection: Option<CollectionRef>,
    /// Descriptive metadata.
    pub descriptive: Descriptive,
    /// Workflow state.
    pub workflow: Workflow,
    /// Technical metadata.
    pub technical: Technical,
    /// Rights.
    pub rights: RightsView,
    /// Versions and lineage.
    pub lineage: LineageView,
}

/// An image: the flat fields of earlier versions of the API, and the catalog's groups
/// (`descriptive`, `workflow`, `technical`, `rights`, `lineage`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ImageDoc {
    /// The image.
    #[serde(flatten)]
    pub image: ImageView,
    /// The catalog's view of it.
    #[serde(flatten)]
    pub catalog: CatalogParts,
}

/// Removes a withheld image's URLs and makes the others expire with its rights window (or
/// sooner, when the image is private).
pub fn apply_rights_to_urls(
    state: &AppState,
    view: &mut ImageView,
    img: &ImageRow,
    cat: Option<&CatalogRow>,
) {
    let (from, until) = cat.map_or((None, None), |c| (c.rights_from, c.rights_until));
    if RightsState::at(from, until, crate::store::now()).withheld() {
        view.variants.clear();
        view.original_url = None;
        view.sized_urls = None;
        view.url_template = None;
        return;
    }
    let Some(rights_exp) = rights::url_expiry(until) else {
        return;
    };
    let Ok(private_exp) = views::private_expiry(state, img) else {
        return;
    };
    let views::Links {
        variants,
        original_url,
        sized_urls,
        url_template,
    } = views::links(
        state,
        img,
        crate::privacy::earliest(Some(rights_exp), private_exp),
    );
    view.variants = variants;
    view.original_url = original_url;
    view.sized_urls = sized_urls;
    view.url_template = url_template;
}

/// The `exp` an edge URL for `img` must carry (its rights window's end), or 409 when the image
/// is withheld.
pub async fn url_expiry_for(state: &AppState, img: &ImageRow) -> ApiResult<Option<i64>> {
    let cat = state.db.catalog_of(img.id).await?;
    let (from, until) = cat
        .as_ref()
        .map_or((None, None), |c| (c.rights_from, c.rights_until));
    match RightsState::at(from, until, crate::store::now()) {
        RightsState::Clear => {
            let private = views::private_expiry(state, img).map_err(|views::NoSigningKeys| {
                ApiError::Conflict(
                    "the image is private and the edges have no signing keys \
                     ([edge] signing_keys): no URL can be issued for it"
                        .into(),
                )
            })?;
            Ok(crate::privacy::earliest(rights::url_expiry(until), private))
        }
        RightsState::Pending => Err(ApiError::Conflict(format!(
            "the image is withheld: its rights window starts {}",
            from.map(|t| t.to_rfc3339()).unwrap_or_default()
        ))),
        RightsState::Expired => Err(ApiError::Conflict(format!(
            "the image is withheld: its rights window ended {}",
            until.map(|t| t.to_rfc3339()).unwrap_or_default()
        ))),
    }
}

/// The catalog parts of an image from a page's facts.
pub fn parts(img: &ImageRow, facts: &PageFacts) -> CatalogParts {
    let cat = facts.catalogs.get(&img.id);
    let schema = facts.schema_of(img.id);
    let coll = cat.and_then(|c| facts.collections.get(&c.collection_id));
    let values = crate::catalog::load::values_of(img, cat);
    let text = {
        let values = values.clone();
        move |k: &str| values.get(k).and_then(Value::as_str).map(str::to_owned)
    };
    let terms = facts
        .terms
        .get(&img.id)
        .map(|ts| {
            ts.iter()
                .filter(|(_, d)| *d)
                .map(|(t, _)| TermRef {
                    id: t.clone(),
                    label: schema
                        .and_then(|s| s.vocabulary.label(t))
                        .unwrap_or(t)
                        .to_owned(),
                    ancestors: schema
                        .map(|s| s.vocabulary.with_ancestors(t).into_iter().skip(1).collect())
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    let state = cat.map_or(WorkflowState::Draft, |c| c.workflow_state);
    let pra = coll.is_none_or(|(c, _)| c.publish_requires_approval);
    let reasons: Vec<ReasonView> = facts
        .reasons
        .get(&img.id)
        .map(|rs| {
            rs.iter()
                .map(|r| ReasonView {
                    id: r.id,
                    kind: r.kind.as_str().to_owned(),
                    summary: crate::catalog::review::summary(r.kind, &r.detail.0),
                    detail: r.detail.0.clone(),
                    priority: r.priority,
                    since: r.created_at,
                })
                .collect()
        })
        .unwrap_or_default();
    let (from, until) = cat.map_or((None, None), |c| (c.rights_from, c.rights_until));
    let rstate = RightsState::at(from, until, crate::store::now());
    CatalogParts {
        version: cat.map_or(0, |c| i64::from(c.version)),
        collection: coll.map(|(c, _)| CollectionRef {
            id: c.id,
            name: c.name.clone(),
        }),
        descriptive: Descriptive {
            sources: cat.map(|c| c.sources.0.clone()).unwrap_or_default(),
            values,
            terms,
            validation: ValidationView {
                schema_version: cat.map_or(0, |c| c.validated_version),
                failures: cat.map(|c| c.validation.0.clone()).unwrap_or_default(),
            },
        },
        workflow: Workflow {
            state: state.as_str().to_owned(),
            next_states: workflow::next_states(state, pra)
                .into_iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
            review_state: img.review_state.as_str().to_owned(),
            status: img.status.as_str().to_owned(),
            error: img.error.clone(),
            storage_tier: img.storage_tier.clone(),
            review: cat.and_then(|c| c.queued_at).map(|q| ReviewView {
                queued_at: q,
                priority: cat.map_or(0, |c| c.review_priority),
                reasons,
            }),
        },
        technical: Technical {
            mime: img
                .mime
                .clone()
                .unwrap_or_else(|| img.declared_mime.clone()),
            format: img.format.clone(),
            bytes: img.bytes.or(img.declared_bytes),
            width: img.width,
            height: img.height,
            sha256: img.sha256.clone(),
            phash: img.phash.map(|p| format!("{:016x}", p as u64)),
            camera_make: img.camera_make.clone(),
            camera_model: img.camera_model.clone(),
            lens: img.lens.clone(),
            taken_at: img.taken_at,
            iso: img.iso,
            exposure_time: img.exposure_time,
            f_number: img.f_number,
            focal_length: img.focal_length,
            gps: img.gps_lat.zip(img.gps_lon),
        },
        rights: RightsView {
            holder: text("rights_holder"),
            licence: text("licence"),
            usage_restrictions: text("usage_restrictions"),
            valid_from: from,
            valid_until: until,
            state: rstate,
            withheld: rstate.withheld(),
            urls_expire_at: until.filter(|_| !rstate.withheld()),
        },
        lineage: LineageView {
            derived_from: cat.and_then(|c| c.derived_from),
            relation: cat.and_then(|c| c.relation.clone()),
            root: cat.map_or(img.id.0, |c| c.root()),
            version_number: cat.map_or(1, |c| c.version_number),
            current: cat.is_none_or(|c| c.is_current),
        },
    }
}

/// The documents of a page of images.
pub async fn documents(state: &AppState, rows: &[ImageRow]) -> ApiResult<Vec<ImageDoc>> {
    let ids: Vec<ImageId> = rows.iter().map(|r| r.id).collect();
    let facts = PageFacts::load(&state.db, &ids).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let mut image = views::image(state, r);
            apply_rights_to_urls(state, &mut image, r, facts.catalogs.get(&r.id));
            ImageDoc {
                image,
                catalog: parts(r, &facts),
            }
        })
        .collect())
}

/// One image's document.
pub async fn document(state: &AppState, img: &ImageRow) -> ApiResult<ImageDoc> {
    documents(state, std::slice::from_ref(img))
        .await?
        .pop()
        .ok_or(ApiError::NotFound("image"))
}

// ---- filters ---------------------------------------------------------------------------

/// The catalog filters of a listing or search, as sent.
#[derive(Debug, Clone, Default)]
pub struct RawCatalogFilter {
    /// Collection id or name.
    pub collection: Option<String>,
    /// Terms.
    pub terms: Vec<String>,
    /// Workflow state.
    pub workflow_state: Option<String>,
    /// `usable` (default), `withheld` or `any`.
    pub rights: Option<String>,
    /// `current` (default) or `all`.
    pub versions: Option<String>,
    /// Field conditions (`name=value` …).
    pub fields: Vec<String>,
    /// A review reason kind.
    pub reason: Option<String>,
}

/// Checks and resolves catalog filters: the collection by id or name (of `owner`), field
/// types from the schemas in scope; withheld images are for admins.
pub async fn catalog_filter(
    state: &AppState,
    caller: &Caller,
    owner: Option<&Owner>,
    raw: RawCatalogFilter,
) -> ApiResult<CatalogFilter> {
    let collection = match raw.collection.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => {
            let row = match Uuid::parse_str(c) {
                Ok(id) => state.db.get_collection(id).await?,
                Err(_) => match owner {
                    Some(o) => state.db.find_collection(o, c).await?,
                    None => {
                        return Err(ApiError::Invalid(
                            "a collection named by its name needs an owner".into(),
                        ))
                    }
                },
            };
            let row = row
                .filter(|r| caller.owner_scope.as_ref().is_none_or(|s| *s == r.owner))
                .filter(|r| owner.is_none_or(|o| *o == r.owner))
                .ok_or(ApiError::NotFound("collection"))?;
            Some(row.id)
        }
    };
    let rights = raw
        .rights
        .as_deref()
        .map(RightsFilter::parse)
        .transpose()
        .map_err(ApiError::Invalid)?
        .unwrap_or_default();
    if rights != RightsFilter::Usable {
        caller.require(Role::Admin).map_err(|_| {
            ApiError::Forbidden(
                "withheld images (rights=withheld|any) are shown to admin keys only".into(),
            )
        })?;
    }
    let versions = match raw.versions.as_deref() {
        None | Some("current") => VersionFilter::Current,
        Some("all") => VersionFilter::All,
        Some(other) => {
            return Err(ApiError::Invalid(format!(
                "versions must be current or all, not {other:?}"
            )))
        }
    };
    let mut conds = Vec::new();
    for f in &raw.fields {
        conds.extend(FieldCondition::parse_list(f).map_err(ApiError::Invalid)?);
    }
    if conds.len() > 20 {
        return Err(ApiError::Invalid("at most 20 field conditions".into()));
    }
    resolve_kinds(state, &mut conds, collection, owner).await?;
    let terms: Vec<String> = raw
        .terms
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    if terms.len() > 20 || terms.iter().any(|t| t.chars().count() > 100) {
        return Err(ApiError::Invalid(
            "terms must be at most 20 of at most 100 characters".into(),
        ));
    }
    Ok(CatalogFilter {
        collection,
        terms,
        workflow_state: raw
            .workflow_state
            .as_deref()
            .filter(|w| !w.is_empty())
            .map(str::parse::<WorkflowState>)
            .transpose()?,
        rights,
        versions,
        fields: conds,
        reason: raw
            .reason
            .as_deref()
            .filter(|r| !r.is_empty())
            .map(str::parse::<ReasonKind>)
            .transpose()?,
        at: Some(crate::store::now()),
    })
}

/// The type of each field condition's field in the schemas in scope (built-ins have theirs).
async fn resolve_kinds(
    state: &AppState,
    conds: &mut [FieldCondition],
    collection: Option<Uuid>,
    owner: Option<&Owner>,
) -> ApiResult<()> {
    let names: Vec<String> = conds
        .iter()
        .filter(|c| fields::builtin(&c.field).is_none())
        .map(|c| c.field.clone())
        .collect();
    let found = state.db.field_kinds(&names, collection, owner).await?;
    for c in conds.iter_mut() {
        if let Some(b) = fields::builtin(&c.field) {
            if matches!(c.field.as_str(), "caption" | "keywords") {
                return Err(ApiError::Invalid(format!(
                    "filter {} with its own filters (tags for keywords)",
                    c.field
                )));
            }
            // Built-in text fields a schema made enum or URL still compare as text.
            c.kind = Some(b.kind);
            continue;
        }
        let kinds: Vec<fields::FieldType> = found
            .iter()
            .filter(|(f, _)| *f == c.field)
            .filter_map(|(_, k)| fields::FieldType::parse(k))
            .collect();
        c.kind = match kinds.as_slice() {
            [] => {
                return Err(ApiError::Invalid(format!(
                    "{} is not a field of any collection's schema in scope",
                    c.field
                )))
            }
            [k] => Some(*k),
            ks if ks.iter().all(|k| k.is_numeric()) => Some(fields::FieldType::Number),
            _ => Some(fields::FieldType::Text),
        };
        if c.kind == Some(fields::FieldType::Date) {
            fields::parse_date(&c.value).ok_or_else(|| {
                ApiError::Invalid(format!("{}: {:?} is not a date", c.describe(), c.value))
            })?;
        }
        if c.kind == Some(fields::FieldType::Number) && c.op != crate::catalog::query::Op::Contains
        {
            c.value.parse::<f64>().map_err(|_| {
                ApiError::Invalid(format!("{}: {:?} is not a number", c.describe(), c.value))
            })?;
        }
    }
    Ok(())
}

/// A sort by a descriptive field (`field:NAME[:asc|:desc]`), its type resolved.
pub async fn field_sort(
    state: &AppState,
    sort: Option<&str>,
    collection: Option<Uuid>,
    owner: Option<&Owner>,
) -> ApiResult<Option<FieldSort>> {
    let Some((name, descending)) = sort
        .map(FieldSort::parse)
        .transpose()
        .map_err(ApiError::Invalid)?
        .flatten()
    else {
        return Ok(None);
    };
    let kind = match fields::builtin(&name) {
        Some(b) if matches!(name.as_str(), "caption" | "keywords") => {
            return Err(ApiError::Invalid(format!("cannot sort by {}", b.name)))
        }
        Some(b) => b.kind,
        None => {
            let found = state
                .db
                .field_kinds(std::slice::from_ref(&name), collection, owner)
                .await?;
            let kinds: Vec<fields::FieldType> = found
                .iter()
                .filter_map(|(_, k)| fields::FieldType::parse(k))
                .collect();
            match kinds.as_slice() {
                [] => {
                    return Err(ApiError::Invalid(format!(
                        "{name} is not a field of any collection's schema in scope"
                    )))
                }
                ks if ks.iter().all(|k| k.is_numeric()) => fields::FieldType::Number,
                _ => fields::FieldType::Text,
            }
        }
    };
    if kind == fields::FieldType::List {
        return Err(ApiError::Invalid(format!(
            "cannot sort by the list field {name}"
        )));
    }
    Ok(Some(FieldSort {
        field: name,
        kind,
        descending,
    }))
}

// ---- changes ---------------------------------------------------------------------------

/// `PATCH /v1/images/{id}` as before the catalog: caption and tags become a correction; a
/// review state is reached through the workflow (`approved` from a draft is submitted, then
/// approved: two recorded transitions, each checked, the decision before anything moves).
#[allow(clippy::too_many_arguments)]
pub async fn legacy_patch(
    state: &AppState,
    caller: &Caller,
    img: &ImageRow,
    caption: Option<Option<String>>,
    tags: Option<Vec<String>>,
    review_state: Option<crate::domain::ReviewState>,
    reason: Option<String>,
) -> ApiResult<()> {
    let mut set = BTreeMap::new();
    if let Some(c) = caption {
        set.insert("caption".to_owned(), c.map(Value::String));
    }
    if let Some(t) = tags {
        set.insert(
            "keywords".to_owned(),
            Some(Value::Array(t.into_iter().map(Value::String).collect())),
        );
    }
    if !set.is_empty() {
        corrections::correct(
            state,
            img,
            Correction {
                set,
                source: Source::Person,
                reason: reason.clone(),
                expected: None,
                actor: caller.actor.clone(),
                refuse_failures: true,
            },
        )
        .await?;
    }
    let Some(r) = review_state else {
        return Ok(());
    };
    let target = workflow::from_review_state(r);
    let cat = state.db.catalog_of(img.id).await?;
    let current = cat
        .as_ref()
        .map_or(WorkflowState::Draft, |c| c.workflow_state);
    if current == target || workflow::review_state_of(current) == r {
        return Ok(());
    }
    let actor = corrections::actor_of(state, caller, img).await?;
    let mut path = Vec::new();
    if workflow::check(current, target, actor, true).is_err() {
        // Through review: submit (or reopen) first.
        path.push(WorkflowState::InReview);
        if target != WorkflowState::InReview {
            workflow::check(WorkflowState::InReview, target, actor, true).map_err(refusal)?;
        }
    }
    if target != WorkflowState::InReview || path.is_empty() {
        path.push(target);
    }
    for to in path {
        corrections::transition(state, img, caller, to, None, reason.as_deref()).await?;
    }
    Ok(())
}

fn refusal(r: workflow::Refusal) -> ApiError {
    match r {
        workflow::Refusal::NotAllowed(m) => ApiError::Conflict(m),
        workflow::Refusal::Forbidden(m) => ApiError::Forbidden(m),
    }
}

/// Body of `PATCH /v1/images/{id}/metadata`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetadataChange {
    /// Fields to set by name (title, caption, keywords, credit, creator, rights fields, the
    /// schema's own); `null` clears one.
    #[schema(value_type = Object)]
    pub values: BTreeMap<String, Value>,
    /// The version you saw (`version` of the image); a stale one gets 409.
    pub version: Option<i64>,
    /// Why (kept in the history).
    pub reason: Option<String>,
}

fn version_of(v: Option<i64>) -> ApiResult<Option<i32>> {
    v.map(|v| i32::try_from(v).map_err(|_| ApiError::Invalid("version is out of range".into())))
        .transpose()
}

fn check_reason(r: &Option<String>) -> ApiResult<()> {
    if r.as_ref().is_some_and(|r| r.chars().count() > 2000) {
        return Err(ApiError::Invalid(
            "reason must be at most 2000 characters".into(),
        ));
    }
    Ok(())
}

/// `PATCH /v1/images/{id}/metadata`: corrects descriptive metadata. Values are validated
/// against the collection's schema (a field this change sets that fails a rule gets 422 with
/// every failure); every change is kept in the history with who, when, why, before, after and
/// source `person`; the vector index's filters are re-synced.
#[utoipa::path(patch, path = "/v1/images/{id}/metadata", tag = "catalog",
    params(("id" = String, Path, description = "Image id")), request_body = MetadataChange,
    responses((status = 200, body = ImageDoc), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "Stale version", body = ErrorBody),
        (status = 422, description = "A rule failed", body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn patch_metadata(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<MetadataChange>,
) -> ApiResult<Json<ImageDoc>> {
    let img = load_for(&state, &caller, &id, Role::Uploader).await?;
    check_reason(&body.reason)?;
    if body.values.is_empty() {
        return Err(ApiError::Invalid(
            "values must name at least one field".into(),
        ));
    }
    for k in body.values.keys() {
        fields::check_name(k).map_err(ApiError::Invalid)?;
    }
    corrections::correct(
        &state,
        &img,
        Correction {
            set: body.values.into_iter().map(|(k, v)| (k, Some(v))).collect(),
            source: Source::Person,
            reason: body.reason,
            expected: version_of(body.version)?,
            actor: caller.actor.clone(),
            refuse_failures: true,
        },
    )
    .await?;
    reload(&state, img.id).await
}

/// Reads an image again and renders it.
pub async fn reload(state: &AppState, id: ImageId) -> ApiResult<Json<ImageDoc>> {
    let img = state
        .db
        .get_image(id)
        .await?
        .ok_or(ApiError::NotFound("image"))?;
    Ok(Json(document(state, &img).await?))
}

/// Body of `PUT /v1/images/{id}/rights`: the image's rights as a whole (absent fields are
/// cleared).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RightsChange {
    /// Rights holder.
    pub holder: Option<String>,
    /// Licence.
    pub licence: Option<String>,
    /// Usage restrictions.
    pub usage_restrictions: Option<String>,
    /// Window start (RFC 3339 or YYYY-MM-DD); absent: open.
    pub valid_from: Option<String>,
    /// Window end (RFC 3339 or YYYY-MM-DD); absent: open.
    pub valid_until: Option<String>,
    /// The version you saw; a stale one gets 409.
    pub version: Option<i64>,
    /// Why.
    pub reason: Option<String>,
}

/// `PUT /v1/images/{id}/rights`: sets holder, licence, usage restrictions and the rights
/// window. Outside its window an image is withheld at once from listings, search and URLs;
/// the rights scheduler stops the edges serving it within its stated bound.
#[utoipa::path(put, path = "/v1/images/{id}/rights", tag = "catalog",
    params(("id" = String, Path, description = "Image id")), request_body = RightsChange,
    responses((status = 200, body = ImageDoc), (status = 404, body = ErrorBody),
        (status = 409, description = "Stale version", body = ErrorBody),
        (status = 422, description = "A rule failed", body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn put_rights(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<RightsChange>,
) -> ApiResult<Json<ImageDoc>> {
    let img = load_for(&state, &caller, &id, Role::Uploader).await?;
    check_reason(&body.reason)?;
    let v = |s: Option<String>| s.filter(|s| !s.trim().is_empty()).map(Value::String);
    let set: BTreeMap<String, Option<Value>> = [
        ("rights_holder", v(body.holder)),
        ("licence", v(body.licence)),
        ("usage_restrictions", v(body.usage_restrictions)),
        ("rights_valid_from", v(body.valid_from)),
        ("rights_valid_until", v(body.valid_until)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    corrections::correct(
        &state,
        &img,
        Correction {
            set,
            source: Source::Person,
            reason: body.reason,
            expected: version_of(body.version)?,
            actor: caller.actor.clone(),
            refuse_failures: true,
        },
    )
    .await?;
    reload(&state, img.id).await
}

/// Body of `POST /v1/images/{id}/workflow`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowChange {
    /// The state to move to.
    pub to: String,
    /// The version you saw; a stale one gets 409.
    pub version: Option<i64>,
    /// Why (kept in the history).
    pub reason: Option<String>,
}

/// `POST /v1/images/{id}/workflow`: moves an image through the review workflow. Only the
/// allowed transitions pass (409 names the allowed ones); decisions need the reviewer role
/// and a key outside the uploader's lineage; publishing may need approval first.
#[utoipa::path(post, path = "/v1/images/{id}/workflow", tag = "catalog",
    params(("id" = String, Path, description = "Image id")), request_body = WorkflowChange,
    responses((status = 200, body = ImageDoc), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Not an allowed transition, or a stale version", body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn post_workflow(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<WorkflowChange>,
) -> ApiResult<Json<ImageDoc>> {
    let img = load_for(&state, &caller, &id, Role::Uploader).await?;
    check_reason(&body.reason)?;
    let to: WorkflowState = body.to.parse()?;
    corrections::transition(
        &state,
        &img,
        &caller,
        to,
        version_of(body.version)?,
        body.reason.as_deref(),
    )
    .await?;
    reload(&state, img.id).await
}

/// One image of a lineage.
#[derive(Debug, Serialize, ToSchema)]
pub struct LineageItem {
    /// The image.
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    /// `version` or `derivative` (of `derived_from`); absent for the first version.
    pub relation: Option<String>,
    /// What it derives from.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub derived_from: Option<Uuid>,
    /// Its number in its chain.
    pub version_number: i32,
    /// Whether it is its chain's current version.
    pub current: bool,
}

/// A near-duplicate linked to the image.
#[derive(Debug, Serialize, ToSchema)]
pub struct DuplicateLink {
    /// The other image.
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    /// `phash` or `embedding`.
    pub method: String,
    /// How far apart.
    pub distance: f64,
}

/// An image's lineage.
#[derive(Debug, Serialize, ToSchema)]
pub struct Lineage {
    /// The image asked about.
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    /// Its chain's first version.
    #[schema(value_type = String, format = Uuid)]
    pub root: Uuid,
    /// The chain's versions and derivatives, by version number.
    pub chain: Vec<LineageItem>,
    /// Near-duplicates found for it (candidates for linking).
    pub duplicates: Vec<DuplicateLink>,
}

/// The lineage of `img`.
pub async fn lineage_of(state: &AppState, img: &ImageRow) -> ApiResult<Lineage> {
    let cat = state.db.catalog_of(img.id).await?;
    let root = cat.as_ref().map_or(img.id.0, |c| c.root());
    let chain = state
        .db
        .lineage_of(root)
        .await?
        .into_iter()
        .map(|c| LineageItem {
            id: c.image_id.0,
            relation: c.relation.clone(),
            derived_from: c.derived_from,
            version_number: c.version_number,
            current: c.is_current,
        })
        .collect();
    let duplicates = state
        .db
        .duplicates_of(img.id)
        .await?
        .into_iter()
        .map(|d| DuplicateLink {
            id: d.other_id.0,
            method: d.method,
            distance: d.distance,
        })
        .collect();
    Ok(Lineage {
        id: img.id.0,
        root,
        chain,
        duplicates,
    })
}

/// `GET /v1/images/{id}/lineage`: its chain of versions and derivatives, and its
/// near-duplicates.
#[utoipa::path(get, path = "/v1/images/{id}/lineage", tag = "catalog",
    params(("id" = String, Path, description = "Image id")),
    responses((status = 200, body = Lineage), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get_lineage(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Lineage>> {
    let img = load_for(&state, &caller, &id, Role::Viewer).await?;
    Ok(Json(lineage_of(&state, &img).await?))
}

/// Body of `PUT /v1/images/{id}/lineage`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineageChange {
    /// The image it derives from (same owner).
    #[schema(value_type = String, format = Uuid)]
    pub derived_from: ImageId,
    /// `version` (it becomes the chain's current version) or `derivative`.
    pub relation: String,
    /// The version you saw; a stale one gets 409.
    pub version: Option<i64>,
    /// Why.
    pub reason: Option<String>,
}

/// `PUT /v1/images/{id}/lineage`: links an image as a version or derivative of another (e.g.
/// a near-duplicate found at ingest).
#[utoipa::path(put, path = "/v1/images/{id}/lineage", tag = "catalog",
    params(("id" = String, Path, description = "Image id")), request_body = LineageChange,
    responses((status = 200, body = Lineage), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn put_lineage(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<LineageChange>,
) -> ApiResult<Json<Lineage>> {
    let img = load_for(&state, &caller, &id, Role::Uploader).await?;
    check_reason(&body.reason)?;
    let relation = Relation::parse(&body.relation).map_err(ApiError::Invalid)?;
    corrections::link(
        &state,
        &img,
        &caller,
        body.derived_from,
        relation,
        version_of(body.version)?,
        body.reason.as_deref(),
    )
    .await?;
    Ok(Json(lineage_of(&state, &img).await?))
}

/// Body of `POST /v1/images/{id}/history/{entry}/restore`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// The version you saw; a stale one gets 409.
    pub version: Option<i64>,
    /// Why.
    pub reason: Option<String>,
}

/// `POST /v1/images/{id}/history/{entry}/restore`: restores descriptive metadata and rights
/// as they were right after the change history entry `entry` belongs to, as a new change
/// (source `restore`); the history itself is never rewritten.
#[utoipa::path(post, path = "/v1/images/{id}/history/{entry}/restore", tag = "catalog",
    params(("id" = String, Path, description = "Image id"),
        ("entry" = i64, Path, description = "History entry id")),
    request_body = RestoreRequest,
    responses((status = 200, body = ImageDoc), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn restore(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath((id, entry)): ApiPath<(String, i64)>,
    ApiJson(body): ApiJson<RestoreRequest>,
) -> ApiResult<Json<ImageDoc>> {
    let img = load_for(&state, &caller, &id, Role::Uploader).await?;
    check_reason(&body.reason)?;
    corrections::restore(
        &state,
        &img,
        &caller,
        entry,
        version_of(body.version)?,
        body.reason.as_deref(),
    )
    .await?;
    reload(&state, img.id).await
}
