//! Configuration in two stages: [`RawConfig`] is what the TOML file and the environment said;
//! [`Config`] is the validated result, built by [`RawConfig::validate`], which names the bad
//! key when it refuses.
//!
//! The file is found and read by the rule every FlexPhotoDB binary shares
//! (`flexphoto_settings`): `--config`, else `FLEXPHOTO_CONFIG`, else `config/control-plane.toml`
//! when it exists, else built-in defaults. Every key can be overridden by an environment
//! variable `FLEXPHOTO__{SECTION}__{KEY}` in upper case, e.g. `FLEXPHOTO__DATABASE__URL` or
//! `FLEXPHOTO__QUEUE__WORKERS`; lists are written as TOML arrays
//! (`FLEXPHOTO__UPLOAD__ALLOWED_TYPES='["image/png", "image/jpeg"]'`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flexphoto_media::ImageFormat;
use flexphoto_settings::{invalid, Loader};
use flexphoto_storage::{RawS3, StorageConfig};
use flexphoto_url::{Fit, OutputFormat};
use serde::{Deserialize, Serialize};

pub use flexphoto_settings::ConfigError;

/// How the control plane finds and reads its configuration.
pub const LOADER: Loader = Loader {
    prefix: "FLEXPHOTO",
    name: "control-plane",
};

/// The configuration as read, before validation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// `[server]`.
    pub server: RawServer,
    /// `[database]`.
    pub database: RawDatabase,
    /// `[storage]`.
    pub storage: RawStorage,
    /// `[upload]`.
    pub upload: RawUpload,
    /// `[queue]`.
    pub queue: RawQueue,
    /// `[processing]`.
    pub processing: RawProcessing,
    /// `[edge]`.
    pub edge: RawEdge,
    /// `[search]`.
    pub search: RawSearch,
    /// `[duplicates]`.
    pub duplicates: RawDuplicates,
    /// `[cluster]`.
    pub cluster: RawCluster,
    /// `[catalog]`.
    pub catalog: crate::catalog::settings::RawCatalog,
    /// `[access]`.
    pub access: crate::lifecycle::settings::RawAccess,
    /// `[tiering]`.
    pub tiering: crate::lifecycle::settings::RawTiering,
    /// `[prices]`.
    pub prices: crate::lifecycle::settings::Prices,
    /// `[admin_ui]`.
    pub admin_ui: crate::admin_ui::AdminUiSettings,
    /// `[storage_history]`.
    pub storage_history: crate::lifecycle::history::StorageHistorySettings,
    /// `[privacy]`.
    pub privacy: crate::privacy::PrivacySettings,
    /// `[[variants]]`.
    pub variants: Vec<RawVariant>,
}

/// `[server]` as read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// API listen address.
    pub listen: String,
    /// Absolute base URL clients reach the API at; empty means `http://{listen}`.
    pub public_url: String,
    /// Directory for the embedded database, local objects and temporary files.
    pub data_dir: String,
    /// Largest JSON request body, bytes.
    pub max_json_bytes: u64,
    /// Requests a second one API key may make (bursts of twice that); 0: no limit.
    pub rate_per_key: u32,
    /// Failed authentications a minute one client network (an IPv4 address, an IPv6 /64)
    /// may make before its credentials are refused unread (429); 0: no limit.
    pub failed_auth_per_minute: u32,
    /// Seconds a client has to send a request's headers, and the longest a kept-alive
    /// connection may sit idle.
    pub header_timeout_secs: u64,
    /// Seconds a request other than an upload may take, body included.
    pub request_timeout_secs: u64,
    /// Seconds an upload may go without sending a byte.
    pub upload_idle_timeout_secs: u64,
    /// The slowest upload rate allowed for a whole request body, bytes a second: a request
    /// that carries an image has `request_timeout_secs` plus its size at this rate.
    pub upload_min_bytes_per_sec: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: String::new(),
            data_dir: "./flexphoto-data".into(),
            max_json_bytes: 1 << 20,
            rate_per_key: 100,
            failed_auth_per_minute: 30,
            header_timeout_secs: 15,
            request_timeout_secs: 60,
            upload_idle_timeout_secs: 30,
            upload_min_bytes_per_sec: 64 << 10,
        }
    }
}

/// `[database]` as read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDatabase {
    /// `postgres://…` or `sqlite:…`; empty means `sqlite:{data_dir}/flexphoto.db`.
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
}

impl Default for RawDatabase {
    fn default() -> Self {
        Self {
            url: String::new(),
            max_connections: 8,
        }
    }
}

/// `[storage]` as read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStorage {
    /// `local` or `s3`.
    pub kind: String,
    /// Local store directory; empty means `{data_dir}/objects`.
    pub dir: String,
    /// `[storage.s3]`: the bucket, as the edge's `[origin.s3]` describes it.
    pub s3: RawS3,
}

impl Default for RawStorage {
    fn default() -> Self {
        Self {
            kind: "local".into(),
            dir: String::new(),
            s3: RawS3::default(),
        }
    }
}

/// `[upload]` as read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpload {
    /// Largest accepted original, bytes.
    pub max_bytes: u64,
    /// How long a presigned upload URL stays valid, seconds.
    pub url_ttl_secs: u64,
    /// Content types accepted for originals.
    pub allowed_types: Vec<String>,
    /// HMAC key for the local store's upload URLs; empty means one generated and kept in the
    /// database.
    pub signing_secret: String,
    /// How often the sweeper looks for uploads that were never completed, seconds; 0 disables.
    pub sweep_interval_secs: u64,
    /// Shared secret S3 bucket notifications must carry (`Authorization: Bearer SECRET`, the
    /// `auth_token` of MinIO's webhook target); empty turns `POST /v1/webhooks/s3` off.
    pub webhook_secret: String,
}

