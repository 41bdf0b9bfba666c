//! `flexphoto`: parse flags → load config → build state → run.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use flexphoto_control_plane::config::{Config, RawConfig, LOADER};
use flexphoto_control_plane::{app, auth, state::AppState};

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
    /// Configuration file (default: $FLEXPHOTO_CONFIG, else config/control-plane.toml when it
    /// exists, else built-in defaults); FLEXPHOTO__SECTION__KEY variables override it.
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
    /// Applies the tiering policy now: lists what would move between hot and cold storage and
    /// why, with the monthly saving; without --dry-run also queues the moves (the service's
    /// workers carry them out).
    Tier {
        #[command(flatten)]
        common: Common,
        /// Only list; queue nothing.
        #[arg(long)]
        dry_run: bool,
        /// Most moves per direction (default: all that qualify).
        #[arg(long, conflicts_with = "summary")]
        limit: Option<usize>,
        /// Print only the totals and the saving, not each move.
        #[arg(long, requires = "dry_run")]
        summary: bool,
        /// Print JSON instead of a table (each move on its own line).
        #[arg(long)]
        json: bool,
    },
    /// The storage and delivery bill: actual (catalog and the edges' traffic), with the
    /// tiering policy applied (or another one), or projected month by month.
    Cost {
        #[command(flatten)]
        common: Common,
        /// What-if: images older than this many days go cold.
        #[arg(long)]
        cold_after_days: Option<u32>,
        /// What-if: with fewer than this many requests in the window.
        #[arg(long)]
        cold_max_hits: Option<u64>,
        /// Project instead: a JSON file of inputs (see POST /v1/cost/projection), or
        /// `default` for the defaults adjusted by the flags below.
        #[arg(long)]
        project: Option<String>,
        /// Projection: images uploaded per day.
        #[arg(long)]
        daily_uploads: Option<f64>,
        /// Projection: average original size, MB.
        #[arg(long)]
        avg_original_mb: Option<f64>,
        /// Projection: views per upload.
        #[arg(long)]
        views_per_upload: Option<f64>,
        /// Projection: storage class of originals (STANDARD, STANDARD_IA, GLACIER_IR …).
        #[arg(long)]
        originals_class: Option<String>,
        /// Projection: a CDN in front of the edges.
        #[arg(long)]
        cdn: bool,
        /// Projection: months.
        #[arg(long)]
        months: Option<u32>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
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
        /// Collection (id or name) the photos go to; its schema decides whether invalid
        /// photos are refused or routed to review. Default: the owner's default collection.
        #[arg(long)]
        collection: Option<String>,
        /// A CSV manifest: a `file` column (path under DIR, or file name) and one column per
        /// field. XMP sidecars beside the photos (`a.xmp`, `a.jpg.xmp`) are sent without it.
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
}

