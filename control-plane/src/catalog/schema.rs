//! A collection's metadata schema: fields with a type, required or recommended, and rules
//! (pattern, range, allowed values, max length, max items), plus where embedded metadata and
//! CSV manifests supply each field. Written as TOML or JSON (the same shape), checked once by
//! [`SchemaDoc::compile`] into a [`Schema`] that validation trusts.
//!
//! ```toml
//! [[fields]]
//! name = "photographer_id"
//! type = "text"
//! required = true
//! pattern = "^P[0-9]{4}$"
//! xmp = ["fp:PhotographerId"]
//!
//! [[fields]]
//! name = "usage"
//! type = "enum"
//! values = ["editorial", "commercial"]
//!
//! [[terms]]
//! id = "dogs"
//! parent = "animals"
//! synonyms = ["dog", "puppy"]
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::fields::{self, builtin, FieldType, BUILTINS};
use super::vocab::{TermDef, Vocabulary};

/// Most fields a schema may declare.
pub const MAX_FIELDS: usize = 200;

/// One field as written in a schema file or request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    /// Name: a lower-case letter, then letters, digits or `_` (at most 64). A built-in name
    /// (`title`, `caption`, `keywords`, `credit`, `creator`, `rights_holder`, `licence`,
    /// `usage_restrictions`, `rights_valid_from`, `rights_valid_until`) adds rules to it.
    pub name: String,
    /// For people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// `text`, `number`, `date`, `enum`, `list`, `term` or `url` (built-ins: their own type).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<FieldType>,
    /// A value is needed: missing fails validation.
    #[serde(default, skip_serializing_if = "is_false")]
    pub required: bool,
    /// A value is wanted: missing is a warning, not a failure.
    #[serde(default, skip_serializing_if = "is_false")]
    pub recommended: bool,
    /// A regular expression every text value (or list item) must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Smallest number, or earliest date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub min: Option<Value>,
    /// Largest number, or latest date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub max: Option<Value>,
    /// Allowed values (`enum`; for a `list`, allowed items).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Longest text (characters), or longest list item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// Most items of a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<usize>,
    /// XMP properties (`prefix:Name`) the value is read from, embedded or in a sidecar.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xmp: Vec<String>,
    /// IPTC IIM datasets (`2:05`) the value is read from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub iptc: Vec<String>,
    /// The CSV manifest column (default: the field's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A schema as written: fields and, optionally, the vocabulary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SchemaDoc {
    /// The fields.
    #[serde(default)]
    pub fields: Vec<FieldDef>,
    /// The vocabulary's terms (absent: keep the current vocabulary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terms: Option<Vec<TermDef>>,
}

/// A checked field: its type is final and its pattern compiled.
#[derive(Debug, Clone)]
pub struct Field {
    /// As written.
    pub def: FieldDef,
    /// Its type.
    pub kind: FieldType,
    /// The compiled pattern.
    pub pattern: Option<regex::Regex>,
    /// `min` as a number (dates: epoch seconds).
    pub min: Option<f64>,
    /// `max` as a number (dates: epoch seconds).
    pub max: Option<f64>,
    /// Whether it is a built-in field.
    pub builtin: bool,
}

impl Field {
    /// XMP properties to read, schema's first, then the built-in defaults.
    pub fn xmp_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.def.xmp.iter().map(String::as_str).collect();
        if let Some(b) = builtin(&self.def.name) {
            for n in b.xmp {
                if !v.contains(n) {
                    v.push(n);
                }
            }
        }
        v
    }

    /// IPTC datasets to read, schema's first, then the built-in defaults.
    pub fn iptc_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.def.iptc.iter().map(String::as_str).collect();
        if let Some(b) = builtin(&self.def.name) {
            for n in b.iptc {
                if !v.contains(n) {
                    v.push(n);
                }
            }
        }
        v
    }

    /// The CSV column name.
    pub fn csv_column(&self) -> &str {
        self.def.csv.as_deref().unwrap_or(&self.def.name)
    }
}

/// A checked schema: every built-in field plus the schema's own, by name, and the vocabulary.
#[derive(Debug, Clone)]
pub struct Schema {
    /// Version of the collection's schema this is (0: no schema yet).
    pub version: i64,
    /// Fields by name (built-ins always present).
    pub fields: BTreeMap<String, Field>,
    /// The vocabulary.
    pub vocabulary: Vocabulary,
}

