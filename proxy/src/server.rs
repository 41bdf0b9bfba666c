//! Starting and stopping the edge server.

use std::sync::Arc;

use pingora_core::listeners::ListenerConfig;
use pingora_core::protocols::l4::stream::L4BufferSettings;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{Fds, RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora_core::services::listening::Service;

use crate::app::EdgeApp;
use crate::config::EdgeConfig;
use crate::connection_threads::ConnectionThreads;
use crate::edge::Edge;
use crate::metrics::Metrics;

/// When the edge stops: on the process's signals (SIGTERM graceful, SIGINT fast, SIGQUIT
/// graceful upgrade), or when its owner says so (a process that runs the edge beside other
/// work and stops them together).
pub enum Stop {
    /// The process's signals.
    Signals,
    /// A graceful stop once the value turns true.
    When(tokio::sync::watch::Receiver<bool>),
}

/// Where the edge takes its connections from.
pub enum Listen {
    /// Bind `server.listen` from the configuration (retried while the address is in use).
    Configured,
    /// A TCP listener its owner bound already: a process that binds before it starts the
    /// edge (and reports a taken address at once), a test on an ephemeral port, a supervisor
    /// that hands sockets down.
    Bound(std::net::TcpListener),
}

struct StopWhen(tokio::sync::watch::Receiver<bool>);

#[async_trait::async_trait]
impl ShutdownSignalWatch for StopWhen {
    async fn recv(&self) -> ShutdownSignal {
        let mut rx = self.0.clone();
        // A dropped sender also means stop: nobody is left to say so.
        let _ = rx.wait_for(|stop| *stop).await;
        ShutdownSignal::GracefulTerminate
    }
}

/// Builds the edge from `cfg` and serves on `listen` until `stop`. Blocks the calling
/// thread; Pingora makes its own runtimes.
pub fn run(cfg: EdgeConfig, listen: Listen, stop: Stop) -> Result<(), String> {
    let metrics = Arc::new(Metrics::new().map_err(|e| e.to_string())?);
    let edge = Arc::new(Edge::new(cfg, metrics)?);
    run_edge(edge, listen, stop)
}

/// The in-memory cache sizes in force and what they add up to, in MiB.
pub fn cache_sizes(cfg: &EdgeConfig) -> String {
    let mib = |b: u64| b >> 20;
    format!(
        "results {} MiB + sources {} MiB + working copies {} MiB = {} MiB ({:.0}% of {} MiB \
         machine memory); ready responses up to {} MiB more; large decodes {} MiB and \
         queued sources {} MiB at once",
        mib(cfg.memory_bytes),
        mib(cfg.source_bytes),
        mib(cfg.working_bytes),
        mib(cfg.cache_total_bytes()),
        cfg.cache_total_bytes() as f64 * 100.0 / cfg.machine_memory.max(1) as f64,
        mib(cfg.machine_memory),
        mib(cfg.ready_bytes),
        mib(cfg.decode_memory_bytes),
        mib(cfg.queued_source_bytes),
    )
}

fn log_cache_sizes(cfg: &EdgeConfig) {
    tracing::info!(sizes = %cache_sizes(cfg), "cache sizes");
}

/// Serves an already built edge on `listen` until `stop`.
pub fn run_edge(edge: Arc<Edge>, listen: Listen, stop: Stop) -> Result<(), String> {
    let cfg = edge.config().clone();
    // Without work stealing, Pingora's one thread only accepts; connections are served on
    // threads of their own (see `connection_threads`).
    let threads = if cfg.work_stealing {
        None
    } else {
        let threads = ConnectionThreads::start(cfg.threads, cfg.shutdown_timeout)
            .map_err(|e| format!("starting the connection threads: {e}"))?;
        Some(Arc::new(threads))
    };
    let mut conf = ServerConf {
        threads: if threads.is_some() { 1 } else { cfg.threads },
        work_stealing: cfg.work_stealing,
        grace_period_seconds: Some(cfg.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(cfg.shutdown_timeout.as_secs()),
        ..ServerConf::default()
    };
    let (address, opt) = match listen {
        Listen::Configured => (cfg.listen.clone(), None),
        Listen::Bound(listener) => {
            let (address, handover) = hand_over(listener)?;
            conf.upgrade_sock = handover;
            let opt = Opt {
                upgrade: true,
                ..Opt::default()
            };
            (address, Some(opt))
        }
    };
    crate::withheld::spawn(Arc::clone(&edge));
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    // With a bound listener, this takes it over (see `hand_over`).
    server.bootstrap();
    let app = EdgeApp::new(Arc::clone(&edge), threads.clone());
    let mut service = Service::new("flexphoto-edge".to_owned(), app);
    // A write buffer that holds a typical image response lets the header and body leave in
    // one write (Pingora's default of 1460 bytes sends them separately).
    // (Connection threads make streams of their own, without Pingora's buffers.)
    let buffers = if threads.is_some() {
        L4BufferSettings::unbuffered()
    } else {
        L4BufferSettings::default().write(cfg.write_buffer_bytes)
    };
    service.add_listener(ListenerConfig::tcp(address.clone()).l4_buffer(buffers));
    server.add_service(service);
    log_cache_sizes(&cfg);
    tracing::info!(listen = %address, origin = %edge.store().describe(), workers = cfg.workers, "flexphoto-edge listening");
    let args = match stop {
        Stop::Signals => RunArgs::default(),
        Stop::When(rx) => RunArgs {
            shutdown_signal: Box::new(StopWhen(rx)),
        },
    };
    server.run(args);
    if let Some(threads) = threads {
        threads.stop();
    }
    tracing::info!("flexphoto-edge stopped");
    Ok(())
}

/// Hands a bound listener to the Pingora server about to start, through the one door Pingora
/// has for sockets it did not bind: the graceful-upgrade transfer, in which a starting server
/// receives listening sockets over a Unix socket (`upgrade_sock`) and serves each on the
/// address it is filed under. A thread sends `listener` there once the server listens for
/// it; returns the address to serve it on and the transfer socket's path.
fn hand_over(listener: std::net::TcpListener) -> Result<(String, String), String> {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicU64, Ordering};
    static HANDOVERS: AtomicU64 = AtomicU64::new(0);
    let address = listener
        .local_addr()
        .map_err(|e| format!("the listener has no address: {e}"))?
        .to_string();
    // Tokio, which serves it, needs it non-blocking.
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("making the listener non-blocking: {e}"))?;
    let path = std::env::temp_dir()
        .join(format!(
            "flexphoto-edge-{}-{}.sock",
            std::process::id(),
            HANDOVERS.fetch_add(1, Ordering::Relaxed)
        ))
        .display()
        .to_string();
    // A Unix socket's path has room for 107 bytes (Pingora fails hard past that).
    if path.len() > 100 {
        return Err(format!(
            "the temporary directory's path is too long for the listener handover socket ({path}); set TMPDIR to a shorter one"
        ));
    }
    let (to, at) = (address.clone(), path.clone());
    std::thread::Builder::new()
        .name("edge-handover".into())
        .spawn(move || {
            let mut fds = Fds::new();
            fds.add(to, listener.as_raw_fd());
            // Retries until the server listens; the server holds its own copy afterwards.
            if let Err(e) = fds.send_to_sock(at.as_str()) {
                tracing::error!(error = %e, path = %at, "handing the listener to the edge failed");
            }
            drop(listener);
        })
        .map_err(|e| format!("starting the listener handover: {e}"))?;
    Ok((address, path))
}
