//! Changing an image's catalog state, never silently: descriptive corrections (validated,
//! with the source of each new value), workflow transitions, acknowledging review reasons,
//! restoring a past version, and linking lineage. Each is one transaction that checks the
//! image's version (a stale one is refused with the current version) and records who, when,
//! why, before and after.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::history::{self, Step};
use super::lineage::Relation;
use super::load;
use super::record::Record;
use super::schema::Schema;
use super::sources::Source;
use super::validate::Failure;
use super::workflow::{self, Actor};
use super::CatalogError;
use crate::auth::Caller;
use crate::domain::{ImageId, ReasonKind, WorkflowState};
use crate::state::AppState;
use crate::store::catalog::{DescriptiveWrite, FieldChange, Written};
use crate::store::images::ImageRow;

/// Fields a restore never sets: they move by their own rules.
const NOT_RESTORABLE: &[&str] = &[
    "workflow_state",
    "review_state",
    "review_reasons",
    "rights_state",
    "current",
    "derived_from",
    "relation",
    "version_number",
    "collection",
];

/// A change to descriptive values.
#[derive(Debug, Clone)]
pub struct Correction {
    /// Fields to set (`None` clears one).
    pub set: BTreeMap<String, Option<Value>>,
    /// Where the new values come from.
    pub source: Source,
    /// Why.
    pub reason: Option<String>,
    /// The version the client saw (`None`: do not check).
    pub expected: Option<i32>,
    /// Who.
    pub actor: String,
    /// Refuse (422) when a field this change sets fails a rule; otherwise failures are
    /// recorded and routed to review.
    pub refuse_failures: bool,
}

impl DescriptiveWrite {
    /// What to store for `record` under `schema`.
    pub fn of(record: &Record, schema: &Schema) -> DescriptiveWrite {
        let (from, until) = record.rights_window();
        DescriptiveWrite {
            caption: record.caption(),
            keywords: record.keywords(),
            fields: record.catalog_values(),
            sources: record.sources.clone(),
            terms: record.terms.clone(),
            expanded_terms: record.expanded_terms(schema),
            index_rows: record.index_rows(schema),
            rights_from: from.map(crate::store::trunc),
            rights_until: until.map(crate::store::trunc),
            failures: record.report.failures.clone(),
            schema_version: schema.version as i32,
        }
    }
}

/// The per-field differences between two value sets, each with `source`.
pub fn changes_between(
    before: &BTreeMap<String, Value>,
    after: &BTreeMap<String, Value>,
    source: Source,
) -> Vec<FieldChange> {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| FieldChange {
            field: k.clone(),
            old: before.get(k).cloned(),
            new: after.get(k).cloned(),
            source: source.as_str().to_owned(),
        })
        .collect()
}

fn written(w: Written) -> Result<i32, CatalogError> {
    match w {
        Written::Done(v) | Written::Unchanged(v) => Ok(v),
        Written::Stale(current) => Err(CatalogError::Stale {
            given: -1,
            current: i64::from(current),
        }),
        Written::Missing => Err(CatalogError::NotFound("image")),
        Written::Refused(m) => Err(CatalogError::Conflict(m)),
        Written::Forbidden(m) => Err(CatalogError::Forbidden(m)),
    }
}

fn stale_given(r: Result<i32, CatalogError>, given: Option<i32>) -> Result<i32, CatalogError> {
    r.map_err(|e| match e {
        CatalogError::Stale { current, .. } => CatalogError::Stale {
            given: given.map_or(-1, i64::from),
            current,
        },
        other => other,
    })
}