impl Schema {
    /// A collection without a schema: the built-in fields without rules, no vocabulary.
    pub fn builtin_only() -> Schema {
        SchemaDoc::default()
            .compile(0, Vec::new())
            .unwrap_or_else(|_| Schema {
                version: 0,
                fields: BTreeMap::new(),
                vocabulary: Vocabulary::default(),
            })
    }

    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.get(name)
    }

    /// Names of the fields the schema itself declares (not the untouched built-ins).
    pub fn declared(&self) -> impl Iterator<Item = &Field> {
        self.fields
            .values()
            .filter(|f| !f.builtin || f.def != bare_builtin(&f.def.name))
    }
}

fn bare_builtin(name: &str) -> FieldDef {
    FieldDef {
        name: name.to_owned(),
        label: None,
        kind: None,
        required: false,
        recommended: false,
        pattern: None,
        min: None,
        max: None,
        values: Vec::new(),
        max_length: None,
        max_items: None,
        xmp: Vec::new(),
        iptc: Vec::new(),
        csv: None,
    }
}

fn bound(
    kind: FieldType,
    name: &str,
    which: &str,
    v: &Option<Value>,
) -> Result<Option<f64>, String> {
    let Some(v) = v else { return Ok(None) };
    match kind {
        FieldType::Number => v
            .as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .map(Some)
            .ok_or_else(|| format!("field {name}: {which} must be a number")),
        FieldType::Date => v
            .as_str()
            .and_then(fields::parse_date)
            .map(|(_, secs)| Some(secs))
            .ok_or_else(|| format!("field {name}: {which} must be a date (YYYY-MM-DD)")),
        FieldType::Text | FieldType::List => Err(format!(
            "field {name}: {which} applies to numbers and dates; use max_length or max_items"
        )),
        _ => Err(format!(
            "field {name}: {which} applies to numbers and dates"
        )),
    }
}

impl SchemaDoc {
    /// Parses a schema from TOML or JSON text (`json` picks which).
    pub fn parse(text: &str, json: bool) -> Result<SchemaDoc, String> {
        if json {
            serde_json::from_str(text).map_err(|e| format!("bad schema JSON: {e}"))
        } else {
            toml::from_str(text).map_err(|e| format!("bad schema TOML: {e}"))
        }
    }

