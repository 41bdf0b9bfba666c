//! `[access]`, `[tiering]` and `[prices]`: how long traffic is kept, when images go cold and
//! come back, where cold objects live, and what storage and traffic cost. As read
//! (`Raw*`, documented key by key in `config/control-plane.toml`) and validated.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use flexphoto_settings::{invalid, ConfigError};
use flexphoto_storage::{RawS3, StorageConfig};
use serde::{Deserialize, Serialize};

use crate::domain::Owner;

/// `[access]` as read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAccess {
    /// Days of per-image daily traffic kept.
    pub retention_days: u32,
    /// Most items one pushed batch may carry.
    pub max_batch_items: u32,
}

impl Default for RawAccess {
    fn default() -> Self {
        Self {
            retention_days: 400,
            max_batch_items: 10_000,
        }
    }
}

/// `[tiering]` as read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTiering {
    /// Whether images move between tiers automatically.
    pub enabled: bool,
    /// Seconds between policy passes.
    pub interval_secs: u64,
    /// Images younger than this never go cold.
    pub cold_after_days: u32,
    /// An old image goes cold with fewer than this many hits …
    pub cold_max_hits: u64,
    /// … in this many days.
    pub cold_window_days: u32,
    /// A cold image comes back hot after this many hits …
    pub rewarm_hits: u64,
    /// … in this many days.
    pub rewarm_window_days: u32,
    /// Which objects move: `original` and variant names; the others stay hot.
    pub objects: Vec<String>,
    /// Most images queued to move per pass.
    pub batch: u32,
    /// Days a restored archive copy stays readable while it is copied back.
    pub restore_days: u32,
    /// Where cold objects go.
    pub cold: RawCold,
    /// Per-owner overrides.
    pub owners: Vec<RawOwnerPolicy>,
}

impl Default for RawTiering {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_secs: 3600,
            cold_after_days: 90,
            cold_max_hits: 5,
            cold_window_days: 30,
            rewarm_hits: 20,
            rewarm_window_days: 7,
            objects: vec!["original".into(), "full".into()],
            batch: 200,
            restore_days: 7,
            cold: RawCold::default(),
            owners: Vec::new(),
        }
    }
}

/// `[tiering.cold]` as read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCold {
    /// `auto`, `storage-class`, `local` or `s3`.
    pub kind: String,
    /// S3 storage class for `storage-class`, and the class a cold store is priced as.
    pub storage_class: String,
    /// Directory for `local`; empty: `{data_dir}/cold`.
    pub dir: String,
    /// Bucket for `s3`.
    pub s3: RawS3,
}

impl Default for RawCold {
    fn default() -> Self {
        Self {
            kind: "auto".into(),
            storage_class: "STANDARD_IA".into(),
            dir: String::new(),
            s3: RawS3::default(),
        }
    }
}

/// One `[[tiering.owners]]` entry: the keys it sets replace the defaults for that owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOwnerPolicy {
    /// The owner.
    pub owner: String,
    /// Tiering on or off for this owner.
    pub enabled: Option<bool>,
    /// See `[tiering]`.
    pub cold_after_days: Option<u32>,
    /// See `[tiering]`.
    pub cold_max_hits: Option<u64>,
    /// See `[tiering]`.
    pub cold_window_days: Option<u32>,
    /// See `[tiering]`.
    pub rewarm_hits: Option<u64>,
    /// See `[tiering]`.
    pub rewarm_window_days: Option<u32>,
}

/// When one owner's images change tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Policy {
    /// Whether images move at all.
    pub enabled: bool,
    /// Minimum age, days.
    pub cold_after_days: u32,
    /// Fewer hits than this in the window …
    pub cold_max_hits: u64,
    /// … of this many days sends an old image cold.
    pub cold_window_days: u32,
    /// This many hits in the window …
    pub rewarm_hits: u64,
    /// … of this many days brings a cold image back.
    pub rewarm_window_days: u32,
}

/// Where cold objects go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColdTarget {
    /// The same bucket and key, another S3 storage class.
    StorageClass(String),
    /// Another store (a second directory, another bucket or endpoint).
    Store(StorageConfig),
}

