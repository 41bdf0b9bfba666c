//! Private images: which images only signed, expiring URLs may serve.
//!
//! An image is private when its row says so (chosen at upload, `[privacy] default_private`
//! otherwise, changed later through `PATCH /v1/images/{id}` with a history entry) or when its
//! owner is listed in `[privacy] private_owners`. Every edge URL the API issues for a private
//! image is signed and carries `exp`; the object keys of private images are published with
//! the withheld list (`signed_only`), so the edges refuse unsigned requests for them,
//! unsigned presets included.

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::domain::Owner;

/// `[privacy]`: which images are private and how long their URLs work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacySettings {
    /// New uploads are private unless the upload asks otherwise.
    pub default_private: bool,
    /// Owners whose every image is private, whatever the image says.
    pub private_owners: Vec<String>,
    /// How long an issued URL of a private image works, seconds.
    pub url_ttl_secs: u64,
}

impl Default for PrivacySettings {
    fn default() -> Self {
        Self {
            default_private: false,
            private_owners: Vec::new(),
            url_ttl_secs: 3600,
        }
    }
}

/// Shortest and longest lifetime of a private image's URL, seconds.
const TTL_RANGE: std::ops::RangeInclusive<u64> = 60..=7 * 86_400;

impl PrivacySettings {
    /// Checks values; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !TTL_RANGE.contains(&self.url_ttl_secs) {
            return Err(ConfigError::Invalid {
                key: "privacy.url_ttl_secs".into(),
                reason: format!(
                    "must be between {} and {}",
                    TTL_RANGE.start(),
                    TTL_RANGE.end()
                ),
            });
        }
        for o in &self.private_owners {
            Owner::parse(o).map_err(|e| ConfigError::Invalid {
                key: "privacy.private_owners".into(),
                reason: format!("{o:?}: {e}"),
            })?;
        }
        Ok(())
    }

    /// Whether a new upload is private: what the upload asked, else the default.
    pub fn initial(&self, requested: Option<bool>) -> bool {
        requested.unwrap_or(self.default_private)
    }

    /// Whether `owner`'s policy makes every one of its images private.
    pub fn owner_private(&self, owner: &Owner) -> bool {
        self.private_owners.iter().any(|o| o == owner.as_str())
    }

    /// Whether an image with this flag and owner is private.
    pub fn is_private(&self, flagged: bool, owner: &Owner) -> bool {
        flagged || self.owner_private(owner)
    }

    /// The `exp` of a private image's URL issued at `now` (Unix seconds): at least
    /// `url_ttl_secs` ahead, rounded up to a step of a quarter of it (at most ten minutes) so
    /// that documents read close together name the same URLs and a CDN can share them.
    pub fn url_expiry(&self, now: i64) -> i64 {
        let ttl = i64::try_from(self.url_ttl_secs).unwrap_or(i64::MAX / 4);
        let step = (ttl / 4).clamp(1, 600);
        let at = now.saturating_add(ttl);
        at.saturating_add(step - 1) / step * step
    }
}

/// The earlier of two optional expiries.
pub fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(s: &str) -> Owner {
        Owner::parse(s).unwrap()
    }

    #[test]
    fn the_image_or_its_owner_makes_it_private() {
        let s = PrivacySettings {
            private_owners: vec!["vault".into()],
            ..Default::default()
        };
        assert!(!s.is_private(false, &owner("alice")));
        assert!(s.is_private(true, &owner("alice")));
        assert!(s.is_private(false, &owner("vault")));
        assert!(!s.initial(None));
        assert!(s.initial(Some(true)));
        let strict = PrivacySettings {
            default_private: true,
            ..Default::default()
        };
        assert!(strict.initial(None));
        assert!(!strict.initial(Some(false)));
    }

    #[test]
    fn expiries_are_at_least_the_ttl_ahead_and_stable_within_a_step() {
        let s = PrivacySettings::default();
        let now = 1_700_000_123;
        let exp = s.url_expiry(now);
        assert!(exp >= now + 3600 && exp < now + 3600 + 600, "{exp}");
        assert_eq!(exp % 600, 0);
        assert_eq!(s.url_expiry(now + 1), exp, "same step, same URL");
        let short = PrivacySettings {
            url_ttl_secs: 60,
            ..Default::default()
        };
        let e = short.url_expiry(now);
        assert!((now + 60..now + 75).contains(&e), "{e}");
        assert_eq!(earliest(Some(5), Some(3)), Some(3));
        assert_eq!(earliest(None, Some(3)), Some(3));
        assert_eq!(earliest(Some(5), None), Some(5));
        assert_eq!(earliest(None, None), None);
    }

    #[test]
    fn bad_settings_name_their_key() {
        let s = PrivacySettings {
            url_ttl_secs: 5,
            ..Default::default()
        };
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("privacy.url_ttl_secs"));
        let s = PrivacySettings {
            private_owners: vec!["a/b".into()],
            ..Default::default()
        };
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("privacy.private_owners"));
    }
}
