//! Validation at ingest. An upload's values come from what it declares (JSON or form fields,
//! or a CSV manifest through `flexphoto import`), an XMP sidecar, and IPTC/XMP embedded in
//! the file; they are merged by precedence with each value's source kept, normalised and
//! validated against the collection's schema. A collection that refuses invalid uploads
//! answers 422 with every failing field and rule; one that reviews them accepts the upload
//! and routes it to review with the failures recorded.
//!
//! Presigned uploads have no bytes when they are created: they are validated on what they
//! declare, and what the file embeds is merged in when it is processed (filling only fields
//! without a value, and routing new failures to review).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::corrections::{self, Correction};
use super::embedded::{self, IptcProps};
use super::lineage::Relation;
use super::load;
use super::record::Record;
use super::review::NewReason;
use super::sources::{Source, Sourced};
use super::validate::Failure;
use super::CatalogError;
use crate::domain::{ImageId, Owner, WorkflowState};
use crate::search::embed::Concept;
use crate::state::AppState;
use crate::store::catalog::{CatalogInsert, CollectionRow, DescriptiveWrite, FieldChange};
use crate::store::images::ImageRow;

/// What an upload brings for the catalog.
#[derive(Debug, Clone, Default)]
pub struct Incoming {
    /// Collection id or name (default: the owner's default collection).
    pub collection: Option<String>,
    /// Values declared with the upload.
    pub declared: BTreeMap<String, Value>,
    /// Where the declared values came from (`upload`, or `csv` from a manifest).
    pub declared_source: Option<Source>,
    /// An XMP sidecar.
    pub sidecar: Option<Vec<u8>>,
    /// The start of the file (embedded metadata), when the bytes are here.
    pub head: Option<Vec<u8>>,
    /// The image this one derives from.
    pub derived_from: Option<ImageId>,
    /// How (default: `version`).
    pub relation: Option<Relation>,
}

/// What validation at ingest decided, for the upload's answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IngestOutcome {
    /// The collection the image went to.
    #[schema(value_type = String, format = Uuid)]
    pub collection: uuid::Uuid,
    /// The schema version it was validated against.
    pub schema_version: i32,
    /// `draft`, or `in_review` when it failed rules and was routed to review.
    pub workflow_state: String,
    /// Every failing field and rule (empty when it passed).
    pub failures: Vec<Failure>,
    /// Recommended fields without a value.
    pub missing_recommended: Vec<String>,
    /// The source of each value.
    pub sources: BTreeMap<String, Source>,
}

/// A checked upload, ready to be written with its image.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The catalog record to insert in the image's transaction.
    pub insert: CatalogInsert,
    /// The caption (kept on the image row).
    pub caption: Option<String>,
    /// For the answer.
    pub outcome: IngestOutcome,
}

/// Most bytes of a sidecar read.
pub const MAX_SIDECAR: usize = 1 << 20;

/// Merges, normalises and validates what an upload brings for `owner`; refuses it when the
/// collection refuses invalid uploads and a rule fails.
pub async fn prepare(
    state: &AppState,
    owner: &Owner,
    actor: &str,
    inc: Incoming,
) -> Result<Prepared, CatalogError> {
    let coll: CollectionRow = load::collection(&state.db, owner, inc.collection.as_deref()).await?;
    let schema = load::schema(&state.db, &coll, None).await?;
    let mut sourced = Sourced::default();
    if let Some(head) = &inc.head {
        let vals = embedded::values_for(
            &schema,
            &embedded::read_xmp(head),
            &embedded::read_iptc(head),
        );
        sourced.merge(Source::Embedded, vals);
    }
    if let Some(side) = &inc.sidecar {
        let vals = embedded::values_for(&schema, &embedded::read_xmp(side), &IptcProps::new());
        sourced.merge(Source::Sidecar, vals);
    }
    sourced.merge(inc.declared_source.unwrap_or(Source::Upload), inc.declared);
    let sources = sourced.sources.clone();
    let record = Record::from_sourced(&schema, sourced, crate::store::now());
    if !record.report.ok() && coll.refuses_invalid() {
        return Err(CatalogError::Validation(record.report.failures));
    }
    let derived_from = match inc.derived_from {
        Some(p) => {
            let parent = state
                .db
                .get_image(p)
                .await?
                .filter(|i| i.owner == *owner)
                .ok_or(CatalogError::NotFound("derived_from image"))?;
            Some((parent.id.0, inc.relation.unwrap_or(Relation::Version)))
        }
        None => None,
    };
    let write = DescriptiveWrite::of(&record, &schema);
    let changes: Vec<FieldChange> = record
        .values
        .iter()
        .map(|(k, v)| FieldChange {
            field: k.clone(),
            old: None,
            new: Some(v.clone()),
            source: sources
                .get(k)
                .copied()
                .unwrap_or(Source::Upload)
                .as_str()
                .to_owned(),
        })
        .collect();
    let mut reasons = Vec::new();
    if !record.report.ok() {
        reasons.push(NewReason::validation(
            &record.report.failures,
            schema.version,
        ));
    }
    let outcome = IngestOutcome {
        collection: coll.id,
        schema_version: coll.schema_version,
        workflow_state: if reasons.is_empty() {
            WorkflowState::Draft
        } else {
            WorkflowState::InReview
        }
        .as_str()
        .to_owned(),
        failures: record.report.failures.clone(),
        missing_recommended: record.report.missing_recommended.clone(),
        sources,
    };
    Ok(Prepared {
        caption: record.caption(),
        insert: CatalogInsert {
            collection_id: coll.id,
            write,
            workflow: WorkflowState::Draft,
            reasons,
            derived_from,
            changes,
            actor: actor.to_owned(),
        },
        outcome,
    })
}

