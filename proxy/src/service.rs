//! The Pingora glue: HTTP requests in, [`crate::edge::Edge`] calls, HTTP responses out.
//!
//! Why an `HttpServerApp` and not `ProxyHttp` + pingora-cache: the edge generates every
//! response itself (there is no upstream HTTP server to proxy), and its cache keys depend on
//! the source object's identity and the negotiated format, which pingora-cache's
//! request-keyed storage does not model. So Pingora supplies the hardened HTTP/1.1 and h2c
//! server, connection reuse and graceful shutdown; caching, coalescing and the transform live
//! in plain Rust modules with no HTTP types, where they are unit-tested.
//!
//! Routes: `GET|HEAD /img/{key}?…`, `GET|HEAD /cdn-cgi/image/{options}/{key}`, `GET /healthz`,
//! `GET /readyz`, `GET /metrics` (loopback clients, or `server.metrics_token`),
//! `POST /admin/purge?key=KEY` (bearer token).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_http::ResponseHeader;
use subtle::ConstantTimeEq;

use crate::edge::{Edge, ImageRequest, ImageResponse};
use crate::error::EdgeError;
use crate::ready::{serialise_head, Ready, ReadyResponses};
use flexphoto_url::ImageKey;

/// The HTTP application Pingora runs.
pub struct EdgeHttp {
    edge: Arc<Edge>,
}

impl EdgeHttp {
    /// Wraps an edge.
    pub fn new(edge: Arc<Edge>) -> Self {
        Self { edge }
    }
}

/// A response ready to write.
struct Reply {
    header: ResponseHeader,
    body: Option<Bytes>,
}

fn header(status: u16) -> ResponseHeader {
    // Building a header with a known-valid status cannot fail; fall back to 500 if it does.
    ResponseHeader::build(status, Some(8))
        .or_else(|_| ResponseHeader::build(500, Some(8)))
        .unwrap_or_else(|_| http::Response::new(()).into_parts().0.into())
}

fn set(h: &mut ResponseHeader, name: &'static str, value: impl ToString) {
    let _ = h.insert_header(name, value.to_string());
}

fn text_reply(status: u16, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let body = body.into();
    let mut h = header(status);
    set(&mut h, "content-type", content_type);
    set(&mut h, "content-length", body.len());
    set(&mut h, "cache-control", "no-store");
    Reply {
        header: h,
        body: Some(body),
    }
}

fn error_reply(e: &EdgeError) -> Reply {
    let mut r = text_reply(e.status(), "application/json", e.body());
    match e {
        EdgeError::Overloaded { retry_after }
        | EdgeError::TooManyRequests { retry_after }
        | EdgeError::Archived { retry_after } => {
            set(&mut r.header, "retry-after", retry_after.as_secs().max(1))
        }
        EdgeError::MethodNotAllowed => set(&mut r.header, "allow", "GET, HEAD"),
        EdgeError::NotFound(_) | EdgeError::BadRequest(_) | EdgeError::Unprocessable(_) => {
            // Let CDNs hold client errors briefly instead of hammering us.
            set(&mut r.header, "cache-control", "public, max-age=60");
        }
        _ => {}
    }
    r
}

/// How long caches may keep an answer: the configured `max-age`, shortened so that no cache
/// keeps a signed URL's answer past its expiry.
fn max_age_for(configured: u64, expires: Option<u64>, now: u64) -> u64 {
    match expires {
        Some(exp) => configured.min(exp.saturating_sub(now)),
        None => configured,
    }
}

fn image_reply(edge: &Edge, r: &ImageResponse) -> Reply {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let max_age = max_age_for(edge.config().max_age.as_secs(), r.expires, now);
    let status = if r.image.is_some() { 200 } else { 304 };
    let mut h = header(status);
    set(&mut h, "etag", &r.etag);
    if r.stale {
        set(
            &mut h,
            "cache-control",
            format!("public, max-age={}", max_age.min(60)),
        );
        set(&mut h, "warning", "110 - \"Response is Stale\"");
    } else {
        set(
            &mut h,
            "cache-control",
            format!("public, max-age={max_age}"),
        );
    }
    if r.vary_accept {
        set(&mut h, "vary", "Accept");
    }
    let tier = r.tier.name();
    // A coalesced waiter is a miss too; Cache-Status says it was collapsed.
    set(&mut h, "x-cache", tier);
    let detail = if r.stale { "; detail=stale" } else { "" };
    let status_text = match (r.image.is_some(), r.tier) {
        (false, _) => "flexphoto; hit; detail=not-modified".to_owned(),
        (true, crate::cache::Tier::Origin) if r.coalesced => {
            format!("flexphoto; fwd=miss; collapsed{detail}")
        }
        (true, crate::cache::Tier::Origin) => format!("flexphoto; fwd=miss; stored{detail}"),
        (true, _) => format!(
            "flexphoto; hit; detail={tier}{}",
            if r.stale { "-stale" } else { "" }
        ),
    };
    set(&mut h, "cache-status", status_text);
    set(&mut h, "x-content-type-options", "nosniff");
    match &r.image {
        Some(img) => {
            set(&mut h, "content-type", img.format.mime());
            set(&mut h, "content-length", img.body.len());
            Reply {
                header: h,
                body: Some(img.body.clone()),
            }
        }
        None => Reply {
            header: h,
            body: None,
        },
    }
}

