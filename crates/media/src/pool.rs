//! A bounded pool of blocking threads for libvips work, with a bounded queue in front and a
//! watchdog that enforces deadlines.
//!
//! The async runtime never runs libvips: a request submits a closure and awaits its answer.
//! When the queue is full, [`ImagePool::submit`] fails at once so the caller can answer 503
//! instead of piling up memory. A job whose deadline has passed by the time a worker takes it
//! is dropped unrun; a running job whose deadline passes is stopped by the watchdog, which
//! kills its libvips evaluation through the job's [`Budget`], so the worker is free again
//! within a tile's work instead of finishing an abandoned image.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use prometheus::IntGauge;
use tokio::sync::oneshot;

use crate::transform::Budget;
use crate::vips::Cancel;

type Job = Box<dyn FnOnce(bool, &Budget) + Send>;

struct Queued {
    job: Job,
    deadline: Option<Instant>,
}

/// Why a submitted job did not produce a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The queue is full.
    #[error("transform queue is full")]
    Full,
    /// The deadline passed while the job waited.
    #[error("deadline passed before a worker was free")]
    Expired,
    /// The job panicked; the worker survived.
    #[error("transform panicked")]
    Panicked,
}

/// Gauges the pool keeps current.
#[derive(Clone)]
pub struct PoolGauges {
    /// Jobs waiting.
    pub queued: IntGauge,
    /// Jobs running.
    pub running: IntGauge,
}

/// Running jobs with deadlines, watched by one thread per pool.
#[derive(Default)]
struct Watch {
    running: Mutex<BTreeMap<(Instant, u64), Cancel>>,
    changed: Condvar,
}

impl Watch {
    fn add(&self, key: (Instant, u64), cancel: Cancel) {
        if let Ok(mut r) = self.running.lock() {
            r.insert(key, cancel);
            self.changed.notify_one();
        }
    }

    fn remove(&self, key: &(Instant, u64)) {
        if let Ok(mut r) = self.running.lock() {
            r.remove(key);
        }
    }

    /// Kills each running job when its deadline passes.
    fn run(&self) {
        let Ok(mut running) = self.running.lock() else {
            return;
        };
        loop {
            let now = Instant::now();
            while let Some(entry) = running.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let cancel = entry.remove();
                cancel.kill();
                tracing::warn!("image work passed its deadline and was stopped");
            }
            let next = running.keys().next().map(|k| k.0);
            running = match next {
                Some(at) => match self
                    .changed
                    .wait_timeout(running, at.saturating_duration_since(now))
                {
                    Ok((g, _)) => g,
                    Err(_) => return,
                },
                None => match self.changed.wait(running) {
                    Ok(g) => g,
                    Err(_) => return,
                },
            };
        }
    }
}

/// The worker pool. Cheap to clone.
#[derive(Clone)]
pub struct ImagePool {
    tx: SyncSender<Queued>,
    gauges: PoolGauges,
}

impl ImagePool {
    /// Starts `workers` threads behind a queue of `queue` waiting jobs, and their watchdog.
    pub fn new(workers: usize, queue: usize, gauges: PoolGauges) -> std::io::Result<Self> {
        Self::named("image", workers, queue, gauges)
    }

    /// [`ImagePool::new`] with threads named `{name}-{n}`.
    pub fn named(
        name: &str,
        workers: usize,
        queue: usize,
        gauges: PoolGauges,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Queued>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let watch = Arc::new(Watch::default());
        {
            let watch = Arc::clone(&watch);
            std::thread::Builder::new()
                .name(format!("{name}-watchdog"))
                .spawn(move || watch.run())?;
        }
        for i in 0..workers.max(1) {
            let rx = Arc::clone(&rx);
            let g = gauges.clone();
            let watch = Arc::clone(&watch);
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || worker(rx, g, watch))?;
        }
        Ok(Self { tx, gauges })
    }

    /// Queues `f`; the returned future resolves with its value. `f` gets the [`Budget`] its
    /// work must run under: the watchdog cancels it when `deadline` passes. Fails at once with
    /// [`PoolError::Full`] when the queue is full.
    pub fn submit<T, F>(
        &self,
        deadline: Option<Instant>,
        f: F,
    ) -> Result<impl std::future::Future<Output = Result<T, PoolError>>, PoolError>
    where
        T: Send + 'static,
        F: FnOnce(&Budget) -> T + Send + 'static,
    {
        let (reply, rx) = oneshot::channel::<Result<T, PoolError>>();
        let span = tracing::Span::current();
        let job: Job = Box::new(move |expired, budget| {
            if expired {
                let _ = reply.send(Err(PoolError::Expired));
                return;
            }
            let _entered = span.enter();
            let out = catch_unwind(AssertUnwindSafe(|| f(budget))).map_err(|_| PoolError::Panicked);
            let _ = reply.send(out);
        });
        self.gauges.queued.inc();
        match self.tx.try_send(Queued { job, deadline }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.gauges.queued.dec();
                return Err(PoolError::Full);
            }
        }
        Ok(async move { rx.await.unwrap_or(Err(PoolError::Panicked)) })
    }
}