fn load_config(common: &Common, edge_listen: Option<&str>) -> Result<Config> {
    let mut raw = RawConfig::load(LOADER.locate(common.config.as_deref()).as_deref())?;
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
    flexphoto_media::malloc::limit_malloc_arenas(2);
    // A 12-MP photo's decoded pixels are 36 MB.
    flexphoto_media::malloc::reuse_freed_memory(64 << 20);
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
            rt.block_on(run_service(cfg, !no_edge))
        }
        Cmd::Serve { common } => {
            let cfg = load_config(&common, None)?;
            rt.block_on(run_service(cfg, false))
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
            rt.block_on(async {
                let state = AppState::build(cfg)
                    .await
                    .context("starting the control plane")?;
                let report =
                    flexphoto_control_plane::search::reconcile::reconcile(&state, !dry_run).await;
                if let Some(owner) = &state.index_owner {
                    owner.release().await;
                }
                println!("{}", serde_json::to_string_pretty(&report?)?);
                state.db.close().await;
                Ok(())
            })
        }
        Cmd::Tier {
            common,
            dry_run,
            limit,
            summary,
            json,
        } => {
            let cfg = load_config(&common, None)?;
            let args = lifecycle_cli::TierArgs {
                dry_run,
                summary,
                limit,
                json,
            };
            rt.block_on(lifecycle_cli::tier(cfg, args))
        }
        Cmd::Cost {
            common,
            cold_after_days,
            cold_max_hits,
            project,
            daily_uploads,
            avg_original_mb,
            views_per_upload,
            originals_class,
            cdn,
            months,
            json,
        } => {
            let cfg = load_config(&common, None)?;
            match project {
                Some(source) => {
                    let mut input: flexphoto_control_plane::lifecycle::cost::ProjectionInput =
                        if source == "default" {
                            Default::default()
                        } else {
                            let text = std::fs::read_to_string(&source)
                                .with_context(|| format!("reading {source}"))?;
                            serde_json::from_str(&text)
                                .with_context(|| format!("parsing {source}"))?
                        };
                    if let Some(v) = daily_uploads {
                        input.daily_uploads = v;
                    }
                    if let Some(v) = avg_original_mb {
                        input.avg_original_mb = v;
                    }
                    if let Some(v) = views_per_upload {
                        input.views_per_upload = v;
                    }
                    if let Some(v) = originals_class {
                        input.originals_class = v.to_ascii_uppercase();
                    }
                    if let Some(v) = months {
                        input.months = v;
                    }
                    input.cdn |= cdn;
                    lifecycle_cli::projection(&cfg, &input, json)
                }
                None => rt.block_on(lifecycle_cli::cost(
                    cfg,
                    cold_after_days,
                    cold_max_hits,
                    json,
                )),
            }
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
            raw.storage.kind = "local".into();
            raw.storage.dir = String::new();
            raw.search.index_dir = String::new();
            raw.edge.listen = "127.0.0.1:0".into();
            let cfg = raw.validate()?;
            let result = rt.block_on(flexphoto_control_plane::search::eval::run(cfg, &fixtures));
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
            collection,
            manifest,
        } => {
            let key = key
                .or_else(|| std::env::var("FLEXPHOTO_API_KEY").ok())
                .or_else(|| std::env::var("FLEXPHOTO_ADMIN_KEY").ok())
                .context("an API key is needed: --key, FLEXPHOTO_API_KEY or FLEXPHOTO_ADMIN_KEY")?;
            let manifest = match manifest {
                None => None,
                Some(p) => {
                    let text = std::fs::read_to_string(&p)
                        .with_context(|| format!("reading {}", p.display()))?;
                    let m = flexphoto_control_plane::catalog::csv::Manifest::parse(&text)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                    Some(m)
                }
            };
            let opts = flexphoto_control_plane::import::ImportOptions {
                collection,
                manifest,
            };
            let report = rt.block_on(flexphoto_control_plane::import::import(
                &dir,
                &owner,
                api.trim_end_matches('/'),
                &key,
                concurrency.max(1),
                &opts,
            ))?;
            for e in &report.failures {
                eprintln!("failed: {e}");
            }
            println!(
                "imported {} new, {} duplicates, {} failed, of {}",
                report.imported,
                report.duplicates,
                report.failures.len(),
                report.total
            );
            println!(
                "routed to review {}, refused by validation {}; with a sidecar {}, with manifest values {}",
                report.in_review, report.refused, report.with_sidecar, report.with_manifest
            );
            if !report.failures.is_empty() {
                bail!("{} uploads failed", report.failures.len());
            }
            Ok(())
        }
    }
}

