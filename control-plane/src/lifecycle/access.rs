//! Access statistics pushed by the edges. An edge counts requests and bytes per source
//! object key (every size and format of one object rolls up to its key), cache hits
//! included, and pushes a batch every interval with an id of its own making; a retried push
//! carries the same id and is counted once. Keys map to images through `image_objects`
//! (originals and variants alike), so traffic to a variant counts for its image.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::lifecycle::KeyTraffic;

/// One push from an edge.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessBatch {
    /// Unique per batch and kept on retries (1 to 100 of `A-Z a-z 0-9 - _ . :`).
    pub batch_id: String,
    /// The edge's name (stable across its restarts).
    pub edge: String,
    /// Where the edge serves, for operators (optional).
    #[serde(default)]
    pub edge_url: Option<String>,
    /// Start of the counting period.
    pub period_start: DateTime<Utc>,
    /// End of the counting period; its UTC day is the day the traffic counts for.
    pub period_end: DateTime<Utc>,
    /// Traffic per object key.
    pub items: Vec<AccessItem>,
    /// Requests the edge counted but could not keep for a push (its buffer overflowed).
    #[serde(default)]
    pub dropped: u64,
}

/// Traffic to one object key in a batch.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessItem {
    /// The object key (as in `/img/{key}`).
    pub key: String,
    /// Requests answered, all sizes and formats.
    pub requests: u64,
    /// Body bytes sent.
    pub bytes: u64,
    /// Requests answered from the edge's caches.
    #[serde(default)]
    pub hits: u64,
}

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BatchError(pub String);

/// Largest count one item may claim (a bound on what one batch can do to the statistics).
const MAX_COUNT: u64 = 1 << 40;

impl AccessBatch {
    /// Checks the batch against `max_items` and `now` (a period may not end in the future,
    /// give or take five minutes of clock skew) and returns its items.
    pub fn check(
        &self,
        max_items: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<KeyTraffic>, BatchError> {
        let bad = |m: String| Err(BatchError(m));
        if self.batch_id.is_empty()
            || self.batch_id.len() > 100
            || !self
                .batch_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        {
            return bad("batch_id must be 1 to 100 of A-Z a-z 0-9 - _ . :".into());
        }
        if self.edge.is_empty() || self.edge.chars().count() > 200 {
            return bad("edge must be 1 to 200 characters".into());
        }
        if self.edge_url.as_ref().is_some_and(|u| u.len() > 500) {
            return bad("edge_url must be at most 500 characters".into());
        }
        if self.period_end < self.period_start {
            return bad("period_end is before period_start".into());
        }
        if self.period_end > now + chrono::Duration::minutes(5) {
            return bad(format!(
                "period_end {} is in the future (the control plane's time is {now})",
                self.period_end
            ));
        }
        if self.items.len() > max_items {
            return bad(format!(
                "the batch has {} items, over the limit of {max_items} (access.max_batch_items); push more often",
                self.items.len()
            ));
        }
        let mut out = Vec::with_capacity(self.items.len());
        for (i, it) in self.items.iter().enumerate() {
            if it.key.is_empty() || it.key.len() > 1024 {
                return bad(format!("items[{i}].key must be 1 to 1024 bytes"));
            }
            if it.requests > MAX_COUNT || it.bytes > MAX_COUNT || it.hits > it.requests {
                return bad(format!(
                    "items[{i}]: counts must be at most 2^40 and hits at most requests"
                ));
            }
            out.push(KeyTraffic {
                key: it.key.clone(),
                requests: it.requests as i64,
                bytes: it.bytes as i64,
                edge_hits: it.hits as i64,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(items: Vec<AccessItem>) -> AccessBatch {
        let now = Utc::now();
        AccessBatch {
            batch_id: "edge-1:42".into(),
            edge: "edge-1".into(),
            edge_url: None,
            period_start: now - chrono::Duration::minutes(1),
            period_end: now,
            items,
            dropped: 0,
        }
    }

    #[test]
    fn checks_ids_periods_and_counts() {
        let ok = batch(vec![AccessItem {
            key: "a.jpg".into(),
            requests: 3,
            bytes: 100,
            hits: 2,
        }]);
        assert_eq!(ok.check(10, Utc::now()).unwrap().len(), 1);
        let mut b = ok.clone();
        b.batch_id = "bad id".into();
        assert!(b.check(10, Utc::now()).unwrap_err().0.contains("batch_id"));
        let mut b = ok.clone();
        b.period_end = Utc::now() + chrono::Duration::hours(1);
        assert!(b.check(10, Utc::now()).unwrap_err().0.contains("future"));
        let mut b = ok.clone();
        b.items[0].hits = 4;
        assert!(b.check(10, Utc::now()).unwrap_err().0.contains("hits"));
        assert!(ok
            .check(0, Utc::now())
            .unwrap_err()
            .0
            .contains("max_batch_items"));
    }
}
