//! A bounded pool of blocking threads for libvips work, with a bounded queue in front.
//!
//! The async runtime never runs libvips: a request submits a closure and awaits its answer.
//! When the queue is full, [`TransformPool::submit`] fails at once so the caller can answer
//! 503 instead of piling up memory. A job whose deadline has passed by the time a worker
//! takes it is dropped unrun.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus::IntGauge;
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce(bool) + Send>;

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

/// The worker pool. Cheap to clone.
#[derive(Clone)]
pub struct TransformPool {
    tx: SyncSender<Queued>,
    gauges: PoolGauges,
}

impl TransformPool {
    /// Starts `workers` threads behind a queue of `queue` waiting jobs.
    pub fn new(workers: usize, queue: usize, gauges: PoolGauges) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Queued>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers.max(1) {
            let rx = Arc::clone(&rx);
            let g = gauges.clone();
            std::thread::Builder::new()
                .name(format!("transform-{i}"))
                .spawn(move || worker(rx, g))?;
        }
        Ok(Self { tx, gauges })
    }

    /// Queues `f`; the returned future resolves with its value. Fails at once with
    /// [`PoolError::Full`] when the queue is full.
    pub fn submit<T, F>(
        &self,
        deadline: Option<Instant>,
        f: F,
    ) -> Result<impl std::future::Future<Output = Result<T, PoolError>>, PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (reply, rx) = oneshot::channel::<Result<T, PoolError>>();
        let span = tracing::Span::current();
        let job: Job = Box::new(move |expired| {
            if expired {
                let _ = reply.send(Err(PoolError::Expired));
                return;
            }
            let _entered = span.enter();
            let out = catch_unwind(AssertUnwindSafe(f)).map_err(|_| PoolError::Panicked);
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

fn worker(rx: Arc<Mutex<Receiver<Queued>>>, g: PoolGauges) {
    loop {
        let next = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return,
        };
        let Ok(q) = next else { return };
        g.queued.dec();
        let expired = q.deadline.is_some_and(|d| Instant::now() >= d);
        g.running.inc();
        (q.job)(expired);
        g.running.dec();
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
        let pool = TransformPool::new(1, 1, gauges()).unwrap();
        let (unblock_tx, unblock_rx) = channel::<()>();
        let (started_tx, started_rx) = channel::<()>();
        let first = pool
            .submit(None, move || {
                started_tx.send(()).unwrap();
                unblock_rx.recv().unwrap();
                1
            })
            .unwrap();
        started_rx.recv().unwrap();
        let second = pool.submit(None, || 2).unwrap();
        assert_eq!(pool.submit(None, || 3).err(), Some(PoolError::Full));
        unblock_tx.send(()).unwrap();
        assert_eq!(first.await, Ok(1));
        assert_eq!(second.await, Ok(2));
    }

    #[tokio::test]
    async fn expired_jobs_do_not_run_and_panics_are_contained() {
        let pool = TransformPool::new(1, 4, gauges()).unwrap();
        let past = Instant::now() - Duration::from_secs(1);
        assert_eq!(
            pool.submit(Some(past), || 1).unwrap().await,
            Err(PoolError::Expired)
        );
        let boom = pool.submit(None, || -> i32 { panic!("boom") }).unwrap();
        assert_eq!(boom.await, Err(PoolError::Panicked));
        assert_eq!(pool.submit(None, || 5).unwrap().await, Ok(5));
    }
}