async fn run_service(mut cfg: Config, with_edge: bool) -> Result<()> {
    let listen = cfg.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    if cfg.public_url_from_listen {
        cfg.public_url = format!("http://{}", listener.local_addr()?);
    }
    if cfg.advertise_url.is_none() {
        let addr = listener.local_addr()?;
        if addr.ip().is_unspecified() {
            tracing::warn!(%addr, "listening on every interface without cluster.advertise_url: other control-plane processes cannot forward searches here");
        }
        cfg.advertise_url = Some(format!("http://{addr}"));
    }
    // Under `flexphoto up`, the edge in this process (it needs the API's address to push
    // access statistics to, so it starts once the listener is bound).
    let edge = if with_edge {
        Some(up::start_edge(&mut cfg)?)
    } else {
        None
    };
    let edge_key = edge.as_ref().and_then(|e| e.access_key.clone());
    let state = AppState::build(cfg)
        .await
        .context("starting the control plane")?;
    if let Some(secret) = edge_key {
        auth::ensure_key(&state.db, &secret, auth::Role::Edge, "edge of flexphoto up").await?;
    }
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
    // One signal stops both: the edge starts its grace period while the API drains, and the
    // process exits once both are done.
    let stop_edge = edge.as_ref().map(|e| e.stop.clone());
    let signal = async move {
        app::shutdown_signal().await;
        if let Some(stop) = stop_edge {
            let _ = stop.send(true);
        }
    };
    app::serve(state, listener, signal).await?;
    if let Some(e) = edge {
        let _ = e.stop.send(true);
        let _ = tokio::task::spawn_blocking(move || e.thread.join()).await;
    }
    Ok(())
}

/// `flexphoto tier` and `flexphoto cost`: the lifecycle from the command line, on the
/// database directly (no running service needed).
mod lifecycle_cli {
    use anyhow::Result;
    use flexphoto_control_plane::config::Config;
    use flexphoto_control_plane::domain::JobKind;
    use flexphoto_control_plane::lifecycle::cost::{self, Bill, ProjectionInput};
    use std::io::Write;

    use flexphoto_control_plane::domain::ImageId;
    use flexphoto_control_plane::lifecycle::policy::{self, Direction, PlanTotals, PlannedMove};
    use flexphoto_control_plane::lifecycle::report;
    use flexphoto_control_plane::store::Db;

    fn gb(bytes: f64) -> String {
        format!("{:.3} GB", bytes / cost::GB)
    }

    fn print_bill(title: &str, b: &Bill) {
        println!("{title}");
        for i in &b.items {
            println!(
                "  {:<28} {:>14.3} {:<16} x {:>9.5} = {:>12.2}",
                i.item, i.quantity, i.unit, i.unit_price, i.monthly
            );
        }
        println!("  {:<28} {:>68.2}", "total per month (USD)", b.total);
    }

    /// `flexphoto tier`.
    pub async fn tier(cfg: Config, args: TierArgs) -> Result<()> {
        let db = Db::connect(&cfg.database, 2).await?;
        let mut tiering = cfg.tiering.clone();
        tiering.default_policy.enabled = true;
        let now = flexphoto_control_plane::store::now();
        let (usage, _, _) = report::usage(&db, &tiering, now).await?;
        let delivery = cost::Delivery {
            cdn: cfg.prices.cdn,
            cdn_hit_ratio: cfg.prices.cdn_hit_ratio,
        };
        let actual = cost::monthly_bill(&usage, &cfg.prices, delivery);
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let mut listing = Listing {
            json: args.json,
            queue: !args.dry_run,
            ..Listing::default()
        };
        if args.json {
            write!(out, "{{\"plan\":{{\"moves\":[")?;
        }
        let mut failed = None;
        let mut emit = |m: PlannedMove| {
            if failed.is_none() {
                failed = listing.push(&mut out, m).err();
            }
        };
        let (totals, truncated) = match args.limit {
            // A first batch, as the scheduler takes it.
            Some(limit) => {
                let plan = policy::plan(&db, &tiering, now, Some(limit)).await?;
                let truncated = plan.truncated;
                plan.moves.into_iter().for_each(&mut emit);
                (listing.totals, truncated)
            }
            // Every move, streamed, unless only the totals are asked for.
            None if args.summary => (policy::totals(&db, &tiering, now).await?, false),
            None => {
                policy::each_move(&db, &tiering, now, &mut emit).await?;
                (listing.totals, false)
            }
        };
        if let Some(e) = failed {
            return Err(e.into());
        }
        let what_if = report::what_if(&usage, &totals, &cfg.prices, delivery, &actual);
        if args.json {
            writeln!(
                out,
                "\n],\"to_cold_bytes\":{},\"to_hot_bytes\":{},\"truncated\":{truncated}}},\
                 \"totals\":{},\"what_if\":{}}}",
                totals.bytes_to_cold,
                totals.bytes_to_hot,
                serde_json::to_string(&totals)?,
                serde_json::to_string(&what_if)?
            )?;
        } else {
            writeln!(
                out,
                "\n{} to cold ({}), {} to hot ({}){}; saving {:.2} USD per month, one-time {:.2} USD",
                what_if.images_to_cold,
                gb(what_if.bytes_to_cold as f64),
                what_if.images_to_hot,
                gb(what_if.bytes_to_hot as f64),
                if truncated { " (limited; more qualify)" } else { "" },
                what_if.monthly_saving,
                what_if.one_time_cost
            )?;
        }
        out.flush()?;
        if !args.dry_run {
            let c = db
                .enqueue_jobs(&listing.to_cold, JobKind::TierCold, cfg.max_attempts)
                .await?;
            let h = db
                .enqueue_jobs(&listing.to_hot, JobKind::TierHot, cfg.max_attempts)
                .await?;
            eprintln!(
                "queued {c} moves to cold and {h} to hot; the service's workers carry them out"
            );
        }
        db.close().await;
        Ok(())
    }

