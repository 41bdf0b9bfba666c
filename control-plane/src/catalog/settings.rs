//! `[catalog]` configuration: the rights scheduler's period, how long before a window's end
//! images are listed for review, where the deny-list the edges read lives, and the model's
//! review reasons.

use std::time::Duration;

use flexphoto_settings::{invalid, ConfigError};
use serde::{Deserialize, Serialize};

/// `[catalog]` as read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCatalog {
    /// How often the rights scheduler applies windows and publishes the withheld list,
    /// seconds (0: off).
    pub rights_check_secs: u64,
    /// Images whose rights end within this many days are listed for review (0: off).
    pub rights_ending_days: u32,
    /// Seconds between withholding an image and purging it from the edges and the CDN, so
    /// that every edge has read the withheld list first (at least the edges'
    /// `withheld.poll_secs`).
    pub purge_delay_secs: u64,
    /// Object key of the withheld list in the bucket (the edges' `withheld.list_key`).
    pub withheld_list_key: String,
    /// Images re-validated per batch after a schema change.
    pub revalidate_batch: u32,
    /// How often the re-validation pass looks for images validated against an older schema,
    /// seconds (0: off).
    pub revalidate_secs: u64,
    /// An image whose classifier's best guess scores under this goes to review (0: off).
    pub low_confidence_below: f32,
    /// Model-suggested tags put to review for confirmation per image (0: off).
    pub suggest_tags: u32,
    /// Smallest score of a suggested tag.
    pub suggest_min_weight: f32,
}

impl Default for RawCatalog {
    fn default() -> Self {
        Self {
            rights_check_secs: 15,
            rights_ending_days: 14,
            purge_delay_secs: 10,
            withheld_list_key: "_flexphoto/withheld.json".into(),
            revalidate_batch: 500,
            revalidate_secs: 10,
            low_confidence_below: 0.0,
            suggest_tags: 0,
            suggest_min_weight: 0.2,
        }
    }
}

/// Validated `[catalog]`.
#[derive(Debug, Clone)]
pub struct CatalogConfig {
    /// Rights scheduler period; `None`: off.
    pub rights_check: Option<Duration>,
    /// Days ahead rights endings are listed for review (0: off).
    pub rights_ending_days: u32,
    /// Delay before purging a withheld image.
    pub purge_delay: Duration,
    /// Deny-list object key.
    pub withheld_list_key: String,
    /// Re-validation batch size.
    pub revalidate_batch: u32,
    /// Re-validation period; `None`: off.
    pub revalidate_every: Option<Duration>,
    /// Low-confidence threshold (0: off).
    pub low_confidence_below: f32,
    /// Suggested tags per image (0: off).
    pub suggest_tags: usize,
    /// Smallest suggested tag score.
    pub suggest_min_weight: f32,
}

impl RawCatalog {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<CatalogConfig, ConfigError> {
        if flexphoto_url::ImageKey::parse(&self.withheld_list_key).is_err() {
            return Err(invalid(
                "catalog.withheld_list_key",
                "must be an object key such as _flexphoto/withheld.json",
            ));
        }
        if !(1..=100_000).contains(&self.revalidate_batch) {
            return Err(invalid(
                "catalog.revalidate_batch",
                "must be between 1 and 100000",
            ));
        }
        if !(0.0..=1.0).contains(&self.low_confidence_below) {
            return Err(invalid(
                "catalog.low_confidence_below",
                "must be between 0 (off) and 1",
            ));
        }
        if !(0.0..=1.0).contains(&self.suggest_min_weight) {
            return Err(invalid(
                "catalog.suggest_min_weight",
                "must be between 0 and 1",
            ));
        }
        if self.suggest_tags > 20 {
            return Err(invalid("catalog.suggest_tags", "must be at most 20"));
        }
        if self.rights_ending_days > 3650 {
            return Err(invalid(
                "catalog.rights_ending_days",
                "must be at most 3650",
            ));
        }
        let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        Ok(CatalogConfig {
            rights_check: secs(self.rights_check_secs),
            rights_ending_days: self.rights_ending_days,
            purge_delay: Duration::from_secs(self.purge_delay_secs),
            withheld_list_key: self.withheld_list_key.clone(),
            revalidate_batch: self.revalidate_batch,
            revalidate_every: secs(self.revalidate_secs),
            low_confidence_below: self.low_confidence_below,
            suggest_tags: self.suggest_tags as usize,
            suggest_min_weight: self.suggest_min_weight,
        })
    }
}
