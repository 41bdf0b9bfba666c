//! `flexphoto import DIR --owner O`: uploads every photo under a folder through the API, as
//! any client would (one-shot multipart uploads, streamed from disk), several at a time, with
//! a progress bar on a terminal and a line per file otherwise.
//!
//! Catalog metadata comes along: an XMP sidecar beside a photo (`a.xmp` or `a.jpg.xmp`) is
//! sent with it, and a CSV manifest (`--manifest`, [`crate::catalog::csv`]) gives each photo's
//! values (sent as `metadata` with `metadata_source=csv`, so their source is kept). The
//! collection (`--collection`) decides what happens to invalid photos: refused (counted as
//! failed, with every failing field and rule) or accepted and routed to review (counted).

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
    /// Accepted but routed to review because a rule failed.
    pub in_review: usize,
    /// Refused by the collection's validation (422), among the failures.
    pub refused: usize,
    /// Photos sent with an XMP sidecar.
    pub with_sidecar: usize,
    /// Photos sent with manifest values.
    pub with_manifest: usize,
}

/// What comes with each photo besides its bytes.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Collection (id or name) the photos go to; default: the owner's default collection.
    pub collection: Option<String>,
    /// Values per photo from a CSV manifest.
    pub manifest: Option<crate::catalog::csv::Manifest>,
}

/// The XMP sidecar of `photo`, when there is one: `name.xmp` or `name.ext.xmp`, any case.
pub fn sidecar_of(photo: &Path) -> Option<PathBuf> {
    let dir = photo.parent()?;
    let stem = photo.file_stem()?.to_string_lossy().into_owned();
    let name = photo.file_name()?.to_string_lossy().into_owned();
    [
        format!("{stem}.xmp"),
        format!("{stem}.XMP"),
        format!("{name}.xmp"),
        format!("{name}.XMP"),
    ]
    .into_iter()
    .map(|n| dir.join(n))
    .find(|p| p.is_file())
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

/// One file as a one-shot upload form: `owner`, the catalog parts (collection, manifest
/// values, sidecar), then `file` streamed from disk.
pub async fn upload_form(
    owner: &str,
    path: &Path,
    extra: &PhotoExtras,
) -> std::io::Result<reqwest::multipart::Form> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "photo".into());
    let mut form = reqwest::multipart::Form::new().text("owner", owner.to_owned());
    if let Some(c) = &extra.collection {
        form = form.text("collection", c.clone());
    }
    if let Some(values) = &extra.values {
        let obj: serde_json::Map<String, serde_json::Value> = values
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        form = form
            .text("metadata", serde_json::Value::Object(obj).to_string())
            .text("metadata_source", "csv");
    }
    if let Some(side) = &extra.sidecar {
        let bytes = tokio::fs::read(side).await?;
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name("sidecar.xmp")
            .mime_str("application/rdf+xml")
            .map_err(std::io::Error::other)?;
        form = form.part("sidecar", part);
    }
    let file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    let part = reqwest::multipart::Part::stream_with_length(reqwest::Body::from(file), len)
        .file_name(name)
        .mime_str("application/octet-stream")
        .map_err(std::io::Error::other)?;
    Ok(form.part("file", part))
}

/// The catalog parts sent with one photo.
#[derive(Debug, Clone, Default)]
pub struct PhotoExtras {
    /// Collection id or name.
    pub collection: Option<String>,
    /// Manifest values.
    pub values: Option<std::collections::BTreeMap<String, String>>,
    /// Sidecar path.
    pub sidecar: Option<PathBuf>,
}

impl PhotoExtras {
    /// What goes with `path` (found under `dir`).
    pub fn for_photo(dir: &Path, path: &Path, opts: &ImportOptions) -> Self {
        let relative = path
            .strip_prefix(dir)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/");
        PhotoExtras {
            collection: opts.collection.clone(),
            values: opts
                .manifest
                .as_ref()
                .and_then(|m| m.values_for(&relative))
                .cloned(),
            sidecar: sidecar_of(path),
        }
    }
}

/// How one upload ended.
enum Outcome {
    Imported { in_review: bool },
    Duplicate,
}

/// Uploads every photo under `dir` to the API at `api` with `key`, `concurrency` at a time.
pub async fn import(
    dir: &Path,
    owner: &str,
    api: &str,
    key: &str,
    concurrency: usize,
    opts: &ImportOptions,
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
    let jobs: Vec<(PathBuf, PhotoExtras)> = files
        .into_iter()
        .map(|p| {
            let extras = PhotoExtras::for_photo(dir, &p, opts);
            (p, extras)
        })
        .collect();
    let queue = Arc::new(Mutex::new(jobs));
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
                let Some((path, extras)) = queue.lock().await.pop() else {
                    break;
                };
                let outcome = match upload_form(&owner, &path, &extras).await {
                    Err(e) => Err((0, format!("{}: {e}", path.display()))),
                    Ok(form) => match client
                        .post(&url)
                        .bearer_auth(&key)
                        .multipart(form)
                        .send()
                        .await
                    {
                        Ok(r) if r.status().as_u16() == 201 => {
                            let body: serde_json::Value = r.json().await.unwrap_or_default();
                            let in_review = body["catalog"]["failures"]
                                .as_array()
                                .is_some_and(|f| !f.is_empty());
                            Ok(Outcome::Imported { in_review })
                        }
                        Ok(r) if r.status().as_u16() == 409 => Ok(Outcome::Duplicate),
                        Ok(r) => {
                            let status = r.status();
                            let body = r.text().await.unwrap_or_default();
                            Err((
                                status.as_u16(),
                                format!("{}: HTTP {status} {body}", path.display()),
                            ))
                        }
                        Err(e) => Err((0, format!("{}: {e}", path.display()))),
                    },
                };
                let mut rep = report.lock().await;
                rep.with_sidecar += usize::from(extras.sidecar.is_some());
                rep.with_manifest += usize::from(extras.values.is_some());
                match &outcome {
                    Ok(Outcome::Imported { in_review }) => {
                        rep.imported += 1;
                        rep.in_review += usize::from(*in_review);
                    }
                    Ok(Outcome::Duplicate) => rep.duplicates += 1,
                    Err((code, e)) => {
                        rep.refused += usize::from(*code == 422);
                        rep.failures.push(e.clone());
                    }
                }
                if bar.is_hidden() {
                    match &outcome {
                        Ok(Outcome::Imported { in_review: false }) => {
                            eprintln!("imported: {}", path.display())
                        }
                        Ok(Outcome::Imported { in_review: true }) => {
                            eprintln!("imported, routed to review: {}", path.display())
                        }
                        Ok(Outcome::Duplicate) => eprintln!("duplicate: {}", path.display()),
                        Err((_, e)) => eprintln!("failed: {e}"),
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
