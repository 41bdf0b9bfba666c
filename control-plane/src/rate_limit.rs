//! Per-key rate limits: a token bucket per API key in this process, refilled at
//! `server.rate_per_key` requests per second with a burst of twice that. Over it, a key gets
//! 429 with `Retry-After`; other keys are unaffected.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use uuid::Uuid;

use crate::error::ApiError;

/// Buckets by key id.
#[derive(Debug)]
pub struct RateLimits {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<Uuid, (f64, Instant)>>,
}

impl RateLimits {
    /// `per_sec` requests a second per key (0: no limit), bursts of twice that.
    pub fn new(per_sec: u32) -> Self {
        Self {
            per_sec: f64::from(per_sec),
            burst: f64::from(per_sec) * 2.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key`, or says how long to wait.
    pub fn check(&self, key: Uuid) -> Result<(), ApiError> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: Uuid, now: Instant) -> Result<(), ApiError> {
        if self.per_sec <= 0.0 {
            return Ok(());
        }
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        };
        if buckets.len() > 100_000 {
            // Keys come and go; forget the idle ones rather than grow without bound.
            let (per_sec, burst) = (self.per_sec, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * per_sec < burst
            });
        }
        let (tokens, at) = buckets.entry(key).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.per_sec)
            .min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(ApiError::RateLimited(format!(
                "this API key made more than {} requests a second; slow down",
                self.per_sec
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_key_over_its_rate_waits_others_do_not() {
        let r = RateLimits::new(5);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let t = Instant::now();
        for _ in 0..10 {
            assert!(r.check_at(a, t).is_ok());
        }
        assert!(matches!(r.check_at(a, t), Err(ApiError::RateLimited(_))));
        assert!(r.check_at(b, t).is_ok());
        assert!(r.check_at(a, t + Duration::from_millis(250)).is_ok());
        assert!(RateLimits::new(0).check_at(a, t).is_ok());
    }
}
