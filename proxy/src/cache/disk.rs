//! The disk tier: finished responses in files, bounded by bytes, least-recently-used first out.
//!
//! Each entry is one file `{dir}/{aa}/{hex key}` holding a small header and the body. Writes go
//! to `{dir}/tmp/` and are renamed into place, so a crash mid-write never leaves a partial
//! entry under a real name; reads check the body length and CRC-32 from the header and delete
//! an entry that fails. At start the index is rebuilt in the background from the files'
//! headers (readiness is not held up): until it is done, lookups go to the file directly.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prometheus::{IntCounter, IntGauge};

use super::{CacheKey, CachedImage, Tier};
use flexphoto_url::OutputFormat;

const MAGIC: &[u8; 4] = b"FPD1";
/// Fixed part of the header: magic, format, width, height, body length, crc, key length.
const FIXED: usize = 4 + 1 + 4 + 4 + 8 + 4 + 2;

fn format_code(f: OutputFormat) -> u8 {
    match f {
        OutputFormat::Jpeg => 1,
        OutputFormat::Png => 2,
        OutputFormat::Webp => 3,
        OutputFormat::Avif => 4,
        OutputFormat::Gif => 5,
    }
}

fn format_from(c: u8) -> Option<OutputFormat> {
    Some(match c {
        1 => OutputFormat::Jpeg,
        2 => OutputFormat::Png,
        3 => OutputFormat::Webp,
        4 => OutputFormat::Avif,
        5 => OutputFormat::Gif,
        _ => return None,
    })
}

/// Serialises an entry: header then body.
fn encode(img: &CachedImage) -> Vec<u8> {
    let key = img.source_key.as_bytes();
    let key = &key[..key.len().min(u16::MAX as usize)];
    let mut out = Vec::with_capacity(FIXED + key.len() + img.body.len());
    out.extend_from_slice(MAGIC);
    out.push(format_code(img.format));
    out.extend_from_slice(&img.width.to_le_bytes());
    out.extend_from_slice(&img.height.to_le_bytes());
    out.extend_from_slice(&(img.body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&img.body).to_le_bytes());
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&img.body);
    out
}

struct Head {
    format: OutputFormat,
    width: u32,
    height: u32,
    body_len: u64,
    crc: u32,
    source_key: String,
    body_start: usize,
}

fn decode_head(buf: &[u8]) -> Option<Head> {
    if buf.len() < FIXED || &buf[..4] != MAGIC {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().unwrap_or([0; 4]));
    let format = format_from(buf[4])?;
    let width = u32_at(5);
    let height = u32_at(9);
    let body_len = u64::from_le_bytes(buf[13..21].try_into().ok()?);
    let crc = u32_at(21);
    let klen = u16::from_le_bytes(buf[25..27].try_into().ok()?) as usize;
    let key = buf.get(FIXED..FIXED + klen)?;
    Some(Head {
        format,
        width,
        height,
        body_len,
        crc,
        source_key: String::from_utf8(key.to_vec()).ok()?,
        body_start: FIXED + klen,
    })
}

/// Parses and verifies a whole entry file.
fn decode(buf: Bytes) -> Option<CachedImage> {
    let h = decode_head(&buf)?;
    if (buf.len() - h.body_start) as u64 != h.body_len {
        return None;
    }
    let body = buf.slice(h.body_start..);
    if crc32fast::hash(&body) != h.crc {
        return None;
    }
    Some(CachedImage {
        body,
        format: h.format,
        width: h.width,
        height: h.height,
        source_key: Arc::from(h.source_key.as_str()),
        filled_from: Tier::Disk,
    })
}

#[derive(Default)]
struct Index {
    entries: HashMap<CacheKey, IndexEntry>,
    lru: BTreeMap<u64, CacheKey>,
    total: u64,
    tick: u64,
}

struct IndexEntry {
    size: u64,
    tick: u64,
    source_key: Arc<str>,
}