/// Applies a correction; returns the image's version after it.
pub async fn correct(state: &AppState, img: &ImageRow, c: Correction) -> Result<i32, CatalogError> {
    let cat = state
        .db
        .catalog_of(img.id)
        .await?
        .ok_or(CatalogError::NotFound("image"))?;
    let (_, schema) = load::schema_of(&state.db, cat.collection_id).await?;
    let current = load::stored_record(img, Some(&cat));
    let mut values = current.values.clone();
    for (k, v) in &c.set {
        match v {
            Some(v) if !v.is_null() => {
                values.insert(k.clone(), v.clone());
            }
            _ => {
                values.remove(k);
            }
        }
    }
    let sources: BTreeMap<String, Source> = c.set.keys().map(|k| (k.clone(), c.source)).collect();
    let record = Record::build(
        &schema,
        values,
        &sources,
        Some(&current),
        crate::store::now(),
    );
    if c.refuse_failures {
        let touched: Vec<Failure> = record
            .report
            .failures
            .iter()
            .filter(|f| c.set.contains_key(&f.field))
            .cloned()
            .collect();
        if !touched.is_empty() {
            return Err(CatalogError::Validation(touched));
        }
    }
    let changes = changes_between(&current.values, &record.values, c.source);
    let write = DescriptiveWrite::of(&record, &schema);
    let r = state
        .db
        .write_descriptive(
            img.id,
            c.expected,
            &write,
            &changes,
            &c.actor,
            c.reason.as_deref(),
            state.cfg.max_attempts,
        )
        .await?;
    stale_given(written(r), c.expected)
}

/// The workflow rules' view of a caller acting on `img`: the caller counts as the uploader
/// when its key is in the uploading key's lineage ([`crate::key_lineage`]).
pub async fn actor_of(
    state: &AppState,
    caller: &Caller,
    img: &ImageRow,
) -> Result<Actor, CatalogError> {
    Ok(Actor {
        role: caller.role,
        is_uploader: is_uploader(state, caller, img).await?,
    })
}

/// Whether `caller` counts as the key that uploaded `img`: that key, a key in its creation
/// chain, or a key minted below its lineage. Images from before uploads were recorded have
/// no uploader.
pub async fn is_uploader(
    state: &AppState,
    caller: &Caller,
    img: &ImageRow,
) -> Result<bool, crate::store::StoreError> {
    let Some(uploader) = img.uploaded_by else {
        return Ok(false);
    };
    if uploader == caller.key_id {
        return Ok(true);
    }
    let up = state.db.key_chain(uploader).await?;
    let me = state.db.key_chain(caller.key_id).await?;
    Ok(crate::key_lineage::same_actor(&up, &me))
}

/// Moves an image's workflow to `to`; returns its version after.
pub async fn transition(
    state: &AppState,
    img: &ImageRow,
    caller: &Caller,
    to: WorkflowState,
    expected: Option<i32>,
    reason: Option<&str>,
) -> Result<i32, CatalogError> {
    let cat = state
        .db
        .catalog_of(img.id)
        .await?
        .ok_or(CatalogError::NotFound("image"))?;
    let coll = state
        .db
        .get_collection(cat.collection_id)
        .await?
        .ok_or(CatalogError::NotFound("collection"))?;
    let actor = actor_of(state, caller, img).await?;
    let pra = coll.publish_requires_approval;
    let r = state
        .db
        .transition(
            img.id,
            expected,
            to,
            |from| workflow::check(from, to, actor, pra),
            &caller.actor,
            reason,
            state.cfg.max_attempts,
        )
        .await?;
    stale_given(written(r), expected)
}

/// Resolves an image's open reasons (all, or of `kinds`) without a transition.
pub async fn acknowledge(
    state: &AppState,
    img: &ImageRow,
    caller: &Caller,
    kinds: Option<&[ReasonKind]>,
    expected: Option<i32>,
    reason: Option<&str>,
) -> Result<i32, CatalogError> {
    if caller.role < crate::domain::Role::Admin && is_uploader(state, caller, img).await? {
        return Err(CatalogError::Forbidden(
            "review reasons on an image are resolved by a key outside the uploader's lineage (not the key that uploaded it, a key that created it, or a key minted from them)"
                .into(),
        ));
    }
    let r = state
        .db
        .resolve_reasons(img.id, expected, kinds, &caller.actor, reason)
        .await?;
    stale_given(written(r), expected)
}

