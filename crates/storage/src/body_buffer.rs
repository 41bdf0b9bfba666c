//! Buffers for object bodies that give their memory back to the system when freed.
//!
//! Object bodies are large, of every size, and kept for a while (the edge's source cache holds
//! a gigabyte of them and evicts continually). From malloc's heap, a churn of such blocks
//! leaves holes that later, differently sized bodies cannot reuse and that are never returned:
//! under cold-source misses the edge's memory outside its caches grew from ~180 MB to ~470 MB
//! once its source cache was full (loadtest/README.md). A body from [`BodyBuffer`] of at least
//! [`OWN_MAPPING_FROM`] bytes lives in its own anonymous mapping instead, which the kernel
//! takes back whole when the last [`Bytes`] referring to it is dropped.

use bytes::Bytes;
use memmap2::{Mmap, MmapMut};

/// Bodies at least this large get their own mapping; smaller ones stay on the heap, where a
/// mapping's page-granular size and system calls would cost more than they save.
pub const OWN_MAPPING_FROM: usize = 128 * 1024;

/// A growable body buffer, frozen into [`Bytes`] when complete.
pub struct BodyBuffer {
    store: Store,
    len: usize,
}

enum Store {
    Heap(Vec<u8>),
    Mapped(MmapMut),
}

impl BodyBuffer {
    /// An empty buffer with room for `capacity` bytes (e.g. a declared content length).
    pub fn with_capacity(capacity: usize) -> std::io::Result<BodyBuffer> {
        Ok(BodyBuffer {
            store: Store::new(capacity)?,
            len: 0,
        })
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `data`, growing the buffer as needed.
    pub fn extend_from_slice(&mut self, data: &[u8]) -> std::io::Result<()> {
        let spare = self.spare(data.len())?;
        spare[..data.len()].copy_from_slice(data);
        self.len += data.len();
        Ok(())
    }

    /// At least `min` writable bytes after the written ones, for a reader to fill; then call
    /// [`BodyBuffer::advance`] with the count it wrote.
    pub fn spare(&mut self, min: usize) -> std::io::Result<&mut [u8]> {
        let need = self.len.saturating_add(min);
        if need > self.store.capacity() {
            let grown = need.max(self.store.capacity().saturating_mul(2));
            let mut next = Store::new(grown)?;
            next.as_mut()[..self.len].copy_from_slice(&self.store.as_ref()[..self.len]);
            self.store = next;
        }
        let len = self.len;
        Ok(&mut self.store.as_mut()[len..])
    }

    /// Marks `n` more bytes (written into [`BodyBuffer::spare`]) as part of the body.
    pub fn advance(&mut self, n: usize) {
        self.len = (self.len + n).min(self.store.capacity());
    }

    /// The body, shared without a copy.
    pub fn freeze(self) -> std::io::Result<Bytes> {
        match self.store {
            Store::Heap(mut v) => {
                v.truncate(self.len);
                Ok(Bytes::from(v))
            }
            Store::Mapped(m) => Ok(Bytes::from_owner(MappedBody {
                map: m.make_read_only()?,
                len: self.len,
            })),
        }
    }
}

impl Store {
    fn new(capacity: usize) -> std::io::Result<Store> {
        if capacity >= OWN_MAPPING_FROM {
            Ok(Store::Mapped(MmapMut::map_anon(capacity)?))
        } else {
            // Zeroed up to capacity so that `spare` can hand out the whole tail.
            Ok(Store::Heap(vec![0; capacity]))
        }
    }

    fn capacity(&self) -> usize {
        match self {
            Store::Heap(v) => v.len(),
            Store::Mapped(m) => m.len(),
        }
    }

    fn as_ref(&self) -> &[u8] {
        match self {
            Store::Heap(v) => v,
            Store::Mapped(m) => m,
        }
    }

    fn as_mut(&mut self) -> &mut [u8] {
        match self {
            Store::Heap(v) => v,
            Store::Mapped(m) => m,
        }
    }
}

/// A finished body in its own mapping; unmapped when dropped.
struct MappedBody {
    map: Mmap,
    len: usize,
}

impl AsRef<[u8]> for MappedBody {
    fn as_ref(&self) -> &[u8] {
        &self.map[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes written in pieces, past the first capacity and across the heap/mapping boundary,
    /// come back in order and in full.
    #[test]
    fn grows_across_the_mapping_threshold() {
        let data: Vec<u8> = (0..OWN_MAPPING_FROM * 3).map(|i| (i % 251) as u8).collect();
        for capacity in [0, 1000, OWN_MAPPING_FROM, data.len()] {
            let mut b = BodyBuffer::with_capacity(capacity).unwrap();
            for piece in data.chunks(40_000) {
                b.extend_from_slice(piece).unwrap();
            }
            assert_eq!(b.len(), data.len());
            assert_eq!(b.freeze().unwrap(), data[..]);
        }
    }

    /// A reader filling `spare` directly; a short body in a large mapping is cut to its length.
    #[test]
    fn spare_and_advance() {
        let mut b = BodyBuffer::with_capacity(OWN_MAPPING_FROM * 2).unwrap();
        assert!(b.is_empty());
        let s = b.spare(3).unwrap();
        assert!(s.len() >= 3);
        s[..3].copy_from_slice(b"abc");
        b.advance(3);
        b.extend_from_slice(b"de").unwrap();
        let frozen = b.freeze().unwrap();
        assert_eq!(&frozen[..], b"abcde");
        assert_eq!(frozen.slice(1..3), &b"bc"[..]);
    }
}
