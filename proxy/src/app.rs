//! The connection handler: repeated cache hits are answered from [`ReadyResponses`] straight
//! off the socket; every other request, and every connection it cannot read safely, goes to
//! a Pingora HTTP/1.1 session with [`EdgeHttp`] behind it.
//!
//! The fast path reads one request head, and answers it only when it is a plain HTTP/1.1
//! `GET` or `HEAD` of an image URL without a body or connection options other than
//! `keep-alive` and `close`, whose exact target and `Accept` have a ready answer. Otherwise
//! the bytes it read are put back in front of the stream and Pingora's HTTP/1.1 session reads
//! that one request as if nothing had happened; a kept-alive connection then comes back here.
//! (Pingora refuses pipelining, so requests pipelined behind a slow one end the connection.)
//!
//! Every plain TCP connection's request heads are read here, fast path or not, so slow
//! clients are bounded in one place: a head must arrive whole within
//! `server.header_timeout_secs` of its first byte and within [`MAX_HEAD`] bytes, and at most
//! `server.max_connections` connections are open at once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::http::date::get_cached_date;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::socket::SocketAddr;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest, Stream, IO};
use pingora_core::server::ShutdownWatch;
use prometheus::IntCounter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::connection_threads::ConnectionThreads;
use crate::edge::{etag_matches, Edge};
use crate::ready::ReadyResponses;
use crate::service::EdgeHttp;

/// Longest request head read; a longer one is answered 431 and the connection closed.
const MAX_HEAD: usize = 64 * 1024;
/// How long a kept-alive connection may sit idle (what the HTTP server sets too).
const IDLE: Duration = Duration::from_secs(60);
/// How an HTTP/2 connection with prior knowledge begins.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";
/// The answer when every connection slot is taken.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
    Content-Length: 0\r\nConnection: close\r\n\r\n";
/// The answer to a request head longer than [`MAX_HEAD`].
const HEAD_TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\
    Content-Length: 0\r\nConnection: close\r\n\r\n";

/// Counters the fast path bumps, resolved once.
struct Counters {
    ok: IntCounter,
    not_modified: IntCounter,
    memory_hits: IntCounter,
    ready_hits: IntCounter,
    bytes_out: IntCounter,
    slow_head: IntCounter,
    head_too_large: IntCounter,
    too_many: IntCounter,
}

/// The application Pingora runs for each connection.
pub struct EdgeApp {
    edge: Arc<Edge>,
    http: Arc<EdgeHttp>,
    ready: Option<ReadyResponses>,
    counters: Counters,
    /// One permit per open connection.
    connections: Arc<Semaphore>,
    header_timeout: Duration,
    /// Where connections are served when each stays on one thread (none: on the task
    /// Pingora gives them).
    threads: Option<Arc<ConnectionThreads>>,
}

impl EdgeApp {
    /// The fast path over the edge's ready responses (none: every request goes to
    /// [`EdgeHttp`]); connections are moved to `threads` when given.
    pub fn new(edge: Arc<Edge>, threads: Option<Arc<ConnectionThreads>>) -> Self {
        let metrics = edge.metrics();
        Self {
            http: Arc::new(EdgeHttp::new(Arc::clone(&edge))),
            ready: edge.ready().cloned(),
            counters: Counters {
                ok: metrics.requests.with_label_values(&["200"]),
                not_modified: metrics.requests.with_label_values(&["304"]),
                memory_hits: metrics.cache_lookups.with_label_values(&["memory", "hit"]),
                ready_hits: metrics.ready_hits.clone(),
                bytes_out: metrics.bytes_out.clone(),
                slow_head: metrics.connections_closed.with_label_values(&["slow_head"]),
                head_too_large: metrics
                    .connections_closed
                    .with_label_values(&["head_too_large"]),
                too_many: metrics.connections_closed.with_label_values(&["too_many"]),
            },
            connections: Arc::new(Semaphore::new(edge.config().max_connections)),
            header_timeout: edge.config().header_timeout,
            threads,
            edge,
        }
    }
}

/// What the fast path needs from a request head.
#[derive(Debug, PartialEq, Eq)]
struct FastRequest<'a> {
    /// Length of the head in bytes.
    len: usize,
    head: bool,
    /// The client asked to close the connection after this answer.
    close: bool,
    target: &'a [u8],
    accept: Option<&'a [u8]>,
    if_none_match: Option<&'a [u8]>,
}