/// Accepts the model's suggested tags as keywords (source `model`) and resolves the reason.
pub async fn accept_suggestions(
    state: &AppState,
    img: &ImageRow,
    caller: &Caller,
    expected: Option<i32>,
    reason: Option<&str>,
) -> Result<i32, CatalogError> {
    let open = state.db.open_reasons(&[img.id]).await?;
    let Some(r) = open.iter().find(|r| r.kind == ReasonKind::SuggestedTags) else {
        return Err(CatalogError::Conflict(
            "the image has no model-suggested tags awaiting confirmation".into(),
        ));
    };
    let mut keywords = img.tags.0.clone();
    for t in r.detail.0["tags"].as_array().into_iter().flatten() {
        if let Some(t) = t.as_str() {
            if !keywords.iter().any(|k| k == t) {
                keywords.push(t.to_owned());
            }
        }
    }
    let mut set = BTreeMap::new();
    set.insert(
        "keywords".to_owned(),
        Some(Value::Array(
            keywords.into_iter().map(Value::String).collect(),
        )),
    );
    let v = correct(
        state,
        img,
        Correction {
            set,
            source: Source::Model,
            reason: Some(
                reason
                    .unwrap_or("model-suggested tags confirmed")
                    .to_owned(),
            ),
            expected,
            actor: caller.actor.clone(),
            refuse_failures: true,
        },
    )
    .await?;
    acknowledge(
        state,
        img,
        caller,
        Some(&[ReasonKind::SuggestedTags]),
        Some(v),
        Some("suggested tags confirmed"),
    )
    .await
}

/// Restores the descriptive values and rights as they were right after the recorded change
/// `entry` (and the rest of the change it belonged to), as a new change.
pub async fn restore(
    state: &AppState,
    img: &ImageRow,
    caller: &Caller,
    entry: i64,
    expected: Option<i32>,
    reason: Option<&str>,
) -> Result<i32, CatalogError> {
    let changes = state.db.changes_of(img.id).await?;
    let hit = changes
        .iter()
        .find(|c| c.id == entry)
        .ok_or(CatalogError::NotFound("history entry"))?;
    let target = match &hit.change_id {
        Some(cid) => changes
            .iter()
            .filter(|c| c.change_id.as_ref() == Some(cid))
            .map(|c| c.id)
            .max()
            .unwrap_or(hit.id),
        None => hit.id,
    };
    let steps: Vec<Step> = changes
        .iter()
        .map(|c| Step {
            id: c.id,
            field: c.field.clone(),
            old: c.old_value.as_ref().map(|v| v.0.clone()),
        })
        .collect();
    let set = history::values_as_of(&steps, target, |f| !NOT_RESTORABLE.contains(&f));
    if set.is_empty() {
        return Err(CatalogError::Conflict(format!(
            "nothing changed since history entry {entry}: the image is already as it was then"
        )));
    }
    correct(
        state,
        img,
        Correction {
            set,
            source: Source::Restore,
            reason: Some(match reason {
                Some(r) => format!("restored to history entry {entry}: {r}"),
                None => format!("restored to history entry {entry}"),
            }),
            expected,
            actor: caller.actor.clone(),
            refuse_failures: false,
        },
    )
    .await
}

/// Links an image into another's lineage.
pub async fn link(
    state: &AppState,
    img: &ImageRow,
    caller: &Caller,
    parent: ImageId,
    relation: Relation,
    expected: Option<i32>,
    reason: Option<&str>,
) -> Result<i32, CatalogError> {
    let p = state
        .db
        .get_image(parent)
        .await?
        .filter(|p| p.owner == img.owner)
        .ok_or(CatalogError::NotFound("derived_from image"))?;
    let r = state
        .db
        .link_lineage(
            img.id,
            expected,
            p.id.0,
            relation,
            &caller.actor,
            reason,
            state.cfg.max_attempts,
        )
        .await?;
    stale_given(written(r), expected)
}
