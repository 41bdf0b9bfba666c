//! A brake on credential guessing: failed authentications (an unknown or revoked bearer key,
//! an unknown or expired session cookie, a failed sign-in) are counted per client network,
//! and a network past `server.failed_auth_per_minute` is answered 429 with `Retry-After`
//! before its credentials reach the database. Successful authentications cost nothing, and
//! a credential that authenticated recently keeps working while its network is refused, so
//! a guesser behind the same address (a NAT, a proxy) does not lock out known clients.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The address a request came from: the TCP peer, put on every request by the accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub IpAddr);

/// How long a credential that authenticated stays allowed past a refused network.
const VERIFIED_FOR: Duration = Duration::from_secs(600);
/// Most networks and verified credentials remembered; past it the idle ones are forgotten.
const MAX_ENTRIES: usize = 100_000;

/// The network a client is counted by: an IPv4 address, or an IPv6 /64 (one subscriber's
/// allocation), with IPv4-mapped IPv6 addresses as IPv4.
pub fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

/// Failure buckets by client network, and the credentials that authenticated recently.
#[derive(Debug)]
pub struct FailedAuthLimiter {
    per_minute: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
    verified: Mutex<HashMap<String, Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl FailedAuthLimiter {
    /// Allows `per_minute` failures a minute per network (all at once, then refilled
    /// evenly); 0 turns the limit off.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: f64::from(per_minute),
            buckets: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// Before a credential is looked up: `Err(wait)` when `peer`'s network has used up its
    /// failures and `credential` (the SHA-256 the lookup uses) did not authenticate lately.
    pub fn admit(&self, peer: Option<PeerAddr>, credential: &str) -> Result<(), Duration> {
        self.admit_at(peer, credential, Instant::now())
    }

    /// Counts a failed authentication from `peer` of `credential` (when there was one).
    pub fn failed(&self, peer: Option<PeerAddr>, credential: Option<&str>) {
        self.failed_at(peer, credential, Instant::now());
    }

    /// Remembers that `credential` authenticated.
    pub fn verified(&self, credential: &str) {
        if self.per_minute <= 0.0 {
            return;
        }
        let now = Instant::now();
        let mut v = lock(&self.verified);
        if v.len() >= MAX_ENTRIES {
            v.retain(|_, at| now.saturating_duration_since(*at) < VERIFIED_FOR);
            if v.len() >= MAX_ENTRIES {
                v.clear();
            }
        }
        v.insert(credential.to_owned(), now);
    }

    fn tokens(&self, entry: (f64, Instant), now: Instant) -> f64 {
        let refill = now.saturating_duration_since(entry.1).as_secs_f64() * self.per_minute / 60.0;
        (entry.0 + refill).min(self.per_minute)
    }

    fn admit_at(
        &self,
        peer: Option<PeerAddr>,
        credential: &str,
        now: Instant,
    ) -> Result<(), Duration> {
        let Some(PeerAddr(ip)) = peer else {
            return Ok(());
        };
        if self.per_minute <= 0.0 {
            return Ok(());
        }
        let tokens = match lock(&self.buckets).get(&network_of(ip)) {
            Some(e) => self.tokens(*e, now),
            None => return Ok(()),
        };
        if tokens >= 1.0 {
            return Ok(());
        }
        let recently_good = lock(&self.verified)
            .get(credential)
            .is_some_and(|at| now.saturating_duration_since(*at) < VERIFIED_FOR);
        if recently_good {
            return Ok(());
        }
        let wait = (1.0 - tokens) * 60.0 / self.per_minute;
        Err(Duration::from_secs_f64(wait.ceil().max(1.0)))
    }

    fn failed_at(&self, peer: Option<PeerAddr>, credential: Option<&str>, now: Instant) {
        if self.per_minute <= 0.0 {
            return;
        }
        if let Some(c) = credential {
            // A revoked key loses its pass.
            lock(&self.verified).remove(c);
        }
        let Some(PeerAddr(ip)) = peer else {
            return;
        };
        let mut buckets = lock(&self.buckets);
        if buckets.len() >= MAX_ENTRIES {
            let full = self.per_minute;
            buckets.retain(|_, e| self.tokens(*e, now) < full);
        }
        let entry = buckets
            .entry(network_of(ip))
            .or_insert((self.per_minute, now));
        let left = self.tokens(*entry, now);
        *entry = ((left - 1.0).max(0.0), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> Option<PeerAddr> {
        Some(PeerAddr(s.parse().unwrap()))
    }

    #[test]
    fn a_network_past_its_failures_waits_and_known_credentials_pass() {
        let l = FailedAuthLimiter::new(3);
        let t = Instant::now();
        let a = peer("2001:db8::1");
        for _ in 0..3 {
            assert!(l.admit_at(a, "guess", t).is_ok());
            l.failed_at(a, Some("guess"), t);
        }
        // Refused for 20 s (a token every 60/3 s), the same /64 too.
        assert_eq!(l.admit_at(a, "guess", t), Err(Duration::from_secs(20)));
        assert!(l.admit_at(peer("2001:db8::ffff:2"), "guess", t).is_err());
        // Another network, and a credential that authenticated, are not.
        assert!(l.admit_at(peer("2001:db8:0:1::1"), "guess", t).is_ok());
        assert!(l.admit_at(peer("10.0.0.1"), "guess", t).is_ok());
        l.verified("good");
        assert!(l.admit_at(a, "good", t).is_ok());
        // Until it fails (revoked).
        l.failed_at(a, Some("good"), t);
        assert!(l.admit_at(a, "good", t).is_err());
        // A token comes back after 20 s.
        assert!(l.admit_at(a, "guess", t + Duration::from_secs(20)).is_ok());
        // No peer known, or the limit off: never refused.
        assert!(l.admit_at(None, "guess", t).is_ok());
        let off = FailedAuthLimiter::new(0);
        off.failed_at(a, None, t);
        assert!(off.admit_at(a, "guess", t).is_ok());
    }

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_v4_as_v4() {
        assert_eq!(
            network_of("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            network_of("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }
}
