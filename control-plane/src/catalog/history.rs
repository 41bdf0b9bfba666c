//! Correction history that is never silent: each recorded change reads as a diff (what was
//! added and removed, or the value before and after, in one line for people), and any past
//! version can be restored. A restore computes what every field was right after a change and
//! applies that as a new change; history is never rewritten.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::fields::short;

/// How a field changed.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Diff {
    /// `set` (no value before), `cleared` (no value after), `changed`, or `list` (items
    /// added and removed).
    pub kind: &'static str,
    /// Items added (lists).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub added: Vec<Value>,
    /// Items removed (lists).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub removed: Vec<Value>,
    /// One line for people: `title: "Dune" → "Dune at dusk"`, `keywords: +beach −sand`.
    pub summary: String,
}

fn present(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

/// The diff of one field's change.
pub fn diff(field: &str, before: Option<&Value>, after: Option<&Value>) -> Diff {
    let (b, a) = (present(before), present(after));
    if let (Some(Value::Array(b)), Some(Value::Array(a))) = (b, a) {
        let added: Vec<Value> = a.iter().filter(|x| !b.contains(x)).cloned().collect();
        let removed: Vec<Value> = b.iter().filter(|x| !a.contains(x)).cloned().collect();
        let mut parts: Vec<String> = added.iter().map(|v| format!("+{}", plain(v))).collect();
        parts.extend(removed.iter().map(|v| format!("−{}", plain(v))));
        if parts.is_empty() {
            parts.push("reordered".into());
        }
        return Diff {
            kind: "list",
            added,
            removed,
            summary: format!("{field}: {}", parts.join(" ")),
        };
    }
    match (b, a) {
        (None, Some(a)) => Diff {
            kind: "set",
            added: Vec::new(),
            removed: Vec::new(),
            summary: format!("{field}: set to {}", short(a)),
        },
        (Some(b), None) => Diff {
            kind: "cleared",
            added: Vec::new(),
            removed: Vec::new(),
            summary: format!("{field}: cleared (was {})", short(b)),
        },
        (Some(b), Some(a)) => Diff {
            kind: "changed",
            added: Vec::new(),
            removed: Vec::new(),
            summary: format!("{field}: {} → {}", short(b), short(a)),
        },
        (None, None) => Diff {
            kind: "changed",
            added: Vec::new(),
            removed: Vec::new(),
            summary: format!("{field}: unchanged"),
        },
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One recorded change, as much as a restore needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Sequence number.
    pub id: i64,
    /// The field (history names; `tags` is the old name of `keywords`).
    pub field: String,
    /// The value before the change.
    pub old: Option<Value>,
}

/// The descriptive field a history field name stands for.
pub fn field_name(history_field: &str) -> &str {
    match history_field {
        "tags" => "keywords",
        other => other,
    }
}

/// What each field that changed after step `target` was right after it: `Some(value)`, or
/// `None` when it had no value then. `restorable` picks the fields a restore may set (not the
/// workflow, which moves only by its transitions).
pub fn values_as_of(
    steps: &[Step],
    target: i64,
    restorable: impl Fn(&str) -> bool,
) -> BTreeMap<String, Option<Value>> {
    let mut out = BTreeMap::new();
    for s in steps.iter().filter(|s| s.id > target) {
        let name = field_name(&s.field);
        if !restorable(name) || out.contains_key(name) {
            continue;
        }
        // The first change after the target saw the value the target left.
        out.insert(name.to_owned(), present(s.old.as_ref()).cloned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diffs_read_well() {
        let d = diff(
            "keywords",
            Some(&json!(["a", "b"])),
            Some(&json!(["b", "c"])),
        );
        assert_eq!(d.summary, "keywords: +c −a");
        assert_eq!(d.added, [json!("c")]);
        assert_eq!(
            diff("title", None, Some(&json!("Dune"))).summary,
            "title: set to \"Dune\""
        );
        assert_eq!(
            diff("title", Some(&json!("Dune")), Some(&Value::Null)).kind,
            "cleared"
        );
        assert_eq!(
            diff("shots", Some(&json!(3)), Some(&json!(4))).summary,
            "shots: 3 → 4"
        );
    }

    #[test]
    fn values_as_of_a_past_change() {
        let st = |id, f: &str, old: Option<Value>| Step {
            id,
            field: f.into(),
            old,
        };
        // 1: title set; 2: title changed; 3: credit set; 4: workflow; 5: title cleared.
        let steps = vec![
            st(1, "title", None),
            st(2, "title", Some(json!("A"))),
            st(3, "credit", None),
            st(4, "workflow_state", Some(json!("draft"))),
            st(5, "title", Some(json!("B"))),
            st(6, "tags", Some(json!(["x"]))),
        ];
        let v = values_as_of(&steps, 1, |f| f != "workflow_state");
        assert_eq!(v["title"], Some(json!("A")));
        assert_eq!(v["credit"], None);
        assert_eq!(v["keywords"], Some(json!(["x"])));
        assert!(!v.contains_key("workflow_state"));
        let v = values_as_of(&steps, 5, |_| true);
        assert_eq!(v.len(), 1);
    }
}
