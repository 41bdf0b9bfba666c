//! Starting and stopping the edge server.

use std::sync::Arc;

use pingora_core::listeners::ListenerConfig;
use pingora_core::protocols::l4::stream::L4BufferSettings;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora_core::services::listening::Service;

use crate::app::EdgeApp;
use crate::config::EdgeConfig;
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

/// Builds the edge from `cfg` and serves until `stop`. Blocks the calling thread; Pingora
/// makes its own runtimes.
pub fn run(cfg: EdgeConfig, stop: Stop) -> Result<(), String> {
    let metrics = Arc::new(Metrics::new().map_err(|e| e.to_string())?);
    let edge = Arc::new(Edge::new(cfg, metrics)?);
    run_edge(edge, stop)
}

/// The in-memory cache sizes in force and what they add up to, in MiB.
pub fn cache_sizes(cfg: &EdgeConfig) -> String {
    let mib = |b: u64| b >> 20;
    format!(
        "results {} MiB + sources {} MiB + working copies {} MiB = {} MiB ({:.0}% of {} MiB \
         machine memory); ready responses up to {} MiB more",
        mib(cfg.memory_bytes),
        mib(cfg.source_bytes),
        mib(cfg.working_bytes),
        mib(cfg.cache_total_bytes()),
        cfg.cache_total_bytes() as f64 * 100.0 / cfg.machine_memory.max(1) as f64,
        mib(cfg.machine_memory),
        mib(cfg.ready_bytes),
    )
}

fn log_cache_sizes(cfg: &EdgeConfig) {
    tracing::info!(sizes = %cache_sizes(cfg), "cache sizes");
}

/// Serves an already built edge until `stop`.
pub fn run_edge(edge: Arc<Edge>, stop: Stop) -> Result<(), String> {
    let cfg = edge.config().clone();
    let conf = ServerConf {
        threads: cfg.threads,
        work_stealing: cfg.work_stealing,
        grace_period_seconds: Some(cfg.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(cfg.shutdown_timeout.as_secs()),
        ..ServerConf::default()
    };
    crate::withheld::spawn(Arc::clone(&edge));
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let app = EdgeApp::new(Arc::clone(&edge));
    let mut service = Service::new("flexphoto-edge".to_owned(), app);
    // A write buffer that holds a typical image response lets the header and body leave in
    // one write (Pingora's default of 1460 bytes sends them separately).
    let buffers = L4BufferSettings::default().write(cfg.write_buffer_bytes);
    service.add_listener(ListenerConfig::tcp(cfg.listen.clone()).l4_buffer(buffers));
    server.add_service(service);
    log_cache_sizes(&cfg);
    tracing::info!(listen = %cfg.listen, origin = %edge.store().describe(), workers = cfg.workers, "flexphoto-edge listening");
    let args = match stop {
        Stop::Signals => RunArgs::default(),
        Stop::When(rx) => RunArgs {
            shutdown_signal: Box::new(StopWhen(rx)),
        },
    };
    server.run(args);
    tracing::info!("flexphoto-edge stopped");
    Ok(())
}
