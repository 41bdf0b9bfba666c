//! An image's descriptive metadata as one checked record: every value in its field's
//! canonical shape (or as it arrived, when it cannot be, with the failure recorded), the
//! source of each, keywords normalised to vocabulary terms, and the validation report.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::fields::{self, FieldType, Storage};
use super::schema::Schema;
use super::sources::{Source, SourceInfo, Sourced};
use super::validate::{self, Report};
use super::vocab::TermMatch;

/// An image's descriptive metadata, checked against its collection's schema.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    /// Every value by field name (caption and keywords included).
    pub values: BTreeMap<String, Value>,
    /// Where each value came from.
    pub sources: BTreeMap<String, SourceInfo>,
    /// Vocabulary terms the image carries (from keywords and term fields).
    pub terms: Vec<String>,
    /// How keywords and term fields matched terms.
    pub term_matches: Vec<TermMatch>,
    /// The validation report.
    pub report: Report,
}

impl Record {
    /// Normalises `values` for `schema` (types, keywords to terms, synonyms of term fields)
    /// and validates them. `sources` says where each value came from; `previous` keeps the
    /// source and time of values that did not change.
    pub fn build(
        schema: &Schema,
        values: BTreeMap<String, Value>,
        sources: &BTreeMap<String, Source>,
        previous: Option<&Record>,
        at: DateTime<Utc>,
    ) -> Record {
        let mut out = BTreeMap::new();
        let mut terms: Vec<String> = Vec::new();
        let mut matches = Vec::new();
        for (name, raw) in values {
            let kind = schema.field(&name).map(|f| f.kind);
            let mut v = match kind {
                // Unknown fields stay as they came (validation reports them).
                None => raw,
                Some(k) => match fields::coerce(k, &raw) {
                    Ok(Some(v)) => v,
                    Ok(None) => continue,
                    // Kept as it arrived; validation reports the type failure.
                    Err(_) => raw,
                },
            };
            if name == "keywords" {
                if let Some(items) = v.as_array() {
                    let ks: Vec<String> = items
                        .iter()
                        .filter_map(|i| i.as_str().map(str::to_owned))
                        .collect();
                    let (ks, m) = schema.vocabulary.normalise_keywords(&ks);
                    for t in m.iter().map(|m| m.term.clone()) {
                        if !terms.contains(&t) {
                            terms.push(t);
                        }
                    }
                    matches.extend(m);
                    v = Value::Array(ks.into_iter().map(Value::String).collect());
                }
            } else if kind == Some(FieldType::Term) {
                if let Some(m) = v.as_str().and_then(|s| schema.vocabulary.lookup(s)) {
                    v = Value::String(m.term.clone());
                    if !terms.contains(&m.term) {
                        terms.push(m.term.clone());
                    }
                    matches.push(m);
                }
            }
            out.insert(name, v);
        }
        let report = validate::validate(schema, &out);
        let mut srcs = BTreeMap::new();
        for name in out.keys() {
            let unchanged = previous.and_then(|p| {
                (p.values.get(name) == out.get(name))
                    .then(|| p.sources.get(name).cloned())
                    .flatten()
            });
            let info = unchanged.unwrap_or(SourceInfo {
                source: sources.get(name).copied().unwrap_or(Source::Person),
                at,
            });
            srcs.insert(name.clone(), info);
        }
        Record {
            values: out,
            sources: srcs,
            terms,
            term_matches: matches,
            report,
        }
    }

    /// A record from merged ingest values.
    pub fn from_sourced(schema: &Schema, s: Sourced, at: DateTime<Utc>) -> Record {
        Record::build(schema, s.values, &s.sources, None, at)
    }

    /// The caption (kept on the image row).
    pub fn caption(&self) -> Option<String> {
        self.values
            .get("caption")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// The keywords (kept on the image row as tags).
    pub fn keywords(&self) -> Vec<String> {
        self.values
            .get("keywords")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The values kept in the catalog record (all but caption and keywords).
    pub fn catalog_values(&self) -> BTreeMap<String, Value> {
        self.values
            .iter()
            .filter(|(k, _)| fields::builtin(k).is_none_or(|b| b.storage == Storage::Catalog))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The rights window `(from, until)`; values that are not dates count as absent.
    pub fn rights_window(&self) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        let get = |k: &str| self.values.get(k).and_then(fields::date_time);
        (get("rights_valid_from"), get("rights_valid_until"))
    }

    /// The terms with their ancestors, each with whether the image was given it directly.
    pub fn expanded_terms(&self, schema: &Schema) -> Vec<(String, bool)> {
        let mut out: Vec<(String, bool)> = Vec::new();
        for t in &self.terms {
            for (i, a) in schema.vocabulary.with_ancestors(t).into_iter().enumerate() {
                match out.iter_mut().find(|(x, _)| *x == a) {
                    Some(e) => e.1 |= i == 0,
                    None => out.push((a, i == 0)),
                }
            }
        }
        out
    }

    /// The rows of the field index: `(field, item, text, number)` for every value kept in the
    /// catalog record (caption and keywords have filters of their own).
    pub fn index_rows(&self, schema: &Schema) -> Vec<(String, i32, String, Option<f64>)> {
        let mut rows = Vec::new();
        for (name, v) in self.catalog_values() {
            let kind = schema.field(&name).map_or(FieldType::Text, |f| f.kind);
            for (i, (text, num)) in fields::index_rows(kind, &v).into_iter().enumerate() {
                rows.push((name.clone(), i as i32, text, num));
            }
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::schema::SchemaDoc;
    use serde_json::json;

    #[test]
    fn normalises_keywords_and_terms_and_keeps_sources() {
        let schema = SchemaDoc::parse(
            "[[fields]]\nname = \"subject\"\ntype = \"term\"\n[[fields]]\nname = \"shots\"\ntype = \"number\"\n\
             [[terms]]\nid = \"animals\"\n[[terms]]\nid = \"dogs\"\nparent = \"animals\"\nsynonyms = [\"puppy\"]\n\
             [[terms]]\nid = \"sea\"\n",
            false,
        )
        .unwrap()
        .compile(1, Vec::new())
        .unwrap();
        let mut s = Sourced::default();
        s.merge(
            Source::Upload,
            serde_json::from_value(
                json!({"keywords": "Puppy, sand", "subject": "SEA", "shots": "x"}),
            )
            .unwrap(),
        );
        let t = Utc::now();
        let r = Record::from_sourced(&schema, s, t);
        assert_eq!(r.keywords(), ["dogs", "sand"]);
        assert_eq!(r.values["subject"], "sea");
        assert_eq!(r.terms, ["dogs", "sea"]);
        assert_eq!(
            r.expanded_terms(&schema),
            [
                ("dogs".into(), true),
                ("animals".into(), false),
                ("sea".into(), true)
            ]
        );
        // The number that is not one is kept as it came and reported.
        assert_eq!(r.values["shots"], "x");
        assert_eq!(r.report.failures.len(), 1);
        assert_eq!(r.sources["subject"].source, Source::Upload);
        // A later build keeps the source of unchanged values.
        let mut v = r.values.clone();
        v.insert("shots".into(), json!(3));
        let r2 = Record::build(
            &schema,
            v,
            &BTreeMap::new(),
            Some(&r),
            t + chrono::Duration::seconds(5),
        );
        assert_eq!(r2.sources["subject"], r.sources["subject"]);
        assert_eq!(r2.sources["shots"].source, Source::Person);
        assert!(r2.report.ok());
        assert_eq!(r2.index_rows(&schema).len(), 2);
    }
}
