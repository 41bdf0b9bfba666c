//! The cache tiers: finished responses in memory ([`memory`]) and on disk ([`disk`]);
//! original bytes ([`source`]) and sources decoded once ([`working`]); and what the edge knows
//! of each source's version ([`identity`]). Lookup order is memory, disk, then the origin.

pub mod disk;
pub mod identity;
pub mod memory;
pub mod source;
pub mod working;

use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use flexphoto_url::ImageKey;
use flexphoto_url::OutputFormat;

/// Names one finished response: the hash of the source key, the source's identity and the
/// canonical transform.
pub type CacheKey = [u8; 32];

/// Computes the [`CacheKey`] of a transform of one version of one source.
pub fn cache_key(key: &ImageKey, identity: &str, canonical: &str) -> CacheKey {
    let mut h = Sha256::new();
    h.update(key.as_str().as_bytes());
    h.update([0]);
    h.update(identity.as_bytes());
    h.update([0]);
    h.update(canonical.as_bytes());
    h.finalize().into()
}

/// Which tier produced a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The in-memory tier.
    Memory,
    /// The disk tier.
    Disk,
    /// Made now from the origin's bytes.
    Origin,
}

impl Tier {
    /// The name used in `X-Cache` and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Disk => "disk",
            Tier::Origin => "miss",
        }
    }
}

/// A finished response body and what describes it.
#[derive(Debug, Clone)]
pub struct CachedImage {
    /// Encoded bytes.
    pub body: Bytes,
    /// Their format.
    pub format: OutputFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The source key, so a purge can find every variant of a source.
    pub source_key: Arc<str>,
    /// Where this value was produced when it entered the memory tier.
    pub filled_from: Tier,
}
