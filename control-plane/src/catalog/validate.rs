//! Validation: descriptive values against a collection's schema. Every failing field and rule
//! is reported (never just the first), so a refused upload or a review item says everything
//! that is wrong at once; missing recommended fields are warnings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::fields::{self, FieldType};
use super::schema::{Field, Schema};

/// Which rule a value broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// A required field has no value.
    Required,
    /// The value is not of the field's type.
    Type,
    /// The text does not match the field's pattern.
    Pattern,
    /// Below `min`.
    Min,
    /// Above `max`.
    Max,
    /// Not one of the allowed values.
    AllowedValues,
    /// Longer than `max_length`.
    MaxLength,
    /// More items than `max_items`.
    MaxItems,
    /// Not a term of the collection's vocabulary.
    Term,
    /// The schema has no such field.
    UnknownField,
    /// The rights window ends before it starts.
    Window,
}

impl Rule {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Required => "required",
            Rule::Type => "type",
            Rule::Pattern => "pattern",
            Rule::Min => "min",
            Rule::Max => "max",
            Rule::AllowedValues => "allowed_values",
            Rule::MaxLength => "max_length",
            Rule::MaxItems => "max_items",
            Rule::Term => "term",
            Rule::UnknownField => "unknown_field",
            Rule::Window => "window",
        }
    }
}

/// One failing field and rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Failure {
    /// The field.
    pub field: String,
    /// The rule it broke.
    pub rule: Rule,
    /// What is wrong, for people.
    pub message: String,
}

impl Failure {
    fn new(field: &str, rule: Rule, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            rule,
            message: message.into(),
        }
    }
}

/// The outcome of a validation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Report {
    /// Every failing field and rule.
    pub failures: Vec<Failure>,
    /// Recommended fields without a value.
    pub missing_recommended: Vec<String>,
}

