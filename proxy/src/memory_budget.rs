//! Memory budgets that transforms wait for instead of being refused.
//!
//! The transform workers bound how many transforms run at once, not how much memory they
//! hold. Two budgets bound that, each a [`MemoryBudget`]:
//! - large decodes (`transform.decode_memory_mb`): a progressive JPEG keeps every DCT
//!   coefficient of the full image (~72 MB for 18 MP at 4:2:2) where a small JPEG holds a few
//!   MB, so a transform whose decode is estimated (from the header, before it is queued) at
//!   [`DECODE_COUNTED_FROM`] or more reserves its estimate;
//! - source bytes of main-lane transforms queued or running (`transform.queued_source_mb`),
//!   so that a queue of large misses holds the bytes of the work in hand, not of everything
//!   waiting.
//!
//! A reservation waits on the request's task, holding no worker and no bytes, until earlier
//! ones are released or the request's deadline passes; one larger than the whole budget takes
//! all of it and runs alone. The in-flight source budget (`limits.inflight_source_mb`) is a
//! third, which refuses ([`MemoryBudget::try_reserve`]) instead of waiting.

use std::sync::Arc;
use std::time::Instant;

use prometheus::IntCounter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::EdgeError;

/// Decodes estimated below this many bytes do not count against the decode budget, so cheap
/// work never waits behind a large decode.
pub const DECODE_COUNTED_FROM: u64 = 8 << 20;

/// One budget, in KiB permits.
pub struct MemoryBudget {
    what: &'static str,
    permits: Arc<Semaphore>,
    capacity_kib: u32,
    waits: Option<IntCounter>,
}

/// `bytes` in KiB permits, rounded up, within what a semaphore holds.
fn kib_of(bytes: u64) -> u32 {
    bytes.div_ceil(1024).min(u32::MAX as u64 >> 3) as u32
}

impl MemoryBudget {
    /// A budget of `capacity_bytes` for `what` (named in timeout errors); `waits`, if any,
    /// counts reservations that had to wait.
    pub fn new(what: &'static str, capacity_bytes: u64, waits: Option<IntCounter>) -> MemoryBudget {
        let capacity_kib = kib_of(capacity_bytes).max(1);
        MemoryBudget {
            what,
            permits: Arc::new(Semaphore::new(capacity_kib as usize)),
            capacity_kib,
            waits,
        }
    }

    /// `bytes` in permits: at least one, at most the whole budget.
    fn permits_for(&self, bytes: u64) -> u32 {
        kib_of(bytes).clamp(1, self.capacity_kib)
    }

    /// Reserves `bytes` if they fit now; `None` otherwise, for callers that refuse instead
    /// of waiting.
    pub fn try_reserve(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        let kib = self.permits_for(bytes);
        self.permits.clone().try_acquire_many_owned(kib).ok()
    }

    /// Reserves `bytes` until the returned permit is dropped, waiting while others hold the
    /// budget; fails with a timeout when `deadline` passes first.
    pub async fn reserve(
        &self,
        bytes: u64,
        deadline: Instant,
    ) -> Result<OwnedSemaphorePermit, EdgeError> {
        if let Some(p) = self.try_reserve(bytes) {
            return Ok(p);
        }
        if let Some(w) = &self.waits {
            w.inc();
        }
        let acquire = self
            .permits
            .clone()
            .acquire_many_owned(self.permits_for(bytes));
        match tokio::time::timeout_at(deadline.into(), acquire).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => Err(EdgeError::Internal(format!(
                "the {} budget is closed",
                self.what
            ))),
            Err(_) => Err(EdgeError::Timeout(format!(
                "the request deadline passed while waiting for {}",
                self.what
            ))),
        }
    }

    /// KiB not reserved now.
    pub fn available_kib(&self) -> usize {
        self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// How long a reservation may wait in these tests before they fail.
    const TEST_WAIT: Duration = Duration::from_secs(5);

    fn budget(mib: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget::new(
            "memory to decode the source",
            mib << 20,
            Some(IntCounter::new("w", "w").unwrap()),
        ))
    }

    #[tokio::test]
    async fn reservations_wait_for_each_other_up_to_the_deadline() {
        let b = budget(96);
        let later = Instant::now() + TEST_WAIT;
        let first = b.reserve(72 << 20, later).await.unwrap();
        assert_eq!(b.available_kib(), 24 << 10);
        // Another that does not fit times out at its deadline, naming what it waited for.
        let soon = Instant::now() + Duration::from_millis(50);
        match b.reserve(72 << 20, soon).await {
            Err(EdgeError::Timeout(m)) => assert!(m.contains("decode"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(b.waits.as_ref().map(IntCounter::get), Some(1));
        // One that fits does not wait, and may also be taken without waiting at all.
        drop(b.reserve(1 << 20, soon).await.unwrap());
        assert!(b.try_reserve(72 << 20).is_none());
        drop(b.try_reserve(24 << 20).unwrap());
        // A waiting one goes ahead when the first is released.
        let waiting = tokio::spawn({
            let b = Arc::clone(&b);
            async move { b.reserve(72 << 20, later).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(first);
        assert!(waiting.await.unwrap().is_ok());
        assert_eq!(b.available_kib(), 96 << 10);
    }

    #[tokio::test]
    async fn a_reservation_over_the_whole_budget_runs_alone() {
        let b = budget(64);
        let big = b
            .reserve(500 << 20, Instant::now() + TEST_WAIT)
            .await
            .unwrap();
        assert_eq!(b.available_kib(), 0);
        drop(big);
        assert_eq!(b.available_kib(), 64 << 10);
    }
}