/// Merges the metadata a processed file embeds into its image's record (fields without a
/// value only), re-validating; new failures go to review. For presigned uploads, whose bytes
/// were not there when they were created.
pub async fn apply_embedded(
    state: &AppState,
    img: &ImageRow,
    bytes: &[u8],
) -> Result<(), CatalogError> {
    let Some(cat) = state.db.catalog_of(img.id).await? else {
        return Ok(());
    };
    let (_, schema) = load::schema_of(&state.db, cat.collection_id).await?;
    let head = &bytes[..bytes.len().min(1 << 20)];
    let found = embedded::values_for(
        &schema,
        &embedded::read_xmp(head),
        &embedded::read_iptc(head),
    );
    let current = load::values_of(img, Some(&cat));
    let set: BTreeMap<String, Option<Value>> = found
        .into_iter()
        .filter(|(k, _)| !current.contains_key(k))
        .map(|(k, v)| (k, Some(v)))
        .collect();
    if set.is_empty() {
        return Ok(());
    }
    corrections::correct(
        state,
        img,
        Correction {
            set,
            source: Source::Embedded,
            reason: Some("metadata embedded in the file".into()),
            expected: None,
            actor: "ingest".into(),
            refuse_failures: false,
        },
    )
    .await
    .map(|_| ())
}

/// Review reasons from what the classifier saw: low confidence in its best guess, and tags
/// it suggests that the image does not have yet.
pub fn model_reasons(
    concepts: &[Concept],
    keywords: &[String],
    low_confidence_below: f32,
    suggest: usize,
    suggest_min_weight: f32,
) -> Vec<NewReason> {
    let mut out = Vec::new();
    let Some(top) = concepts.first() else {
        return out;
    };
    if low_confidence_below > 0.0 && top.weight < low_confidence_below {
        out.push(NewReason::low_confidence(
            &top.label,
            top.weight,
            low_confidence_below,
        ));
    }
    if suggest > 0 {
        let tags: Vec<String> = concepts
            .iter()
            .filter(|c| c.weight >= suggest_min_weight)
            .map(|c| c.label.to_lowercase())
            .filter(|l| !keywords.iter().any(|k| k.eq_ignore_ascii_case(l)))
            .take(suggest)
            .collect();
        if !tags.is_empty() {
            out.push(NewReason::suggested_tags(&tags));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_reasons_flag_doubt_and_suggest_new_tags() {
        let c = |l: &str, w: f32| Concept {
            label: l.into(),
            weight: w,
        };
        let r = model_reasons(
            &[c("Seashore", 0.15), c("sandbar", 0.12), c("x", 0.01)],
            &["seashore".into()],
            0.3,
            3,
            0.05,
        );
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].kind, crate::domain::ReasonKind::LowConfidence);
        assert_eq!(r[1].detail["tags"], serde_json::json!(["sandbar"]));
        assert!(model_reasons(&[c("dog", 0.9)], &["dog".into()], 0.3, 3, 0.05).is_empty());
    }
}
