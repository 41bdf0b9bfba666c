//! Running the service: the API server, the workers and the sweeper, with one shutdown signal.
//!
//! The HTTP server is hyper's HTTP/1.1 connection loop with a timer, so that a client that
//! sends its headers slowly, or keeps a connection idle, is cut off after
//! `server.header_timeout_secs` (slowloris); requests other than uploads end after
//! `server.request_timeout_secs`, and uploads after `server.upload_idle_timeout_secs`
//! without a byte.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::failed_auth::PeerAddr;
use crate::state::AppState;

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Binding or serving failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Serves the API on `listener` and runs the workers and sweeper until `stop` resolves; then
/// stops accepting requests, lets running jobs finish (or releases their leases) and returns.
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let (tx, rx) = watch::channel(false);
    let mut background = JoinSet::new();
    if let Some(owner) = &state.index_owner {
        background.spawn(Arc::clone(owner).keep(Arc::clone(&state), rx.clone()));
    }
    let workers = tokio::spawn(crate::jobs::run_workers(Arc::clone(&state), rx.clone()));
    spawn_singletons(&state, &rx, &mut background);
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, database = state.db.backend(), store = ?state.blobs, workers = state.cfg.workers, "flexphoto control plane listening");
    let app = crate::routes::router(Arc::clone(&state));
    let server = tokio::spawn(accept_loop(
        listener,
        app,
        state.cfg.header_timeout,
        rx.clone(),
    ));
    stop.await;
    tracing::info!("shutting down: no new requests or jobs; waiting for running jobs");
    let _ = tx.send(true);
    let served = server.await;
    let _ = workers.await;
    while background.join_next().await.is_some() {}
    if let Some(search) = &state.search {
        // Nothing writes any more: deferred index writes go to disk now.
        if let Err(e) = search.index.sync().await {
            tracing::error!(error = %e, "flushing the vector index at shutdown failed");
        }
    }
    state.db.close().await;
    match served {
        Ok(r) => r.map_err(RunError::Io),
        Err(e) => Err(RunError::Io(std::io::Error::other(e.to_string()))),
    }
}

/// Starts the deployment-wide schedulers; each runs in whichever process holds its role.
fn spawn_singletons(state: &Arc<AppState>, stop: &watch::Receiver<bool>, set: &mut JoinSet<()>) {
    use crate::cluster::singleton::{run, Schedule};
    use crate::cluster::Role;
    if let Some(every) = state.cfg.sweep_interval {
        let schedule = Schedule {
            every: Some(every),
            at_takeover: false,
        };
        set.spawn(run(
            Arc::clone(state),
            Role::Sweeper,
            schedule,
            stop.clone(),
            crate::uploads::sweeper::sweep_pass,
        ));
    }
    // Catalog governance: rights windows and re-validation after schema changes.
    if let Some(every) = state.cfg.catalog.rights_check {
        let schedule = Schedule {
            every: Some(every),
            at_takeover: true,
        };
        set.spawn(run(
            Arc::clone(state),
            Role::Rights,
            schedule,
            stop.clone(),
            crate::catalog::scheduler::rights_pass,
        ));
    }
    if let Some(every) = state.cfg.catalog.revalidate_every {
        let schedule = Schedule {
            every: Some(every),
            at_takeover: true,
        };
        set.spawn(run(
            Arc::clone(state),
            Role::Revalidate,
            schedule,
            stop.clone(),
            crate::catalog::scheduler::revalidate_pass,
        ));
    }
    let tiering = Schedule {
        every: Some(state.cfg.tiering.interval),
        at_takeover: true,
    };
    set.spawn(run(
        Arc::clone(state),
        Role::Tiering,
        tiering,
        stop.clone(),
        crate::lifecycle::scheduler::tiering_pass,
    ));
    // Only processes with an index compete for the roles that need it.
    if state.search.is_some() {
        let reconcile = Schedule {
            every: state.cfg.search.reconcile_interval,
            at_takeover: true,
        };
        set.spawn(run(
            Arc::clone(state),
            Role::Reconcile,
            reconcile,
            stop.clone(),
            crate::search::reconcile::reconcile_pass,
        ));
        let reembed = Schedule {
            every: Some(Duration::from_secs(30)),
            at_takeover: true,
        };
        set.spawn(run(
            Arc::clone(state),
            Role::Reembed,
            reembed,
            stop.clone(),
            crate::search::reconcile::reembed_pass,
        ));
    }
}

/// Accepts connections until `shutdown` turns true, then lets each finish its request and
/// closes it (waiting at most 30 s).
async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    header_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = async { let _ = shutdown.wait_for(|v| *v).await; } => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // Every request carries its TCP peer, for the failed-authentication brake.
        let peer = PeerAddr(peer.ip());
        let router = app.clone();
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(peer);
            tower_service::Service::call(&mut router.clone(), req)
        });
        let mut stop = shutdown.clone();
        conns.spawn(async move {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                _ = async { let _ = stop.wait_for(|v| *v).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
        // Reap finished connections as we go.
        while conns.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}