impl Index {
    fn touch(&mut self, key: &CacheKey) {
        self.tick += 1;
        let t = self.tick;
        if let Some(e) = self.entries.get_mut(key) {
            self.lru.remove(&e.tick);
            e.tick = t;
            self.lru.insert(t, *key);
        }
    }

    fn insert(&mut self, key: CacheKey, size: u64, source_key: Arc<str>) {
        self.remove(&key);
        self.tick += 1;
        let t = self.tick;
        self.entries.insert(
            key,
            IndexEntry {
                size,
                tick: t,
                source_key,
            },
        );
        self.lru.insert(t, key);
        self.total += size;
    }

    fn remove(&mut self, key: &CacheKey) -> bool {
        match self.entries.remove(key) {
            Some(e) => {
                self.lru.remove(&e.tick);
                self.total -= e.size;
                true
            }
            None => false,
        }
    }

    fn pop_lru(&mut self) -> Option<CacheKey> {
        let (&t, &k) = self.lru.iter().next()?;
        self.lru.remove(&t);
        if let Some(e) = self.entries.remove(&k) {
            self.total -= e.size;
        }
        Some(k)
    }
}

/// The disk tier.
pub struct DiskTier {
    dir: PathBuf,
    capacity: u64,
    index: Mutex<Index>,
    ready: AtomicBool,
    evictions: IntCounter,
    bytes: IntGauge,
    /// Sources purged while the index was still being rebuilt, with when: entries of theirs
    /// the rebuild finds (written before the purge) are deleted, not indexed.
    purged_early: Mutex<Vec<(Arc<str>, SystemTime)>>,
    /// Unix seconds of the last write failure logged (failures are logged once a minute).
    last_failure_log: AtomicU64,
    /// Writes that failed (disk full, I/O errors).
    write_failures: AtomicU64,
}

fn hex_key(key: &CacheKey) -> String {
    hex::encode(key)
}

impl DiskTier {
    /// Opens (creating) `dir` with at most `capacity` bytes, and starts rebuilding the index
    /// in the background.
    pub fn open(
        dir: &Path,
        capacity: u64,
        evictions: IntCounter,
        bytes: IntGauge,
    ) -> std::io::Result<Arc<Self>> {
        let tier = Self::unindexed(dir, capacity, evictions, bytes)?;
        let t = Arc::clone(&tier);
        std::thread::Builder::new()
            .name("disk-cache-index".into())
            .spawn(move || t.rebuild())?;
        Ok(tier)
    }