/// How far a buffer holds a request the fast path may answer.
#[derive(Debug, PartialEq, Eq)]
enum Head<'a> {
    /// A complete head the fast path may answer.
    Fast(FastRequest<'a>),
    /// Not all of the head has arrived.
    Partial,
    /// Anything else: Pingora's server reads it.
    Other,
}

fn parse(buf: &[u8]) -> Head<'_> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(_) => return Head::Other,
    };
    let head = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Head::Other,
    };
    let target = req.path.unwrap_or_default();
    if req.version != Some(1)
        || !(target.starts_with(flexphoto_url::IMG_PREFIX)
            || target.starts_with(flexphoto_url::CF_PREFIX))
    {
        return Head::Other;
    }
    let (mut accept, mut if_none_match, mut close) = (None, None, false);
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("accept") {
            if accept.replace(h.value).is_some() {
                return Head::Other;
            }
        } else if name.eq_ignore_ascii_case("if-none-match") {
            if if_none_match.replace(h.value).is_some() {
                return Head::Other;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            if h.value.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if !h.value.eq_ignore_ascii_case(b"keep-alive") {
                return Head::Other;
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            if h.value != b"0" {
                return Head::Other;
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("upgrade")
        {
            return Head::Other;
        }
    }
    Head::Fast(FastRequest {
        len,
        head,
        close,
        target: target.as_bytes(),
        accept,
        if_none_match,
    })
}

impl EdgeApp {
    /// One request through Pingora's HTTP/1.1 server, with `read` put back in front of the
    /// stream; the connection comes back here when it is kept alive.
    async fn hand_over(
        self: &Arc<Self>,
        mut stream: Box<L4Stream>,
        read: &[u8],
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        stream.rewind(read);
        let mut session = ServerSession::new_http1(stream);
        // What Pingora's own loop sets: no reuse once shutting down, else 60 s.
        session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        // Its head is already here; a body gets header_timeout per read.
        session.set_read_timeout(Some(self.header_timeout));
        let reused = self.http.process_new_http(session, shutdown).await?;
        Some(reused.consume().0)
    }
}

/// Whether `buf` holds a whole request head (or at least its end: the blank line).
fn head_complete(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n")
}

/// Sends `answer` and closes the connection gracefully: the write side first, then what the
/// client still sends is read and dropped for a moment, so the answer is not lost to a reset
/// (closing a socket with unread input makes the kernel send RST).
async fn refuse(stream: &mut L4Stream, answer: &[u8]) {
    if stream.write_all(answer).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 8192];
    let linger = tokio::time::sleep(Duration::from_secs(1));
    tokio::pin!(linger);
    let mut drained = 0usize;
    while drained < 1024 * 1024 {
        tokio::select! {
            _ = &mut linger => return,
            r = stream.read(&mut sink) => match r {
                Ok(n) if n > 0 => drained += n,
                _ => return,
            },
        }
    }
}

/// Writes `head` then `body`: one `writev` straight to the socket, which saves copying the
/// body into the stream's write buffer (empty between requests), and whatever the socket did
/// not take through the stream.
async fn send(stream: &mut L4Stream, head: &[u8], body: &[u8]) -> std::io::Result<()> {
    use std::io::{ErrorKind, IoSlice, Write};
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: borrows the stream's open socket for this one call; ManuallyDrop never closes
    // it. The socket is non-blocking, so the call cannot stall the runtime.
    let mut socket = std::mem::ManuallyDrop::new(unsafe {
        std::net::TcpStream::from_raw_fd(stream.as_raw_fd())
    });
    let sent = match socket.write_vectored(&[IoSlice::new(head), IoSlice::new(body)]) {
        Ok(n) => n,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => 0,
        Err(e) => return Err(e),
    };
    if sent == head.len() + body.len() {
        return Ok(());
    }
    if sent < head.len() {
        stream.write_all(&head[sent..]).await?;
        stream.write_all(body).await?;
    } else {
        stream.write_all(&body[sent - head.len()..]).await?;
    }
    stream.flush().await
}

#[async_trait]
impl ServerApp for EdgeApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Held for as long as this call serves the connection; a kept-alive connection that
        // Pingora hands back comes in again and takes one again.
        let Ok(open) = Arc::clone(&self.connections).try_acquire_owned() else {
            self.counters.too_many.inc();
            let mut stream = stream;
            let _ = stream.write_all(TOO_MANY).await;
            return None;
        };
        // Without connection threads, or not a plain TCP socket: served here.
        let detached = match &self.threads {
            Some(threads) => detach(stream).map(|socket| (threads, socket)),
            None => Err(stream),
        };
        let (threads, (socket, peer)) = match detached {
            Ok(moved) => moved,
            Err(stream) => {
                let next = self.connection(stream, shutdown).await;
                drop(open);
                return next;
            }
        };
        let (app, shutdown) = (Arc::clone(self), shutdown.clone());
        threads.serve(socket, move |socket| async move {
            let _open = open;
            let mut next = Some(attach(socket, peer));
            while let Some(stream) = next {
                next = app.connection(stream, &shutdown).await;
            }
        });
        None
    }
}

