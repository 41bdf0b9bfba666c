//! The deterministic filters that listing (`GET /v1/images`) and search (`POST /v1/search`)
//! share, with the same names in both: SQL applies them to listings and filter-only searches,
//! the vector index applies them inside similarity searches.

use chrono::{DateTime, Utc};

use crate::domain::{ImageStatus, Owner, ReviewState};

/// Most tags one filter may name.
pub const MAX_FILTER_TAGS: usize = 20;

/// Which images a listing or search may return.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageFilter {
    /// Only this owner's images.
    pub owner: Option<Owner>,
    /// Uploaded at or after.
    pub uploaded_after: Option<DateTime<Utc>>,
    /// Uploaded before.
    pub uploaded_before: Option<DateTime<Utc>>,
    /// Camera make, case-insensitive.
    pub camera_make: Option<String>,
    /// Camera model, case-insensitive.
    pub camera_model: Option<String>,
    /// Every one of these tags.
    pub tags: Vec<String>,
    /// Only this status (search defaults it to `ready`).
    pub status: Option<ImageStatus>,
    /// Only this review state.
    pub review_state: Option<ReviewState>,
    /// At least this many frontal faces found by the embedder (1: a person is in the picture).
    pub faces_min: Option<u32>,
    /// At most this many frontal faces (0: no face).
    pub faces_max: Option<u32>,
    /// At least this many people, in any pose, found by the embedder's object detector (1: a
    /// person is in the picture).
    pub people_min: Option<u32>,
    /// At most this many people (0: nobody).
    pub people_max: Option<u32>,
    /// Catalog conditions: collection, terms, workflow, rights, versions, schema fields
    /// (`catalog::query`). The default leaves out withheld images and superseded versions.
    pub catalog: crate::catalog::query::CatalogFilter,
    /// Traffic and tier filters (listings only).
    pub lifecycle: LifecycleFilter,
}

/// Filters on traffic and storage tier. They apply to listings and filter-only searches
/// (SQL), not inside a similarity search.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LifecycleFilter {
    /// Not requested since this time (never requested counts).
    pub not_accessed_since: Option<DateTime<Utc>>,
    /// Fewer than this many requests in the window starting at `hits_since`.
    pub max_hits: Option<i64>,
    /// The first day of the hits window (30 days up to today).
    pub hits_since: Option<chrono::NaiveDate>,
    /// Only this tier (`standard` or `cold`).
    pub storage_tier: Option<String>,
}

impl LifecycleFilter {
    /// Whether any filter is set.
    pub fn is_set(&self) -> bool {
        self.not_accessed_since.is_some() || self.max_hits.is_some() || self.storage_tier.is_some()
    }

    /// SQL conditions over `images` (each starting with ` AND`), numbering binds with
    /// `next`; bind the values with [`LifecycleFilter::binds`] in the same order.
    pub fn sql(&self, next: &mut dyn FnMut() -> usize) -> String {
        let mut sql = String::new();
        if self.not_accessed_since.is_some() {
            sql += &format!(
                " AND (last_accessed_at IS NULL OR last_accessed_at < ${})",
                next()
            );
        }
        if self.max_hits.is_some() {
            let (day, n) = (next(), next());
            sql += &format!(
                " AND COALESCE((SELECT SUM(d.requests) FROM access_daily d                  WHERE d.image_id = images.id AND d.day >= ${day}), 0) < ${n}"
            );
        }
        if self.storage_tier.is_some() {
            sql += &format!(" AND storage_tier = ${}", next());
        }
        sql
    }

    /// The values [`LifecycleFilter::sql`] numbered, in order.
    pub fn binds(&self) -> Vec<LifecycleBind> {
        let mut v = Vec::new();
        if let Some(t) = self.not_accessed_since {
            v.push(LifecycleBind::Time(t));
        }
        if let Some(n) = self.max_hits {
            v.push(LifecycleBind::Day(self.hits_since.unwrap_or_default()));
            v.push(LifecycleBind::Int(n));
        }
        if let Some(t) = &self.storage_tier {
            v.push(LifecycleBind::Text(t.clone()));
        }
        v
    }

    /// Checks values.
    pub fn check(&self) -> Result<(), FilterError> {
        if self
            .storage_tier
            .as_deref()
            .is_some_and(|t| t != "standard" && t != "cold")
        {
            return Err(FilterError("storage_tier must be standard or cold".into()));
        }
        if self.max_hits.is_some_and(|n| n < 1) {
            return Err(FilterError("max_hits_30d must be at least 1".into()));
        }
        Ok(())
    }

