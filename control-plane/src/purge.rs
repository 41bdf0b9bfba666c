//! Purging caches when an image's objects are deleted: every configured edge is asked to drop
//! what it holds for each key (`POST /admin/purge?key=…` with the edges' admin token), and a
//! CDN's purge endpoint, when configured, is called for each object (`{url}` is the key's
//! edge URL without options, which every size of it starts with, for prefix or tag purges;
//! `{key}` the key itself). Without an
//! edge token no edge is called; an edge's own identity check then finds the object gone
//! within its revalidation time.

use flexphoto_url::ImageKey;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use crate::routes::views::unsigned_edge_url;
use crate::state::AppState;

/// The CDN purge call for `key`: `template` with `{url}` (the key's edge URL without
/// options, exactly as the API hands it out) and `{key}`, each escaped as a query value.
pub fn cdn_purge_url(template: &str, edge_public_url: &str, key: &ImageKey) -> String {
    let edge_url = unsigned_edge_url(edge_public_url, key, "");
    template
        .replace(
            "{url}",
            &utf8_percent_encode(&edge_url, NON_ALPHANUMERIC).to_string(),
        )
        .replace(
            "{key}",
            &utf8_percent_encode(key.as_str(), NON_ALPHANUMERIC).to_string(),
        )
}

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
            let Ok(key) = ImageKey::parse(k) else {
                // No edge serves it, so no CDN holds it.
                tracing::warn!(key = %k, "not an image key; nothing to purge at the CDN");
                continue;
            };
            let url = cdn_purge_url(template, &state.cfg.edge_public_url, &key);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What the CDN is asked to purge is the URL the API handed out (and the CDN cached),
    /// once the template's query escaping is undone.
    #[test]
    fn the_purged_url_is_the_url_the_api_hands_out() {
        let base = "https://img.example.com";
        for k in [
            "2026/01/02/0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b-original.jpg",
            "owner.name/my photo - final.v2.JPG",
            "ünï/çødé ~x_y.png",
        ] {
            let key = ImageKey::parse(k).unwrap();
            let api = unsigned_edge_url(base, &key, "");
            let purge = cdn_purge_url("https://cdn.example/purge?u={url}&k={key}", base, &key);
            let q = purge.split_once('?').unwrap().1;
            let (u, rest) = q.split_once('&').unwrap();
            let url = percent_encoding::percent_decode_str(u.strip_prefix("u=").unwrap())
                .decode_utf8()
                .unwrap();
            assert_eq!(url, api, "{purge}");
            let key_back = percent_encoding::percent_decode_str(rest.strip_prefix("k=").unwrap())
                .decode_utf8()
                .unwrap();
            assert_eq!(key_back, k);
            // Dots and dashes stay literal, as in the API's URL.
            assert!(!api.contains("%2E") && !api.contains("%2D"), "{api}");
        }
    }
}