/// Keeps a memory-tier hit as a ready response for [`crate::app`]'s fast path, with the
/// headers [`image_reply`] gives its `200` and `304` forms.
fn keep_ready(edge: &Edge, session: &ServerSession, r: &ImageResponse) {
    let (Some(ready), Some(img), Some(valid_until)) = (edge.ready(), &r.image, r.trusted_until)
    else {
        return;
    };
    let req = session.req_header();
    if r.tier != crate::cache::Tier::Memory
        || r.coalesced
        || r.expires.is_some()
        || session.is_http2()
        || req.version != http::Version::HTTP_11
    {
        return;
    }
    let accept = req.headers.get("accept").map(|v| v.as_bytes());
    let key = ReadyResponses::key(req.raw_path(), accept);
    if ready.get(&key).is_some() {
        return;
    }
    let not_modified = ImageResponse {
        image: None,
        ..r.clone()
    };
    ready.insert(
        key,
        Ready {
            ok_head: serialise_head(&image_reply(edge, r).header),
            not_modified_head: serialise_head(&image_reply(edge, &not_modified).header),
            etag: r.etag.as_str().into(),
            body: img.body.clone(),
            valid_until,
            source_key: Arc::clone(&img.source_key),
        },
    );
}

fn bearer(session: &ServerSession) -> Option<&str> {
    session
        .req_header()
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// The client's address: from `trusted_header` (set by the CDN or load balancer in front)
/// when configured, else the peer's.
fn client_ip(
    session: &ServerSession,
    trusted_header: Option<&str>,
    hops: usize,
) -> Option<std::net::IpAddr> {
    if let Some(name) = trusted_header {
        let from_header = header_str(session, name).and_then(|v| forwarded_client(v, hops));
        if from_header.is_some() {
            return from_header;
        }
    }
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// The client in a forwarding header's address list: the `hops`-th address from the right.
/// Each trusted proxy appends the address it received the request from, so everything to the
/// left of what they appended was written by the client and proves nothing.
fn forwarded_client(value: &str, hops: usize) -> Option<std::net::IpAddr> {
    value
        .rsplit(',')
        .nth(hops.max(1) - 1)
        .and_then(|v| v.trim().parse().ok())
}

fn header_str<'a>(session: &'a ServerSession, name: &str) -> Option<&'a str> {
    session
        .req_header()
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
}

impl EdgeHttp {
    async fn route(&self, session: &mut ServerSession) -> Reply {
        let method = session.req_header().method.clone();
        let uri = session.req_header().uri.clone();
        let path = uri.path();
        let is_read = method == http::Method::GET || method == http::Method::HEAD;
        let is_head = method == http::Method::HEAD;
        let edge = &self.edge;
        if path.starts_with(flexphoto_url::IMG_PREFIX) || path.starts_with(flexphoto_url::CF_PREFIX)
        {
            if !is_read {
                return error_reply(&EdgeError::MethodNotAllowed);
            }
            let req = ImageRequest {
                path,
                query: uri.query(),
                accept: header_str(session, "accept"),
                if_none_match: header_str(session, "if-none-match"),
                client: client_ip(
                    session,
                    edge.config().client_ip_header.as_deref(),
                    edge.config().client_ip_hops,
                ),
            };
            return match edge.serve(req).await {
                Ok(r) => {
                    keep_ready(edge, session, &r);
                    if let Some(counter) = edge.access() {
                        let bytes = match (&r.image, is_head) {
                            (Some(img), false) => img.body.len() as u64,
                            _ => 0,
                        };
                        counter.record(&r.key, bytes, r.tier != crate::cache::Tier::Origin);
                    }
                    image_reply(edge, &r)
                }
                Err(e) => {
                    if e.status() >= 500 && e.status() != 503 {
                        tracing::error!(path, status = e.status(), error = %e.log_detail(), "request failed");
                    } else {
                        tracing::debug!(path, status = e.status(), error = %e, "request refused");
                    }
                    error_reply(&e)
                }
            };
        }
        match (path, is_read) {
            ("/healthz", true) => text_reply(200, "text/plain", "ok\n"),
            ("/readyz", true) => {
                if edge.is_ready() {
                    text_reply(200, "text/plain", "ready\n")
                } else {
                    text_reply(503, "text/plain", "rebuilding disk cache index\n")
                }
            }
            ("/metrics", true) => {
                if !self.may_read_metrics(session) {
                    return error_reply(&EdgeError::Forbidden(
                        "metrics are served to loopback clients, or to others with the bearer \
                         token in server.metrics_token"
                            .into(),
                    ));
                }
                edge.refresh_cache_gauges();
                text_reply(200, "text/plain; version=0.0.4", edge.metrics().render())
            }
            ("/admin/purge", _) if method == http::Method::POST => {
                self.purge(session, uri.query()).await
            }
            ("/healthz" | "/readyz" | "/metrics" | "/admin/purge", _) => {
                error_reply(&EdgeError::MethodNotAllowed)
            }
            _ => error_reply(&EdgeError::NotFound("no such route".into())),
        }
    }