    /// The filters in words.
    pub fn describe(&self) -> Vec<String> {
        let mut d = Vec::new();
        if let Some(t) = self.not_accessed_since {
            d.push(format!("not accessed since {}", t.to_rfc3339()));
        }
        if let Some(n) = self.max_hits {
            d.push(format!("fewer than {n} requests in 30 days"));
        }
        if let Some(t) = &self.storage_tier {
            d.push(format!("storage_tier = {t}"));
        }
        d
    }
}

/// A value bound by [`LifecycleFilter::sql`].
#[derive(Debug, Clone, PartialEq)]
pub enum LifecycleBind {
    /// A time.
    Time(DateTime<Utc>),
    /// A day.
    Day(chrono::NaiveDate),
    /// A count.
    Int(i64),
    /// Text.
    Text(String),
}

/// Why a filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(pub String);

impl ImageFilter {
    /// Checks the values that cannot be checked by their types alone.
    pub fn check(&self) -> Result<(), FilterError> {
        if let (Some(a), Some(b)) = (self.uploaded_after, self.uploaded_before) {
            if a >= b {
                return Err(FilterError(
                    "uploaded_after must be before uploaded_before".into(),
                ));
            }
        }
        if self.tags.len() > MAX_FILTER_TAGS
            || self
                .tags
                .iter()
                .any(|t| t.is_empty() || t.chars().count() > 100)
        {
            return Err(FilterError(format!(
                "tags must be at most {MAX_FILTER_TAGS} strings of 1 to 100 characters"
            )));
        }
        for (count, lo, hi) in self.count_ranges() {
            if let (Some(lo), Some(hi)) = (lo, hi) {
                if lo > hi {
                    return Err(FilterError(format!(
                        "{count}_min must not be above {count}_max"
                    )));
                }
            }
        }
        for (name, v) in [
            ("camera_make", &self.camera_make),
            ("camera_model", &self.camera_model),
        ] {
            if v.as_ref().is_some_and(|s| s.chars().count() > 200) {
                return Err(FilterError(format!(
                    "{name} must be at most 200 characters"
                )));
            }
        }
        self.lifecycle.check()
    }

    /// The embedder's counts the filter bounds: `(count, at least, at most)`, where `count`
    /// names the request fields (`{count}_min`, `{count}_max`) and the `image_embeddings`
    /// column holding it.
    pub fn count_ranges(&self) -> [(&'static str, Option<u32>, Option<u32>); 2] {
        [
            ("faces", self.faces_min, self.faces_max),
            ("people", self.people_min, self.people_max),
        ]
    }

    /// The filters in words, for explanations ("owner = alice", "tag beach").
    pub fn describe(&self) -> Vec<String> {
        let mut d = Vec::new();
        if let Some(o) = &self.owner {
            d.push(format!("owner = {o}"));
        }
        if let Some(t) = self.uploaded_after {
            d.push(format!("uploaded_at >= {}", t.to_rfc3339()));
        }
        if let Some(t) = self.uploaded_before {
            d.push(format!("uploaded_at < {}", t.to_rfc3339()));
        }
        if let Some(m) = &self.camera_make {
            d.push(format!("camera_make = {m}"));
        }
        if let Some(m) = &self.camera_model {
            d.push(format!("camera_model = {m}"));
        }
        for t in &self.tags {
            d.push(format!("tag {t}"));
        }
        if let Some(s) = self.status {
            d.push(format!("status = {s}"));
        }
        if let Some(r) = self.review_state {
            d.push(format!("review_state = {r}"));
        }
        for (count, lo, hi) in self.count_ranges() {
            if let Some(n) = lo {
                d.push(format!("{count} >= {n}"));
            }
            if let Some(n) = hi {
                d.push(format!("{count} <= {n}"));
            }
        }
        d.extend(self.catalog.describe());
        d.extend(self.lifecycle.describe());
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_and_words() {
        let mut f = ImageFilter {
            owner: Some(Owner::parse("alice").unwrap()),
            tags: vec!["beach".into()],
            status: Some(ImageStatus::Ready),
            ..Default::default()
        };
        assert!(f.check().is_ok());
        assert_eq!(
            f.describe(),
            [
                "owner = alice",
                "tag beach",
                "status = ready",
                "rights: inside the rights window",
                "current versions"
            ]
        );
        f.tags = vec![String::new()];
        assert!(f.check().is_err());
        f.tags.clear();
        let t = Utc::now();
        f.uploaded_after = Some(t);
        f.uploaded_before = Some(t);
        assert!(f.check().is_err());
    }
}
