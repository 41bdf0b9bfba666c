//! Why a result is there: which filters it matched and how (the term of the image that is
//! under a filter's term, the value a field condition saw), the vocabulary terms of a text
//! query it carries, and, for an image in review, why it is in review. Facts for a page of
//! results are read in a few batched queries ([`PageFacts::load`]).

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::load;
use super::query::{CatalogFilter, RightsFilter, VersionFilter};
use super::review;
use super::schema::Schema;
use super::CatalogError;
use crate::domain::ImageId;
use crate::store::catalog::{CatalogRow, CollectionRow, ReasonRow};
use crate::store::images::ImageRow;
use crate::store::Db;

/// One filter a result matched, and how.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct MatchedFilter {
    /// The filter in words (`term animals`, `field shot_count >= 5`).
    pub filter: String,
    /// How this result meets it (`has term dogs, under animals`, `shot_count is 7`).
    pub because: String,
}

/// A vocabulary term of a text query that a result carries.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TermExplained {
    /// The query's term.
    pub term: String,
    /// Its label.
    pub label: String,
    /// The query words that named it.
    pub matched: String,
    /// `id`, `label` or `synonym`.
    pub via: String,
    /// The image's own term that is it or under it.
    pub image_term: String,
}

/// Catalog facts about a page of images.
#[derive(Debug, Default)]
pub struct PageFacts {
    /// Catalog records by image.
    pub catalogs: HashMap<ImageId, CatalogRow>,
    /// Terms with ancestors by image: `(term, given directly)`.
    pub terms: HashMap<ImageId, Vec<(String, bool)>>,
    /// Open review reasons by image.
    pub reasons: HashMap<ImageId, Vec<ReasonRow>>,
    /// Collections with their current schema, by id.
    pub collections: HashMap<Uuid, (CollectionRow, Arc<Schema>)>,
}

impl PageFacts {
    /// Reads the facts of `ids`.
    pub async fn load(db: &Db, ids: &[ImageId]) -> Result<PageFacts, CatalogError> {
        let mut f = PageFacts::default();
        if ids.is_empty() {
            return Ok(f);
        }
        // Three independent reads, on three pooled connections at once.
        let (catalogs, terms, reasons) =
            tokio::try_join!(db.catalogs_of(ids), db.terms_of(ids), db.open_reasons(ids))?;
        for c in catalogs {
            f.catalogs.insert(c.image_id, c);
        }
        for (id, term, direct) in terms {
            f.terms.entry(id).or_default().push((term, direct));
        }
        for r in reasons {
            f.reasons.entry(r.image_id).or_default().push(r);
        }
        let colls: Vec<Uuid> = {
            let mut v: Vec<Uuid> = f.catalogs.values().map(|c| c.collection_id).collect();
            v.sort();
            v.dedup();
            v
        };
        for c in colls {
            if let Ok((row, schema)) = load::schema_of(db, c).await {
                f.collections.insert(c, (row, schema));
            }
        }
        Ok(f)
    }

    /// The schema of an image's collection.
    pub fn schema_of(&self, id: ImageId) -> Option<&Arc<Schema>> {
        let c = self.catalogs.get(&id)?;
        self.collections.get(&c.collection_id).map(|(_, s)| s)
    }