    /// The tier before its index is rebuilt: serving, but not yet knowing what is on disk.
    fn unindexed(
        dir: &Path,
        capacity: u64,
        evictions: IntCounter,
        bytes: IntGauge,
    ) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(dir.join("tmp"))?;
        Ok(Arc::new(Self {
            dir: dir.to_owned(),
            capacity,
            index: Mutex::new(Index::default()),
            ready: AtomicBool::new(false),
            evictions,
            bytes,
            purged_early: Mutex::new(Vec::new()),
            last_failure_log: AtomicU64::new(0),
            write_failures: AtomicU64::new(0),
        }))
    }

    /// Whether the start-up index rebuild has finished.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn path_of(&self, key: &CacheKey) -> PathBuf {
        let h = hex_key(key);
        self.dir.join(&h[..2]).join(h)
    }

    fn rebuild(&self) {
        // Leftover temp files are writes a crash interrupted.
        if let Ok(rd) = std::fs::read_dir(self.dir.join("tmp")) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let mut found: Vec<(u128, CacheKey, u64, Arc<str>)> = Vec::new();
        if let Ok(shards) = std::fs::read_dir(&self.dir) {
            for shard in shards.flatten() {
                let name = shard.file_name();
                if name.len() != 2 {
                    continue;
                }
                let Ok(files) = std::fs::read_dir(shard.path()) else {
                    continue;
                };
                for f in files.flatten() {
                    let Some(key) = f
                        .file_name()
                        .to_str()
                        .and_then(|n| hex::decode(n).ok())
                        .and_then(|v| CacheKey::try_from(v).ok())
                    else {
                        continue;
                    };
                    let path = f.path();
                    let Ok(meta) = f.metadata() else { continue };
                    let head = read_head(&path);
                    let modified = meta.modified().ok();
                    if self.was_purged_after(&head, modified) {
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    match head {
                        Some(h) if h.body_start as u64 + h.body_len == meta.len() => {
                            let atime = meta
                                .accessed()
                                .or_else(|_| meta.modified())
                                .ok()
                                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                                .map(|d| d.as_nanos())
                                .unwrap_or(0);
                            found.push((atime, key, meta.len(), Arc::from(h.source_key.as_str())));
                        }
                        _ => {
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                }
            }
        }
        found.sort_by_key(|f| f.0);
        let over = {
            let Ok(mut idx) = self.index.lock() else {
                return;
            };
            for (_, key, size, sk) in found {
                // Entries written since start are newer than anything found on disk.
                if !idx.entries.contains_key(&key) {
                    idx.insert(key, size, sk);
                    let t = idx.entries[&key].tick;
                    // Found entries go to the cold end, in their access order.
                    idx.lru.remove(&t);
                    let cold = idx
                        .lru
                        .keys()
                        .next()
                        .map(|k| k.saturating_sub(1))
                        .unwrap_or(t);
                    if let Some(e) = idx.entries.get_mut(&key) {
                        e.tick = cold;
                    }
                    idx.lru.insert(cold, key);
                }
            }
            self.bytes.set(idx.total as i64);
            self.collect_over(&mut idx)
        };
        self.remove_files(&over);
        self.ready.store(true, Ordering::Release);
        if let Ok(mut p) = self.purged_early.lock() {
            p.clear();
        }
    }

    /// Whether an entry found by the rebuild belongs to a source purged after it was written.
    fn was_purged_after(&self, head: &Option<Head>, modified: Option<SystemTime>) -> bool {
        let Some(h) = head else { return false };
        let Ok(purged) = self.purged_early.lock() else {
            return false;
        };
        purged
            .iter()
            .any(|(k, at)| **k == *h.source_key && modified.is_none_or(|m| m <= *at))
    }

    /// Logs a failed write at most once a minute (a full disk fails every write); the edge
    /// keeps serving from memory and the origin, and writes resume when space frees.
    pub fn report_write_failure(&self, e: &std::io::Error) {
        let n = self.write_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last = self.last_failure_log.load(Ordering::Relaxed);
        if now >= last + 60
            && self
                .last_failure_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %e, failures = n, dir = %self.dir.display(), "disk cache writes are failing; serving from memory and the origin (logged once a minute)");
        }
    }

    /// Writes that failed since start.
    pub fn write_failures(&self) -> u64 {
        self.write_failures.load(Ordering::Relaxed)
    }

    fn collect_over(&self, idx: &mut Index) -> Vec<CacheKey> {
        let mut out = Vec::new();
        while idx.total > self.capacity {
            match idx.pop_lru() {
                Some(k) => out.push(k),
                None => break,
            }
        }
        self.bytes.set(idx.total as i64);
        out
    }

    fn remove_files(&self, keys: &[CacheKey]) {
        for k in keys {
            let _ = std::fs::remove_file(self.path_of(k));
            self.evictions.inc();
        }
    }

    /// Reads and verifies an entry; a damaged entry is deleted and reported as a miss.
    pub async fn get(&self, key: &CacheKey) -> Option<CachedImage> {
        if self.is_ready() {
            let known = self.index.lock().ok()?.entries.contains_key(key);
            if !known {
                return None;
            }
        }
        let path = self.path_of(key);
        let buf = tokio::fs::read(&path).await.ok()?;
        match decode(Bytes::from(buf)) {
            Some(img) if !self.is_ready() && self.purged_while_rebuilding(&img.source_key) => {
                // Purged before the index knew of it: drop it now.
                let _ = tokio::fs::remove_file(&path).await;
                None
            }
            Some(img) => {
                if let Ok(mut idx) = self.index.lock() {
                    if idx.entries.contains_key(key) {
                        idx.touch(key);
                    } else {
                        idx.insert(
                            *key,
                            (img.body.len() + FIXED) as u64,
                            img.source_key.clone(),
                        );
                    }
                }
                Some(img)
            }
            None => {
                tracing::warn!(path = %path.display(), "disk cache entry failed verification; removed");
                let _ = tokio::fs::remove_file(&path).await;
                if let Ok(mut idx) = self.index.lock() {
                    idx.remove(key);
                    self.bytes.set(idx.total as i64);
                }
                None
            }
        }
    }

    /// Writes an entry atomically (temp file, then rename) and evicts past capacity.
    pub async fn put(&self, key: CacheKey, img: &CachedImage) -> std::io::Result<()> {
        let data = encode(img);
        let size = data.len() as u64;
        if size > self.capacity {
            return Ok(());
        }
        let final_path = self.path_of(&key);
        let tmp = self
            .dir
            .join("tmp")
            .join(format!("{}.{}", hex_key(&key), std::process::id()));
        if let Some(parent) = final_path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::write(&tmp, &data).await?;
        if let Err(e) = tokio::fs::rename(&tmp, &final_path).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        let over = match self.index.lock() {
            Ok(mut idx) => {
                idx.insert(key, size, img.source_key.clone());
                self.collect_over(&mut idx)
            }
            Err(_) => Vec::new(),
        };
        self.remove_files(&over);
        Ok(())
    }

    /// Deletes every entry made from `source_key`; returns how many.
    pub fn purge_source(&self, source_key: &str) -> usize {
        if !self.is_ready() {
            if let Ok(mut p) = self.purged_early.lock() {
                p.push((Arc::from(source_key), SystemTime::now()));
            }
        }
        let keys: Vec<CacheKey> = match self.index.lock() {
            Ok(mut idx) => {
                let ks: Vec<CacheKey> = idx
                    .entries
                    .iter()
                    .filter(|(_, e)| &*e.source_key == source_key)
                    .map(|(k, _)| *k)
                    .collect();
                for k in &ks {
                    idx.remove(k);
                }
                self.bytes.set(idx.total as i64);
                ks
            }
            Err(_) => Vec::new(),
        };
        for k in &keys {
            let _ = std::fs::remove_file(self.path_of(k));
        }
        keys.len()
    }

    fn purged_while_rebuilding(&self, source_key: &str) -> bool {
        self.purged_early
            .lock()
            .map(|p| p.iter().any(|(k, _)| &**k == source_key))
            .unwrap_or(false)
    }

    /// Bytes currently held.
    pub fn total_bytes(&self) -> u64 {
        self.index.lock().map(|i| i.total).unwrap_or(0)
    }
}

