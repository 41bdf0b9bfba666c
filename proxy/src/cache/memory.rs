//! The memory tier: finished responses in `moka`, weighted by their size in bytes.

use std::sync::Arc;

use moka::future::Cache;
use moka::notification::RemovalCause;
use prometheus::{IntCounter, IntGauge};

use super::{CacheKey, CachedImage};

/// Bytes counted per entry beyond its body (key, header, bookkeeping).
const ENTRY_OVERHEAD: u64 = 256;

/// Finished responses in memory.
#[derive(Clone)]
pub struct MemoryTier {
    cache: Cache<CacheKey, Arc<CachedImage>>,
}

impl MemoryTier {
    /// A tier holding at most `capacity` bytes.
    pub fn new(capacity: u64, evictions: IntCounter, bytes: IntGauge) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            .weigher(|_k, v: &Arc<CachedImage>| {
                (v.body.len() as u64 + ENTRY_OVERHEAD).min(u32::MAX as u64) as u32
            })
            .support_invalidation_closures()
            .eviction_listener(move |_k, v: Arc<CachedImage>, cause| {
                bytes.sub(v.body.len() as i64);
                if cause == RemovalCause::Size {
                    evictions.inc();
                }
            })
            .build();
        Self { cache }
    }

    /// The cached value, if any.
    pub async fn get(&self, key: &CacheKey) -> Option<Arc<CachedImage>> {
        self.cache.get(key).await
    }

    /// The underlying cache, for coalesced fills.
    pub fn cache(&self) -> &Cache<CacheKey, Arc<CachedImage>> {
        &self.cache
    }

    /// Drops every entry made from `source_key`.
    pub fn purge_source(&self, source_key: &str) {
        let k: Arc<str> = Arc::from(source_key);
        let _ = self
            .cache
            .invalidate_entries_if(move |_, v| *v.source_key == *k);
    }
}
