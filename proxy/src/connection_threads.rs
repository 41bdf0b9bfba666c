//! Connection threads: one single-threaded runtime per thread, and every connection served
//! from start to end on one of them, the least busy when it arrived.
//!
//! A socket's readiness is reported by the reactor of the runtime it was registered with.
//! Pingora accepts on one runtime and runs the connection's task on another (a random one
//! without work stealing, any one with it), so each request's wake-up crossed threads: the
//! accepting runtime's reactor saw the bytes and woke the serving thread through an eventfd.
//! Here the accepted socket is registered again, with the reactor of the thread that serves
//! it, so a request is woken, read, answered and written on one core, as in an event-loop
//! server with one loop per core.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// One thread and what is known of its load.
struct Thread {
    handle: Handle,
    /// Connections it serves now.
    open: Arc<AtomicUsize>,
}

/// The threads that serve connections.
pub struct ConnectionThreads {
    threads: Vec<Thread>,
    /// Where the search for the least busy thread starts, so ties spread round-robin.
    next: AtomicUsize,
    /// What stops each thread, and the threads to join: taken once by [`Self::stop`].
    running: Mutex<Vec<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

/// Decrements a thread's connection count when its connection ends, however it ends.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnectionThreads {
    /// Starts `count` threads (at least one), named `edge-conn-N`.
    pub fn start(count: usize, shutdown_timeout: Duration) -> std::io::Result<Self> {
        let mut threads = Vec::new();
        let mut running = Vec::new();
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name(format!("edge-conn-{i}-blocking"))
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let join = std::thread::Builder::new()
                .name(format!("edge-conn-{i}"))
                .spawn(move || {
                    // A current-thread runtime runs its tasks while something blocks on it.
                    let _ = runtime.block_on(stopped);
                    runtime.shutdown_timeout(shutdown_timeout);
                })?;
            threads.push(Thread {
                handle,
                open: Arc::new(AtomicUsize::new(0)),
            });
            running.push((stop, join));
        }
        Ok(Self {
            threads,
            next: AtomicUsize::new(0),
            running: Mutex::new(running),
        })
    }

    /// Connections each thread serves now, in thread order.
    pub fn open(&self) -> Vec<usize> {
        self.threads
            .iter()
            .map(|t| t.open.load(Ordering::Relaxed))
            .collect()
    }

    /// The least busy thread, ties broken round-robin.
    fn pick(&self) -> &Thread {
        let n = self.threads.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        (0..n)
            .map(|i| &self.threads[(start + i) % n])
            .min_by_key(|t| t.open.load(Ordering::Relaxed))
            .unwrap_or(&self.threads[start])
    }

    /// Serves `socket` on the least busy thread: `serve` gets it registered with that
    /// thread's reactor. The socket must be non-blocking.
    pub fn serve<F, Fut>(&self, socket: std::net::TcpStream, serve: F)
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let thread = self.pick();
        thread.open.fetch_add(1, Ordering::Relaxed);
        let open = Open(Arc::clone(&thread.open));
        thread.handle.spawn(async move {
            let _open = open;
            match tokio::net::TcpStream::from_std(socket) {
                Ok(socket) => serve(socket).await,
                Err(e) => tracing::warn!(error = %e, "registering a connection failed"),
            }
        });
    }

    /// Stops every thread: the connections still open are dropped (after the server's
    /// grace period, as its own runtimes drop theirs), and blocking work gets the shutdown
    /// timeout to finish. Later calls do nothing.
    pub fn stop(&self) {
        let running = match self.running.lock() {
            Ok(mut r) => std::mem::take(&mut *r),
            Err(_) => return,
        };
        let joins: Vec<_> = running
            .into_iter()
            .map(|(stop, join)| {
                let _ = stop.send(());
                join
            })
            .collect();
        for join in joins {
            if join.join().is_err() {
                tracing::warn!("a connection thread panicked while stopping");
            }
        }
    }
}

impl Drop for ConnectionThreads {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Connections spread over the threads by load, each served on a thread of its own
    /// runtime, and the counts fall back when they close.
    #[test]
    fn connections_go_to_the_least_busy_thread_and_stay_there() {
        let threads = ConnectionThreads::start(2, Duration::from_secs(1)).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut clients = Vec::new();
        for _ in 0..4 {
            let client = std::net::TcpStream::connect(addr).unwrap();
            let (socket, _) = listener.accept().unwrap();
            socket.set_nonblocking(true).unwrap();
            let tx = tx.clone();
            threads.serve(socket, move |mut socket| async move {
                let name = std::thread::current().name().unwrap_or("").to_owned();
                let mut byte = [0u8; 1];
                // Echo one byte, then report which thread served it.
                if socket.read_exact(&mut byte).await.is_ok() {
                    let _ = socket.write_all(&byte).await;
                }
                let _ = tx.send(name);
            });
            clients.push(client);
        }
        assert_eq!(threads.open(), vec![2, 2]);
        let mut names = Vec::new();
        for mut c in clients {
            use std::io::{Read, Write};
            c.write_all(b"x").unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"x");
            names.push(rx.recv_timeout(Duration::from_secs(5)).unwrap());
        }
        names.sort();
        assert_eq!(
            names,
            ["edge-conn-0", "edge-conn-0", "edge-conn-1", "edge-conn-1"]
        );
        // Every connection task has ended (each sent its name last).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while threads.open() != vec![0, 0] && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(threads.open(), vec![0, 0]);
        threads.stop();
    }
}