    /// Whether this request may read `/metrics` (queue depths and in-flight counts help an
    /// attacker time a flood): a loopback client, or anyone with `server.metrics_token`.
    fn may_read_metrics(&self, session: &ServerSession) -> bool {
        let cfg = self.edge.config();
        if let Some(token) = cfg.metrics_token.as_deref() {
            let given = bearer(session).unwrap_or("");
            if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
                return true;
            }
        }
        client_ip(session, cfg.client_ip_header.as_deref(), cfg.client_ip_hops)
            .is_some_and(|ip| ip.is_loopback())
    }

    /// `POST /admin/purge?key=KEY`: the bearer token is checked before the body is read.
    async fn purge(&self, session: &mut ServerSession, query: Option<&str>) -> Reply {
        let Some(token) = self.edge.config().admin_token.as_deref() else {
            return error_reply(&EdgeError::Forbidden(
                "admin endpoints are disabled (server.admin_token is empty)".into(),
            ));
        };
        let given = bearer(session).unwrap_or("");
        let ok: bool = given.as_bytes().ct_eq(token.as_bytes()).into();
        if !ok {
            return error_reply(&EdgeError::Forbidden(
                "missing or wrong bearer token".into(),
            ));
        }
        let _ = session.drain_request_body().await;
        let raw_key = query
            .unwrap_or("")
            .split('&')
            .find_map(|p| p.strip_prefix("key="))
            .unwrap_or("");
        let key = match ImageKey::from_url_path(raw_key) {
            Ok(k) => k,
            Err(e) => return error_reply(&EdgeError::BadRequest(format!("option `key`: {e}"))),
        };
        let report = self.edge.purge(&key).await;
        tracing::info!(key = %key, disk_entries = report.disk_entries, "purged");
        let body = serde_json::json!({"purged": key.as_str(), "disk_entries": report.disk_entries})
            .to_string();
        text_reply(200, "application/json", body)
    }
}

#[async_trait]
impl HttpServerApp for EdgeHttp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match session.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "failed to read request");
                return None;
            }
        }
        session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        let started = Instant::now();
        let is_head = session.req_header().method == http::Method::HEAD;
        let reply = self.route(&mut session).await;
        let status = reply.header.status.as_u16();
        let metrics = self.edge.metrics();
        metrics
            .requests
            .with_label_values(&[status.to_string().as_str()])
            .inc();
        if let Err(e) = session.write_response_header(Box::new(reply.header)).await {
            tracing::debug!(error = %e, "client went away before the header");
            return None;
        }
        if let (Some(body), false) = (reply.body, is_head) {
            let n = body.len();
            if let Err(e) = session.write_response_body(body, true).await {
                tracing::debug!(error = %e, "client went away during the body");
                return None;
            }
            metrics.bytes_out.inc_by(n as u64);
        }
        tracing::debug!(path = %session.req_header().uri, status, elapsed_ms = started.elapsed().as_secs_f64() * 1000.0, "served");
        let persistent = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(s) => s.map(|s| ReusedHttpStream::from_reusable_stream(s, persistent)),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_answers_are_never_cached_past_their_expiry() {
        assert_eq!(max_age_for(86_400, None, 1000), 86_400);
        assert_eq!(max_age_for(86_400, Some(1600), 1000), 600);
        assert_eq!(max_age_for(300, Some(100_000), 1000), 300);
        assert_eq!(max_age_for(300, Some(900), 1000), 0);
    }

    #[test]
    fn the_client_is_what_the_trusted_proxies_appended() {
        let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
        // The client wrote 6.6.6.6; the load balancer appended the address it saw.
        assert_eq!(forwarded_client("6.6.6.6, 10.0.0.9", 1), ip("10.0.0.9"));
        assert_eq!(
            forwarded_client("6.6.6.6, 1.2.3.4, 10.0.0.9", 2),
            ip("1.2.3.4")
        );
        assert_eq!(forwarded_client("2001:db8::7", 1), ip("2001:db8::7"));
        assert_eq!(forwarded_client("10.0.0.9", 2), None);
        assert_eq!(forwarded_client("not an address", 1), None);
    }
}
