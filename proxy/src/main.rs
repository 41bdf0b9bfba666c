//! `flexphoto-edge`: serve images, check config, or sign URLs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use flexphoto_edge::config::{EdgeConfig, LOADER};
use flexphoto_storage::StorageConfig;
use flexphoto_url::Signer;

#[derive(Parser)]
#[command(
    name = "flexphoto-edge",
    version,
    about = "FlexPhotoDB edge: on-the-fly image transforms behind a tiered cache"
)]
struct Cli {
    /// Config file (default: $FLEXPHOTO_EDGE_CONFIG, else config/edge.toml when it exists,
    /// else built-in defaults).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Listen address, e.g. 127.0.0.1:8080 (overrides server.listen).
    #[arg(long)]
    listen: Option<String>,
    /// Serve this directory as the origin (overrides origin.*).
    #[arg(long)]
    origin_dir: Option<PathBuf>,
    /// Disk cache directory (overrides cache.disk_dir; enables the disk tier).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Create a few sample images in the origin directory if missing, and print URLs to open.
    #[arg(long)]
    samples: bool,
    /// Validate the configuration, print it, and exit.
    #[arg(long, short = 't')]
    test: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print a signed path, e.g. `flexphoto-edge sign '/img/cat.jpg?w=400'`.
    Sign {
        /// Path and query to sign.
        path: String,
    },
    /// Write the sample images into a directory and exit.
    Samples {
        /// Where to write them.
        dir: PathBuf,
    },
}

fn load_config(cli: &Cli) -> anyhow::Result<EdgeConfig> {
    let path = LOADER.locate(cli.config.as_deref());
    let mut cfg = EdgeConfig::load(path.as_deref())?;
    if let Some(listen) = &cli.listen {
        listen.parse::<std::net::SocketAddr>().with_context(|| {
            format!("--listen {listen:?} is not an address such as 127.0.0.1:8080")
        })?;
        cfg.listen = listen.clone();
    }
    if let Some(dir) = &cli.origin_dir {
        cfg.origin = StorageConfig::Local { dir: dir.clone() };
    }
    if let Some(dir) = &cli.cache_dir {
        cfg.disk_dir = Some(dir.clone());
    }
    Ok(cfg)
}

fn init_logs(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = load_config(&cli)?;
    if let Some(Command::Sign { path }) = &cli.command {
        let signer = Signer::new(cfg.signing_keys.clone());
        let signed = signer.sign_path(path, cfg.max_dimension)?;
        println!("{signed}");
        return Ok(());
    }
    if let Some(Command::Samples { dir }) = &cli.command {
        flexphoto_media::vips::init(cfg.vips_concurrency).map_err(anyhow::Error::msg)?;
        for key in flexphoto_edge::samples::ensure_samples(dir).map_err(anyhow::Error::msg)? {
            println!("{}", dir.join(key).display());
        }
        return Ok(());
    }
    if cli.test {
        println!("configuration OK");
        println!("  listen          {}", cfg.listen);
        println!("  origin          {:?}", cfg.origin);
        println!("  workers/queue   {}/{}", cfg.workers, cfg.queue);
        println!(
            "  memory caches   {}",
            flexphoto_edge::server::cache_sizes(&cfg)
        );
        println!(
            "  disk cache      {:?} ({} MiB)",
            cfg.disk_dir,
            cfg.disk_bytes >> 20
        );
        println!("  signing keys    {}", cfg.signing_keys.len());
        return Ok(());
    }
    init_logs(cfg.log_json);
    if cli.samples {
        if let StorageConfig::Local { dir } = &cfg.origin {
            flexphoto_media::vips::init(cfg.vips_concurrency).map_err(anyhow::Error::msg)?;
            let keys = flexphoto_edge::samples::ensure_samples(dir).map_err(anyhow::Error::msg)?;
            println!(
                "FlexPhotoDB edge serving {} at http://{}/",
                dir.display(),
                cfg.listen
            );
            for k in keys {
                println!("  open http://{}/img/{k}?w=600&fmt=auto", cfg.listen);
            }
            println!(
                "  or   http://{}/cdn-cgi/image/w=400,h=400,fit=cover,f=auto/samples/landscape.jpg",
                cfg.listen
            );
        }
    }
    flexphoto_edge::server::run(
        cfg,
        flexphoto_edge::server::Listen::Configured,
        flexphoto_edge::server::Stop::Signals,
    )
    .map_err(anyhow::Error::msg)
}

fn main() -> ExitCode {
    flexphoto_media::malloc::limit_malloc_arenas(2);
    // Scaled decodes and outputs of cold misses are a few MB to a few tens of MB; a large
    // decode hands its memory back once done (edge.rs).
    flexphoto_media::malloc::reuse_freed_memory(32 << 20);
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flexphoto-edge: {e:#}");
            ExitCode::from(2)
        }
    }
}
