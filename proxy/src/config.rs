//! Edge configuration: `config/edge.toml` (or `--config`, or `FLEXPHOTO_EDGE_CONFIG`), then
//! environment overrides, then validation that names the bad key. Loading follows the one
//! rule every FlexPhotoDB binary shares (`flexphoto_settings`).
//!
//! Any key can be overridden as `FLEXPHOTO_EDGE__SECTION__KEY=value` (double underscores
//! separate the path; the value is read as TOML when it parses, else as a string).
//! `FLEXPHOTO_EDGE_SIGNING_KEYS` (comma-separated hex) sets `signing.keys`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flexphoto_media::{FormatSet, ImageFormat};
use flexphoto_settings::{invalid, Loader};
use flexphoto_storage::{RawS3, StorageConfig};
use flexphoto_url::options::parse_pairs;
use flexphoto_url::{ImageKey, Meta, QualityDefaults, RequestOptions};
use serde::{Deserialize, Serialize};

pub use flexphoto_settings::ConfigError;

/// How the edge finds and reads its configuration.
pub const LOADER: Loader = Loader {
    prefix: "FLEXPHOTO_EDGE",
    name: "edge",
};

/// The config file as written.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    server: RawServer,
    origin: RawOrigin,
    limits: RawLimits,
    transform: RawTransform,
    cache: RawCache,
    signing: RawSigning,
    withheld: RawWithheld,
    access: RawAccess,
    presets: HashMap<String, String>,
}

/// `[withheld]`: the list of keys withheld by their rights (`crate::withheld`).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct RawWithheld {
    list_key: String,
    poll_secs: u64,
}

impl Default for RawWithheld {
    fn default() -> Self {
        Self {
            list_key: "_flexphoto/withheld.json".into(),
            poll_secs: 5,
        }
    }
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
            withheld: RawWithheld::default(),
            access: RawAccess::default(),
            presets: presets
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: String,
    threads: usize,
    work_stealing: bool,
    write_buffer_kb: usize,
    grace_period_secs: u64,
    shutdown_timeout_secs: u64,
    admin_token: String,
    metrics_token: String,
    cache_control_max_age_secs: u64,
    log_format: String,
    client_ip_header: String,
    client_ip_hops: usize,
    header_timeout_secs: u64,
    max_connections: usize,
    fast_path: bool,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            threads: 0,
            work_stealing: false,
            write_buffer_kb: 64,
            grace_period_secs: 1,
            shutdown_timeout_secs: 5,
            admin_token: String::new(),
            metrics_token: String::new(),
            cache_control_max_age_secs: 86_400,
            log_format: "text".into(),
            client_ip_header: String::new(),
            client_ip_hops: 1,
            header_timeout_secs: 10,
            max_connections: 10_000,
            fast_path: true,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct RawOrigin {
    kind: String,
    dir: String,
    timeout_ms: u64,
    revalidate_secs: u64,
    stale_if_error_secs: u64,
    hidden_prefixes: Vec<String>,
    s3: RawS3,
    cold: RawColdOrigin,
}

/// `[origin.cold]`: where objects moved to cold storage live, read when the origin does not
/// have them (hot objects cost one request, as without it).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct RawColdOrigin {
    /// Empty (none), `local` or `s3`.
    kind: String,
    dir: String,
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
            hidden_prefixes: vec!["uploads/".into()],
            s3: RawS3::default(),
            cold: RawColdOrigin::default(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_source_bytes: u64,
    max_source_pixels: u64,
    max_dimension: u32,
    max_output_pixels: u64,
    max_filter_cost: u64,
    max_avif_pixels: u64,
    max_webp_pixels: u64,
    max_gif_pixels: u64,
    formats: Vec<String>,
    request_timeout_ms: u64,
    inflight_source_mb: u64,
    per_client_transforms: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_source_bytes: 64 * 1024 * 1024,
            max_source_pixels: 100_000_000,
            max_dimension: 8192,
            max_output_pixels: 50_000_000,
            max_filter_cost: 2_000_000_000,
            max_avif_pixels: 16_000_000,
            max_webp_pixels: 16_000_000,
            max_gif_pixels: 16_000_000,
            formats: FormatSet::default()
                .iter()
                .map(|f| f.name().to_owned())
                .collect(),
            request_timeout_ms: 30_000,
            inflight_source_mb: 512,
            per_client_transforms: 8,
        }
    }
}