impl Default for RawUpload {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 20,
            url_ttl_secs: 300,
            allowed_types: [
                "image/jpeg",
                "image/png",
                "image/webp",
                "image/gif",
                "image/avif",
                "image/heic",
                "image/heif",
                "image/tiff",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            signing_secret: String::new(),
            sweep_interval_secs: 60,
            webhook_secret: String::new(),
        }
    }
}

/// `[queue]` as read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawQueue {
    /// Concurrent jobs in this process; 0 runs no workers (API only). More jobs than
    /// `processing.threads` lets one job's storage and database waits overlap another's image
    /// work.
    pub workers: u32,
    /// Lease length, seconds; a worker renews it while a job runs.
    pub lease_secs: u64,
    /// Attempts before a job is dead.
    pub max_attempts: u32,
    /// First retry delay, milliseconds; doubles each attempt.
    pub backoff_base_ms: u64,
    /// Longest retry delay, seconds.
    pub backoff_max_secs: u64,
    /// Idle poll interval, milliseconds.
    pub poll_ms: u64,
    /// How long shutdown waits for running jobs before releasing their leases, seconds.
    pub shutdown_grace_secs: u64,
}

impl Default for RawQueue {
    fn default() -> Self {
        Self {
            workers: 4,
            lease_secs: 60,
            max_attempts: 5,
            backoff_base_ms: 1000,
            backoff_max_secs: 300,
            poll_ms: 200,
            shutdown_grace_secs: 20,
        }
    }
}

/// `[processing]` as read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProcessing {
    /// Largest width × height accepted, checked from the header before decoding.
    pub max_pixels: u64,
    /// Largest output width or height.
    pub max_dimension: u32,
    /// Longest time for one image's transforms, seconds.
    pub timeout_secs: u64,
    /// WebP encoder effort for variants, 0 (fastest) to 6 (smallest).
    pub webp_effort: u8,
    /// AVIF encoder effort for variants, 0 (fastest) to 9 (smallest).
    pub avif_effort: u8,
    /// Threads decoding and encoding images; 0 means one per CPU (never more than
    /// `queue.workers`).
    pub threads: u32,
}

impl Default for RawProcessing {
    fn default() -> Self {
        Self {
            max_pixels: 100_000_000,
            max_dimension: 8192,
            timeout_secs: 60,
            webp_effort: 2,
            avif_effort: 2,
            threads: 0,
        }
    }
}

/// `[edge]` as read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawEdge {
    /// Absolute base URL of the edge, used in variant URLs; empty means `http://{listen}`.
    pub public_url: String,
    /// Where `flexphoto up` runs the edge.
    pub listen: String,
    /// Edge configuration file for `flexphoto up`; empty means the edge's defaults.
    pub config: String,
    /// The edges' URL signing keys (hex, first signs); `FLEXPHOTO_EDGE_SIGNING_KEYS` adds to
    /// them. Under `flexphoto up`, empty takes the edge's own keys.
    pub signing_keys: Vec<String>,
    /// Bearer token of the edges' `/admin/purge`; empty: edges are not purged. Under
    /// `flexphoto up`, empty takes the edge's own token.
    pub admin_token: String,
    /// Base URLs of every edge to purge when an image is deleted; empty: `public_url`.
    pub purge_urls: Vec<String>,
    /// A CDN's purge endpoint, called with POST for each purged object's URL: `{url}` in it
    /// is replaced by the percent-encoded edge URL (e.g. a purge-by-URL API); empty: none.
    pub cdn_purge_url: String,
    /// Bearer token for `cdn_purge_url`.
    pub cdn_purge_token: String,
    /// Seconds between the access-statistics pushes of the edge `flexphoto up` runs.
    pub access_push_secs: u64,
}

impl Default for RawEdge {
    fn default() -> Self {
        Self {
            public_url: String::new(),
            listen: "127.0.0.1:8081".into(),
            config: String::new(),
            signing_keys: Vec::new(),
            admin_token: String::new(),
            purge_urls: Vec::new(),
            cdn_purge_url: String::new(),
            cdn_purge_token: String::new(),
            access_push_secs: 60,
        }
    }
}

/// `[cluster]` as read: how several control-plane processes on one database coordinate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCluster {
    /// Seconds a role (the embedded index's owner, a scheduler) stays with a process that
    /// stopped renewing it; a dead holder is replaced after at most this long.
    pub lease_secs: u64,
    /// URL the other control-plane processes reach this one at (for searches forwarded to
    /// the embedded index's owner); empty: `http://{the address it listens on}`.
    pub advertise_url: String,
}

impl Default for RawCluster {
    fn default() -> Self {
        Self {
            lease_secs: 15,
            advertise_url: String::new(),
        }
    }
}

