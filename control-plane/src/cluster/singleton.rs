//! Work that must run once per deployment, however many processes share the database: each
//! process competes for the role's lease, the holder does the work on its schedule and renews
//! the lease meanwhile (also while a long pass runs), and a survivor takes the role over when
//! the holder stops renewing. A clean shutdown hands the role over at once.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::Role;
use crate::state::AppState;

/// When a role's work runs.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Between passes; `None`: only once, when the role is taken.
    pub every: Option<Duration>,
    /// Run a pass as soon as the role is taken (else after `every`).
    pub at_takeover: bool,
}

/// Competes for `role` until `stop`, running `pass` on `schedule` while holding it.
pub async fn run<F, Fut>(
    state: Arc<AppState>,
    role: Role,
    schedule: Schedule,
    mut stop: watch::Receiver<bool>,
    pass: F,
) where
    F: Fn(Arc<AppState>) -> Fut,
    Fut: Future<Output = ()>,
{
    let ttl = state.cfg.cluster_lease;
    let tick = ttl / 3;
    let name = role.as_str();
    let holder = state.instance.id.clone();
    let info = state.instance.to_json();
    let gauge = state.metrics.role_held.with_label_values(&[name]);
    gauge.set(0);
    let mut held = false;
    // When the next pass is due; `None`: no pass until the role is taken again.
    let mut due: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        match state.db.try_lease(name, &holder, &info, ttl).await {
            Ok(true) if !held => {
                held = true;
                gauge.set(1);
                state
                    .metrics
                    .role_takeovers
                    .with_label_values(&[name])
                    .inc();
                tracing::info!(role = name, "this process took the role");
                due = if schedule.at_takeover {
                    Some(Instant::now())
                } else {
                    schedule.every.map(|e| Instant::now() + e)
                };
            }
            Ok(true) => {}
            Ok(false) => {
                if held {
                    tracing::warn!(role = name, "another process took the role");
                }
                held = false;
                gauge.set(0);
            }
            // The database is away: keep the current belief; the lease decides when it is back.
            Err(e) => tracing::warn!(role = name, error = %e, "renewing the role's lease failed"),
        }
        if held && due.is_some_and(|d| Instant::now() >= d) {
            let started = Instant::now();
            let lost = tokio::select! {
                _ = pass(Arc::clone(&state)) => false,
                _ = keep_renewed(&state, name, &holder, &info, ttl) => true,
                _ = stop.wait_for(|v| *v) => break,
            };
            if lost {
                tracing::warn!(
                    role = name,
                    "the role was lost during a pass; the pass stopped"
                );
                held = false;
                gauge.set(0);
            }
            tracing::debug!(role = name, took = ?started.elapsed(), "pass finished");
            due = schedule.every.map(|e| started + e);
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.wait_for(|v| *v) => break,
        }
    }
    gauge.set(0);
    if held {
        if let Err(e) = state.db.release_lease(name, &holder).await {
            tracing::warn!(role = name, error = %e, "releasing the role failed");
        }
    }
}

/// Renews the lease every third of its length; returns only when another process has it.
async fn keep_renewed(state: &AppState, name: &str, holder: &str, info: &str, ttl: Duration) {
    loop {
        tokio::time::sleep(ttl / 3).await;
        match state.db.try_lease(name, holder, info, ttl).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => tracing::warn!(role = name, error = %e, "renewing the role's lease failed"),
        }
    }
}