/// `transform.decode_memory_mb = 0`: this much per main-lane worker (two 18-MP progressive
/// JPEGs, ~72 MB each, decode side by side on two workers), at most an eighth of memory.
const DECODE_MB_PER_WORKER: u64 = 96;
/// `transform.queued_source_mb = 0`: this much per main-lane worker.
const QUEUED_SOURCE_MB_PER_WORKER: u64 = 20;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct RawTransform {
    workers: usize,
    light_workers: usize,
    light_max_source_kb: u64,
    light_max_output_pixels: u64,
    queue: usize,
    vips_concurrency: usize,
    worker_nice: i32,
    jpeg_quality: u8,
    webp_quality: u8,
    avif_quality: u8,
    webp_effort: u8,
    avif_effort: u8,
    png_compression: u8,
    working_side: u32,
    decode_memory_mb: u64,
    queued_source_mb: u64,
    default_meta: String,
    allow_meta_keep: bool,
}

impl Default for RawTransform {
    fn default() -> Self {
        Self {
            workers: 0,
            light_workers: 1,
            light_max_source_kb: 2048,
            light_max_output_pixels: 4_000_000,
            queue: 64,
            vips_concurrency: 1,
            worker_nice: 10,
            jpeg_quality: 80,
            webp_quality: 75,
            avif_quality: 50,
            webp_effort: 4,
            avif_effort: 1,
            png_compression: 6,
            working_side: 2048,
            decode_memory_mb: 0,
            queued_source_mb: 0,
            default_meta: "copyright".into(),
            allow_meta_keep: false,
        }
    }
}

/// A cache size as written: MiB, or `"auto"` for its part of `cache.memory_share_percent`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
enum RawSize {
    Mib(u64),
    Word(String),
}

impl RawSize {
    fn auto() -> Self {
        RawSize::Word("auto".into())
    }

    /// Bytes: fixed, or `auto_bytes` for `"auto"`.
    fn bytes(&self, key: &str, auto_bytes: u64) -> Result<u64, ConfigError> {
        match self {
            RawSize::Mib(m) => Ok(m * 1024 * 1024),
            RawSize::Word(w) if w == "auto" => Ok(auto_bytes),
            RawSize::Word(w) => Err(invalid(key, format!("must be MiB or \"auto\", got {w:?}"))),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct RawCache {
    memory_share_percent: u64,
    memory_mb: RawSize,
    source_mb: RawSize,
    working_mb: RawSize,
    disk_dir: String,
    disk_mb: u64,
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            memory_share_percent: 20,
            memory_mb: RawSize::auto(),
            source_mb: RawSize::auto(),
            working_mb: RawSize::auto(),
            disk_dir: String::new(),
            disk_mb: 2048,
        }
    }
}

/// How an automatic cache share is split: results, source bytes, working copies (percent).
const AUTO_SPLIT: [u64; 3] = [50, 20, 30];
/// `[access]`: pushing access statistics to the control plane.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct RawAccess {
    push_url: String,
    key: String,
    edge_name: String,
    edge_url: String,
    interval_secs: u64,
    max_items: usize,
    buffer_batches: usize,
}