/// The socket under a plain TCP `stream`, as a new descriptor of its own, with its peer's
/// address, and `stream` closed (it was registered with the accepting runtime's reactor);
/// any other stream back. Nothing has been read from a stream Pingora has just accepted, so
/// nothing is lost.
fn detach(stream: Stream) -> Result<(std::net::TcpStream, Option<SocketAddr>), Stream> {
    use std::os::fd::{AsRawFd, BorrowedFd};
    let inner: &dyn IO = &*stream;
    let Some(l4) = inner.as_any().downcast_ref::<L4Stream>() else {
        return Err(stream);
    };
    let peer = l4.get_socket_digest().and_then(|d| d.peer_addr().cloned());
    // SAFETY: the descriptor belongs to `stream`, alive for this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(l4.as_raw_fd()) };
    match fd.try_clone_to_owned() {
        Ok(own) => {
            drop(stream);
            Ok((std::net::TcpStream::from(own), peer))
        }
        Err(e) => {
            tracing::warn!(error = %e, "duplicating a connection's socket failed; served where accepted");
            Err(stream)
        }
    }
}

/// A stream over `socket` that knows its peer's address, as Pingora's listener makes them.
fn attach(socket: tokio::net::TcpStream, peer: Option<SocketAddr>) -> Stream {
    use std::os::fd::AsRawFd;
    let mut stream = L4Stream::from(socket);
    let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
    let _ = digest.peer_addr.set(peer);
    stream.set_socket_digest(digest);
    Box::new(stream)
}

