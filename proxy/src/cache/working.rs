//! The working-copy tier: sources decoded once (upright, sRGB, with smaller levels) and kept
//! in memory, so later sizes of a photo asked for again resize pixels instead of decoding the
//! original. Keyed like the source cache (key and identity), bounded by bytes.

use std::sync::Arc;

use flexphoto_media::transform::WorkingCopy;

use super::source::source_cache_key;

/// Decoded working copies by source key and identity.
#[derive(Clone)]
pub struct WorkingCopies {
    cache: moka::sync::Cache<String, Arc<WorkingCopy>>,
}

impl WorkingCopies {
    /// A tier of at most `capacity` bytes; `None` when `capacity` is 0 (working copies off).
    pub fn new(capacity: u64) -> Option<Self> {
        (capacity > 0).then(|| Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .weigher(|_k: &String, v: &Arc<WorkingCopy>| {
                    v.byte_size().min(u32::MAX as usize) as u32
                })
                .support_invalidation_closures()
                .build(),
        })
    }

    /// The key of one version of one source (the source cache's key).
    pub fn key(source_key: &str, identity: &str) -> String {
        source_cache_key(source_key, identity)
    }

    /// The copy of this version of the source, if one is held. Callable from any thread.
    pub fn get(&self, key: &str) -> Option<Arc<WorkingCopy>> {
        self.cache.get(key)
    }

    /// Keeps a freshly made copy.
    pub fn insert(&self, key: String, copy: WorkingCopy) {
        self.cache.insert(key, Arc::new(copy));
    }

    /// Bytes held.
    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// Drops every version of `source_key`.
    pub fn purge_source(&self, source_key: &str) {
        let prefix = format!("{source_key}\0");
        let _ = self
            .cache
            .invalidate_entries_if(move |k, _| k.starts_with(&prefix));
    }
}
