//! `flexphoto import DIR --owner O`: uploads every photo under a folder through the API, as
//! any client would (one-shot multipart uploads, streamed from disk), several at a time, with
//! a progress bar on a terminal and a line per file otherwise.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::Mutex;

/// Why an import could not run.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The folder could not be read.
    #[error("reading {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// Nothing to import.
    #[error("no photos found in {0}")]
    Empty(PathBuf),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(String),
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Uploaded and accepted.
    pub imported: usize,
    /// Refused as exact duplicates of the owner's images.
    pub duplicates: usize,
    /// Files that failed, with why.
    pub failures: Vec<String>,
    /// Files found.
    pub total: usize,
}

/// Extensions taken as photos.
const PHOTO_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "webp", "gif", "heic", "heif", "hif", "avif", "tif", "tiff", "jxl",
];

fn is_photo(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .is_some_and(|e| PHOTO_EXTENSIONS.contains(&e.as_str()))
}

/// Every photo under `dir`, sorted.
pub fn find_photos(dir: &Path) -> Result<Vec<PathBuf>, ImportError> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let p = entry?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else if is_photo(&p) {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, &mut files).map_err(|e| ImportError::Read(dir.to_owned(), e))?;
    files.sort();
    Ok(files)
}

/// One file as a one-shot upload form: `owner`, then `file` streamed from disk.
pub async fn upload_form(owner: &str, path: &Path) -> std::io::Result<reqwest::multipart::Form> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "photo".into());
    let file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    let part = reqwest::multipart::Part::stream_with_length(reqwest::Body::from(file), len)
        .file_name(name)
        .mime_str("application/octet-stream")
        .map_err(std::io::Error::other)?;
    Ok(reqwest::multipart::Form::new()
        .text("owner", owner.to_owned())
        .part("file", part))
}

/// Uploads every photo under `dir` to the API at `api` with `key`, `concurrency` at a time.
pub async fn import(
    dir: &Path,
    owner: &str,
    api: &str,
    key: &str,
    concurrency: usize,
) -> Result<ImportReport, ImportError> {
    let files = find_photos(dir)?;
    if files.is_empty() {
        return Err(ImportError::Empty(dir.to_owned()));
    }
    let total = files.len();
    let client = crate::http_client::client_with_timeout(Duration::from_secs(600))
        .map_err(|e| ImportError::Client(e.to_string()))?;
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let b = ProgressBar::new(total as u64);
        b.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} {msg} [{elapsed_precise}, {eta} left]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let queue = Arc::new(Mutex::new(files));
    let report = Arc::new(Mutex::new(ImportReport {
        total,
        ..Default::default()
    }));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.clamp(1, total) {
        let (queue, report, bar, client) = (
            Arc::clone(&queue),
            Arc::clone(&report),
            bar.clone(),
            client.clone(),
        );
        let (owner, url, key) = (owner.to_owned(), format!("{api}/v1/images"), key.to_owned());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(path) = queue.lock().await.pop() else {
                    break;
                };
                let outcome = match upload_form(&owner, &path).await {
                    Err(e) => Err(format!("{}: {e}", path.display())),
                    Ok(form) => match client
                        .post(&url)
                        .bearer_auth(&key)
                        .multipart(form)
                        .send()
                        .await
                    {
                        Ok(r) if r.status().as_u16() == 201 => Ok("imported"),
                        Ok(r) if r.status().as_u16() == 409 => Ok("duplicate"),
                        Ok(r) => {
                            let status = r.status();
                            let body = r.text().await.unwrap_or_default();
                            Err(format!("{}: HTTP {status} {body}", path.display()))
                        }
                        Err(e) => Err(format!("{}: {e}", path.display())),
                    },
                };
                let mut rep = report.lock().await;
                match &outcome {
                    Ok("imported") => rep.imported += 1,
                    Ok(_) => rep.duplicates += 1,
                    Err(e) => rep.failures.push(e.clone()),
                }
                if bar.is_hidden() {
                    match &outcome {
                        Ok(what) => eprintln!("{what}: {}", path.display()),
                        Err(e) => eprintln!("failed: {e}"),
                    }
                } else {
                    bar.set_message(format!(
                        "new {} duplicate {} failed {}",
                        rep.imported,
                        rep.duplicates,
                        rep.failures.len()
                    ));
                    bar.inc(1);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    bar.finish();
    let report = report.lock().await.clone();
    Ok(report)
}
