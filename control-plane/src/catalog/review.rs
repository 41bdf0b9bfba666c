//! Why an image is in the review queue. Each reason has a kind, details (what failed, which
//! image it resembles and how closely, when its rights end, which tags the model suggests),
//! a priority, and a one-line summary for people. Reasons stay open until a decision (or an
//! acknowledgement) resolves them; the queue is every image with an open reason.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::domain::ReasonKind;

/// A reason to add to an image.
#[derive(Debug, Clone, PartialEq)]
pub struct NewReason {
    /// Its kind.
    pub kind: ReasonKind,
    /// Details (JSON object).
    pub detail: Value,
    /// Higher first in the queue's priority order.
    pub priority: i32,
}

/// Whether a reason of this kind holds a draft image for a reviewer's decision (it moves to
/// `in_review`); the others are informational (the image stays where it is, listed).
pub fn blocks(kind: ReasonKind) -> bool {
    matches!(
        kind,
        ReasonKind::Validation
            | ReasonKind::NearDuplicate
            | ReasonKind::LowConfidence
            | ReasonKind::Submitted
            | ReasonKind::Legacy
    )
}

impl NewReason {
    /// Validation failures against schema version `version`.
    pub fn validation(failures: &[super::validate::Failure], version: i64) -> Self {
        Self {
            kind: ReasonKind::Validation,
            detail: json!({ "failures": failures, "schema_version": version }),
            priority: 60,
        }
    }

    /// A near-duplicate of `other`.
    pub fn near_duplicate(other: uuid::Uuid, method: &str, distance: f64) -> Self {
        Self {
            kind: ReasonKind::NearDuplicate,
            detail: json!({ "other": other, "method": method, "distance": distance }),
            // Closer pairs first.
            priority: 50 + (10.0 - distance.min(10.0)).round() as i32,
        }
    }

    /// The classifier's best guess scored under the threshold.
    pub fn low_confidence(concept: &str, weight: f32, threshold: f32) -> Self {
        Self {
            kind: ReasonKind::LowConfidence,
            detail: json!({ "top_concept": concept, "weight": weight, "threshold": threshold }),
            priority: 30,
        }
    }

    /// Rights end at `until`, `days_left` from now.
    pub fn rights_ending(until: DateTime<Utc>, days_left: i64) -> Self {
        Self {
            kind: ReasonKind::RightsEnding,
            detail: json!({ "rights_valid_until": until, "days_left": days_left }),
            priority: 70 + (30 - days_left.clamp(0, 30)) as i32,
        }
    }

    /// Tags the model suggests.
    pub fn suggested_tags(tags: &[String]) -> Self {
        Self {
            kind: ReasonKind::SuggestedTags,
            detail: json!({ "tags": tags }),
            priority: 20,
        }
    }

    /// Submitted by someone, with their note.
    pub fn submitted(by: &str, note: Option<&str>) -> Self {
        Self {
            kind: ReasonKind::Submitted,
            detail: json!({ "by": by, "note": note }),
            priority: 40,
        }
    }
}

/// One open (or resolved) reason as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReasonView {
    /// Its id.
    pub id: i64,
    /// `validation`, `near_duplicate`, `low_confidence`, `rights_ending`, `suggested_tags`,
    /// `submitted` or `legacy`.
    pub kind: String,
    /// One line for people.
    pub summary: String,
    /// Details (kind-specific JSON: failures; other, method, distance; top_concept, weight;
    /// rights_valid_until, days_left; tags; by, note).
    #[schema(value_type = Object)]
    pub detail: Value,
    /// Higher first in priority order.
    pub priority: i32,
    /// Since when.
    pub since: DateTime<Utc>,
}

/// One line saying what a reason means.
pub fn summary(kind: ReasonKind, d: &Value) -> String {
    match kind {
        ReasonKind::Validation => {
            let f: Vec<String> = d["failures"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|f| {
                            format!(
                                "{} {}",
                                f["field"].as_str().unwrap_or("?"),
                                f["rule"].as_str().unwrap_or("?")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "fails {} rule(s) of schema version {}: {}",
                f.len(),
                d["schema_version"],
                f.join("; ")
            )
        }
        ReasonKind::NearDuplicate => format!(
            "near-duplicate of {} ({} distance {:.3})",
            d["other"].as_str().unwrap_or("?"),
            d["method"].as_str().unwrap_or("?"),
            d["distance"].as_f64().unwrap_or(0.0)
        ),
        ReasonKind::LowConfidence => format!(
            "low classifier confidence: best guess {} at {:.2} (threshold {:.2})",
            d["top_concept"].as_str().unwrap_or("?"),
            d["weight"].as_f64().unwrap_or(0.0),
            d["threshold"].as_f64().unwrap_or(0.0)
        ),
        ReasonKind::RightsEnding => format!(
            "rights end {} ({} day(s) left)",
            d["rights_valid_until"].as_str().unwrap_or("?"),
            d["days_left"]
        ),
        ReasonKind::SuggestedTags => format!(
            "model-suggested tags awaiting confirmation: {}",
            d["tags"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        ),
        ReasonKind::Submitted => match d["note"].as_str() {
            Some(n) => format!(
                "submitted for review by {}: {n}",
                d["by"].as_str().unwrap_or("?")
            ),
            None => format!(
                "submitted for review by {}",
                d["by"].as_str().unwrap_or("?")
            ),
        },
        ReasonKind::Legacy => d["note"].as_str().unwrap_or("routed to review").to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_say_why() {
        let r = NewReason::near_duplicate(uuid::Uuid::nil(), "phash", 3.0);
        assert_eq!(r.priority, 57);
        assert!(summary(r.kind, &r.detail).contains("phash distance 3.000"));
        let r = NewReason::rights_ending(Utc::now(), 2);
        assert!(r.priority > NewReason::rights_ending(Utc::now(), 20).priority);
        let r = NewReason::suggested_tags(&["dog".into(), "beach".into()]);
        assert!(summary(r.kind, &r.detail).ends_with("dog, beach"));
        assert!(blocks(ReasonKind::Validation) && !blocks(ReasonKind::RightsEnding));
    }
}
