//! Spooling an upload body to a temporary file while hashing it, so no upload is ever held in
//! memory whole and its size and SHA-256 are known before it reaches storage.

use std::path::{Path as FsPath, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

/// Why spooling failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// More bytes arrived than allowed.
    #[error("the upload is over the limit of {0} bytes")]
    TooLarge(u64),
    /// The disk holding temporary files is full.
    #[error("the server is out of disk space for uploads")]
    Full,
    /// The temporary file could not be written.
    #[error("spooling the upload failed: {0}")]
    Io(String),
}

impl SpoolError {
    fn io(context: impl std::fmt::Display, e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => SpoolError::Full,
            _ => SpoolError::Io(format!("{context}: {e}")),
        }
    }
}

/// A temporary file removed when dropped.
pub struct TempFile(PathBuf);

impl TempFile {
    /// A fresh name under `dir`/tmp (the directory is created).
    pub fn new_in(data_dir: &FsPath) -> Result<TempFile, SpoolError> {
        let dir = data_dir.join("tmp");
        std::fs::create_dir_all(&dir)
            .map_err(|e| SpoolError::io(format_args!("creating {}", dir.display()), e))?;
        Ok(TempFile(dir.join(format!("upload-{}", Uuid::new_v4()))))
    }

    /// Where the file is.
    pub fn path(&self) -> &FsPath {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What streaming a body to disk measured.
pub struct Spooled {
    /// Bytes written.
    pub size: u64,
    /// Their SHA-256, hex.
    pub sha256: String,
    /// The first bytes, for sniffing the format.
    pub head: Vec<u8>,
}

/// How many leading bytes are kept for sniffing.
const HEAD_BYTES: usize = 64;

/// Streams chunks to a file, hashing them, refusing more than `limit` bytes.
pub struct Spooler {
    file: tokio::fs::File,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
    head: Vec<u8>,
    limit: u64,
}

impl Spooler {
    /// Starts writing `path`, refusing more than `limit` bytes.
    pub async fn create(path: &FsPath, limit: u64) -> Result<Self, SpoolError> {
        let file = tokio::fs::File::create(path)
            .await
            .map_err(|e| SpoolError::io(format_args!("creating {}", path.display()), e))?;
        Ok(Self {
            file,
            path: path.to_owned(),
            hasher: Sha256::new(),
            size: 0,
            head: Vec::with_capacity(HEAD_BYTES),
            limit,
        })
    }

    /// Appends a chunk.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), SpoolError> {
        self.size += chunk.len() as u64;
        if self.size > self.limit {
            return Err(SpoolError::TooLarge(self.limit));
        }
        if self.head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        self.hasher.update(chunk);
        self.file
            .write_all(chunk)
            .await
            .map_err(|e| SpoolError::io(format_args!("writing {}", self.path.display()), e))
    }

    /// Flushes to disk and says what was written.
    pub async fn finish(mut self) -> Result<Spooled, SpoolError> {
        self.file
            .flush()
            .await
            .map_err(|e| SpoolError::io("flushing", e))?;
        self.file
            .sync_all()
            .await
            .map_err(|e| SpoolError::io("flushing", e))?;
        Ok(Spooled {
            size: self.size,
            sha256: hex::encode(self.hasher.finalize()),
            head: self.head,
        })
    }
}