fn worker(rx: Arc<Mutex<Receiver<Queued>>>, g: PoolGauges, watch: Arc<Watch>) {
    let mut seq: u64 = 0;
    let id = std::thread::current().id();
    let salt = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        h.finish() << 32
    };
    loop {
        let next = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return,
        };
        let Ok(q) = next else { return };
        g.queued.dec();
        let expired = q.deadline.is_some_and(|d| Instant::now() >= d);
        let cancel = Cancel::new();
        let budget = Budget::new(q.deadline, cancel.clone());
        seq += 1;
        let key = q.deadline.map(|d| (d, salt | seq));
        if let Some(k) = key {
            watch.add(k, cancel);
        }
        g.running.inc();
        (q.job)(expired, &budget);
        g.running.dec();
        if let Some(k) = key {
            watch.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    fn gauges() -> PoolGauges {
        PoolGauges {
            queued: IntGauge::new("q", "q").unwrap(),
            running: IntGauge::new("r", "r").unwrap(),
        }
    }

    #[tokio::test]
    async fn runs_jobs_and_rejects_when_full() {
        let pool = ImagePool::new(1, 1, gauges()).unwrap();
        let (unblock_tx, unblock_rx) = channel::<()>();
        let (started_tx, started_rx) = channel::<()>();
        let first = pool
            .submit(None, move |_| {
                started_tx.send(()).unwrap();
                unblock_rx.recv().unwrap();
                1
            })
            .unwrap();
        started_rx.recv().unwrap();
        let second = pool.submit(None, |_| 2).unwrap();
        assert_eq!(pool.submit(None, |_| 3).err(), Some(PoolError::Full));
        unblock_tx.send(()).unwrap();
        assert_eq!(first.await, Ok(1));
        assert_eq!(second.await, Ok(2));
    }

    #[tokio::test]
    async fn expired_jobs_do_not_run_and_panics_are_contained() {
        let pool = ImagePool::new(1, 4, gauges()).unwrap();
        let past = Instant::now() - Duration::from_secs(1);
        assert_eq!(
            pool.submit(Some(past), |_| 1).unwrap().await,
            Err(PoolError::Expired)
        );
        let boom = pool.submit(None, |_| -> i32 { panic!("boom") }).unwrap();
        assert_eq!(boom.await, Err(PoolError::Panicked));
        assert_eq!(pool.submit(None, |_| 5).unwrap().await, Ok(5));
    }

    /// A job still running at its deadline has its budget cancelled by the watchdog.
    #[tokio::test]
    async fn the_watchdog_cancels_running_jobs_at_their_deadline() {
        let pool = ImagePool::new(1, 4, gauges()).unwrap();
        let deadline = Instant::now() + Duration::from_millis(100);
        let started = Instant::now();
        let waited = pool
            .submit(Some(deadline), |budget| {
                // Wait for the watchdog's kill (not our own look at the clock), at most 5 s.
                let give_up = Instant::now() + Duration::from_secs(5);
                while !budget.cancel().is_killed() && Instant::now() < give_up {
                    std::thread::sleep(Duration::from_millis(5));
                }
                budget.cancel().is_killed()
            })
            .unwrap()
            .await;
        assert_eq!(waited, Ok(true));
        assert!(started.elapsed() < Duration::from_secs(5));
        // The worker is free again.
        assert_eq!(pool.submit(None, |_| 7).unwrap().await, Ok(7));
    }
}