impl Report {
    /// Whether every rule passed.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

fn text_rules(f: &Field, name: &str, s: &str, out: &mut Vec<Failure>) {
    if let Some(max) = f.def.max_length {
        let n = s.chars().count();
        if n > max {
            out.push(Failure::new(
                name,
                Rule::MaxLength,
                format!("{name} is {n} characters; at most {max} are allowed"),
            ));
        }
    }
    if let Some(p) = &f.pattern {
        if !p.is_match(s) {
            out.push(Failure::new(
                name,
                Rule::Pattern,
                format!(
                    "{name} value {s:?} does not match the pattern {}",
                    p.as_str()
                ),
            ));
        }
    }
}

/// Checks one field's value (already present).
fn check_value(schema: &Schema, f: &Field, v: &Value, out: &mut Vec<Failure>) {
    let name = f.def.name.as_str();
    let v = match fields::coerce(f.kind, v) {
        Ok(Some(v)) => v,
        Ok(None) => return,
        Err(e) => {
            out.push(Failure::new(name, Rule::Type, format!("{name} {}", e.0)));
            return;
        }
    };
    match f.kind {
        FieldType::Text | FieldType::Url => text_rules(f, name, v.as_str().unwrap_or(""), out),
        FieldType::Enum => {
            let s = v.as_str().unwrap_or("");
            text_rules(f, name, s, out);
            if !f.def.values.iter().any(|a| a == s) {
                out.push(Failure::new(
                    name,
                    Rule::AllowedValues,
                    format!(
                        "{name} value {s:?} is not one of {}",
                        f.def.values.join(", ")
                    ),
                ));
            }
        }
        FieldType::Term => {
            let s = v.as_str().unwrap_or("");
            if !schema.vocabulary.contains(s) {
                out.push(Failure::new(
                    name,
                    Rule::Term,
                    format!("{name} value {s:?} is not a term of the collection's vocabulary"),
                ));
            }
        }
        FieldType::Number | FieldType::Date => {
            let (n, shown) = match f.kind {
                FieldType::Number => (v.as_f64(), fields::short(&v)),
                _ => (
                    v.as_str().and_then(fields::parse_date).map(|(_, s)| s),
                    fields::short(&v),
                ),
            };
            let Some(n) = n else { return };
            if let Some(min) = f.min {
                if n < min {
                    out.push(Failure::new(
                        name,
                        Rule::Min,
                        format!(
                            "{name} is {shown}; the smallest allowed is {}",
                            f.def.min.as_ref().map(fields::short).unwrap_or_default()
                        ),
                    ));
                }
            }
            if let Some(max) = f.max {
                if n > max {
                    out.push(Failure::new(
                        name,
                        Rule::Max,
                        format!(
                            "{name} is {shown}; the largest allowed is {}",
                            f.def.max.as_ref().map(fields::short).unwrap_or_default()
                        ),
                    ));
                }
            }
        }
        FieldType::List => {
            let items: Vec<&str> = v
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(max) = f.def.max_items {
                if items.len() > max {
                    out.push(Failure::new(
                        name,
                        Rule::MaxItems,
                        format!(
                            "{name} has {} items; at most {max} are allowed",
                            items.len()
                        ),
                    ));
                }
            }
            let mut bad_values = Vec::new();
            for it in &items {
                text_rules(f, name, it, out);
                if !f.def.values.is_empty() && !f.def.values.iter().any(|a| a == it) {
                    bad_values.push(*it);
                }
            }
            if !bad_values.is_empty() {
                out.push(Failure::new(
                    name,
                    Rule::AllowedValues,
                    format!(
                        "{name} items {} are not among {}",
                        bad_values.join(", "),
                        f.def.values.join(", ")
                    ),
                ));
            }
        }
    }
}

/// Validates `values` (every descriptive value by field name, built-ins included) against
/// `schema`.
pub fn validate(schema: &Schema, values: &BTreeMap<String, Value>) -> Report {
    let mut report = Report::default();
    for (name, v) in values {
        if v.is_null() {
            continue;
        }
        match schema.field(name) {
            Some(f) => check_value(schema, f, v, &mut report.failures),
            None => report.failures.push(Failure::new(
                name,
                Rule::UnknownField,
                format!("{name} is not a field of this collection's schema"),
            )),
        }
    }
    for f in schema.fields.values() {
        let present = values
            .get(&f.def.name)
            .is_some_and(|v| matches!(fields::coerce(f.kind, v), Ok(Some(_))));
        if present {
            continue;
        }
        if f.def.required {
            report.failures.push(Failure::new(
                &f.def.name,
                Rule::Required,
                format!("{} is required", f.def.name),
            ));
        } else if f.def.recommended {
            report.missing_recommended.push(f.def.name.clone());
        }
    }
    let from = values.get("rights_valid_from").and_then(fields::date_time);
    let until = values.get("rights_valid_until").and_then(fields::date_time);
    if let (Some(a), Some(b)) = (from, until) {
        if b <= a {
            report.failures.push(Failure::new(
                "rights_valid_until",
                Rule::Window,
                "rights_valid_until must be after rights_valid_from",
            ));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::schema::SchemaDoc;
    use serde_json::json;

    fn schema() -> Schema {
        SchemaDoc::parse(
            r#"
[[fields]]
name = "photographer_id"
type = "text"
required = true
pattern = "^P[0-9]{4}$"
[[fields]]
name = "shot_count"
type = "number"
min = 1
max = 100
[[fields]]
name = "embargo"
type = "date"
min = "2020-01-01"
[[fields]]
name = "usage"
type = "enum"
values = ["editorial", "commercial"]
[[fields]]
name = "people"
type = "list"
max_items = 2
max_length = 5
[[fields]]
name = "subject"
type = "term"
[[fields]]
name = "title"
recommended = true
max_length = 10
[[terms]]
id = "dogs"
"#,
            false,
        )
        .unwrap()
        .compile(1, Vec::new())
        .unwrap()
    }

    fn values(v: serde_json::Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn every_failure_is_reported() {
        let r = validate(
            &schema(),
            &values(json!({
                "shot_count": 0, "embargo": "2019-12-31", "usage": "ads",
                "people": ["Ann", "Bob", "Charlotte"], "subject": "cats", "colour": "red",
                "rights_valid_from": "2026-02-01", "rights_valid_until": "2026-01-01"
            })),
        );
        let got: Vec<(&str, Rule)> = r
            .failures
            .iter()
            .map(|f| (f.field.as_str(), f.rule))
            .collect();
        for want in [
            ("photographer_id", Rule::Required),
            ("shot_count", Rule::Min),
            ("embargo", Rule::Min),
            ("usage", Rule::AllowedValues),
            ("people", Rule::MaxItems),
            ("people", Rule::MaxLength),
            ("subject", Rule::Term),
            ("colour", Rule::UnknownField),
            ("rights_valid_until", Rule::Window),
        ] {
            assert!(got.contains(&want), "{want:?} missing in {got:?}");
        }
        assert_eq!(r.missing_recommended, ["title"]);
    }

    #[test]
    fn good_values_pass() {
        let r = validate(
            &schema(),
            &values(json!({
                "photographer_id": "P0042", "shot_count": "7", "usage": "editorial",
                "people": ["Ann"], "subject": "dogs", "title": "Dune"
            })),
        );
        assert!(r.ok(), "{r:?}");
        let r = validate(
            &schema(),
            &values(json!({ "photographer_id": "p42", "shot_count": "many" })),
        );
        let rules: Vec<Rule> = r.failures.iter().map(|f| f.rule).collect();
        assert_eq!(rules, [Rule::Pattern, Rule::Type]);
    }
}