/// `[search]` as read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSearch {
    /// `conse` (default, no download), `clip` (a Hugging Face CLIP directory) or `none`.
    pub model: String,
    /// Directory `scripts/fetch-models` filled (ConSE weights and class names).
    pub model_dir: String,
    /// CLIP directory (config.json, model.safetensors, tokenizer.json) for `model = "clip"`.
    pub clip_dir: String,
    /// `embedded` (qdrant-edge in this process), `server` (a Qdrant server) or `forward`
    /// (no index here: searches go to the process that owns the embedded index).
    pub index: String,
    /// Embedded index directory; empty means `{data_dir}/index`.
    pub index_dir: String,
    /// Embedded index: new vectors are flushed to disk this often, milliseconds, instead of
    /// once per image (0: every upsert flushed before it returns). A crash loses at most this
    /// much of them, and reconciliation at start embeds those images again.
    pub index_flush_ms: u64,
    /// Qdrant server URL for `index = "server"`.
    pub qdrant_url: String,
    /// Qdrant server API key (empty: none).
    pub qdrant_api_key: String,
    /// Qdrant collection name.
    pub qdrant_collection: String,
    /// Largest page of results.
    pub max_limit: u32,
    /// Images queued for re-embedding per pass after a model change.
    pub reembed_batch: u32,
    /// ConSE: ImageNet classes mixed into each image's semantic vector (0: the model's
    /// default). Changing it changes the model version, so images are re-embedded.
    pub conse_top_k: u32,
    /// ConSE: add face concepts (person, portrait, group, smiling, man, woman) and count faces.
    /// Changing it changes the model version.
    pub conse_faces: bool,
    /// ConSE: add concepts measured from colours and textures. Changing it changes the model
    /// version.
    pub conse_appearance: bool,
    /// ConSE: also look for faces in four overlapping quarters of the picture (smaller faces,
    /// five detector passes instead of one). Changing it changes the model version.
    pub conse_face_tiles: bool,
    /// ConSE: add the objects and people a COCO detector finds (person, kite, dog, car…).
    /// Changing it changes the model version.
    pub conse_objects: bool,
    /// How often SQL and the vector index are compared and drift repaired, seconds (0: only
    /// when a process takes the role).
    pub reconcile_interval_secs: u64,
}

impl Default for RawSearch {
    fn default() -> Self {
        Self {
            model: "conse".into(),
            model_dir: "models".into(),
            clip_dir: String::new(),
            index: "embedded".into(),
            index_dir: String::new(),
            index_flush_ms: 1000,
            qdrant_url: String::new(),
            qdrant_api_key: String::new(),
            qdrant_collection: "flexphoto".into(),
            max_limit: 100,
            reembed_batch: 500,
            conse_top_k: 0,
            conse_faces: true,
            conse_appearance: true,
            conse_face_tiles: false,
            conse_objects: true,
            reconcile_interval_secs: 3600,
        }
    }
}

/// `[duplicates]` as read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDuplicates {
    /// Largest Hamming distance between two 64-bit dHashes that counts as a near-duplicate
    /// (-1: off).
    pub phash_max_distance: i32,
    /// Smallest cosine similarity of visual embeddings that counts as a near-duplicate
    /// (0: off).
    pub min_similarity: f32,
    /// Smallest cosine similarity of a candidate that is then checked by its grey layout
    /// (crops, small turns); 0: no layout check.
    pub layout_candidate_similarity: f32,
    /// Smallest layout similarity (-1..1) that makes a candidate a near-duplicate.
    pub min_layout_similarity: f32,
    /// Most near-duplicates recorded per image.
    pub max_pairs: u32,
}

impl Default for RawDuplicates {
    fn default() -> Self {
        Self {
            phash_max_distance: 10,
            min_similarity: 0.78,
            layout_candidate_similarity: 0.6,
            min_layout_similarity: 0.9,
            max_pairs: 20,
        }
    }
}

/// Which embedding model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelChoice {
    /// ConSE over EfficientNet-Lite0 and MiniLM, files in `model_dir`.
    Conse {
        /// Model directory.
        model_dir: PathBuf,
    },
    /// A Hugging Face CLIP directory.
    Clip {
        /// Model directory.
        dir: PathBuf,
    },
    /// No embeddings: search by filters only; images are ready without vectors.
    None,
}

/// Which vector index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexChoice {
    /// qdrant-edge in this process, on disk here.
    Embedded {
        /// Shard directory.
        dir: PathBuf,
    },
    /// A Qdrant server.
    Server {
        /// URL.
        url: String,
        /// API key.
        api_key: Option<String>,
        /// Collection.
        collection: String,
    },
    /// No index in this process: searches are forwarded to the process that owns the
    /// embedded index on this database, and this process runs no jobs (they need the index).
    Forward,
}

/// Validated `[search]` and `[duplicates]`.
#[derive(Debug, Clone)]
pub struct SearchConfig {
    /// The model.
    pub model: ModelChoice,
    /// The index.
    pub index: IndexChoice,
    /// Largest page.
    pub max_limit: u32,
    /// Re-embed batch size.
    pub reembed_batch: u32,
    /// ConSE concept count (`None`: default).
    pub conse_top_k: Option<usize>,
    /// ConSE face concepts on.
    pub conse_faces: bool,
    /// ConSE appearance concepts on.
    pub conse_appearance: bool,
    /// ConSE faces also searched in quarters.
    pub conse_face_tiles: bool,
    /// ConSE object concepts on.
    pub conse_objects: bool,
    /// dHash distance threshold (`None`: off).
    pub phash_max_distance: Option<u32>,
    /// Embedding similarity threshold (`None`: off).
    pub min_similarity: Option<f32>,
    /// Candidates from this cosine up are checked by layout (`None`: no layout check).
    pub layout_candidate_similarity: Option<f32>,
    /// Layout similarity that confirms a candidate.
    pub min_layout_similarity: f32,
    /// Most pairs per image.
    pub max_pairs: u32,
    /// Reconcile interval; `None`: only when a process takes the role.
    pub reconcile_interval: Option<Duration>,
    /// Embedded index: flush interval for new vectors (`None`: every upsert durable).
    pub index_flush_interval: Option<Duration>,
}

