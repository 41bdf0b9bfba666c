//! Hot and cold storage read as one: objects are looked for in the hot store first and, when
//! it does not have them, in the cold one. A hot object costs one request, as without tiers;
//! only an object that moved to the cold store costs a second. Writes go to the hot store;
//! deletes remove both copies.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{ArchiveState, ImageKey, Object, ObjectMeta, ObjectStore, StorageError};

/// A hot store with a cold store behind it.
pub struct TieredStore {
    hot: Arc<dyn ObjectStore>,
    cold: Arc<dyn ObjectStore>,
}

impl TieredStore {
    /// Reads `hot` first, then `cold`.
    pub fn new(hot: Arc<dyn ObjectStore>, cold: Arc<dyn ObjectStore>) -> Self {
        Self { hot, cold }
    }

    /// The hot store.
    pub fn hot(&self) -> &Arc<dyn ObjectStore> {
        &self.hot
    }

    /// The cold store.
    pub fn cold(&self) -> &Arc<dyn ObjectStore> {
        &self.cold
    }
}

#[async_trait]
impl ObjectStore for TieredStore {
    async fn head(&self, key: &ImageKey) -> Result<ObjectMeta, StorageError> {
        match self.hot.head(key).await {
            Err(StorageError::NotFound(_)) => self.cold.head(key).await,
            other => other,
        }
    }

    async fn get(&self, key: &ImageKey, max_bytes: u64) -> Result<Object, StorageError> {
        match self.hot.get(key, max_bytes).await {
            Err(StorageError::NotFound(_)) => self.cold.get(key, max_bytes).await,
            other => other,
        }
    }

    async fn put(
        &self,
        key: &ImageKey,
        body: Bytes,
        content_type: &str,
    ) -> Result<ObjectMeta, StorageError> {
        self.hot.put(key, body, content_type).await
    }

    async fn put_file(
        &self,
        key: &ImageKey,
        path: &Path,
        content_type: &str,
    ) -> Result<ObjectMeta, StorageError> {
        self.hot.put_file(key, path, content_type).await
    }

    async fn delete(&self, key: &ImageKey) -> Result<(), StorageError> {
        self.hot.delete(key).await?;
        self.cold.delete(key).await
    }

    async fn archive_state(&self, key: &ImageKey) -> Result<ArchiveState, StorageError> {
        match self.hot.archive_state(key).await {
            Err(StorageError::NotFound(_)) => self.cold.archive_state(key).await,
            other => other,
        }
    }

    fn describe(&self) -> String {
        format!("{} (cold: {})", self.hot.describe(), self.cold.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalDirStore;

    #[tokio::test]
    async fn reads_hot_first_then_cold_and_deletes_both() {
        let root = std::env::temp_dir().join(format!("fp-tiered-{}", std::process::id()));
        let hot: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::new(root.join("hot")).unwrap());
        let cold: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::new(root.join("cold")).unwrap());
        let t = TieredStore::new(hot.clone(), cold.clone());
        let k = ImageKey::parse("a/b.jpg").unwrap();
        assert!(matches!(t.head(&k).await, Err(StorageError::NotFound(_))));
        cold.put(&k, Bytes::from_static(b"cold"), "image/jpeg")
            .await
            .unwrap();
        assert_eq!(&t.get(&k, 100).await.unwrap().bytes[..], b"cold");
        hot.put(&k, Bytes::from_static(b"hot!"), "image/jpeg")
            .await
            .unwrap();
        assert_eq!(&t.get(&k, 100).await.unwrap().bytes[..], b"hot!");
        t.delete(&k).await.unwrap();
        assert!(matches!(hot.head(&k).await, Err(StorageError::NotFound(_))));
        assert!(matches!(
            cold.head(&k).await,
            Err(StorageError::NotFound(_))
        ));
        let _ = std::fs::remove_dir_all(root);
    }
}