    /// Why an image is in review: one line per open reason.
    pub fn in_review_because(&self, id: ImageId) -> Vec<String> {
        self.reasons
            .get(&id)
            .map(|rs| {
                rs.iter()
                    .map(|r| review::summary(r.kind, &r.detail.0))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Which of `f`'s catalog filters `img` matched, and how.
    pub fn matched_filters(&self, f: &CatalogFilter, img: &ImageRow) -> Vec<MatchedFilter> {
        let mut out = Vec::new();
        let cat = self.catalogs.get(&img.id);
        if let Some(c) = f.collection {
            let name = self
                .collections
                .get(&c)
                .map(|(row, _)| row.name.clone())
                .unwrap_or_else(|| c.to_string());
            out.push(MatchedFilter {
                filter: format!("collection = {c}"),
                because: format!("in collection {name}"),
            });
        }
        let terms = self.terms.get(&img.id).map(Vec::as_slice).unwrap_or(&[]);
        for t in &f.terms {
            let want = super::vocab::normalise(t);
            let schema = self.schema_of(img.id);
            let direct = terms
                .iter()
                .filter(|(_, d)| *d)
                .map(|(x, _)| x.as_str())
                .find(|x| *x == want || schema.is_some_and(|s| s.vocabulary.is_under(x, &want)));
            let because = match direct {
                Some(d) if d == want => format!("has term {d}"),
                Some(d) => format!("has term {d}, which is under {want}"),
                None => format!("carries term {want}"),
            };
            out.push(MatchedFilter {
                filter: format!("term {want} (or narrower)"),
                because,
            });
        }
        if let (Some(w), Some(c)) = (f.workflow_state, cat) {
            out.push(MatchedFilter {
                filter: format!("workflow_state = {w}"),
                because: format!("is {}", c.workflow_state),
            });
        }
        match f.rights {
            RightsFilter::Usable => out.push(MatchedFilter {
                filter: "rights: inside the rights window".into(),
                because: match cat.and_then(|c| c.rights_until) {
                    Some(u) => format!("its rights run until {}", u.to_rfc3339()),
                    None => "no rights window closes it".into(),
                },
            }),
            RightsFilter::Withheld => out.push(MatchedFilter {
                filter: "rights: withheld".into(),
                because: match cat {
                    Some(c) if c.rights_from.is_some_and(|t| t > f.now()) => format!(
                        "its rights start {}",
                        c.rights_from.map(|t| t.to_rfc3339()).unwrap_or_default()
                    ),
                    Some(c) => format!(
                        "its rights ended {}",
                        c.rights_until.map(|t| t.to_rfc3339()).unwrap_or_default()
                    ),
                    None => "withheld".into(),
                },
            }),
            RightsFilter::Any => {}
        }
        if f.versions == VersionFilter::Current {
            out.push(MatchedFilter {
                filter: "current versions".into(),
                because: match cat {
                    Some(c) => format!("version {} is its chain's current one", c.version_number),
                    None => "it has no other versions".into(),
                },
            });
        }
        for cond in &f.fields {
            let v = cat.and_then(|c| c.fields.0.get(&cond.field));
            out.push(MatchedFilter {
                filter: format!("field {}", cond.describe()),
                because: match v {
                    Some(v) => format!("{} is {}", cond.field, super::fields::short(v)),
                    None => format!("{} has no value", cond.field),
                },
            });
        }
        if let Some(r) = f.reason {
            let why = self
                .reasons
                .get(&img.id)
                .and_then(|rs| rs.iter().find(|x| x.kind == r))
                .map(|x| review::summary(x.kind, &x.detail.0))
                .unwrap_or_else(|| r.to_string());
            out.push(MatchedFilter {
                filter: format!("in review for {r}"),
                because: why,
            });
        }
        out
    }

    /// The vocabulary terms named in `text` (by the image's collection's vocabulary) that the
    /// image carries, directly or through a narrower term.
    pub fn query_terms(&self, text: &str, id: ImageId) -> Vec<TermExplained> {
        let Some(schema) = self.schema_of(id) else {
            return Vec::new();
        };
        let terms = self.terms.get(&id).map(Vec::as_slice).unwrap_or(&[]);
        schema
            .vocabulary
            .find_in_text(text)
            .into_iter()
            .filter_map(|m| {
                let own = terms
                    .iter()
                    .filter(|(_, d)| *d)
                    .map(|(t, _)| t)
                    .find(|t| schema.vocabulary.is_under(t, &m.term))?;
                Some(TermExplained {
                    term: m.term.clone(),
                    label: m.label,
                    matched: m.matched,
                    via: m.via.to_owned(),
                    image_term: own.clone(),
                })
            })
            .collect()
    }
}