impl RawSearch {
    fn validate(&self, dup: &RawDuplicates, data_dir: &Path) -> Result<SearchConfig, ConfigError> {
        let model = match self.model.as_str() {
            "conse" => {
                if self.model_dir.is_empty() {
                    return Err(invalid("search.model_dir", "must not be empty"));
                }
                ModelChoice::Conse {
                    model_dir: PathBuf::from(&self.model_dir),
                }
            }
            "clip" => {
                if self.clip_dir.is_empty() {
                    return Err(invalid(
                        "search.clip_dir",
                        "is required when search.model = \"clip\"",
                    ));
                }
                ModelChoice::Clip {
                    dir: PathBuf::from(&self.clip_dir),
                }
            }
            "none" => ModelChoice::None,
            other => {
                return Err(invalid(
                    "search.model",
                    format!("must be \"conse\", \"clip\" or \"none\", not {other:?}"),
                ))
            }
        };
        let index = match self.index.as_str() {
            "embedded" => IndexChoice::Embedded {
                dir: if self.index_dir.is_empty() {
                    data_dir.join("index")
                } else {
                    PathBuf::from(&self.index_dir)
                },
            },
            "server" => {
                if self.qdrant_url.is_empty() {
                    return Err(invalid(
                        "search.qdrant_url",
                        "is required when search.index = \"server\"",
                    ));
                }
                let url = check_url("search.qdrant_url", &self.qdrant_url)?;
                if self.qdrant_collection.is_empty()
                    || !self
                        .qdrant_collection
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(invalid(
                        "search.qdrant_collection",
                        "must be letters, digits, _ or -",
                    ));
                }
                IndexChoice::Server {
                    url,
                    api_key: (!self.qdrant_api_key.is_empty()).then(|| self.qdrant_api_key.clone()),
                    collection: self.qdrant_collection.clone(),
                }
            }
            "forward" => {
                if matches!(model, ModelChoice::None) {
                    return Err(invalid(
                        "search.index",
                        "\"forward\" needs a search model (search.model is \"none\")",
                    ));
                }
                IndexChoice::Forward
            }
            other => {
                return Err(invalid(
                    "search.index",
                    format!("must be \"embedded\", \"server\" or \"forward\", not {other:?}"),
                ))
            }
        };
        if !(1..=1000).contains(&self.max_limit) {
            return Err(invalid("search.max_limit", "must be between 1 and 1000"));
        }
        if self.index_flush_ms > 60_000 {
            return Err(invalid(
                "search.index_flush_ms",
                "must be between 0 (flush every upsert) and 60000",
            ));
        }
        if self.conse_top_k > 50 {
            return Err(invalid(
                "search.conse_top_k",
                "must be between 0 (default) and 50",
            ));
        }
        if !(1..=100_000).contains(&self.reembed_batch) {
            return Err(invalid(
                "search.reembed_batch",
                "must be between 1 and 100000",
            ));
        }
        if !(-1..=64).contains(&dup.phash_max_distance) {
            return Err(invalid(
                "duplicates.phash_max_distance",
                "must be between -1 (off) and 64",
            ));
        }
        if !(0.0..=1.0).contains(&dup.min_similarity) {
            return Err(invalid(
                "duplicates.min_similarity",
                "must be between 0 (off) and 1",
            ));
        }
        if !(0.0..=1.0).contains(&dup.layout_candidate_similarity) {
            return Err(invalid(
                "duplicates.layout_candidate_similarity",
                "must be between 0 (off) and 1",
            ));
        }
        if !(-1.0..=1.0).contains(&dup.min_layout_similarity) {
            return Err(invalid(
                "duplicates.min_layout_similarity",
                "must be between -1 and 1",
            ));
        }
        if dup.max_pairs == 0 {
            return Err(invalid("duplicates.max_pairs", "must be at least 1"));
        }
        Ok(SearchConfig {
            model,
            index,
            max_limit: self.max_limit,
            reembed_batch: self.reembed_batch,
            conse_top_k: (self.conse_top_k > 0).then_some(self.conse_top_k as usize),
            conse_faces: self.conse_faces,
            conse_appearance: self.conse_appearance,
            conse_face_tiles: self.conse_face_tiles,
            conse_objects: self.conse_objects,
            phash_max_distance: u32::try_from(dup.phash_max_distance).ok(),
            min_similarity: (dup.min_similarity > 0.0).then_some(dup.min_similarity),
            layout_candidate_similarity: (dup.layout_candidate_similarity > 0.0)
                .then_some(dup.layout_candidate_similarity),
            min_layout_similarity: dup.min_layout_similarity,
            max_pairs: dup.max_pairs,
            reconcile_interval: (self.reconcile_interval_secs > 0)
                .then(|| Duration::from_secs(self.reconcile_interval_secs)),
            index_flush_interval: (self.index_flush_ms > 0)
                .then(|| Duration::from_millis(self.index_flush_ms)),
        })
    }
}

/// One `[[variants]]` entry as read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVariant {
    /// Name used in keys and the API (`thumb`).
    pub name: String,
    /// Box width.
    pub width: u32,
    /// Box height.
    pub height: u32,
    /// `cover`, `contain`, `scale-down`, `fill` … as the edge understands it.
    #[serde(default = "default_fit")]
    pub fit: String,
    /// `webp`, `jpeg`, `avif`, `png`.
    #[serde(default = "default_format")]
    pub format: String,
    /// Encoder quality 1–100.
    #[serde(default = "default_quality")]
    pub quality: u8,
}

fn default_fit() -> String {
    "scale-down".into()
}
fn default_format() -> String {
    "webp".into()
}
fn default_quality() -> u8 {
    80
}