fn read_head(path: &Path) -> Option<Head> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut buf = vec![0u8; FIXED + u16::MAX as usize];
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return None,
        }
    }
    decode_head(&buf[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(body: &'static [u8], src: &str) -> CachedImage {
        CachedImage {
            body: Bytes::from_static(body),
            format: OutputFormat::Webp,
            width: 3,
            height: 4,
            source_key: Arc::from(src),
            filled_from: Tier::Origin,
        }
    }

    fn tier(name: &str, cap: u64) -> (Arc<DiskTier>, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("flexphoto-disk-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let t = DiskTier::open(
            &dir,
            cap,
            IntCounter::new("e", "e").unwrap(),
            IntGauge::new("b", "b").unwrap(),
        )
        .unwrap();
        while !t.is_ready() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        (t, dir)
    }

    #[tokio::test]
    async fn round_trip_and_verification() {
        let (t, _) = tier("rt", 1 << 20);
        let k = [7u8; 32];
        t.put(k, &img(b"hello world", "a.jpg")).await.unwrap();
        let got = t.get(&k).await.unwrap();
        assert_eq!(&got.body[..], b"hello world");
        assert_eq!(
            (got.format, got.width, got.height, &*got.source_key),
            (OutputFormat::Webp, 3, 4, "a.jpg")
        );
        // Flip one body byte: the entry must be refused and removed.
        let p = t.path_of(&k);
        let mut raw = std::fs::read(&p).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 0xff;
        std::fs::write(&p, &raw).unwrap();
        assert!(t.get(&k).await.is_none());
        assert!(!p.exists());
    }

    #[tokio::test]
    async fn truncated_entries_are_refused() {
        let (t, _) = tier("trunc", 1 << 20);
        let k = [9u8; 32];
        t.put(k, &img(b"0123456789abcdef", "b.jpg")).await.unwrap();
        let p = t.path_of(&k);
        let raw = std::fs::read(&p).unwrap();
        std::fs::write(&p, &raw[..raw.len() - 3]).unwrap();
        assert!(t.get(&k).await.is_none());
    }

    #[tokio::test]
    async fn evicts_least_recently_used_and_purges() {
        let per = (FIXED + 1 + 100) as u64;
        let (t, _) = tier("lru", per * 3);
        let body: &'static [u8] = &[1u8; 100];
        for i in 0..3u8 {
            t.put([i; 32], &img(body, "x")).await.unwrap();
        }
        assert!(t.get(&[0; 32]).await.is_some()); // 0 becomes most recent
        t.put([3; 32], &img(body, "y")).await.unwrap();
        assert!(t.get(&[1; 32]).await.is_none(), "1 was least recently used");
        assert!(t.get(&[0; 32]).await.is_some());
        assert!(t.total_bytes() <= per * 3);
        assert_eq!(t.purge_source("x"), 2);
        assert!(t.get(&[3; 32]).await.is_some());
    }

    #[tokio::test]
    async fn index_survives_restart_and_drops_leftovers() {
        let (t, dir) = tier("restart", 1 << 20);
        t.put([5; 32], &img(b"persist", "p.jpg")).await.unwrap();
        std::fs::write(dir.join("tmp").join("half-written"), b"xx").unwrap();
        drop(t);
        let t2 = DiskTier::open(
            &dir,
            1 << 20,
            IntCounter::new("e", "e").unwrap(),
            IntGauge::new("b", "b").unwrap(),
        )
        .unwrap();
        while !t2.is_ready() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(&t2.get(&[5; 32]).await.unwrap().body[..], b"persist");
        assert!(!dir.join("tmp").join("half-written").exists());
    }

    /// A purge that arrives while the index is still being rebuilt at start-up wins: the
    /// purged source's entries are neither served meanwhile nor indexed afterwards, while
    /// entries written after the purge and other sources' entries survive.
    #[tokio::test]
    async fn a_purge_during_the_rebuild_is_not_undone() {
        let (t, dir) = tier("purge-rebuild", 1 << 20);
        t.put([1; 32], &img(b"old", "gone.jpg")).await.unwrap();
        t.put([2; 32], &img(b"other", "kept.jpg")).await.unwrap();
        drop(t);
        let t = DiskTier::unindexed(
            &dir,
            1 << 20,
            IntCounter::new("e", "e").unwrap(),
            IntGauge::new("b", "b").unwrap(),
        )
        .unwrap();
        assert!(!t.is_ready());
        t.purge_source("gone.jpg");
        assert!(t.get(&[1; 32]).await.is_none(), "a purged entry was served");
        // Written after the purge (the source's new bytes): must survive the rebuild.
        std::thread::sleep(std::time::Duration::from_millis(20));
        t.put([3; 32], &img(b"new", "gone.jpg")).await.unwrap();
        t.rebuild();
        assert!(t.is_ready());
        assert!(t.get(&[1; 32]).await.is_none());
        assert!(
            !t.path_of(&[1; 32]).exists(),
            "the purged file is still on disk"
        );
        assert_eq!(&t.get(&[2; 32]).await.unwrap().body[..], b"other");
        assert_eq!(&t.get(&[3; 32]).await.unwrap().body[..], b"new");
    }
}
