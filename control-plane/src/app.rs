//! Running the service: the API server, the workers and the sweeper, with one shutdown signal.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

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
    let workers = tokio::spawn(crate::jobs::run_workers(Arc::clone(&state), rx.clone()));
    let sweeper = tokio::spawn(crate::routes::uploads::run_sweeper(
        Arc::clone(&state),
        rx.clone(),
    ));
    let reembedder = tokio::spawn(crate::reconcile::run_reembedder(
        Arc::clone(&state),
        rx.clone(),
        std::time::Duration::from_secs(30),
    ));
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, database = state.db.backend(), store = ?state.blobs, workers = state.cfg.workers, "flexphoto control plane listening");
    let mut server_rx = rx.clone();
    let app = crate::routes::router(Arc::clone(&state));
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_rx.wait_for(|v| *v).await;
            })
            .await
    });
    stop.await;
    tracing::info!("shutting down: no new requests or jobs; waiting for running jobs");
    let _ = tx.send(true);
    let served = server.await;
    let _ = workers.await;
    let _ = sweeper.await;
    let _ = reembedder.await;
    state.db.close().await;
    match served {
        Ok(r) => r.map_err(RunError::Io),
        Err(e) => Err(RunError::Io(std::io::Error::other(e.to_string()))),
    }
}