/// The default variants when the file names none.
pub fn default_variants() -> Vec<RawVariant> {
    vec![
        RawVariant {
            name: "thumb".into(),
            width: 320,
            height: 320,
            fit: "cover".into(),
            format: "webp".into(),
            quality: 75,
        },
        RawVariant {
            name: "medium".into(),
            width: 1024,
            height: 1024,
            fit: "scale-down".into(),
            format: "webp".into(),
            quality: 80,
        },
        RawVariant {
            name: "full".into(),
            width: 2048,
            height: 2048,
            fit: "scale-down".into(),
            format: "jpeg".into(),
            quality: 85,
        },
    ]
}

/// Which database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A Postgres URL.
    Postgres(String),
    /// A SQLite file.
    Sqlite(PathBuf),
}

/// A validated variant.
#[derive(Debug, Clone)]
pub struct VariantConfig {
    /// Name.
    pub name: String,
    /// Box width.
    pub width: u32,
    /// Box height.
    pub height: u32,
    /// How the box is filled.
    pub fit: Fit,
    /// Output format.
    pub format: OutputFormat,
    /// Quality.
    pub quality: u8,
}

impl VariantConfig {
    /// The file extension the variant's format writes.
    pub fn extension(&self) -> &'static str {
        flexphoto_media::format::of_output(self.format).extension()
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// API listen address.
    pub listen: SocketAddr,
    /// Absolute API base URL without trailing slash.
    pub public_url: String,
    /// Whether `public_url` was derived from `listen` (and so should follow the real bound
    /// port when `listen` uses port 0).
    pub public_url_from_listen: bool,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Largest JSON body.
    pub max_json_bytes: usize,
    /// Requests a second per API key (0: no limit).
    pub rate_per_key: u32,
    /// Failed authentications a minute per client network (0: no limit).
    pub failed_auth_per_minute: u32,
    /// Header read (and keep-alive idle) timeout.
    pub header_timeout: Duration,
    /// Whole-request timeout outside uploads.
    pub request_timeout: Duration,
    /// Longest silence within an upload body.
    pub upload_idle_timeout: Duration,
    /// The slowest whole-body rate of a request that carries an image, bytes a second.
    pub upload_min_bytes_per_sec: u64,
    /// Secret of the S3 webhook; `None` turns it off.
    pub webhook_secret: Option<String>,
    /// CDN purge endpoint template and its token.
    pub cdn_purge: Option<(String, Option<String>)>,
    /// Database.
    pub database: DatabaseUrl,
    /// Pool size.
    pub max_connections: u32,
    /// Object store.
    pub storage: StorageConfig,
    /// Largest original.
    pub max_upload_bytes: u64,
    /// Presigned URL lifetime.
    pub upload_url_ttl: Duration,
    /// Accepted original formats.
    pub allowed_formats: Vec<ImageFormat>,
    /// Local upload URL key, if configured.
    pub signing_secret: Option<String>,
    /// Sweeper interval; `None` disables it.
    pub sweep_interval: Option<Duration>,
    /// Jobs run at once.
    pub workers: u32,
    /// Threads for image work (at least 1, at most `workers` when workers run).
    pub processing_threads: u32,
    /// Lease.
    pub lease: Duration,
    /// Attempts before dead.
    pub max_attempts: u32,
    /// First retry delay.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Idle poll.
    pub poll: Duration,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
    /// Pixel limit.
    pub max_pixels: u64,
    /// Largest output side.
    pub max_dimension: u32,
    /// Per-image processing time limit.
    pub processing_timeout: Duration,
    /// WebP effort for variants.
    pub webp_effort: u8,
    /// AVIF effort for variants.
    pub avif_effort: u8,
    /// Edge base URL without trailing slash.
    pub edge_public_url: String,
    /// Edge listen address for `flexphoto up`.
    pub edge_listen: SocketAddr,
    /// Edge config file.
    pub edge_config: Option<PathBuf>,
    /// Keys that sign edge URLs (first signs).
    pub edge_signing_keys: Vec<Vec<u8>>,
    /// Bearer token for the edges' purge endpoint.
    pub edge_admin_token: Option<String>,
    /// Edges purged when an image is deleted (base URLs).
    pub edge_purge_urls: Vec<String>,
    /// Variants, in order.
    pub variants: Vec<VariantConfig>,
    /// Search model, index and near-duplicate thresholds.
    pub search: SearchConfig,
    /// How long a role stays with a process that stopped renewing it.
    pub cluster_lease: Duration,
    /// URL other processes reach this one at; `None`: from the bound address.
    pub advertise_url: Option<String>,
    /// Catalog governance: rights scheduler, withheld list, re-validation, model reasons.
    pub catalog: crate::catalog::settings::CatalogConfig,
    /// Days of daily traffic kept.
    pub access_retention_days: u32,
    /// Most items in one pushed batch.
    pub access_max_batch_items: usize,
    /// Tiering policy and the cold location.
    pub tiering: crate::lifecycle::settings::TieringConfig,
    /// How often the edge under `flexphoto up` pushes access statistics.
    pub edge_access_push: Duration,
    /// The price table.
    pub prices: crate::lifecycle::settings::Prices,
    /// The admin web UI.
    pub admin_ui: crate::admin_ui::AdminUiSettings,
    /// How long daily storage snapshots are kept.
    pub storage_history: crate::lifecycle::history::StorageHistorySettings,
    /// Which images are private and how long their URLs work.
    pub privacy: crate::privacy::PrivacySettings,
}

