//! The source cache: original bytes from the origin, bounded separately from results, so
//! many sizes of one photo cost one origin fetch.

use bytes::Bytes;
use moka::future::Cache;

/// Original bytes keyed by source key and identity.
#[derive(Clone)]
pub struct SourceCache {
    cache: Cache<String, Bytes>,
}

/// The cache key of one version of one source.
pub fn source_cache_key(key: &str, identity: &str) -> String {
    format!("{key}\0{identity}")
}

impl SourceCache {
    /// A cache of at most `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            .weigher(|k: &String, v: &Bytes| (v.len() + k.len()).min(u32::MAX as usize) as u32)
            .support_invalidation_closures()
            .build();
        Self { cache }
    }

    /// The underlying cache, for coalesced loads.
    pub fn cache(&self) -> &Cache<String, Bytes> {
        &self.cache
    }

    /// Drops every version of `key`.
    pub fn purge_source(&self, key: &str) {
        let prefix = format!("{key}\0");
        let _ = self
            .cache
            .invalidate_entries_if(move |k, _| k.starts_with(&prefix));
    }
}
