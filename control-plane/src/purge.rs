//! Purging caches when an image's objects are deleted: every configured edge is asked to drop
//! what it holds for each key (`POST /admin/purge?key=…` with the edges' admin token), and a
//! CDN's purge endpoint, when configured, is called for each object (`{url}` is the key's
//! edge URL without options, which every size of it starts with, for prefix or tag purges;
//! `{key}` the key itself). Without an
//! edge token no edge is called; an edge's own identity check then finds the object gone
//! within its revalidation time.

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use crate::state::AppState;

/// Purges `keys` from every edge and the CDN; the error names what failed (the caller
/// retries).
pub async fn purge_everywhere(state: &AppState, keys: &[String]) -> Result<(), String> {
    let mut failures = Vec::new();
    if let Some(token) = &state.cfg.edge_admin_token {
        for base in &state.cfg.edge_purge_urls {
            for k in keys {
                let key = utf8_percent_encode(k, NON_ALPHANUMERIC);
                let url = format!("{base}/admin/purge?key={key}");
                match state.http.post(&url).bearer_auth(token).send().await {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => failures.push(format!("{base}: HTTP {} for {k}", r.status())),
                    Err(e) => failures.push(format!("{base}: {e}")),
                }
            }
        }
    }
    if let Some((template, token)) = &state.cfg.cdn_purge {
        for k in keys {
            let edge_url = format!(
                "{}/img/{}",
                state.cfg.edge_public_url,
                k.split('/')
                    .map(|s| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            );
            let url = template
                .replace(
                    "{url}",
                    &utf8_percent_encode(&edge_url, NON_ALPHANUMERIC).to_string(),
                )
                .replace(
                    "{key}",
                    &utf8_percent_encode(k, NON_ALPHANUMERIC).to_string(),
                );
            let mut req = state.http.post(&url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => failures.push(format!("CDN: HTTP {} for {k}", r.status())),
                Err(e) => failures.push(format!("CDN: {e}")),
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        failures.truncate(5);
        Err(format!("purge failed: {}", failures.join("; ")))
    }
}
