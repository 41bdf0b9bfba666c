//! Where each descriptive value came from. At ingest, values from several places are merged:
//! what the upload (or a CSV manifest) declares wins over an XMP sidecar, which wins over
//! metadata embedded in the file; each value keeps its source, and every later change records
//! its own (a person, the model, a restore).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Declared with the upload (JSON or form fields).
    Upload,
    /// A CSV manifest given to `flexphoto import`.
    Csv,
    /// An XMP sidecar file.
    Sidecar,
    /// IPTC or XMP embedded in the image file.
    Embedded,
    /// A person's correction through the API.
    Person,
    /// A model's suggestion (confirmed by a person).
    Model,
    /// A past version restored.
    Restore,
    /// The service itself (scheduler, migrations).
    System,
}

impl Source {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Upload => "upload",
            Source::Csv => "csv",
            Source::Sidecar => "sidecar",
            Source::Embedded => "embedded",
            Source::Person => "person",
            Source::Model => "model",
            Source::Restore => "restore",
            Source::System => "system",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Source> {
        Some(match s {
            "upload" => Source::Upload,
            "csv" => Source::Csv,
            "sidecar" => Source::Sidecar,
            "embedded" => Source::Embedded,
            "person" => Source::Person,
            "model" => Source::Model,
            "restore" => Source::Restore,
            "system" => Source::System,
            _ => return None,
        })
    }

    /// Precedence at ingest: higher wins.
    fn rank(self) -> u8 {
        match self {
            Source::Embedded => 1,
            Source::Sidecar => 2,
            Source::Csv | Source::Upload => 3,
            _ => 4,
        }
    }
}

/// The source of one stored value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SourceInfo {
    /// Where it came from.
    pub source: Source,
    /// When it was set.
    pub at: DateTime<Utc>,
}

/// Values with their sources, merged by precedence.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sourced {
    /// Value per field.
    pub values: BTreeMap<String, Value>,
    /// Source per field.
    pub sources: BTreeMap<String, Source>,
}

impl Sourced {
    /// Adds `values` from `source`; a field keeps an existing value from a source of higher
    /// precedence. Null values are skipped.
    pub fn merge(&mut self, source: Source, values: BTreeMap<String, Value>) {
        for (k, v) in values {
            if v.is_null() {
                continue;
            }
            let keep = self
                .sources
                .get(&k)
                .is_some_and(|s| s.rank() > source.rank());
            if !keep {
                self.values.insert(k.clone(), v);
                self.sources.insert(k, source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn upload_beats_sidecar_beats_embedded() {
        let m = |pairs: &[(&str, &str)]| -> BTreeMap<String, Value> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect()
        };
        let mut s = Sourced::default();
        s.merge(Source::Upload, m(&[("title", "from upload")]));
        s.merge(
            Source::Sidecar,
            m(&[("title", "sidecar"), ("credit", "sidecar")]),
        );
        s.merge(
            Source::Embedded,
            m(&[("credit", "embedded"), ("creator", "embedded")]),
        );
        assert_eq!(s.values["title"], "from upload");
        assert_eq!(s.sources["credit"], Source::Sidecar);
        assert_eq!(s.sources["creator"], Source::Embedded);
        assert_eq!(Source::parse("csv"), Some(Source::Csv));
    }
}
