//! The admin UI's files (plain ES modules and CSS under `control-plane/admin/`), compiled
//! into the binary. They are served under `/admin/assets/{version}/…`, where the version is
//! a hash of every file, so a browser may cache them for ever (`immutable`) and a new build
//! changes every URL. Each is kept gzipped as well for clients that accept it.

use std::io::Write;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Path under `/admin/assets/{version}/`.
    pub path: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
    /// Its bytes gzipped.
    pub gzip: Vec<u8>,
    /// Its `Content-Type`.
    pub content_type: &'static str,
}

macro_rules! files {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_bytes!(concat!("../../admin/", $path)) as &'static [u8])),*]
    };
}

/// Every file the pages load, by path.
const FILES: &[(&str, &[u8])] = files![
    "app.css",
    "js/main.js",
    "js/api.js",
    "js/dom.js",
    "js/filters.js",
    "js/charts.js",
    "js/pages/login.js",
    "js/pages/library.js",
    "js/pages/search.js",
    "js/pages/image.js",
    "js/pages/upload.js",
    "js/pages/review.js",
    "js/pages/operations.js",
];

/// The page shell; `{{ASSETS}}` becomes the versioned asset prefix.
pub const INDEX_TEMPLATE: &str = include_str!("../../admin/index.html");

/// The embedded files and their version.
#[derive(Debug)]
pub struct Assets {
    /// Hash of every file (hex, 16 digits).
    pub version: String,
    /// The files.
    pub files: Vec<Asset>,
    /// The page shell with the asset prefix filled in.
    pub index: String,
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

/// The assets, built on first use.
pub fn assets() -> &'static Assets {
    static ASSETS: OnceLock<Assets> = OnceLock::new();
    ASSETS.get_or_init(|| {
        let mut h = Sha256::new();
        for (path, body) in FILES {
            h.update(path.as_bytes());
            h.update((body.len() as u64).to_le_bytes());
            h.update(body);
        }
        h.update(INDEX_TEMPLATE.as_bytes());
        let version = hex::encode(&h.finalize()[..8]);
        let files = FILES
            .iter()
            .map(|(path, body)| Asset {
                path,
                body,
                gzip: gzip(body),
                content_type: content_type(path),
            })
            .collect();
        let index = INDEX_TEMPLATE.replace("{{ASSETS}}", &format!("/admin/assets/{version}"));
        Assets {
            version,
            files,
            index,
        }
    })
}

impl Assets {
    /// The file at `path` when `version` is the current one.
    pub fn get(&self, version: &str, path: &str) -> Option<&Asset> {
        if version != self.version {
            return None;
        }
        self.files.iter().find(|a| a.path == path)
    }

    /// Gzipped bytes of every script and style sheet (what a first visit downloads).
    pub fn compressed_total(&self) -> usize {
        self.files.iter().map(|a| a.gzip.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_served_under_the_version() {
        let a = assets();
        assert_eq!(a.version.len(), 16);
        assert!(a.get(&a.version, "js/main.js").is_some());
        assert!(a.get("0000000000000000", "js/main.js").is_none());
        assert!(a.get(&a.version, "../Cargo.toml").is_none());
        assert!(a
            .index
            .contains(&format!("/admin/assets/{}/js/main.js", a.version)));
    }

    /// The budget: scripts and styles of the pages under 200 KB compressed.
    #[test]
    fn scripts_and_styles_fit_the_budget() {
        let total = assets().compressed_total();
        assert!(total < 200 * 1024, "{total} bytes gzipped");
    }

    /// Every module a script imports is embedded (a missing one would 404 in the browser).
    #[test]
    fn every_import_is_embedded() {
        let a = assets();
        for f in a.files.iter().filter(|f| f.path.ends_with(".js")) {
            let text = std::str::from_utf8(f.body).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let spec = line
                    .rsplit_once("from ")
                    .map(|(_, s)| s)
                    .unwrap_or(line.trim_start_matches("import "))
                    .trim()
                    .trim_end_matches(';')
                    .trim_matches(|c| c == '"' || c == '\'');
                let dir = f.path.rsplit_once('/').map_or("", |(d, _)| d);
                let mut parts: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
                for seg in spec.split('/') {
                    match seg {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        s => parts.push(s),
                    }
                }
                let target = parts.join("/");
                assert!(
                    a.get(&a.version, &target).is_some(),
                    "{} imports {spec} ({target}), which is not embedded",
                    f.path
                );
            }
        }
    }
}