impl RawConfig {
    /// Reads a TOML file (if given) and applies `FLEXPHOTO__*` environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_owned(),
                source,
            })?,
            None => String::new(),
        };
        Self::from_toml_and_env(&text, std::env::vars())
    }

    /// Parses TOML text and applies the given environment overrides.
    pub fn from_toml_and_env(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let mut raw: RawConfig = LOADER.from_text("control-plane config", text, env.clone())?;
        raw.fill_defaults();
        raw.add_env_signing_keys(&env);
        Ok(raw)
    }

    fn fill_defaults(&mut self) {
        if self.variants.is_empty() {
            self.variants = default_variants();
        }
    }

    /// Adds the keys of `FLEXPHOTO_EDGE_SIGNING_KEYS` (comma-separated hex), the variable the
    /// edge reads too, so one setting serves both.
    fn add_env_signing_keys(&mut self, env: &[(String, String)]) {
        for (k, v) in env {
            if k == "FLEXPHOTO_EDGE_SIGNING_KEYS" {
                for key in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if !self.edge.signing_keys.iter().any(|k| k == key) {
                        self.edge.signing_keys.push(key.to_owned());
                    }
                }
            }
        }
    }

    /// Checks every value and resolves defaults that depend on others.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let listen: SocketAddr = self
            .server
            .listen
            .parse()
            .map_err(|_| invalid("server.listen", "must be an address like 127.0.0.1:8080"))?;
        let public_url = if self.server.public_url.is_empty() {
            format!("http://{listen}")
        } else {
            check_url("server.public_url", &self.server.public_url)?
        };
        if self.server.data_dir.is_empty() {
            return Err(invalid("server.data_dir", "must not be empty"));
        }
        let data_dir = PathBuf::from(&self.server.data_dir);
        let database = if self.database.url.is_empty() {
            DatabaseUrl::Sqlite(data_dir.join("flexphoto.db"))
        } else if self.database.url.starts_with("postgres://")
            || self.database.url.starts_with("postgresql://")
        {
            DatabaseUrl::Postgres(self.database.url.clone())
        } else if let Some(p) = self.database.url.strip_prefix("sqlite:") {
            let p = p.trim_start_matches("//");
            if p.is_empty() {
                return Err(invalid("database.url", "sqlite: needs a file path"));
            }
            DatabaseUrl::Sqlite(PathBuf::from(p))
        } else {
            return Err(invalid(
                "database.url",
                "must start with postgres://, postgresql:// or sqlite:",
            ));
        };
        for (key, v) in [
            (
                "server.header_timeout_secs",
                self.server.header_timeout_secs,
            ),
            (
                "server.request_timeout_secs",
                self.server.request_timeout_secs,
            ),
            (
                "server.upload_idle_timeout_secs",
                self.server.upload_idle_timeout_secs,
            ),
            (
                "server.upload_min_bytes_per_sec",
                self.server.upload_min_bytes_per_sec,
            ),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if !self.upload.webhook_secret.is_empty() && self.upload.webhook_secret.len() < 16 {
            return Err(invalid(
                "upload.webhook_secret",
                "must be at least 16 characters",
            ));
        }
        if !self.edge.cdn_purge_url.is_empty() {
            check_url("edge.cdn_purge_url", &self.edge.cdn_purge_url)?;
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        let storage_dir = if self.storage.dir.is_empty() {
            data_dir.join("objects")
        } else {
            PathBuf::from(&self.storage.dir)
        };
        let storage = StorageConfig::from_parts(&self.storage.kind, &storage_dir, &self.storage.s3)
            .map_err(|e| invalid(&format!("storage.{}", e.key), e.reason))?;
        if self.upload.max_bytes == 0 {
            return Err(invalid("upload.max_bytes", "must be at least 1"));
        }
        if !(1..=7 * 24 * 3600).contains(&self.upload.url_ttl_secs) {
            return Err(invalid(
                "upload.url_ttl_secs",
                "must be between 1 and 604800 (7 days, the S3 limit)",
            ));
        }
        if self.upload.allowed_types.is_empty() {
            return Err(invalid(
                "upload.allowed_types",
                "must list at least one type",
            ));
        }
        let mut allowed_formats = Vec::new();
        for t in &self.upload.allowed_types {
            let f = ImageFormat::from_mime(t).ok_or_else(|| {
                invalid(
                    "upload.allowed_types",
                    format!("{t:?} is not an image type FlexPhotoDB reads"),
                )
            })?;
            if !allowed_formats.contains(&f) {
                allowed_formats.push(f);
            }
        }
        if !self.upload.signing_secret.is_empty() && self.upload.signing_secret.len() < 16 {
            return Err(invalid(
                "upload.signing_secret",
                "must be at least 16 characters",
            ));
        }
        let q = &self.queue;
        if q.workers > 256 {
            return Err(invalid("queue.workers", "must be at most 256"));
        }
        if q.lease_secs < 2 {
            return Err(invalid("queue.lease_secs", "must be at least 2"));
        }
        if q.max_attempts == 0 {
            return Err(invalid("queue.max_attempts", "must be at least 1"));
        }
        if q.poll_ms == 0 {
            return Err(invalid("queue.poll_ms", "must be at least 1"));
        }
        if q.backoff_max_secs * 1000 < q.backoff_base_ms {
            return Err(invalid(
                "queue.backoff_max_secs",
                "must not be below queue.backoff_base_ms",
            ));
        }
        let p = &self.processing;
        if p.max_pixels < 1 {
            return Err(invalid("processing.max_pixels", "must be at least 1"));
        }
        if !(16..=65535).contains(&p.max_dimension) {
            return Err(invalid(
                "processing.max_dimension",
                "must be between 16 and 65535",
            ));
        }
        if p.timeout_secs == 0 {
            return Err(invalid("processing.timeout_secs", "must be at least 1"));
        }
        if p.webp_effort > 6 {
            return Err(invalid("processing.webp_effort", "must be between 0 and 6"));
        }
        if p.avif_effort > 9 {
            return Err(invalid("processing.avif_effort", "must be between 0 and 9"));
        }
        if p.threads > 256 {
            return Err(invalid("processing.threads", "must be at most 256"));
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let processing_threads = match p.threads {
            0 => cpus,
            n => n,
        }
        .min(q.workers.max(1));
        let edge_listen: SocketAddr = self
            .edge
            .listen
            .parse()
            .map_err(|_| invalid("edge.listen", "must be an address like 127.0.0.1:8081"))?;
        let edge_public_url = if self.edge.public_url.is_empty() {
            format!("http://{edge_listen}")
        } else {
            check_url("edge.public_url", &self.edge.public_url)?
        };
        let mut edge_signing_keys = Vec::new();
        for (i, k) in self.edge.signing_keys.iter().enumerate() {
            let key = format!("edge.signing_keys[{i}]");
            let bytes = hex::decode(k.trim()).map_err(|_| invalid(&key, "must be hex"))?;
            if bytes.len() < 16 {
                return Err(invalid(&key, "must be at least 16 bytes (32 hex digits)"));
            }
            edge_signing_keys.push(bytes);
        }
        let mut edge_purge_urls = Vec::new();
        for (i, u) in self.edge.purge_urls.iter().enumerate() {
            edge_purge_urls.push(check_url(&format!("edge.purge_urls[{i}]"), u)?);
        }
        if edge_purge_urls.is_empty() {
            edge_purge_urls.push(edge_public_url.clone());
        }
        let mut variants = Vec::new();
        for (i, v) in self.variants.iter().enumerate() {
            let key = |f: &str| format!("variants[{i}].{f}");
            if v.name.is_empty()
                || !v
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(invalid(
                    &key("name"),
                    "must be lower-case letters, digits or _",
                ));
            }
            if v.name == "original" || variants.iter().any(|o: &VariantConfig| o.name == v.name) {
                return Err(invalid(
                    &key("name"),
                    format!("{:?} is reserved or repeated", v.name),
                ));
            }
            if v.width == 0 || v.width > p.max_dimension {
                return Err(invalid(
                    &key("width"),
                    "must be between 1 and processing.max_dimension",
                ));
            }
            if v.height == 0 || v.height > p.max_dimension {
                return Err(invalid(
                    &key("height"),
                    "must be between 1 and processing.max_dimension",
                ));
            }
            let opt = |name: &str, value: &str| {
                let mut o = flexphoto_url::RequestOptions::default();
                o.set(name, value, p.max_dimension).map(|_| o)
            };
            let fit = opt("fit", &v.fit)
                .ok()
                .and_then(|o| o.fit)
                .ok_or_else(|| invalid(&key("fit"), format!("unknown fit {:?}", v.fit)))?;
            let format = match opt("fmt", &v.format).ok().and_then(|o| o.format) {
                Some(flexphoto_url::FormatChoice::Fixed(f)) if f != OutputFormat::Gif => f,
                _ => {
                    return Err(invalid(
                        &key("format"),
                        format!(
                            "unknown format {:?}; expected webp, jpeg, png or avif",
                            v.format
                        ),
                    ))
                }
            };
            if !(1..=100).contains(&v.quality) {
                return Err(invalid(&key("quality"), "must be between 1 and 100"));
            }
            variants.push(VariantConfig {
                name: v.name.clone(),
                width: v.width,
                height: v.height,
                fit,
                format,
                quality: v.quality,
            });
        }
        let search = self.search.validate(&self.duplicates, &data_dir)?;
        if !(3..=3600).contains(&self.cluster.lease_secs) {
            return Err(invalid("cluster.lease_secs", "must be between 3 and 3600"));
        }
        // A forwarding process has no index, and every job needs it: API only.
        let workers = if search.index == IndexChoice::Forward {
            0
        } else {
            q.workers
        };
        let advertise_url = if self.cluster.advertise_url.is_empty() {
            None
        } else {
            Some(check_url(
                "cluster.advertise_url",
                &self.cluster.advertise_url,
            )?)
        };
        let catalog = self.catalog.validate()?;
        let variant_names: Vec<String> = variants.iter().map(|v| v.name.clone()).collect();
        let tiering = self.tiering.validate(
            matches!(storage, StorageConfig::S3(_)),
            &data_dir,
            &variant_names,
        )?;
        self.prices.validate()?;
        self.admin_ui.validate()?;
        self.storage_history.validate()?;
        self.privacy.validate()?;
        if !(31..=3650).contains(&self.access.retention_days) {
            return Err(invalid(
                "access.retention_days",
                "must be between 31 and 3650",
            ));
        }
        if !(1..=100_000).contains(&self.access.max_batch_items) {
            return Err(invalid(
                "access.max_batch_items",
                "must be between 1 and 100000",
            ));
        }
        Ok(Config {
            catalog,
            edge_access_push: Duration::from_secs(self.edge.access_push_secs.max(1)),
            access_retention_days: self.access.retention_days,
            access_max_batch_items: self.access.max_batch_items as usize,
            tiering,
            prices: self.prices,
            admin_ui: self.admin_ui.clone(),
            storage_history: self.storage_history.clone(),
            privacy: self.privacy.clone(),
            cluster_lease: Duration::from_secs(self.cluster.lease_secs),
            advertise_url,
            search,
            listen,
            public_url_from_listen: self.server.public_url.is_empty(),
            public_url,
            data_dir,
            max_json_bytes: usize::try_from(self.server.max_json_bytes)
                .map_err(|_| invalid("server.max_json_bytes", "too large"))?,
            rate_per_key: self.server.rate_per_key,
            failed_auth_per_minute: self.server.failed_auth_per_minute,
            header_timeout: Duration::from_secs(self.server.header_timeout_secs),
            request_timeout: Duration::from_secs(self.server.request_timeout_secs),
            upload_idle_timeout: Duration::from_secs(self.server.upload_idle_timeout_secs),
            upload_min_bytes_per_sec: self.server.upload_min_bytes_per_sec,
            webhook_secret: (!self.upload.webhook_secret.is_empty())
                .then(|| self.upload.webhook_secret.clone()),
            cdn_purge: (!self.edge.cdn_purge_url.is_empty()).then(|| {
                (
                    self.edge.cdn_purge_url.clone(),
                    (!self.edge.cdn_purge_token.is_empty())
                        .then(|| self.edge.cdn_purge_token.clone()),
                )
            }),
            database,
            max_connections: self.database.max_connections,
            storage,
            max_upload_bytes: self.upload.max_bytes,
            upload_url_ttl: Duration::from_secs(self.upload.url_ttl_secs),
            allowed_formats,
            signing_secret: (!self.upload.signing_secret.is_empty())
                .then(|| self.upload.signing_secret.clone()),
            sweep_interval: (self.upload.sweep_interval_secs > 0)
                .then(|| Duration::from_secs(self.upload.sweep_interval_secs)),
            workers,
            processing_threads,
            lease: Duration::from_secs(q.lease_secs),
            max_attempts: q.max_attempts,
            backoff_base: Duration::from_millis(q.backoff_base_ms),
            backoff_max: Duration::from_secs(q.backoff_max_secs),
            poll: Duration::from_millis(q.poll_ms),
            shutdown_grace: Duration::from_secs(q.shutdown_grace_secs),
            max_pixels: p.max_pixels,
            max_dimension: p.max_dimension,
            processing_timeout: Duration::from_secs(p.timeout_secs),
            webp_effort: p.webp_effort,
            avif_effort: p.avif_effort,
            edge_public_url,
            edge_listen,
            edge_config: (!self.edge.config.is_empty()).then(|| PathBuf::from(&self.edge.config)),
            edge_signing_keys,
            edge_admin_token: (!self.edge.admin_token.is_empty())
                .then(|| self.edge.admin_token.clone()),
            edge_purge_urls,
            variants,
        })
    }
}