    /// What `flexphoto tier` was asked for.
    pub struct TierArgs {
        /// Only list; queue nothing.
        pub dry_run: bool,
        /// Only the totals, not every move.
        pub summary: bool,
        /// Most moves per direction.
        pub limit: Option<usize>,
        /// JSON instead of lines.
        pub json: bool,
    }

    /// The moves as they are printed: counted, and kept by id when they will be queued.
    #[derive(Default)]
    struct Listing {
        json: bool,
        queue: bool,
        printed: usize,
        totals: PlanTotals,
        to_cold: Vec<ImageId>,
        to_hot: Vec<ImageId>,
    }

    impl Listing {
        fn push(&mut self, out: &mut impl Write, m: PlannedMove) -> std::io::Result<()> {
            self.totals.add(m.direction, 1, m.bytes, m.objects);
            if self.queue {
                match m.direction {
                    Direction::ToCold => self.to_cold.push(m.id),
                    Direction::ToHot => self.to_hot.push(m.id),
                }
            }
            if self.json {
                out.write_all(if self.printed == 0 { b"\n" } else { b",\n" })?;
                serde_json::to_writer(&mut *out, &m)?;
            } else {
                let dir = match m.direction {
                    Direction::ToCold => "to cold",
                    Direction::ToHot => "to hot ",
                };
                writeln!(
                    out,
                    "{} {dir} {:>10}  {}  {}",
                    m.id.0,
                    gb(m.bytes as f64),
                    m.owner,
                    m.reason
                )?;
            }
            self.printed += 1;
            Ok(())
        }
    }

