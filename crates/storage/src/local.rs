//! A local directory as the origin: the embedded default.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use crate::body_buffer::BodyBuffer;
use crate::{ImageKey, Object, ObjectMeta, ObjectStore, StorageError};

/// Objects are files under `root`; keys are relative paths.
#[derive(Debug, Clone)]
pub struct LocalDirStore {
    root: PathBuf,
}

fn io_err(key: &ImageKey, e: std::io::Error) -> StorageError {
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => {
            StorageError::NotFound(key.to_string())
        }
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => StorageError::Full,
        _ => StorageError::Failed(format!("{key}: {e}")),
    }
}

fn identity(meta: &std::fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}-{:x}", mtime, meta.len())
}

impl LocalDirStore {
    /// Serves files under `root`, creating it if missing.
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        let root = std::fs::canonicalize(&root)?;
        Ok(Self { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of `key`, refusing symlinks that lead outside the root.
    async fn existing_path(&self, key: &ImageKey) -> Result<PathBuf, StorageError> {
        let path = self.root.join(key.as_str());
        let real = tokio::fs::canonicalize(&path)
            .await
            .map_err(|e| io_err(key, e))?;
        if !real.starts_with(&self.root) {
            return Err(StorageError::NotFound(key.to_string()));
        }
        Ok(real)
    }

    fn target_path(&self, key: &ImageKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    async fn meta_of(&self, key: &ImageKey, path: &Path) -> Result<ObjectMeta, StorageError> {
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| io_err(key, e))?;
        if !meta.is_file() {
            return Err(StorageError::NotFound(key.to_string()));
        }
        Ok(ObjectMeta {
            size: meta.len(),
            identity: identity(&meta),
            content_type: None,
        })
    }
}

#[async_trait]
impl ObjectStore for LocalDirStore {
    async fn head(&self, key: &ImageKey) -> Result<ObjectMeta, StorageError> {
        let path = self.existing_path(key).await?;
        self.meta_of(key, &path).await
    }

    async fn get(&self, key: &ImageKey, max_bytes: u64) -> Result<Object, StorageError> {
        let path = self.existing_path(key).await?;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io_err(key, e))?;
        let meta = file.metadata().await.map_err(|e| io_err(key, e))?;
        if !meta.is_file() {
            return Err(StorageError::NotFound(key.to_string()));
        }
        if meta.len() > max_bytes {
            return Err(StorageError::TooLarge {
                size: meta.len(),
                limit: max_bytes,
            });
        }
        let mut buf = BodyBuffer::with_capacity(meta.len() as usize).map_err(|e| io_err(key, e))?;
        // Read until the end, not only the size from the stat, in case the file grew since.
        let mut past_size = [0u8; 8192];
        loop {
            let spare = buf.spare(0).map_err(|e| io_err(key, e))?;
            let n = if spare.is_empty() {
                let n = file
                    .read(&mut past_size)
                    .await
                    .map_err(|e| io_err(key, e))?;
                buf.extend_from_slice(&past_size[..n])
                    .map_err(|e| io_err(key, e))?;
                n
            } else {
                let n = file.read(spare).await.map_err(|e| io_err(key, e))?;
                buf.advance(n);
                n
            };
            if buf.len() as u64 > max_bytes {
                return Err(StorageError::TooLarge {
                    size: buf.len() as u64,
                    limit: max_bytes,
                });
            }
            if n == 0 {
                break;
            }
        }
        Ok(Object {
            meta: ObjectMeta {
                size: buf.len() as u64,
                identity: identity(&meta),
                content_type: None,
            },
            bytes: buf.freeze().map_err(|e| io_err(key, e))?,
        })
    }

    async fn put(
        &self,
        key: &ImageKey,
        body: Bytes,
        _content_type: &str,
    ) -> Result<ObjectMeta, StorageError> {
        let path = self.target_path(key);
        let tmp = temp_path(&path);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| io_err(key, e))?;
        }
        tokio::fs::write(&tmp, &body)
            .await
            .map_err(|e| io_err(key, e))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| io_err(key, e))?;
        self.meta_of(key, &path).await
    }

    async fn put_file(
        &self,
        key: &ImageKey,
        src: &Path,
        _content_type: &str,
    ) -> Result<ObjectMeta, StorageError> {
        let path = self.target_path(key);
        let tmp = temp_path(&path);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| io_err(key, e))?;
        }
        tokio::fs::copy(src, &tmp)
            .await
            .map_err(|e| io_err(key, e))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| io_err(key, e))?;
        self.meta_of(key, &path).await
    }

    async fn delete(&self, key: &ImageKey) -> Result<(), StorageError> {
        match tokio::fs::remove_file(self.target_path(key)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(key, e)),
        }
    }

    fn describe(&self) -> String {
        format!("dir:{}", self.root.display())
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp-{}-{:x}", std::process::id(), rand_suffix()));
    path.with_file_name(name)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ N.fetch_add(1, Ordering::Relaxed).rotate_left(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("flexphoto-local-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[tokio::test]
    async fn put_get_head_delete() {
        let store = LocalDirStore::new(tmpdir("pghd")).unwrap();
        let key = ImageKey::parse("a/b/c.jpg").unwrap();
        assert!(matches!(
            store.get(&key, 10).await,
            Err(StorageError::NotFound(_))
        ));
        let meta = store
            .put(&key, Bytes::from_static(b"hello"), "image/jpeg")
            .await
            .unwrap();
        assert_eq!(meta.size, 5);
        let obj = store.get(&key, 10).await.unwrap();
        assert_eq!(&obj.bytes[..], b"hello");
        assert_eq!(store.head(&key).await.unwrap().identity, obj.meta.identity);
        assert!(matches!(
            store.get(&key, 4).await,
            Err(StorageError::TooLarge { size: 5, limit: 4 })
        ));
        store.delete(&key).await.unwrap();
        store.delete(&key).await.unwrap();
        assert!(matches!(
            store.head(&key).await,
            Err(StorageError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn symlinks_out_of_the_root_are_not_followed() {
        let dir = tmpdir("symlink");
        let store = LocalDirStore::new(&dir).unwrap();
        let outside = tmpdir("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.jpg"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.join("secret.jpg"), dir.join("link.jpg")).unwrap();
        let key = ImageKey::parse("link.jpg").unwrap();
        assert!(matches!(
            store.get(&key, 10).await,
            Err(StorageError::NotFound(_))
        ));
        let dirkey = ImageKey::parse("sub").unwrap();
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        assert!(matches!(
            store.get(&dirkey, 10).await,
            Err(StorageError::NotFound(_))
        ));
    }
}