fn check_url(key: &str, url: &str) -> Result<String, ConfigError> {
    let u = url.trim_end_matches('/');
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or_else(|| invalid(key, "must be an absolute http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(invalid(key, "must name a host"));
    }
    Ok(u.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        RawConfig::from_toml_and_env(
            text,
            env.iter().map(|(a, b)| (a.to_string(), b.to_string())),
        )?
        .validate()
    }

    #[test]
    fn defaults_are_valid() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.variants.len(), 3);
        assert_eq!(c.public_url, "http://127.0.0.1:8080");
        assert!(matches!(c.database, DatabaseUrl::Sqlite(_)));
    }

    #[test]
    fn shipped_file_lists_every_key_with_its_default() {
        let defaults = RawConfig {
            variants: default_variants(),
            ..Default::default()
        };
        let drift = flexphoto_settings::drift_from_defaults(
            include_str!("../../config/control-plane.toml"),
            &defaults,
        );
        assert!(
            drift.is_empty(),
            "config/control-plane.toml drifted:\n{}",
            drift.join("\n")
        );
    }

    #[test]
    fn shipped_file_is_valid() {
        let text = include_str!("../../config/control-plane.toml");
        let c = load(text, &[]).unwrap();
        assert_eq!(c.variants[0].name, "thumb");
    }

    #[test]
    fn env_overrides_file() {
        let c = load(
            "[queue]\nworkers = 3\n",
            &[
                ("FLEXPHOTO__QUEUE__WORKERS", "5"),
                ("FLEXPHOTO__DATABASE__URL", "postgres://u@h/db"),
                (
                    "FLEXPHOTO__UPLOAD__ALLOWED_TYPES",
                    "[\"image/png\", \"image/jpeg\"]",
                ),
            ],
        )
        .unwrap();
        assert_eq!(c.workers, 5);
        assert_eq!(
            c.database,
            DatabaseUrl::Postgres("postgres://u@h/db".into())
        );
        assert_eq!(c.allowed_formats, vec![ImageFormat::Png, ImageFormat::Jpeg]);
    }

    #[test]
    fn bad_keys_are_named() {
        let e = load("[queue]\nmax_attempts = 0\n", &[]).unwrap_err();
        assert!(e.to_string().contains("queue.max_attempts"), "{e}");
        let e = load("[queue]\nwrkers = 1\n", &[]).unwrap_err();
        assert!(e.to_string().contains("wrkers"), "{e}");
        let e = load("", &[("FLEXPHOTO__QUEUE__WORKERS", "many")]).unwrap_err();
        assert!(e.to_string().contains("queue.workers"), "{e}");
        let e = load("[storage]\nkind = \"s3\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("storage.s3.bucket"), "{e}");
        let e = load("[[variants]]\nname = \"x\"\nwidth = 0\nheight = 5\n", &[]).unwrap_err();
        assert!(e.to_string().contains("variants[0].width"), "{e}");
        let e = load("[database]\nurl = \"mysql://x\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("database.url"), "{e}");
    }
}