    /// `flexphoto cost`.
    pub async fn cost(
        cfg: Config,
        cold_after_days: Option<u32>,
        cold_max_hits: Option<u64>,
        json: bool,
    ) -> Result<()> {
        let db = Db::connect(&cfg.database, 2).await?;
        let mut tiering = cfg.tiering.clone();
        tiering.default_policy.enabled = true;
        if let Some(v) = cold_after_days {
            tiering.default_policy.cold_after_days = v;
        }
        if let Some(v) = cold_max_hits {
            tiering.default_policy.cold_max_hits = v;
        }
        let r = report::report(
            &db,
            &tiering,
            &cfg.prices,
            flexphoto_control_plane::store::now(),
        )
        .await?;
        db.close().await;
        if json {
            println!("{}", serde_json::to_string_pretty(&r)?);
            return Ok(());
        }
        println!("stored:");
        for s in &r.storage {
            println!(
                "  {:<9} {:<10} {:>9} objects {:>14}{}",
                s.tier,
                s.kind,
                s.objects,
                gb(s.bytes as f64),
                if s.unmeasured > 0 {
                    format!(" ({} not measured yet)", s.unmeasured)
                } else {
                    String::new()
                }
            );
        }
        println!(
            "served in 30 days: {} requests, {}, edge hit ratio {}",
            r.traffic_30d.requests,
            gb(r.traffic_30d.bytes as f64),
            r.edge_hit_ratio
                .map_or("-".into(), |h| format!("{:.1} %", h * 100.0))
        );
        print_bill("\nactual, per month:", &r.actual);
        print_bill(
            &format!(
                "\nwith the tiering policy ({} images to cold, {} to hot):",
                r.what_if.images_to_cold, r.what_if.images_to_hot
            ),
            &r.what_if.bill,
        );
        println!(
            "\nsaving {:.2} USD per month; the moves cost {:.2} USD once",
            r.what_if.monthly_saving, r.what_if.one_time_cost
        );
        Ok(())
    }

    /// `flexphoto cost --project`.
    pub fn projection(cfg: &Config, input: &ProjectionInput, json: bool) -> Result<()> {
        let months = cost::project(input, &cfg.prices).map_err(|e| anyhow::anyhow!("{e}"))?;
        if json {
            println!("{}", serde_json::to_string_pretty(&months)?);
            return Ok(());
        }
        println!(
            "{:>5} {:>12} {:>12} {:>12}  bill (USD)",
            "month", "stored GB", "views", "served GB"
        );
        for m in &months {
            println!(
                "{:>5} {:>12.1} {:>12.0} {:>12.1}  {:>10.2}",
                m.month, m.stored_gb, m.views, m.served_gb, m.bill.total
            );
        }
        if let Some(last) = months.last() {
            print_bill(&format!("\nmonth {} by line item:", last.month), &last.bill);
        }
        Ok(())
    }
}

/// `flexphoto up`: the edge in this process, on the control plane's object store.
#[cfg(feature = "edge")]
mod up {
    use anyhow::{Context, Result};
    use flexphoto_control_plane::config::Config;
    use flexphoto_edge::config::{EdgeConfig, LOADER};