/// Validated `[tiering]`.
#[derive(Debug, Clone)]
pub struct TieringConfig {
    /// Automatic moves on or off.
    pub enabled: bool,
    /// Between passes.
    pub interval: Duration,
    /// The policy of owners without an override.
    pub default_policy: Policy,
    /// Overrides by owner.
    pub owners: BTreeMap<Owner, Policy>,
    /// Object kinds that move.
    pub objects: Vec<String>,
    /// Images per pass.
    pub batch: u32,
    /// Restored copies' lifetime, days.
    pub restore_days: u32,
    /// Where cold objects go.
    pub cold: ColdTarget,
    /// The S3 storage class cold objects are priced as.
    pub cold_class: String,
}

impl TieringConfig {
    /// The policy for `owner`.
    pub fn policy_for(&self, owner: &Owner) -> Policy {
        self.owners
            .get(owner)
            .copied()
            .unwrap_or(self.default_policy)
    }
}

/// Storage classes that must be restored before they are read.
pub fn is_archive_class(class: &str) -> bool {
    matches!(class, "GLACIER" | "DEEP_ARCHIVE")
}

const CLASSES: [&str; 6] = [
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "GLACIER",
    "DEEP_ARCHIVE",
];

impl RawTiering {
    /// Validates against the main store (`storage_is_s3`) and the data directory.
    pub fn validate(
        &self,
        storage_is_s3: bool,
        data_dir: &Path,
        variant_names: &[String],
    ) -> Result<TieringConfig, ConfigError> {
        if !(60..=7 * 24 * 3600).contains(&self.interval_secs) && self.interval_secs != 1 {
            return Err(invalid(
                "tiering.interval_secs",
                "must be between 60 and 604800 (1 is accepted for tests)",
            ));
        }
        if self.cold_window_days == 0 || self.rewarm_window_days == 0 {
            return Err(invalid(
                "tiering.cold_window_days",
                "windows must be at least one day",
            ));
        }
        if self.rewarm_hits <= self.cold_max_hits {
            return Err(invalid(
                "tiering.rewarm_hits",
                "must be above cold_max_hits, or images would move back and forth",
            ));
        }
        for o in &self.objects {
            if o != "original" && !variant_names.contains(o) {
                return Err(invalid(
                    "tiering.objects",
                    format!("{o:?} is neither \"original\" nor a configured variant"),
                ));
            }
        }
        if !(1..=10_000).contains(&self.batch) {
            return Err(invalid("tiering.batch", "must be between 1 and 10000"));
        }
        if !(1..=365).contains(&self.restore_days) {
            return Err(invalid("tiering.restore_days", "must be between 1 and 365"));
        }
        let class = self.cold.storage_class.to_ascii_uppercase();
        if !CLASSES.contains(&class.as_str()) {
            return Err(invalid(
                "tiering.cold.storage_class",
                format!("must be one of {}", CLASSES.join(", ")),
            ));
        }
        let cold = match self.cold.kind.as_str() {
            "auto" if storage_is_s3 => ColdTarget::StorageClass(class.clone()),
            "auto" | "local" => ColdTarget::Store(StorageConfig::Local {
                dir: if self.cold.dir.is_empty() {
                    data_dir.join("cold")
                } else {
                    self.cold.dir.clone().into()
                },
            }),
            "storage-class" => {
                if !storage_is_s3 {
                    return Err(invalid(
                        "tiering.cold.kind",
                        "\"storage-class\" needs storage.kind = \"s3\"",
                    ));
                }
                ColdTarget::StorageClass(class.clone())
            }
            "s3" => ColdTarget::Store(
                StorageConfig::from_parts("s3", Path::new(""), &self.cold.s3)
                    .map_err(|e| invalid(&format!("tiering.cold.{}", e.key), e.reason))?,
            ),
            other => {
                return Err(invalid(
                    "tiering.cold.kind",
                    format!("must be auto, storage-class, local or s3, not {other:?}"),
                ))
            }
        };
        let default_policy = Policy {
            enabled: self.enabled,
            cold_after_days: self.cold_after_days,
            cold_max_hits: self.cold_max_hits,
            cold_window_days: self.cold_window_days,
            rewarm_hits: self.rewarm_hits,
            rewarm_window_days: self.rewarm_window_days,
        };
        let mut owners = BTreeMap::new();
        for o in &self.owners {
            let owner = Owner::parse(&o.owner)
                .map_err(|e| invalid("tiering.owners.owner", e.to_string()))?;
            let p = Policy {
                enabled: o.enabled.unwrap_or(default_policy.enabled),
                cold_after_days: o.cold_after_days.unwrap_or(default_policy.cold_after_days),
                cold_max_hits: o.cold_max_hits.unwrap_or(default_policy.cold_max_hits),
                cold_window_days: o
                    .cold_window_days
                    .unwrap_or(default_policy.cold_window_days)
                    .max(1),
                rewarm_hits: o.rewarm_hits.unwrap_or(default_policy.rewarm_hits),
                rewarm_window_days: o
                    .rewarm_window_days
                    .unwrap_or(default_policy.rewarm_window_days)
                    .max(1),
            };
            if p.rewarm_hits <= p.cold_max_hits {
                return Err(invalid(
                    "tiering.owners.rewarm_hits",
                    format!("for owner {}: must be above cold_max_hits", o.owner),
                ));
            }
            if owners.insert(owner, p).is_some() {
                return Err(invalid(
                    "tiering.owners.owner",
                    format!("{} is listed twice", o.owner),
                ));
            }
        }
        Ok(TieringConfig {
            enabled: self.enabled,
            interval: Duration::from_secs(self.interval_secs),
            default_policy,
            owners,
            objects: self.objects.clone(),
            batch: self.batch,
            restore_days: self.restore_days,
            cold,
            cold_class: class,
        })
    }
}

