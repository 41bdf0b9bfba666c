//! `flexphoto`: parse flags → load config → build state → run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use flexphoto_control_plane::config::{Config, RawConfig, StorageConfig};
use flexphoto_control_plane::{app, auth, edge_client, state::AppState};
use flexphoto_edge::config::{EdgeConfig, OriginConfig};

#[derive(Parser)]
#[command(
    name = "flexphoto",
    version,
    about = "FlexPhotoDB: photo storage, processing and delivery"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Common {
    /// Configuration file (see config/control-plane.toml); FLEXPHOTO_* variables override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory (database, local objects, temporary files).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// API listen address.
    #[arg(long)]
    listen: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs everything on embedded defaults: the API, the workers and the edge.
    Up {
        #[command(flatten)]
        common: Common,
        /// Edge listen address.
        #[arg(long)]
        edge_listen: Option<String>,
        /// Do not start the edge (API and workers only).
        #[arg(long)]
        no_edge: bool,
    },
    /// Runs the API and the workers (no edge).
    Serve {
        #[command(flatten)]
        common: Common,
    },
    /// Applies database migrations and exits.
    Migrate {
        #[command(flatten)]
        common: Common,
    },
    /// Compares the database and the vector index and repairs drift: deletes points of images
    /// that are gone, queues re-embedding of images without (current) vectors.
    Reconcile {
        #[command(flatten)]
        common: Common,
        /// Only report; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Measures search quality: ingests a labelled photo set on a scratch data directory and
    /// prints recall@1/5/10, MRR and near-duplicate precision/recall as JSON.
    EvalSearch {
        /// Configuration file (model and thresholds; database and storage are scratch).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Fixtures folder holding labelled/queries.json (and photos/ for duplicates).
        #[arg(long, default_value = "../shared/fixtures")]
        fixtures: PathBuf,
        /// Also write the report here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Uploads every photo in a directory (recursively) through the API.
    Import {
        /// Directory to import.
        dir: PathBuf,
        /// Owner of the imported images.
        #[arg(long)]
        owner: String,
        /// API base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api: String,
        /// API key (uploader or admin); defaults to FLEXPHOTO_API_KEY, then FLEXPHOTO_ADMIN_KEY.
        #[arg(long)]
        key: Option<String>,
        /// Uploads in flight.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
}

fn load_config(common: &Common, edge_listen: Option<&str>) -> Result<Config> {
    let mut raw = RawConfig::load(common.config.as_deref())?;
    if let Some(d) = &common.data_dir {
        raw.server.data_dir = d.display().to_string();
    }
    if let Some(l) = &common.listen {
        raw.server.listen = l.clone();
    }
    if let Some(l) = edge_listen {
        raw.edge.listen = l.to_owned();
    }
    Ok(raw.validate()?)
}

fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("FLEXPHOTO_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(
                "info,sqlx=warn,aws=warn,pingora=warn,qdrant_edge=error",
            )
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> Result<()> {
    flexphoto_edge::memory::limit_malloc_arenas(2);
    flexphoto_edge::memory::reuse_freed_memory();
    let cli = Cli::parse();
    init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Up {
            common,
            edge_listen,
            no_edge,
        } => {
            let cfg = load_config(&common, edge_listen.as_deref())?;
            let edge = edge_config(&cfg)?;
            if !no_edge {
                let ecfg = edge.clone();
                std::thread::Builder::new()
                    .name("edge".into())
                    .spawn(move || {
                        if let Err(e) = flexphoto_edge::server::run(ecfg) {
                            tracing::error!(error = %e, "the edge stopped with an error");
                        }
                    })?;
            }
            rt.block_on(run_service(cfg, edge))
        }
        Cmd::Serve { common } => {
            let cfg = load_config(&common, None)?;
            let edge = edge_config(&cfg)?;
            rt.block_on(run_service(cfg, edge))
        }
        Cmd::Migrate { common } => {
            let cfg = load_config(&common, None)?;
            rt.block_on(async {
                let db = flexphoto_control_plane::store::Db::connect(&cfg.database, 1).await?;
                println!("migrations applied ({})", db.backend());
                db.close().await;
                Ok(())
            })
        }
        Cmd::Reconcile { common, dry_run } => {
            let cfg = load_config(&common, None)?;
            let edge = edge_config(&cfg)?;
            rt.block_on(async {
                let state = AppState::build(cfg, &edge)
                    .await
                    .context("starting the control plane")?;
                let report =
                    flexphoto_control_plane::reconcile::reconcile(&state, !dry_run).await?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                state.db.close().await;
                Ok(())
            })
        }
        Cmd::EvalSearch {
            config,
            fixtures,
            out,
        } => {
            let scratch = std::env::temp_dir()
                .join(format!("flexphoto-eval-{}", uuid::Uuid::new_v4().simple()));
            let mut raw = RawConfig::load(config.as_deref())?;
            raw.server.data_dir = scratch.display().to_string();
            raw.server.listen = "127.0.0.1:0".into();
            raw.database.url = String::new();
            raw.storage.backend = "local".into();
            raw.storage.local_dir = String::new();
            raw.search.index_dir = String::new();
            raw.edge.listen = "127.0.0.1:0".into();
            let cfg = raw.validate()?;
            let edge = edge_config(&cfg)?;
            let result = rt.block_on(flexphoto_control_plane::eval::run(cfg, &edge, &fixtures));
            let _ = std::fs::remove_dir_all(&scratch);
            let report = result?;
            let text = serde_json::to_string_pretty(&report)?;
            println!("{text}");
            if let Some(p) = out {
                std::fs::write(&p, format!("{text}\n"))
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            Ok(())
        }
        Cmd::Import {
            dir,
            owner,
            api,
            key,
            concurrency,
        } => {
            let key = key
                .or_else(|| std::env::var("FLEXPHOTO_API_KEY").ok())
                .or_else(|| std::env::var("FLEXPHOTO_ADMIN_KEY").ok())
                .context("an API key is needed: --key, FLEXPHOTO_API_KEY or FLEXPHOTO_ADMIN_KEY")?;
            rt.block_on(import(
                &dir,
                &owner,
                api.trim_end_matches('/'),
                &key,
                concurrency.max(1),
            ))
        }
    }
}

/// The edge's configuration, pointed at the control plane's object store and edge address.
fn edge_config(cfg: &Config) -> Result<EdgeConfig> {
    let mut e =
        EdgeConfig::load(cfg.edge_config.as_deref()).context("loading the edge configuration")?;
    e.listen = cfg.edge_listen.to_string();
    e.origin = match &cfg.storage {
        StorageConfig::Local(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            OriginConfig::Local { dir: dir.clone() }
        }
        StorageConfig::S3(s3) => OriginConfig::S3(s3.to_edge()),
    };
    Ok(e)
}

async fn run_service(mut cfg: Config, edge: EdgeConfig) -> Result<()> {
    let listen = cfg.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    if cfg.public_url_from_listen {
        cfg.public_url = format!("http://{}", listener.local_addr()?);
    }
    let state = AppState::build(cfg, &edge)
        .await
        .context("starting the control plane")?;
    let seeded = auth::seed_admin_key(
        &state.db,
        std::env::var("FLEXPHOTO_ADMIN_KEY").ok().as_deref(),
    )
    .await?;
    if let Some(k) = seeded {
        println!("\n  No admin API key existed, so one was created. It is shown only this once:\n\n    {k}\n\n  Send it as `Authorization: Bearer {k}`.\n");
    }
    // Tests and scripts read the real address from this line (useful with port 0).
    println!("flexphoto listening on http://{}", listener.local_addr()?);
    app::serve(state, listener, app::shutdown_signal()).await?;
    Ok(())
}

fn is_photo(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some(
            "jpg"
                | "jpeg"
                | "png"
                | "webp"
                | "gif"
                | "heic"
                | "heif"
                | "hif"
                | "avif"
                | "tif"
                | "tiff"
        )
    )
}

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

fn multipart(owner: &str, name: &str, data: &[u8], boundary: &str) -> Bytes {
    let safe: String = name
        .chars()
        .filter(|c| *c != '"' && !c.is_control())
        .collect();
    let mut body = Vec::with_capacity(data.len() + 512);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"owner\"\r\n\r\n{owner}\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{safe}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Bytes::from(body)
}

async fn import(dir: &Path, owner: &str, api: &str, key: &str, concurrency: usize) -> Result<()> {
    let mut files = Vec::new();
    walk(dir, &mut files).with_context(|| format!("reading {}", dir.display()))?;
    files.sort();
    if files.is_empty() {
        bail!("no photos found in {}", dir.display());
    }
    let total = files.len();
    let queue = Arc::new(std::sync::Mutex::new(files));
    let counts = Arc::new([
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ]);
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.min(total) {
        let (queue, counts, failures) = (
            Arc::clone(&queue),
            Arc::clone(&counts),
            Arc::clone(&failures),
        );
        let (owner, api, auth) = (owner.to_owned(), api.to_owned(), format!("Bearer {key}"));
        tasks.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop());
                let Some(path) = next else { break };
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let outcome = match tokio::fs::read(&path).await {
                    Err(e) => Err(format!("{}: {e}", path.display())),
                    Ok(data) => {
                        let boundary = format!("flexphoto-{}", uuid::Uuid::new_v4().simple());
                        let body = multipart(&owner, &name, &data, &boundary);
                        let ct = format!("multipart/form-data; boundary={boundary}");
                        match edge_client::send(
                            http::Method::POST,
                            &format!("{api}/v1/images"),
                            &[("authorization", &auth), ("content-type", &ct)],
                            body,
                            Duration::from_secs(300),
                        )
                        .await
                        {
                            Ok(r) if r.status == 201 => Ok(0),
                            Ok(r) if r.status == 409 => Ok(1),
                            Ok(r) => Err(format!(
                                "{}: HTTP {} {}",
                                path.display(),
                                r.status,
                                String::from_utf8_lossy(&r.body)
                            )),
                            Err(e) => Err(format!("{}: {e}", path.display())),
                        }
                    }
                };
                match outcome {
                    Ok(i) => {
                        counts[i].fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        counts[2].fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut f) = failures.lock() {
                            f.push(e);
                        }
                    }
                }
                progress(&counts, total);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    eprintln!();
    let failed = counts[2].load(Ordering::Relaxed);
    if let Ok(f) = failures.lock() {
        for e in f.iter() {
            eprintln!("failed: {e}");
        }
    }
    println!(
        "imported {} new, {} duplicates, {} failed, of {total}",
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed),
        failed
    );
    if failed > 0 {
        bail!("{failed} uploads failed");
    }
    Ok(())
}

fn progress(counts: &[AtomicUsize; 3], total: usize) {
    let (ok, dup, bad) = (
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed),
        counts[2].load(Ordering::Relaxed),
    );
    let done = ok + dup + bad;
    let width = 30;
    let filled = done * width / total.max(1);
    eprint!(
        "\r[{}{}] {done}/{total}  new {ok}  duplicate {dup}  failed {bad}",
        "#".repeat(filled),
        "-".repeat(width - filled)
    );
}