    /// Starts the edge on its own thread, reading the control plane's store; the two agree
    /// on signing keys and the purge token (either side's, when only one sets them), and the
    /// edge pushes its access statistics to this process with a key of role `edge` kept in
    /// the data directory: returns that key, for the caller to register. The edge stops
    /// gracefully when told through the returned [`super::EdgeThread`] (or when it is
    /// dropped), not on the process's signals: this process stops both.
    pub fn start_edge(cfg: &mut Config) -> Result<super::EdgeThread> {
        let path = cfg.edge_config.clone().or_else(|| LOADER.locate(None));
        let mut e = EdgeConfig::load(path.as_deref()).context("loading the edge configuration")?;
        // Bound here, so a taken address stops the start with its name (the edge alone would
        // keep retrying) and port 0 works.
        let listener = std::net::TcpListener::bind(cfg.edge_listen).with_context(|| {
            format!(
                "binding the edge's address {} (edge.listen)",
                cfg.edge_listen
            )
        })?;
        let bound = listener.local_addr()?;
        if bound != cfg.edge_listen {
            // An ephemeral port: the addresses derived from edge.listen follow it.
            let derived = format!("http://{}", cfg.edge_listen);
            let real = format!("http://{bound}");
            if cfg.edge_public_url == derived {
                cfg.edge_public_url = real.clone();
            }
            for u in cfg.edge_purge_urls.iter_mut().filter(|u| **u == derived) {
                *u = real.clone();
            }
            cfg.edge_listen = bound;
        }
        e.listen = bound.to_string();
        if let flexphoto_storage::StorageConfig::Local { dir } = &cfg.storage {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        e.origin = cfg.storage.clone();
        if e.withheld_list_key.is_some() {
            // The list the rights scheduler publishes.
            e.withheld_list_key = Some(cfg.catalog.withheld_list_key.clone());
        }
        // Cold objects in a store of their own are read from there when the origin lacks them.
        if let flexphoto_control_plane::lifecycle::settings::ColdTarget::Store(cold) =
            &cfg.tiering.cold
        {
            e.origin_cold = Some(cold.clone());
        }
        if cfg.edge_signing_keys.is_empty() && e.signing_keys.is_empty() {
            // Signed by default: one key for this data directory, made on the first start.
            cfg.edge_signing_keys = vec![super::generated_signing_key(&cfg.data_dir)?];
        }
        if cfg.edge_signing_keys.is_empty() {
            cfg.edge_signing_keys = e.signing_keys.clone();
        } else if e.signing_keys.is_empty() {
            e.signing_keys = cfg.edge_signing_keys.clone();
        }
        if cfg.edge_admin_token.is_none() {
            cfg.edge_admin_token = e.admin_token.clone();
        } else if e.admin_token.is_none() {
            e.admin_token = cfg.edge_admin_token.clone();
        }
        let mut access_key = None;
        if e.access.is_none() {
            let key = super::data_dir_secret(&cfg.data_dir, "edge-access.key")?;
            e.access = Some(flexphoto_edge::access::PushConfig {
                url: cfg.public_url.clone(),
                key: key.clone(),
                edge: "flexphoto-up".into(),
                edge_url: Some(cfg.edge_public_url.clone()),
                interval: cfg.edge_access_push,
                max_items: 10_000,
                buffer_batches: 60,
            });
            access_key = Some(key);
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        println!("flexphoto edge listening on http://{bound}");
        let thread = std::thread::Builder::new()
            .name("edge".into())
            .spawn(move || {
                let stop = flexphoto_edge::server::Stop::When(stopped);
                let listen = flexphoto_edge::server::Listen::Bound(listener);
                if let Err(e) = flexphoto_edge::server::run(e, listen, stop) {
                    tracing::error!(error = %e, "the edge stopped with an error");
                }
            })?;
        Ok(super::EdgeThread {
            access_key,
            stop,
            thread,
        })
    }
}

/// The edge running on a thread of this process under `flexphoto up`.
#[cfg_attr(not(feature = "edge"), allow(dead_code))]
struct EdgeThread {
    /// The key the edge pushes access statistics with, for the control plane to register.
    access_key: Option<String>,
    /// Turns true to stop the edge gracefully; dropping it stops the edge too.
    stop: tokio::sync::watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
}

/// The edge signing key kept in `{data_dir}/edge-signing.key` (readable by the owner only),
/// made on first use.
#[cfg(feature = "edge")]
fn generated_signing_key(data_dir: &std::path::Path) -> Result<Vec<u8>> {
    let key = data_dir_secret(data_dir, "edge-signing.key")?;
    hex::decode(&key).context("a generated key is hex")
}

/// A random hex secret kept in `{data_dir}/{name}` (readable by the owner only), made on
/// first use.
#[cfg(feature = "edge")]
fn data_dir_secret(data_dir: &std::path::Path, name: &str) -> Result<String> {
    use std::io::Write;
    let path = data_dir.join(name);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let t = text.trim();
        if t.len() >= 32 && hex::decode(t).is_ok() {
            return Ok(t.to_owned());
        }
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let key = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{key}")?;
    Ok(key)
}

/// Without the edge compiled in, `up` runs the control plane alone.
#[cfg(not(feature = "edge"))]
mod up {
    use anyhow::Result;
    use flexphoto_control_plane::config::Config;

    /// Says that this build has no edge.
    pub fn start_edge(_cfg: &mut Config) -> Result<super::EdgeThread> {
        anyhow::bail!("this flexphoto was built without the edge (feature `edge`); use --no-edge or run flexphoto-edge")
    }
}
