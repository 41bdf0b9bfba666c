//! Per-client limits: how many transforms one client may have in flight at once, so a few
//! abusive clients cannot fill the transform queue that everyone shares. Over its share a
//! client gets `429` with `Retry-After`; cache hits are never limited.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Transforms in flight by client address.
#[derive(Debug, Default)]
pub struct ClientLimiter {
    limit: usize,
    inflight: Mutex<HashMap<IpAddr, usize>>,
}

/// One transform of one client; dropping it frees the slot.
#[derive(Debug)]
pub struct ClientPermit {
    limiter: Arc<ClientLimiter>,
    client: IpAddr,
}

impl ClientLimiter {
    /// At most `limit` transforms per client; 0 for no limit.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            inflight: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `client`, or `None` when it has `limit` transforms in flight already.
    /// Requests without a known client, or with no limit set, always get one.
    pub fn try_acquire(self: &Arc<Self>, client: Option<IpAddr>) -> Option<Option<ClientPermit>> {
        let (Some(client), true) = (client.map(network_of), self.limit > 0) else {
            return Some(None);
        };
        let mut inflight = match self.inflight.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let n = inflight.entry(client).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Some(ClientPermit {
            limiter: Arc::clone(self),
            client,
        }))
    }

    /// Transforms in flight for `client` (its network, see [`network_of`]).
    pub fn inflight(&self, client: IpAddr) -> usize {
        self.inflight
            .lock()
            .map(|m| m.get(&network_of(client)).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// The unit a share belongs to: an IPv4 address, or an IPv6 /64 (one subscriber's prefix,
/// which hands its holder 2^64 addresses to rotate through).
pub fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(prefix))
            }
        },
    }
}

impl Drop for ClientPermit {
    fn drop(&mut self) {
        let mut inflight = match self.limiter.inflight.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(n) = inflight.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                inflight.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_gets_its_share() {
        let l = ClientLimiter::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = l.try_acquire(Some(a)).unwrap();
        let _p2 = l.try_acquire(Some(a)).unwrap();
        assert!(l.try_acquire(Some(a)).is_none());
        assert!(l.try_acquire(Some(b)).is_some());
        drop(p1);
        assert_eq!(l.inflight(a), 1);
        assert!(l.try_acquire(Some(a)).is_some());
        assert!(l.try_acquire(None).is_some());
        assert!(ClientLimiter::new(0).try_acquire(Some(a)).is_some());
    }

    #[test]
    fn an_ipv6_prefix_is_one_client() {
        let l = ClientLimiter::new(1);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff:0:0:9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _p = l.try_acquire(Some(a)).unwrap();
        assert!(l.try_acquire(Some(same_64)).is_none());
        assert!(l.try_acquire(Some(other_64)).is_some());
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(network_of(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