impl EdgeApp {
    /// Serves one connection until it ends or Pingora's HTTP server hands it back kept alive
    /// (returned then, to be served again).
    async fn connection(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let ready = self.ready.as_ref();
        // Only a plain TCP stream can take back what was read from it.
        let inner: &dyn IO = &*stream;
        if !inner.as_any().is::<L4Stream>() {
            return ServerApp::process_new(&self.http, stream, shutdown).await;
        }
        let mut stream = stream.into_any().downcast::<L4Stream>().ok()?;
        let mut buf = BytesMut::with_capacity(1024);
        let mut key = Vec::with_capacity(256);
        let mut out = Vec::with_capacity(1024);
        loop {
            if *shutdown.borrow() {
                return self.hand_over(stream, &buf, shutdown).await;
            }
            // A kept-alive connection may idle; once a request has begun, its head has
            // header_timeout to arrive whole.
            let mut deadline = (!buf.is_empty()).then(|| Instant::now() + self.header_timeout);
            let parsed = loop {
                match parse(&buf) {
                    Head::Partial if buf.len() < MAX_HEAD => {}
                    Head::Partial => {
                        self.counters.head_too_large.inc();
                        refuse(&mut stream, HEAD_TOO_LARGE).await;
                        return None;
                    }
                    // Pingora gets only whole heads, so it never waits on a slow client.
                    Head::Other if !head_complete(&buf) && buf.len() < MAX_HEAD => {}
                    Head::Other if !head_complete(&buf) => {
                        self.counters.head_too_large.inc();
                        refuse(&mut stream, HEAD_TOO_LARGE).await;
                        return None;
                    }
                    Head::Other => break None,
                    Head::Fast(r) => break Some(r),
                }
                let until = deadline.unwrap_or_else(|| Instant::now() + IDLE);
                match tokio::time::timeout_at(until, stream.read_buf(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => {
                        deadline.get_or_insert_with(|| Instant::now() + self.header_timeout);
                    }
                    Err(_) if deadline.is_some() => {
                        self.counters.slow_head.inc();
                        return None;
                    }
                    // Closed, failed or idle too long: nothing to answer.
                    _ => return None,
                }
            };
            let Some(req) = parsed else {
                if buf.starts_with(H2_PREFACE) {
                    // HTTP/2 with prior knowledge: Pingora's own h2c handling reads it.
                    stream.rewind(&buf);
                    let stream: Stream = stream;
                    return ServerApp::process_new(&self.http, stream, shutdown).await;
                }
                return self.hand_over(stream, &buf, shutdown).await;
            };
            key.clear();
            key.extend_from_slice(req.target);
            key.push(0);
            key.extend_from_slice(req.accept.unwrap_or_default());
            let Some(answer) = ready.and_then(|r| r.get(&key)) else {
                return self.hand_over(stream, &buf, shutdown).await;
            };
            let not_modified = req
                .if_none_match
                .and_then(|v| std::str::from_utf8(v).ok())
                .is_some_and(|v| etag_matches(v, &answer.etag));
            let (head, body) = if not_modified {
                (&answer.not_modified_head, None)
            } else {
                (&answer.ok_head, (!req.head).then_some(&answer.body))
            };
            let (len, close) = (req.len, req.close);
            out.clear();
            out.extend_from_slice(head);
            // What Pingora adds to every response, spelt as it spells them.
            out.extend_from_slice(b"Date: ");
            out.extend_from_slice(get_cached_date().as_bytes());
            out.extend_from_slice(if req.close {
                &b"\r\nConnection: close\r\n\r\n"[..]
            } else {
                &b"\r\nConnection: keep-alive\r\n\r\n"[..]
            });
            // Counted before the answer leaves, so that whoever reads the metrics after
            // receiving it (another connection, maybe on another thread) sees it counted.
            let sent = body.map_or(0, |b| b.len() as u64);
            // Access statistics count it as the normal path does: a hit, body bytes sent.
            if let Some(access) = self.edge.access() {
                access.record(&answer.source_key, sent, true);
            }
            // Counted as the normal path counts them: a 304 looks nothing up.
            if not_modified {
                self.counters.not_modified.inc();
            } else {
                self.counters.ok.inc();
                self.counters.memory_hits.inc();
                self.counters.bytes_out.inc_by(sent);
            }
            self.counters.ready_hits.inc();
            if send(&mut stream, &out, body.map_or(&[][..], |b| &b[..]))
                .await
                .is_err()
            {
                return None;
            }
            buf.advance(len);
            if close {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast(buf: &[u8]) -> FastRequest<'_> {
        match parse(buf) {
            Head::Fast(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plain_image_gets_and_heads_are_fast() {
        let two = b"GET /img/a.jpg?w=5 HTTP/1.1\r\nHost: x\r\nAccept: image/webp\r\n\r\nGET";
        let r = fast(two);
        assert_eq!(r.target, b"/img/a.jpg?w=5");
        assert_eq!(r.accept, Some(&b"image/webp"[..]));
        assert!(!r.head);
        // The next (pipelined) request is left in the buffer.
        assert_eq!(r.len, two.len() - 3);
        let r = fast(b"HEAD /cdn-cgi/image/w=5/a.jpg HTTP/1.1\r\nIf-None-Match: \"e\"\r\nConnection: keep-alive\r\n\r\n");
        assert!(r.head);
        assert!(!r.close);
        assert_eq!(r.if_none_match, Some(&b"\"e\""[..]));
        assert!(fast(b"GET /img/a.jpg HTTP/1.1\r\nConnection: Close\r\n\r\n").close);
    }

    #[test]
    fn everything_else_goes_to_the_http_server() {
        assert_eq!(
            parse(b"GET /img/a.jpg HTTP/1.1\r\nHost: x\r\n"),
            Head::Partial
        );
        for other in [
            &b"POST /img/a.jpg HTTP/1.1\r\n\r\n"[..],
            b"GET /img/a.jpg HTTP/1.0\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\n\r\n",
            b"GET /img/a.jpg HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
            b"GET /img/a.jpg HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /img/a.jpg HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /img/a.jpg HTTP/1.1\r\nAccept: a\r\nAccept: b\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert_eq!(
                parse(other),
                Head::Other,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }
}
