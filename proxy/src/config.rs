//! Edge configuration: `config/edge.toml`, then environment overrides, then validation that
//! names the bad key.
//!
//! Any key can be overridden as `FLEXPHOTO_EDGE__SECTION__KEY=value` (double underscores
//! separate the path; the value is read as TOML when it parses, else as a string).
//! `FLEXPHOTO_EDGE_SIGNING_KEYS` (comma-separated hex) sets `signing.keys`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::url::canonical::QualityDefaults;
use crate::url::options::{parse_pairs, RequestOptions};

/// Why the configuration was refused; the text names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown keys or wrong types.
    #[error("{0}")]
    Parse(String),
    /// A value is out of range or inconsistent.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// Dotted key path.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// The config file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    server: RawServer,
    origin: RawOrigin,
    limits: RawLimits,
    transform: RawTransform,
    cache: RawCache,
    signing: RawSigning,
    presets: HashMap<String, String>,
}

impl Default for RawConfig {
    fn default() -> Self {
        let presets = [
            ("thumb", "w=200,h=200,fit=cover,g=smart"),
            ("medium", "w=800,h=800"),
            ("full", "w=2048,h=2048"),
        ];
        Self {
            server: RawServer::default(),
            origin: RawOrigin::default(),
            limits: RawLimits::default(),
            transform: RawTransform::default(),
            cache: RawCache::default(),
            signing: RawSigning::default(),
            presets: presets
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: String,
    threads: usize,
    work_stealing: bool,
    write_buffer_kb: usize,
    grace_period_secs: u64,
    shutdown_timeout_secs: u64,
    admin_token: String,
    cache_control_max_age_secs: u64,
    log_format: String,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            threads: 0,
            work_stealing: true,
            write_buffer_kb: 64,
            grace_period_secs: 1,
            shutdown_timeout_secs: 5,
            admin_token: String::new(),
            cache_control_max_age_secs: 86_400,
            log_format: "text".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawOrigin {
    kind: String,
    dir: String,
    timeout_ms: u64,
    revalidate_secs: u64,
    stale_if_error_secs: u64,
    s3: RawS3,
}

impl Default for RawOrigin {
    fn default() -> Self {
        Self {
            kind: "local".into(),
            dir: "./data/originals".into(),
            timeout_ms: 10_000,
            revalidate_secs: 60,
            stale_if_error_secs: 86_400,
            s3: RawS3::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawS3 {
    endpoint: String,
    region: String,
    bucket: String,
    path_style: bool,
    access_key: String,
    secret_key: String,
}

impl Default for RawS3 {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: String::new(),
            path_style: true,
            access_key: String::new(),
            secret_key: String::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_source_bytes: u64,
    max_source_pixels: u64,
    max_dimension: u32,
    request_timeout_ms: u64,
    inflight_source_mb: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_source_bytes: 64 * 1024 * 1024,
            max_source_pixels: 100_000_000,
            max_dimension: 8192,
            request_timeout_ms: 30_000,
            inflight_source_mb: 512,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTransform {
    workers: usize,
    queue: usize,
    vips_concurrency: usize,
    jpeg_quality: u8,
    webp_quality: u8,
    avif_quality: u8,
    webp_effort: u8,
    avif_effort: u8,
    png_compression: u8,
    working_side: u32,
}

impl Default for RawTransform {
    fn default() -> Self {
        Self {
            workers: 0,
            queue: 64,
            vips_concurrency: 1,
            jpeg_quality: 80,
            webp_quality: 75,
            avif_quality: 50,
            webp_effort: 4,
            avif_effort: 1,
            png_compression: 6,
            working_side: 2048,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCache {
    memory_mb: u64,
    source_mb: u64,
    disk_dir: String,
    disk_mb: u64,
    working_mb: u64,
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            memory_mb: 256,
            source_mb: 128,
            disk_dir: String::new(),
            disk_mb: 2048,
            working_mb: 256,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSigning {
    keys: Vec<String>,
    unsigned_presets: Vec<String>,
}

impl Default for RawSigning {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            unsigned_presets: vec!["thumb".into(), "medium".into(), "full".into()],
        }
    }
}

/// Where originals come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginConfig {
    /// A local directory.
    Local {
        /// Root directory.
        dir: PathBuf,
    },
    /// An S3-protocol bucket.
    S3(S3Config),
}

/// S3 connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// Endpoint URL; empty for AWS itself.
    pub endpoint: Option<String>,
    /// Region name.
    pub region: String,
    /// Bucket.
    pub bucket: String,
    /// Path-style addressing (most S3-compatible servers need it).
    pub path_style: bool,
    /// Static credentials; `None` uses the standard AWS environment variables.
    pub credentials: Option<(String, String)>,
}

/// The validated configuration of the edge.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Listen address.
    pub listen: String,
    /// Server threads (pingora service threads).
    pub threads: usize,
    /// One work-stealing runtime (true) or one single-threaded runtime per thread (false).
    pub work_stealing: bool,
    /// Per-connection write buffer, bytes.
    pub write_buffer_bytes: usize,
    /// Seconds to keep serving after SIGTERM before closing listeners.
    pub grace_period: Duration,
    /// Seconds to wait for in-flight requests at shutdown.
    pub shutdown_timeout: Duration,
    /// Bearer token for the admin endpoints; `None` disables them.
    pub admin_token: Option<String>,
    /// `max-age` sent in `Cache-Control`.
    pub max_age: Duration,
    /// `text` or `json` log lines.
    pub log_json: bool,
    /// Where originals come from.
    pub origin: OriginConfig,
    /// Origin request timeout.
    pub origin_timeout: Duration,
    /// How long a source's identity is trusted before it is checked again.
    pub revalidate_after: Duration,
    /// How long a last-known identity may serve cached results while the origin fails.
    pub stale_if_error: Duration,
    /// Largest source accepted, bytes.
    pub max_source_bytes: u64,
    /// Largest source accepted, pixels (checked from the header).
    pub max_source_pixels: u64,
    /// Largest output width or height.
    pub max_dimension: u32,
    /// Whole-request deadline.
    pub request_timeout: Duration,
    /// Budget for source bytes fetched for queued work and not yet in the source cache.
    pub inflight_source_bytes: u64,
    /// Transform worker threads.
    pub workers: usize,
    /// Transforms allowed to wait for a worker.
    pub queue: usize,
    /// libvips threads per operation.
    pub vips_concurrency: usize,
    /// Default qualities.
    pub quality: QualityDefaults,
    /// WebP encoder effort 0..=6.
    pub webp_effort: u8,
    /// AVIF encoder effort 0..=9.
    pub avif_effort: u8,
    /// PNG zlib level 0..=9.
    pub png_compression: u8,
    /// Memory tier capacity, bytes.
    pub memory_bytes: u64,
    /// Source cache capacity, bytes.
    pub source_bytes: u64,
    /// Disk tier directory; `None` disables the tier.
    pub disk_dir: Option<PathBuf>,
    /// Disk tier capacity, bytes.
    pub disk_bytes: u64,
    /// Working-copy cache capacity, bytes (0 disables working copies).
    pub working_bytes: u64,
    /// Longest side of a working copy, pixels.
    pub working_side: u32,
    /// URL signing keys (first signs, all verify).
    pub signing_keys: Vec<Vec<u8>>,
    /// Presets allowed without a signature when keys are set.
    pub unsigned_presets: Vec<String>,
    /// Named presets.
    pub presets: HashMap<String, RequestOptions>,
}

const ENV_PREFIX: &str = "FLEXPHOTO_EDGE__";

fn apply_env(
    table: &mut toml::Table,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, value) in vars {
        if name == "FLEXPHOTO_EDGE_SIGNING_KEYS" {
            let keys: Vec<toml::Value> = value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect();
            let signing = table
                .entry("signing")
                .or_insert_with(|| toml::Value::Table(Default::default()));
            if let toml::Value::Table(t) = signing {
                t.insert("keys".into(), toml::Value::Array(keys));
            }
            continue;
        }
        let Some(path) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(invalid(&name, "empty path segment in environment override"));
        }
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(value.clone()));
        let mut cur = &mut *table;
        for p in &parts[..parts.len() - 1] {
            let next = cur
                .entry(p.clone())
                .or_insert_with(|| toml::Value::Table(Default::default()));
            cur = match next {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(invalid(
                        &parts.join("."),
                        format!("{name} overrides a value that is not a table"),
                    ))
                }
            };
        }
        cur.insert(parts[parts.len() - 1].clone(), parsed);
    }
    Ok(())
}

impl EdgeConfig {
    /// Loads `path` (or built-in defaults when `None`), applies the environment and validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_owned(),
                source,
            })?,
            None => String::new(),
        };
        Self::from_toml(&text, std::env::vars())
    }

    /// Parses TOML text with the given environment.
    pub fn from_toml(
        text: &str,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        apply_env(&mut table, env)?;
        let raw: RawConfig = RawConfig::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        Self::validate(raw)
    }

    fn validate(raw: RawConfig) -> Result<Self, ConfigError> {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        if raw.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "server.listen",
                format!(
                    "{:?} is not an address such as 127.0.0.1:8080",
                    raw.server.listen
                ),
            ));
        }
        let log_json = match raw.server.log_format.as_str() {
            "text" => false,
            "json" => true,
            other => {
                return Err(invalid(
                    "server.log_format",
                    format!("must be text or json, got {other:?}"),
                ))
            }
        };
        let origin = match raw.origin.kind.as_str() {
            "local" => {
                if raw.origin.dir.is_empty() {
                    return Err(invalid("origin.dir", "must name a directory"));
                }
                OriginConfig::Local {
                    dir: PathBuf::from(&raw.origin.dir),
                }
            }
            "s3" => {
                let s = &raw.origin.s3;
                if s.bucket.is_empty() {
                    return Err(invalid(
                        "origin.s3.bucket",
                        "must be set when origin.kind = \"s3\"",
                    ));
                }
                if s.access_key.is_empty() != s.secret_key.is_empty() {
                    return Err(invalid(
                        "origin.s3.secret_key",
                        "access_key and secret_key must be set together",
                    ));
                }
                OriginConfig::S3(S3Config {
                    endpoint: (!s.endpoint.is_empty()).then(|| s.endpoint.clone()),
                    region: s.region.clone(),
                    bucket: s.bucket.clone(),
                    path_style: s.path_style,
                    credentials: (!s.access_key.is_empty())
                        .then(|| (s.access_key.clone(), s.secret_key.clone())),
                })
            }
            other => {
                return Err(invalid(
                    "origin.kind",
                    format!("must be local or s3, got {other:?}"),
                ))
            }
        };
        let positive = |key: &str, v: u64| {
            if v == 0 {
                Err(invalid(key, "must be greater than 0"))
            } else {
                Ok(v)
            }
        };
        positive("origin.timeout_ms", raw.origin.timeout_ms)?;
        positive("limits.max_source_bytes", raw.limits.max_source_bytes)?;
        positive("limits.max_source_pixels", raw.limits.max_source_pixels)?;
        positive("limits.request_timeout_ms", raw.limits.request_timeout_ms)?;
        positive("limits.inflight_source_mb", raw.limits.inflight_source_mb)?;
        if !(16..=65_535).contains(&raw.limits.max_dimension) {
            return Err(invalid(
                "limits.max_dimension",
                "must be between 16 and 65535",
            ));
        }
        let t = &raw.transform;
        for (key, q) in [
            ("transform.jpeg_quality", t.jpeg_quality),
            ("transform.webp_quality", t.webp_quality),
            ("transform.avif_quality", t.avif_quality),
        ] {
            if !(1..=100).contains(&q) {
                return Err(invalid(key, format!("must be between 1 and 100, got {q}")));
            }
        }
        if t.webp_effort > 6 {
            return Err(invalid("transform.webp_effort", "must be between 0 and 6"));
        }
        if t.avif_effort > 9 {
            return Err(invalid("transform.avif_effort", "must be between 0 and 9"));
        }
        if t.png_compression > 9 {
            return Err(invalid(
                "transform.png_compression",
                "must be between 0 and 9",
            ));
        }
        if !(256..=8192).contains(&t.working_side) {
            return Err(invalid(
                "transform.working_side",
                "must be between 256 and 8192",
            ));
        }
        if t.queue == 0 {
            return Err(invalid("transform.queue", "must be at least 1"));
        }
        positive("cache.memory_mb", raw.cache.memory_mb)?;
        positive("cache.source_mb", raw.cache.source_mb)?;
        positive("cache.disk_mb", raw.cache.disk_mb)?;
        let mut signing_keys = Vec::new();
        for (i, k) in raw.signing.keys.iter().enumerate() {
            let bytes = hex::decode(k.trim())
                .map_err(|_| invalid(&format!("signing.keys[{i}]"), "must be hex"))?;
            if bytes.len() < 16 {
                return Err(invalid(
                    &format!("signing.keys[{i}]"),
                    "must be at least 16 bytes (32 hex digits)",
                ));
            }
            signing_keys.push(bytes);
        }
        let mut presets = HashMap::new();
        for (name, text) in &raw.presets {
            let key = format!("presets.{name}");
            let opts = parse_pairs(text, ',', raw.limits.max_dimension)
                .map_err(|e| invalid(&key, e.to_string()))?;
            if opts.preset.is_some() || opts.signature.is_some() || opts.expires.is_some() {
                return Err(invalid(
                    &key,
                    "a preset may not name a preset, signature or expiry",
                ));
            }
            presets.insert(name.clone(), opts);
        }
        for p in &raw.signing.unsigned_presets {
            if !presets.contains_key(p) && !raw.signing.keys.is_empty() {
                return Err(invalid(
                    "signing.unsigned_presets",
                    format!("names {p:?}, which is not a preset"),
                ));
            }
        }
        Ok(Self {
            listen: raw.server.listen,
            work_stealing: raw.server.work_stealing,
            write_buffer_bytes: raw.server.write_buffer_kb.clamp(2, 1024) * 1024,
            threads: if raw.server.threads == 0 {
                cores
            } else {
                raw.server.threads
            },
            grace_period: Duration::from_secs(raw.server.grace_period_secs),
            shutdown_timeout: Duration::from_secs(raw.server.shutdown_timeout_secs),
            admin_token: (!raw.server.admin_token.is_empty()).then_some(raw.server.admin_token),
            max_age: Duration::from_secs(raw.server.cache_control_max_age_secs),
            log_json,
            origin,
            origin_timeout: Duration::from_millis(raw.origin.timeout_ms),
            revalidate_after: Duration::from_secs(raw.origin.revalidate_secs),
            stale_if_error: Duration::from_secs(raw.origin.stale_if_error_secs),
            max_source_bytes: raw.limits.max_source_bytes,
            max_source_pixels: raw.limits.max_source_pixels,
            max_dimension: raw.limits.max_dimension,
            request_timeout: Duration::from_millis(raw.limits.request_timeout_ms),
            inflight_source_bytes: raw.limits.inflight_source_mb * 1024 * 1024,
            workers: if t.workers == 0 { cores } else { t.workers },
            queue: t.queue,
            vips_concurrency: t.vips_concurrency.max(1),
            quality: QualityDefaults {
                jpeg: t.jpeg_quality,
                webp: t.webp_quality,
                avif: t.avif_quality,
            },
            webp_effort: t.webp_effort,
            avif_effort: t.avif_effort,
            png_compression: t.png_compression,
            memory_bytes: raw.cache.memory_mb * 1024 * 1024,
            source_bytes: raw.cache.source_mb * 1024 * 1024,
            disk_dir: (!raw.cache.disk_dir.is_empty()).then(|| PathBuf::from(&raw.cache.disk_dir)),
            disk_bytes: raw.cache.disk_mb * 1024 * 1024,
            working_bytes: raw.cache.working_mb * 1024 * 1024,
            working_side: t.working_side,
            signing_keys,
            unsigned_presets: raw.signing.unsigned_presets,
            presets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<EdgeConfig, ConfigError> {
        EdgeConfig::from_toml(
            text,
            env.iter().map(|(a, b)| (a.to_string(), b.to_string())),
        )
    }

    #[test]
    fn defaults_are_valid() {
        let c = load("", &[]).unwrap();
        assert_eq!(
            c.origin,
            OriginConfig::Local {
                dir: "./data/originals".into()
            }
        );
        assert!(c.workers >= 1);
    }

    #[test]
    fn shipped_config_is_valid() {
        let text = include_str!("../../config/edge.toml");
        let c = load(text, &[]).unwrap();
        assert!(c.presets.contains_key("thumb"));
    }

    #[test]
    fn env_overrides() {
        let c = load(
            "[limits]\nmax_dimension = 3000",
            &[
                ("FLEXPHOTO_EDGE__LIMITS__MAX_DIMENSION", "4096"),
                ("FLEXPHOTO_EDGE__ORIGIN__DIR", "/srv/x"),
                (
                    "FLEXPHOTO_EDGE_SIGNING_KEYS",
                    "00112233445566778899aabbccddeeff, ffeeddccbbaa99887766554433221100",
                ),
            ],
        )
        .unwrap();
        assert_eq!(c.max_dimension, 4096);
        assert_eq!(
            c.origin,
            OriginConfig::Local {
                dir: "/srv/x".into()
            }
        );
        assert_eq!(c.signing_keys.len(), 2);
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            ("[server]\nlisten = \"nope\"", "server.listen"),
            ("[transform]\njpeg_quality = 0", "transform.jpeg_quality"),
            ("[origin]\nkind = \"ftp\"", "origin.kind"),
            ("[origin]\nkind = \"s3\"", "origin.s3.bucket"),
            ("[signing]\nkeys = [\"zz\"]", "signing.keys[0]"),
            ("[presets]\nbig = \"w=abc\"", "presets.big"),
            ("[limits]\nmax_source_bytes = 0", "limits.max_source_bytes"),
        ] {
            let err = load(text, &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let err = load("[server]\nlisen = \"x\"", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("lisen"), "{err}");
    }
}