/// `[prices]`: list prices per unit, in `currency`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Prices {
    /// S3 Standard, per GB-month.
    pub standard_gb_month: f64,
    /// S3 Standard-IA (and One Zone-IA, Intelligent-Tiering priced alike here), per GB-month.
    pub standard_ia_gb_month: f64,
    /// S3 Glacier Instant Retrieval, per GB-month.
    pub glacier_ir_gb_month: f64,
    /// S3 Glacier Flexible Retrieval, per GB-month.
    pub glacier_gb_month: f64,
    /// S3 Glacier Deep Archive, per GB-month.
    pub deep_archive_gb_month: f64,
    /// PUT, COPY, POST, LIST on Standard, per 1,000 requests.
    pub put_per_1000: f64,
    /// GET on Standard, per 1,000 requests.
    pub get_per_1000: f64,
    /// PUT and COPY into an infrequent-access or archive class, per 1,000 requests.
    pub cold_put_per_1000: f64,
    /// GET on Standard-IA, per 1,000 requests.
    pub cold_get_per_1000: f64,
    /// Retrieval from Standard-IA, per GB read.
    pub cold_retrieval_gb: f64,
    /// Data transfer out to the internet, per GB.
    pub egress_gb: f64,
    /// CDN data transfer out, per GB.
    pub cdn_egress_gb: f64,
    /// CDN HTTPS requests, per 10,000.
    pub cdn_requests_per_10000: f64,
    /// Transfer from the edges to the CDN, per GB (0 when the CDN fetches from the cloud
    /// it runs in for free, as CloudFront does from AWS origins).
    pub origin_to_cdn_gb: f64,
    /// Whether a CDN sits in front of the edges (the actual bill).
    pub cdn: bool,
    /// The CDN's hit ratio, 0 to 1, when `cdn` is on.
    pub cdn_hit_ratio: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Self {
            standard_gb_month: 0.023,
            standard_ia_gb_month: 0.0125,
            glacier_ir_gb_month: 0.004,
            glacier_gb_month: 0.0036,
            deep_archive_gb_month: 0.00099,
            put_per_1000: 0.005,
            get_per_1000: 0.0004,
            cold_put_per_1000: 0.01,
            cold_get_per_1000: 0.001,
            cold_retrieval_gb: 0.01,
            egress_gb: 0.09,
            cdn_egress_gb: 0.085,
            cdn_requests_per_10000: 0.01,
            origin_to_cdn_gb: 0.0,
            cdn: false,
            cdn_hit_ratio: 0.9,
        }
    }
}

