//! A small HTTP/1 client (hyper) for talking to the edge and, in `flexphoto import`, to the API.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::state::AppState;

/// A response: status, headers and the whole body.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// Sends one request over plain HTTP and reads the whole answer, within `timeout`.
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    timeout: Duration,
) -> Result<Reply, String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    let fut = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok::<_, String>(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| "timed out".to_owned())?
}

/// Asks the edge to drop everything cached for `keys`. Needs the edge's admin token; without
/// it the edge's caches expire on their own (their source identity check sees the object gone).
pub async fn purge(state: &AppState, keys: &[String]) {
    let Some(token) = &state.edge_admin_token else {
        return;
    };
    let auth = format!("Bearer {token}");
    for k in keys {
        let url = format!(
            "{}/admin/purge?key={}",
            state.cfg.edge_public_url,
            k.replace('%', "%25")
                .replace('&', "%26")
                .replace('#', "%23")
                .replace(' ', "%20")
        );
        match send(
            Method::POST,
            &url,
            &[("authorization", &auth)],
            Bytes::new(),
            Duration::from_secs(5),
        )
        .await
        {
            Ok(r) if r.status < 300 => {}
            Ok(r) => tracing::warn!(key = %k, status = r.status, "edge purge refused"),
            Err(e) => tracing::warn!(key = %k, error = %e, "edge purge failed"),
        }
    }
}