impl Default for RawAccess {
    fn default() -> Self {
        Self {
            push_url: String::new(),
            key: String::new(),
            edge_name: String::new(),
            edge_url: String::new(),
            interval_secs: 60,
            max_items: 10_000,
            buffer_batches: 60,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
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

/// The validated configuration of the edge.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Listen address.
    pub listen: String,
    /// Server threads (pingora service threads).
    pub threads: usize,
    /// One work-stealing runtime shared by the server threads (true), or each connection
    /// served start to end on one single-threaded runtime, the least busy (false).
    pub work_stealing: bool,
    /// Per-connection write buffer, bytes (with work stealing; connection threads write
    /// unbuffered).
    pub write_buffer_bytes: usize,
    /// Seconds to keep serving after SIGTERM before closing listeners.
    pub grace_period: Duration,
    /// Seconds to wait for in-flight requests at shutdown.
    pub shutdown_timeout: Duration,
    /// Bearer token for the admin endpoints; `None` disables them.
    pub admin_token: Option<String>,
    /// Bearer token that lets non-loopback clients read `/metrics`; `None`: loopback only.
    pub metrics_token: Option<String>,
    /// `max-age` sent in `Cache-Control`.
    pub max_age: Duration,
    /// `text` or `json` log lines.
    pub log_json: bool,
    /// Header holding the client's address when a trusted proxy sets it (e.g.
    /// `cf-connecting-ip`); `None` uses the peer address.
    pub client_ip_header: Option<String>,
    /// Which address of that header is the client's, counted from the right (the number of
    /// trusted proxies that append to it).
    pub client_ip_hops: usize,
    /// Longest time from a request's first byte to the end of its head; a client that takes
    /// longer is disconnected.
    pub header_timeout: Duration,
    /// Most connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Ready-response capacity for the hit fast path, bytes (0: the fast path is off).
    pub ready_bytes: u64,
    /// The machine's memory the automatic cache sizes were taken from, bytes.
    pub machine_memory: u64,
    /// Where access statistics are pushed; `None`: they are not counted.
    pub access: Option<crate::access::PushConfig>,
    /// Where originals come from.
    pub origin: StorageConfig,
    /// Where objects moved to cold storage live, if anywhere else.
    pub origin_cold: Option<StorageConfig>,
    /// Origin request timeout.
    pub origin_timeout: Duration,
    /// How long a source's identity is trusted before it is checked again.
    pub revalidate_after: Duration,
    /// How long a last-known identity may serve cached results while the origin fails.
    pub stale_if_error: Duration,
    /// Key prefixes never served (staged uploads).
    pub hidden_prefixes: Vec<String>,
    /// Object key of the withheld list (`None`: off).
    pub withheld_list_key: Option<String>,
    /// How often the withheld list is read (`None`: off).
    pub withheld_poll: Option<Duration>,
    /// Largest source accepted, bytes.
    pub max_source_bytes: u64,
    /// Largest source accepted, pixels (checked from the header).
    pub max_source_pixels: u64,
    /// Largest output width or height.
    pub max_dimension: u32,
    /// Largest output width × height, all frames together.
    pub max_output_pixels: u64,
    /// Largest blur/sharpen cost, output pixels × sigma.
    pub max_filter_cost: u64,
    /// Largest AVIF output, pixels (its encoder cannot be stopped at the deadline).
    pub max_avif_pixels: u64,
    /// Largest WebP output, pixels, all frames together (the same).
    pub max_webp_pixels: u64,
    /// Largest GIF output, pixels, all frames together (the same).
    pub max_gif_pixels: u64,
    /// Formats whose decoders may run on sources.
    pub formats: FormatSet,
    /// Transforms one client may have in flight; 0 for no limit.
    pub per_client_transforms: usize,
    /// Whole-request deadline.
    pub request_timeout: Duration,
    /// Budget for source bytes fetched for queued work and not yet in the source cache.
    pub inflight_source_bytes: u64,
    /// Transform worker threads.
    pub workers: usize,
    /// Threads of the lane kept for cheap transforms.
    pub light_workers: usize,
    /// Largest source a cheap transform reads, bytes.
    pub light_max_source_bytes: u64,
    /// Largest output of a cheap transform, pixels.
    pub light_max_output_pixels: u64,
    /// Transforms allowed to wait for a worker.
    pub queue: usize,
    /// libvips threads per operation.
    pub vips_concurrency: usize,
    /// How many nice steps below the request threads the transform workers run (0..=19).
    pub worker_nice: i32,
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
    /// Budget for large decodes held at once, bytes (see `memory_budget`).
    pub decode_memory_bytes: u64,
    /// Budget for source bytes of main-lane transforms queued or running, bytes.
    pub queued_source_bytes: u64,
    /// Metadata kept when a URL says nothing.
    pub default_meta: Meta,
    /// Whether `meta=keep` is served.
    pub allow_meta_keep: bool,
    /// URL signing keys (first signs, all verify).
    pub signing_keys: Vec<Vec<u8>>,
    /// Presets allowed without a signature when keys are set.
    pub unsigned_presets: Vec<String>,
    /// Named presets.
    pub presets: HashMap<String, RequestOptions>,
}

impl EdgeConfig {
    /// Bytes of the in-memory caches together: results, sources and working copies.
    pub fn cache_total_bytes(&self) -> u64 {
        self.memory_bytes + self.source_bytes + self.working_bytes
    }

    /// Loads `path` (or built-in defaults when `None`), applies the environment and validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_owned(),
                source,
            })?,
            None => String::new(),
        };
        let name = path.map_or_else(|| "built-in defaults".into(), |p| p.display().to_string());
        Self::from_toml_named(&name, &text, std::env::vars())
    }

    /// Parses TOML text with the given environment.
    pub fn from_toml(
        text: &str,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::from_toml_named("edge config", text, env)
    }

    fn from_toml_named(
        name: &str,
        text: &str,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut env: Vec<(String, String)> = env.collect();
        // The one shortcut: signing keys as a comma-separated list.
        if let Some((_, keys)) = env.iter().find(|(k, _)| k == "FLEXPHOTO_EDGE_SIGNING_KEYS") {
            let list: Vec<String> = keys
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| format!("{s:?}"))
                .collect();
            let value = format!("[{}]", list.join(", "));
            env.push(("FLEXPHOTO_EDGE__SIGNING__KEYS".into(), value));
        }
        let raw: RawConfig = LOADER.from_text(name, text, env)?;
        Self::validate(raw, crate::machine::memory_bytes())
    }

    fn validate(raw: RawConfig, machine_memory: u64) -> Result<Self, ConfigError> {
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
        let origin =
            StorageConfig::from_parts(&raw.origin.kind, Path::new(&raw.origin.dir), &raw.origin.s3)
                .map_err(|e| invalid(&format!("origin.{}", e.key), e.reason))?;
        let positive = |key: &str, v: u64| {
            if v == 0 {
                Err(invalid(key, "must be greater than 0"))
            } else {
                Ok(v)
            }
        };
        positive("origin.timeout_ms", raw.origin.timeout_ms)?;
        let access = if raw.access.push_url.is_empty() {
            None
        } else {
            let url = raw.access.push_url.trim_end_matches('/').to_owned();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    "access.push_url",
                    "must be the control plane's http:// or https:// base URL",
                ));
            }
            if raw.access.key.is_empty() {
                return Err(invalid(
                    "access.key",
                    "an API key of role edge is needed when access.push_url is set",
                ));
            }
            positive("access.interval_secs", raw.access.interval_secs)?;
            positive("access.max_items", raw.access.max_items as u64)?;
            positive("access.buffer_batches", raw.access.buffer_batches as u64)?;
            let edge = if raw.access.edge_name.is_empty() {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| "edge".into());
                format!(
                    "{host}:{}",
                    raw.server.listen.rsplit(':').next().unwrap_or("")
                )
            } else {
                raw.access.edge_name.clone()
            };
            Some(crate::access::PushConfig {
                url,
                key: raw.access.key.clone(),
                edge,
                edge_url: (!raw.access.edge_url.is_empty()).then(|| raw.access.edge_url.clone()),
                interval: Duration::from_secs(raw.access.interval_secs),
                max_items: raw.access.max_items,
                buffer_batches: raw.access.buffer_batches,
            })
        };
        let origin_cold = match raw.origin.cold.kind.as_str() {
            "" => None,
            kind => Some(
                StorageConfig::from_parts(
                    kind,
                    Path::new(&raw.origin.cold.dir),
                    &raw.origin.cold.s3,
                )
                .map_err(|e| invalid(&format!("origin.cold.{}", e.key), e.reason))?,
            ),
        };
        if !(0..=19).contains(&raw.transform.worker_nice) {
            return Err(invalid("transform.worker_nice", "must be between 0 and 19"));
        }
        positive("limits.max_source_bytes", raw.limits.max_source_bytes)?;
        positive("limits.max_source_pixels", raw.limits.max_source_pixels)?;
        positive("limits.request_timeout_ms", raw.limits.request_timeout_ms)?;
        positive("server.header_timeout_secs", raw.server.header_timeout_secs)?;
        positive("server.client_ip_hops", raw.server.client_ip_hops as u64)?;
        positive("server.max_connections", raw.server.max_connections as u64)?;
        positive("limits.inflight_source_mb", raw.limits.inflight_source_mb)?;
        positive("limits.max_output_pixels", raw.limits.max_output_pixels)?;
        positive("limits.max_filter_cost", raw.limits.max_filter_cost)?;
        positive("limits.max_avif_pixels", raw.limits.max_avif_pixels)?;
        positive("limits.max_webp_pixels", raw.limits.max_webp_pixels)?;
        positive("limits.max_gif_pixels", raw.limits.max_gif_pixels)?;
        let mut formats = FormatSet::NONE;
        for (i, name) in raw.limits.formats.iter().enumerate() {
            let f = ImageFormat::from_name(name).ok_or_else(|| {
                invalid(
                    &format!("limits.formats[{i}]"),
                    format!("unknown format {name:?}; known: jpeg, png, webp, gif, avif, heif, tiff, jxl"),
                )
            })?;
            formats = formats.with(f);
        }
        if formats == FormatSet::NONE {
            return Err(invalid("limits.formats", "must list at least one format"));
        }
        let default_meta = match raw.transform.default_meta.as_str() {
            "none" => Meta::None,
            "copyright" => Meta::Copyright,
            "keep" if raw.transform.allow_meta_keep => Meta::Keep,
            "keep" => {
                return Err(invalid(
                    "transform.default_meta",
                    "keep needs transform.allow_meta_keep = true",
                ))
            }
            other => {
                return Err(invalid(
                    "transform.default_meta",
                    format!("must be none, copyright or keep, got {other:?}"),
                ))
            }
        };
        if !(16..=65_535).contains(&raw.limits.max_dimension) {
            return Err(invalid(
                "limits.max_dimension",
                "must be between 16 and 65535",
            ));
        }
        let t = &raw.transform;
        let workers = if t.workers == 0 { cores } else { t.workers };
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
        let share = raw.cache.memory_share_percent;
        if !(1..=90).contains(&share) {
            return Err(invalid(
                "cache.memory_share_percent",
                "must be between 1 and 90",
            ));
        }
        let auto = |part: u64| machine_memory / 100 * share / 100 * part;
        let memory_bytes = raw
            .cache
            .memory_mb
            .bytes("cache.memory_mb", auto(AUTO_SPLIT[0]))?;
        let source_bytes = raw
            .cache
            .source_mb
            .bytes("cache.source_mb", auto(AUTO_SPLIT[1]))?;
        let working_bytes = raw
            .cache
            .working_mb
            .bytes("cache.working_mb", auto(AUTO_SPLIT[2]))?;
        positive("cache.memory_mb", memory_bytes)?;
        positive("cache.source_mb", source_bytes)?;
        positive("cache.disk_mb", raw.cache.disk_mb)?;
        if raw.withheld.poll_secs > 0 && ImageKey::parse(&raw.withheld.list_key).is_err() {
            return Err(invalid(
                "withheld.list_key",
                "must be an object key such as _flexphoto/withheld.json",
            ));
        }
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
            metrics_token: (!raw.server.metrics_token.is_empty())
                .then_some(raw.server.metrics_token),
            max_age: Duration::from_secs(raw.server.cache_control_max_age_secs),
            log_json,
            client_ip_header: (!raw.server.client_ip_header.is_empty())
                .then(|| raw.server.client_ip_header.to_ascii_lowercase()),
            client_ip_hops: raw.server.client_ip_hops,
            header_timeout: Duration::from_secs(raw.server.header_timeout_secs),
            max_connections: raw.server.max_connections,
            ready_bytes: if raw.server.fast_path {
                memory_bytes / 4
            } else {
                0
            },
            machine_memory,
            access,
            origin,
            origin_cold,
            origin_timeout: Duration::from_millis(raw.origin.timeout_ms),
            revalidate_after: Duration::from_secs(raw.origin.revalidate_secs),
            stale_if_error: Duration::from_secs(raw.origin.stale_if_error_secs),
            hidden_prefixes: raw.origin.hidden_prefixes,
            withheld_list_key: (raw.withheld.poll_secs > 0).then(|| raw.withheld.list_key.clone()),
            withheld_poll: (raw.withheld.poll_secs > 0)
                .then(|| Duration::from_secs(raw.withheld.poll_secs)),
            max_source_bytes: raw.limits.max_source_bytes,
            max_source_pixels: raw.limits.max_source_pixels,
            max_dimension: raw.limits.max_dimension,
            max_output_pixels: raw.limits.max_output_pixels,
            max_filter_cost: raw.limits.max_filter_cost,
            max_avif_pixels: raw.limits.max_avif_pixels,
            max_webp_pixels: raw.limits.max_webp_pixels,
            max_gif_pixels: raw.limits.max_gif_pixels,
            formats,
            per_client_transforms: raw.limits.per_client_transforms,
            request_timeout: Duration::from_millis(raw.limits.request_timeout_ms),
            inflight_source_bytes: raw.limits.inflight_source_mb * 1024 * 1024,
            workers,
            light_workers: t.light_workers,
            light_max_source_bytes: t.light_max_source_kb * 1024,
            light_max_output_pixels: t.light_max_output_pixels,
            queue: t.queue,
            vips_concurrency: t.vips_concurrency.max(1),
            worker_nice: t.worker_nice,
            quality: QualityDefaults {
                jpeg: t.jpeg_quality,
                webp: t.webp_quality,
                avif: t.avif_quality,
            },
            webp_effort: t.webp_effort,
            avif_effort: t.avif_effort,
            png_compression: t.png_compression,
            memory_bytes,
            source_bytes,
            disk_dir: (!raw.cache.disk_dir.is_empty()).then(|| PathBuf::from(&raw.cache.disk_dir)),
            disk_bytes: raw.cache.disk_mb * 1024 * 1024,
            working_bytes,
            working_side: t.working_side,
            decode_memory_bytes: match t.decode_memory_mb {
                0 => ((DECODE_MB_PER_WORKER << 20) * workers as u64).min(machine_memory / 8),
                mb => mb << 20,
            },
            queued_source_bytes: match t.queued_source_mb {
                0 => QUEUED_SOURCE_MB_PER_WORKER * workers as u64,
                mb => mb,
            } << 20,
            default_meta,
            allow_meta_keep: t.allow_meta_keep,
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
    fn cache_sizes_are_shares_of_the_machine_unless_set() {
        let raw = |text: &str| -> RawConfig { LOADER.from_text("t", text, Vec::new()).unwrap() };
        let gib = 1u64 << 30;
        let c = EdgeConfig::validate(raw(""), 10 * gib).unwrap();
        // 20% of 10 GiB: half for results, a fifth for sources, the rest for working copies.
        let near = |a: u64, b: u64| a.abs_diff(b) < 1 << 20;
        assert!(near(c.memory_bytes, gib), "{}", c.memory_bytes);
        assert!(near(c.source_bytes, 2 * gib / 5), "{}", c.source_bytes);
        assert!(near(c.working_bytes, 3 * gib / 5), "{}", c.working_bytes);
        assert!(near(c.cache_total_bytes(), 2 * gib));
        assert_eq!(c.ready_bytes, c.memory_bytes / 4);
        let c = EdgeConfig::validate(
            raw("[cache]\nmemory_share_percent = 5\nmemory_mb = 64\nworking_mb = 0"),
            10 * gib,
        )
        .unwrap();
        assert_eq!(c.memory_bytes, 64 << 20);
        assert_eq!(c.working_bytes, 0);
        assert!(near(c.source_bytes, gib / 10));
        let c = EdgeConfig::validate(raw("[server]\nfast_path = false"), gib).unwrap();
        assert_eq!(c.ready_bytes, 0);
        let err = EdgeConfig::validate(raw("[cache]\nsource_mb = \"lots\""), gib)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cache.source_mb"), "{err}");
    }

    #[test]
    fn defaults_are_valid() {
        let c = load("", &[]).unwrap();
        assert_eq!(
            c.origin,
            StorageConfig::Local {
                dir: "./data/originals".into()
            }
        );
        assert!(c.workers >= 1);
    }

    #[test]
    fn shipped_config_lists_every_key_with_its_default() {
        let drift = flexphoto_settings::drift_from_defaults(
            include_str!("../../config/edge.toml"),
            &RawConfig::default(),
        );
        assert!(
            drift.is_empty(),
            "config/edge.toml drifted:\n{}",
            drift.join("\n")
        );
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
            StorageConfig::Local {
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