impl Prices {
    /// Checks that every price is a finite non-negative number and the ratio a fraction.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let all = [
            ("standard_gb_month", self.standard_gb_month),
            ("standard_ia_gb_month", self.standard_ia_gb_month),
            ("glacier_ir_gb_month", self.glacier_ir_gb_month),
            ("glacier_gb_month", self.glacier_gb_month),
            ("deep_archive_gb_month", self.deep_archive_gb_month),
            ("put_per_1000", self.put_per_1000),
            ("get_per_1000", self.get_per_1000),
            ("cold_put_per_1000", self.cold_put_per_1000),
            ("cold_get_per_1000", self.cold_get_per_1000),
            ("cold_retrieval_gb", self.cold_retrieval_gb),
            ("egress_gb", self.egress_gb),
            ("cdn_egress_gb", self.cdn_egress_gb),
            ("cdn_requests_per_10000", self.cdn_requests_per_10000),
            ("origin_to_cdn_gb", self.origin_to_cdn_gb),
        ];
        for (k, v) in all {
            if !v.is_finite() || v < 0.0 {
                return Err(invalid(&format!("prices.{k}"), "must be a number >= 0"));
            }
        }
        if !(0.0..1.0).contains(&self.cdn_hit_ratio) {
            return Err(invalid(
                "prices.cdn_hit_ratio",
                "must be at least 0 and below 1",
            ));
        }
        Ok(())
    }

    /// Storage price per GB-month of an S3 storage class (`STANDARD` and unknown classes at
    /// the Standard price).
    pub fn storage_gb_month(&self, class: &str) -> f64 {
        match class {
            "STANDARD_IA" | "ONEZONE_IA" | "INTELLIGENT_TIERING" => self.standard_ia_gb_month,
            "GLACIER_IR" => self.glacier_ir_gb_month,
            "GLACIER" => self.glacier_gb_month,
            "DEEP_ARCHIVE" => self.deep_archive_gb_month,
            _ => self.standard_gb_month,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variants() -> Vec<String> {
        vec!["thumb".into(), "medium".into(), "full".into()]
    }

    #[test]
    fn defaults_follow_the_store() {
        let t = RawTiering::default()
            .validate(true, Path::new("/d"), &variants())
            .unwrap();
        assert_eq!(t.cold, ColdTarget::StorageClass("STANDARD_IA".into()));
        let t = RawTiering::default()
            .validate(false, Path::new("/d"), &variants())
            .unwrap();
        assert_eq!(
            t.cold,
            ColdTarget::Store(StorageConfig::Local {
                dir: "/d/cold".into()
            })
        );
        assert_eq!(t.default_policy.cold_after_days, 90);
    }

    #[test]
    fn bad_values_name_their_key() {
        let r = RawTiering {
            objects: vec!["poster".into()],
            ..RawTiering::default()
        };
        let e = r.validate(false, Path::new("/d"), &variants()).unwrap_err();
        assert_eq!(e.key(), Some("tiering.objects"));
        let r = RawTiering {
            rewarm_hits: 1,
            ..RawTiering::default()
        };
        let e = r.validate(false, Path::new("/d"), &variants()).unwrap_err();
        assert_eq!(e.key(), Some("tiering.rewarm_hits"));
        let mut r = RawTiering::default();
        r.cold.kind = "storage-class".into();
        let e = r.validate(false, Path::new("/d"), &variants()).unwrap_err();
        assert_eq!(e.key(), Some("tiering.cold.kind"));
    }

    #[test]
    fn owners_override_only_what_they_set() {
        let mut r = RawTiering::default();
        r.owners.push(RawOwnerPolicy {
            owner: "archive".into(),
            enabled: None,
            cold_after_days: Some(7),
            cold_max_hits: None,
            cold_window_days: None,
            rewarm_hits: None,
            rewarm_window_days: None,
        });
        let t = r.validate(false, Path::new("/d"), &variants()).unwrap();
        let p = t.policy_for(&Owner::parse("archive").unwrap());
        assert_eq!((p.cold_after_days, p.cold_max_hits), (7, 5));
        assert_eq!(
            t.policy_for(&Owner::parse("x").unwrap()).cold_after_days,
            90
        );
    }
}
