//! Ready responses: cache hits kept as the bytes that go on the wire, keyed by the raw
//! request target and `Accept` value, so a repeated hit is answered without parsing options,
//! hashing a cache key or building a header.
//!
//! An entry is made from the normal path's own answer to a memory-tier hit (so both paths send
//! the same headers) and lives no longer than the source identity it was made under was to be
//! trusted, nor past a purge of its source. Stale answers, signed URLs with an expiry (their
//! `max-age` shrinks with time) and anything but `GET`/`HEAD` never get one.

use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use pingora_http::ResponseHeader;

/// One ready answer: the serialised headers of its `200` and `304` forms and the body.
#[derive(Debug)]
pub struct Ready {
    /// Status line and headers of the `200`, up to the `date` line.
    pub ok_head: Bytes,
    /// Status line and headers of the `304`, up to the `date` line.
    pub not_modified_head: Bytes,
    /// The quoted strong ETag, for `If-None-Match`.
    pub etag: Box<str>,
    /// The body of the `200`.
    pub body: Bytes,
    /// When the source identity behind it must be checked again.
    pub valid_until: Instant,
    /// The source key, so a purge finds every ready answer made from it.
    pub source_key: Arc<str>,
}

/// Ready answers by request.
#[derive(Clone)]
pub struct ReadyResponses {
    cache: moka::sync::Cache<Box<[u8]>, Arc<Ready>>,
}

/// Bytes counted per entry beyond its headers and body.
const ENTRY_OVERHEAD: usize = 256;

// moka hands the weigher a reference to the key as stored.
#[allow(clippy::borrowed_box)]
fn weigh(k: &Box<[u8]>, v: &Arc<Ready>) -> u32 {
    let n = k.len() + v.ok_head.len() + v.not_modified_head.len() + v.body.len() + ENTRY_OVERHEAD;
    n.min(u32::MAX as usize) as u32
}

impl ReadyResponses {
    /// A map holding at most `capacity` bytes of headers and bodies (bodies are shared with
    /// the memory tier while it holds them too); `None` when `capacity` is 0.
    pub fn new(capacity: u64) -> Option<Self> {
        (capacity > 0).then(|| Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .weigher(weigh)
                .support_invalidation_closures()
                .build(),
        })
    }

    /// The key of a request: its target (path and query, as sent) and `Accept` value.
    pub fn key(target: &[u8], accept: Option<&[u8]>) -> Box<[u8]> {
        let accept = accept.unwrap_or_default();
        let mut k = Vec::with_capacity(target.len() + 1 + accept.len());
        k.extend_from_slice(target);
        k.push(0);
        k.extend_from_slice(accept);
        k.into_boxed_slice()
    }

    /// The ready answer to this request, if one is held and still valid.
    pub fn get(&self, key: &[u8]) -> Option<Arc<Ready>> {
        let r = self.cache.get(key)?;
        if Instant::now() >= r.valid_until {
            self.cache.invalidate(key);
            return None;
        }
        Some(r)
    }

    /// Keeps a ready answer.
    pub fn insert(&self, key: Box<[u8]>, ready: Ready) {
        self.cache.insert(key, Arc::new(ready));
    }

    /// Drops every ready answer made from `source_key`.
    pub fn purge_source(&self, source_key: &str) {
        let k: Arc<str> = Arc::from(source_key);
        let _ = self
            .cache
            .invalidate_entries_if(move |_, v| *v.source_key == *k);
    }

    /// Bytes held.
    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }
}

/// The status line and headers of `header` as HTTP/1.1 sends them, without the `date` and
/// `connection` lines the server adds last and without the blank line.
pub fn serialise_head(header: &ResponseHeader) -> Bytes {
    let mut out = BytesMut::with_capacity(512);
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(header.status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(
        header
            .status
            .canonical_reason()
            .unwrap_or_default()
            .as_bytes(),
    );
    out.put_slice(b"\r\n");
    for (name, value) in header.headers.iter() {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.freeze()
}