    /// Checks every field and rule and the vocabulary (`terms`: the vocabulary to use when
    /// the document has none). The error names the field and the rule.
    pub fn compile(&self, version: i64, terms: Vec<TermDef>) -> Result<Schema, String> {
        if self.fields.len() > MAX_FIELDS {
            return Err(format!("a schema has at most {MAX_FIELDS} fields"));
        }
        let mut out: BTreeMap<String, Field> = BTreeMap::new();
        for b in BUILTINS {
            out.insert(
                b.name.to_owned(),
                Field {
                    def: bare_builtin(b.name),
                    kind: b.kind,
                    pattern: None,
                    min: None,
                    max: None,
                    builtin: true,
                },
            );
        }
        let mut seen = std::collections::HashSet::new();
        for def in &self.fields {
            fields::check_name(&def.name)?;
            if !seen.insert(def.name.clone()) {
                return Err(format!("field {} is declared twice", def.name));
            }
            let name = &def.name;
            let kind = match (builtin(name), def.kind) {
                (Some(b), None) => b.kind,
                (Some(b), Some(k)) if k == b.kind => k,
                (Some(b), Some(k))
                    if b.kind == FieldType::Text
                        && matches!(k, FieldType::Enum | FieldType::Url) =>
                {
                    k
                }
                (Some(b), Some(k)) => {
                    return Err(format!(
                        "field {name} is built in as {}; it cannot be {}",
                        b.kind.as_str(),
                        k.as_str()
                    ))
                }
                (None, Some(k)) => k,
                (None, None) => return Err(format!("field {name}: type is required")),
            };
            if def.required && def.recommended {
                return Err(format!(
                    "field {name}: required and recommended are exclusive"
                ));
            }
            let pattern = match &def.pattern {
                Some(p) => {
                    if !matches!(
                        kind,
                        FieldType::Text | FieldType::List | FieldType::Url | FieldType::Enum
                    ) {
                        return Err(format!("field {name}: pattern applies to text fields"));
                    }
                    Some(
                        regex::RegexBuilder::new(p)
                            .size_limit(1 << 20)
                            .build()
                            .map_err(|e| format!("field {name}: pattern does not compile: {e}"))?,
                    )
                }
                None => None,
            };
            let min = bound(kind, name, "min", &def.min)?;
            let max = bound(kind, name, "max", &def.max)?;
            if let (Some(a), Some(b)) = (min, max) {
                if a > b {
                    return Err(format!("field {name}: min is above max"));
                }
            }
            if kind == FieldType::Enum && def.values.is_empty() {
                return Err(format!("field {name}: an enum needs values"));
            }
            if !def.values.is_empty() && !matches!(kind, FieldType::Enum | FieldType::List) {
                return Err(format!(
                    "field {name}: values applies to enum and list fields"
                ));
            }
            if def.max_items.is_some() && kind != FieldType::List {
                return Err(format!("field {name}: max_items applies to lists"));
            }
            if def.max_length == Some(0) {
                return Err(format!("field {name}: max_length must be at least 1"));
            }
            for x in &def.xmp {
                let ok = x.split_once(':').is_some_and(|(p, n)| {
                    !p.is_empty()
                        && !n.is_empty()
                        && x.chars()
                            .all(|c| c.is_alphanumeric() || matches!(c, ':' | '_' | '-' | '.'))
                });
                if !ok {
                    return Err(format!(
                        "field {name}: xmp property {x:?} must be prefix:Name"
                    ));
                }
            }
            for i in &def.iptc {
                let ok = i
                    .split_once(':')
                    .is_some_and(|(r, d)| r.parse::<u8>().is_ok() && d.parse::<u8>().is_ok());
                if !ok {
                    return Err(format!(
                        "field {name}: iptc dataset {i:?} must be record:dataset, e.g. 2:05"
                    ));
                }
            }
            out.insert(
                name.clone(),
                Field {
                    def: def.clone(),
                    kind,
                    pattern,
                    min,
                    max,
                    builtin: builtin(name).is_some(),
                },
            );
        }
        let terms = self.terms.clone().unwrap_or(terms);
        let vocabulary = Vocabulary::build(terms)?;
        if out.values().any(|f| f.kind == FieldType::Term) && vocabulary.is_empty() {
            return Err("term fields need a vocabulary ([[terms]])".into());
        }
        Ok(Schema {
            version,
            fields: out,
            vocabulary,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"
[[fields]]
name = "photographer_id"
type = "text"
required = true
pattern = "^P[0-9]{4}$"
xmp = ["fp:PhotographerId"]

[[fields]]
name = "shot_count"
type = "number"
min = 1
max = 100

[[fields]]
name = "licence"
type = "enum"
values = ["CC-BY", "all-rights-reserved"]
required = true

[[terms]]
id = "animals"

[[terms]]
id = "dogs"
parent = "animals"
synonyms = ["puppy"]
"#;

    #[test]
    fn toml_and_json_compile_the_same() {
        let doc = SchemaDoc::parse(DOC, false).unwrap();
        let json = serde_json::to_string(&doc).unwrap();
        let again = SchemaDoc::parse(&json, true).unwrap();
        assert_eq!(doc, again);
        let s = doc.compile(3, Vec::new()).unwrap();
        assert_eq!(s.version, 3);
        assert_eq!(s.field("licence").unwrap().kind, FieldType::Enum);
        assert!(s.field("title").unwrap().builtin);
        assert_eq!(
            s.field("photographer_id").unwrap().xmp_names(),
            ["fp:PhotographerId"]
        );
        assert_eq!(s.declared().count(), 3);
        assert_eq!(s.vocabulary.len(), 2);
    }

    #[test]
    fn bad_schemas_name_the_field_and_rule() {
        for (doc, want) in [
            ("[[fields]]\nname = \"x\"\n", "type is required"),
            ("[[fields]]\nname = \"X\"\ntype = \"text\"\n", "lower-case"),
            (
                "[[fields]]\nname = \"a\"\ntype = \"text\"\npattern = \"(\"\n",
                "does not compile",
            ),
            (
                "[[fields]]\nname = \"a\"\ntype = \"number\"\nmin = 5\nmax = 1\n",
                "min is above max",
            ),
            (
                "[[fields]]\nname = \"a\"\ntype = \"enum\"\n",
                "needs values",
            ),
            (
                "[[fields]]\nname = \"keywords\"\ntype = \"number\"\n",
                "built in as list",
            ),
            (
                "[[fields]]\nname = \"s\"\ntype = \"term\"\n",
                "need a vocabulary",
            ),
            (
                "[[fields]]\nname = \"a\"\ntype = \"text\"\niptc = [\"x\"]\n",
                "record:dataset",
            ),
        ] {
            let e = SchemaDoc::parse(doc, false)
                .and_then(|d| d.compile(1, Vec::new()))
                .unwrap_err();
            assert!(e.contains(want), "{doc}: {e}");
        }
        assert!(SchemaDoc::parse("[[fields]]\nname = \"a\"\nkind = \"x\"\n", false).is_err());
    }
}
