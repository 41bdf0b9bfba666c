//! Rights: holder, licence, usage restrictions and a rights window (valid from / until) per
//! image. Outside its window an image is withheld:
//!
//! - the API leaves it out of listings and search unless an admin asks for it, hands out no
//!   edge URLs for it, and every URL it does hand out carries `exp` no later than the window's
//!   end, so a signed URL never outlives the window (the edge refuses it after `exp`, and its
//!   `Cache-Control` never reaches past `exp`, so neither does a CDN's copy);
//! - the rights scheduler (one per deployment, [`super::scheduler`]) publishes the keys of
//!   every withheld image's objects in one deny-list object in the bucket the edges already
//!   read ([`WithheldList`]); each edge re-reads it every `withheld.poll_secs`, answers 404
//!   for those keys (its origin reads see them as missing, so it never fetches them again)
//!   and drops what it has cached of newly listed keys at once;
//! - the scheduler also purges every edge in `edge.purge_urls` and the CDN
//!   (`edge.cdn_purge_url`), retrying on its next pass until that succeeds.
//!
//! Bound: an edge stops serving a withheld image at most `catalog.rights_check_secs` (the
//! scheduler's period) plus the edge's `withheld.poll_secs` after the window closes, even when
//! the purge cannot reach it; the CDN, within the same time when its purge API answers, else
//! after the edge's `server.cache_control_max_age_secs`, except that URLs signed by the API
//! expire at the window's end anyway.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where an image stands against its rights window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RightsState {
    /// Inside the window (or no window).
    Clear,
    /// The window has not started.
    Pending,
    /// The window has ended.
    Expired,
}

impl RightsState {
    /// The state at `now` of a window `[from, until)`.
    pub fn at(
        from: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Self {
        if from.is_some_and(|f| f > now) {
            RightsState::Pending
        } else if until.is_some_and(|u| u <= now) {
            RightsState::Expired
        } else {
            RightsState::Clear
        }
    }

    /// Whether the image is withheld.
    pub fn withheld(self) -> bool {
        self != RightsState::Clear
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RightsState::Clear => "clear",
            RightsState::Pending => "pending",
            RightsState::Expired => "expired",
        }
    }
}

/// The `exp` (Unix seconds) an edge URL for an image must carry, when its window ends: the
/// edge accepts a URL while the current whole second is not past `exp`, that is until
/// `exp + 1`, so `exp` is one second before the window's end (rounded down) and the URL never
/// outlives the window.
pub fn url_expiry(until: Option<DateTime<Utc>>) -> Option<i64> {
    until.map(|u| u.timestamp() - 1)
}

/// Adds `exp` to an edge URL's options query.
pub fn with_expiry(query: &str, exp: Option<i64>) -> String {
    match exp {
        None => query.to_owned(),
        Some(e) if query.is_empty() => format!("exp={e}"),
        Some(e) => format!("{query}&exp={e}"),
    }
}

/// The deny-list object edges read: every key of every withheld image's objects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WithheldList {
    /// Format version (1).
    pub version: u32,
    /// When it was written.
    pub generated_at: Option<DateTime<Utc>>,
    /// Object keys the edges must not serve, sorted.
    pub keys: Vec<String>,
    /// Object keys of private images, sorted: the edges serve them to signed requests only
    /// (never through unsigned presets).
    #[serde(default)]
    pub signed_only: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn window_states() {
        let now = Utc::now();
        let h = Duration::hours(1);
        assert_eq!(RightsState::at(None, None, now), RightsState::Clear);
        assert_eq!(
            RightsState::at(Some(now + h), None, now),
            RightsState::Pending
        );
        assert_eq!(
            RightsState::at(Some(now - h), Some(now), now),
            RightsState::Expired
        );
        assert_eq!(
            RightsState::at(Some(now - h), Some(now + h), now),
            RightsState::Clear
        );
        assert!(RightsState::Expired.withheld());
        assert_eq!(with_expiry("w=10", Some(5)), "w=10&exp=5");
        assert_eq!(with_expiry("", Some(5)), "exp=5");
        // Accepted by the edge through second 98, i.e. until 99.0 at the latest.
        assert_eq!(
            url_expiry(Some(DateTime::from_timestamp(99, 0).unwrap())),
            Some(98)
        );
        assert_eq!(
            url_expiry(Some(DateTime::from_timestamp(99, 700_000_000).unwrap())),
            Some(98)
        );
    }
}
