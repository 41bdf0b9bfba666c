//! The admin web UI at `/admin`: a page shell and its embedded scripts ([`assets`]), and
//! browser sign-in with an API key ([`session`]). The pages call the same `/v1` API as any
//! client, authenticated by the session cookie instead of `Authorization`.

pub mod assets;
pub mod session;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use flexphoto_media::fingerprint::sha256_hex;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};
use crate::routes::extract::ApiJson;
use crate::state::AppState;

/// `[admin_ui]` of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminUiSettings {
    /// Whether `/admin` is served.
    pub enabled: bool,
    /// Hours a browser session lasts.
    pub session_hours: u32,
    /// `auto` (Secure cookie when `server.public_url` is https or a proxy says
    /// `X-Forwarded-Proto: https`), `always` or `never`.
    pub secure_cookie: String,
}

impl Default for AdminUiSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            session_hours: 12,
            secure_cookie: "auto".into(),
        }
    }
}

impl AdminUiSettings {
    /// Checks values; the error names the key.
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        if !(1..=24 * 90).contains(&self.session_hours) {
            return Err(crate::config::ConfigError::Invalid {
                key: "admin_ui.session_hours".into(),
                reason: "must be between 1 and 2160".into(),
            });
        }
        if !matches!(self.secure_cookie.as_str(), "auto" | "always" | "never") {
            return Err(crate::config::ConfigError::Invalid {
                key: "admin_ui.secure_cookie".into(),
                reason: "must be auto, always or never".into(),
            });
        }
        Ok(())
    }
}

/// The `/admin` routes (empty when `admin_ui.enabled` is false).
pub fn router(state: &AppState) -> Router<Arc<AppState>> {
    if !state.cfg.admin_ui.enabled {
        return Router::new();
    }
    Router::new()
        .route("/admin", get(index))
        .route("/admin/", get(index))
        .route("/admin/{*page}", get(index))
        .route("/admin/assets/{version}/{*path}", get(asset))
        .route(
            "/admin/api/session",
            get(current_session).post(sign_in).delete(sign_out),
        )
}

/// Security headers of every UI response.
fn hardening(headers: &mut HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

/// The origin (scheme://host[:port]) of an absolute URL.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

/// The page's Content-Security-Policy: scripts and styles from this origin only; images
/// also from the edge; uploads may go straight to the object store.
pub fn content_security_policy(state: &AppState) -> String {
    let mut img = vec!["'self'".to_owned(), "data:".into(), "blob:".into()];
    if let Some(o) = origin_of(&state.cfg.edge_public_url) {
        img.push(o);
    }
    let mut connect = vec!["'self'".to_owned()];
    match &state.cfg.storage {
        flexphoto_storage::StorageConfig::S3(s3) => match s3.endpoint.as_deref() {
            Some(ep) => connect.extend(origin_of(ep)),
            None => connect.push("https://*.amazonaws.com".into()),
        },
        flexphoto_storage::StorageConfig::Local { .. } => {}
    }
    if let Some(o) = origin_of(&state.cfg.public_url) {
        connect.push(o);
    }
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src {}; connect-src {}; \
         form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        img.join(" "),
        connect.join(" ")
    )
}

/// `GET /admin[/…]`: the page shell; the script renders the page the path names.
async fn index(State(state): State<Arc<AppState>>) -> Response {
    let mut resp = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        assets::assets().index.clone(),
    )
        .into_response();
    let h = resp.headers_mut();
    hardening(h);
    if let Ok(v) = HeaderValue::from_str(&content_security_policy(&state)) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    resp
}

/// `GET /admin/assets/{version}/{path}`: an embedded file, cached for ever.
async fn asset(Path((version, path)): Path<(String, String)>, headers: HeaderMap) -> Response {
    let Some(a) = assets::assets().get(&version, &path) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let gzip_ok = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let mut resp = if gzip_ok {
        ([(header::CONTENT_ENCODING, "gzip")], a.gzip.clone()).into_response()
    } else {
        a.body.into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    hardening(h);
    resp
}

/// Body of `POST /admin/api/session`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// The API key's secret.
    key: String,
}

/// What the page knows about its session.
#[derive(Debug, Serialize)]
pub struct SessionView {
    /// The key's name.
    pub name: String,
    /// The key's role.
    pub role: String,
    /// The only owner the key may touch, if any.
    pub owner_scope: Option<String>,
    /// Send it as `X-CSRF-Token` with every change.
    pub csrf_token: String,
    /// When the session ends.
    pub expires_at: DateTime<Utc>,
    /// The edge's base URL (images come from there).
    pub edge_url: String,
    /// Every API path this server has (the pages offer what exists).
    pub routes: &'static [String],
}

/// The API's paths, from its OpenAPI document.
fn api_routes() -> &'static [String] {
    static ROUTES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    ROUTES.get_or_init(|| {
        use utoipa::OpenApi;
        crate::routes::openapi::ApiDoc::openapi()
            .paths
            .paths
            .keys()
            .cloned()
            .collect()
    })
}

fn view(s: &session::SessionRow, state: &AppState) -> SessionView {
    SessionView {
        name: s.name.clone(),
        role: s.role.to_string(),
        owner_scope: s.owner_scope.as_ref().map(|o| o.as_str().to_owned()),
        csrf_token: s.csrf_token.clone(),
        expires_at: s.expires_at,
        edge_url: state.cfg.edge_public_url.clone(),
        routes: api_routes(),
    }
}

fn secure_cookie(state: &AppState, headers: &HeaderMap) -> bool {
    match state.cfg.admin_ui.secure_cookie.as_str() {
        "always" => true,
        "never" => false,
        _ => {
            state.cfg.public_url.starts_with("https://")
                || headers
                    .get("x-forwarded-proto")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|p| p.eq_ignore_ascii_case("https"))
        }
    }
}

fn cookie(value: &str, max_age_secs: i64, secure: bool) -> String {
    format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{}",
        session::COOKIE,
        if secure { "; Secure" } else { "" }
    )
}

/// `POST /admin/api/session`: signs in with an API key; sets the session cookie.
async fn sign_in(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SignIn>,
) -> ApiResult<Response> {
    session::check_origin(&headers)?;
    let key = body.key.trim();
    if key.is_empty() || key.len() > 200 {
        return Err(ApiError::Unauthorized);
    }
    let row = state
        .db
        .find_api_key(&sha256_hex(key.as_bytes()))
        .await?
        .ok_or(ApiError::Unauthorized)?;
    state.rate_limits.check(row.id)?;
    let ttl = std::time::Duration::from_secs(u64::from(state.cfg.admin_ui.session_hours) * 3600);
    let (secret, csrf, expires_at) = state.db.create_admin_session(row.id, ttl).await?;
    tracing::info!(key = %row.id, "admin UI sign-in");
    let s = session::SessionRow {
        key_id: row.id,
        name: row.name,
        role: row.role,
        owner_scope: row.owner_scope,
        csrf_token: csrf,
        expires_at,
    };
    let set = cookie(
        &secret,
        i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
        secure_cookie(&state, &headers),
    );
    let mut resp = (StatusCode::CREATED, Json(view(&s, &state))).into_response();
    if let Ok(v) = HeaderValue::from_str(&set) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `GET /admin/api/session`: the signed-in key and the CSRF token; 401 without a session.
async fn current_session(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let secret = session::cookie_secret(&headers).ok_or(ApiError::Unauthorized)?;
    let s = state
        .db
        .find_admin_session(&secret)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let mut resp = Json(view(&s, &state)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `DELETE /admin/api/session`: signs out (needs the CSRF token); clears the cookie.
async fn sign_out(State(state): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult<Response> {
    let secret = session::cookie_secret(&headers).ok_or(ApiError::Unauthorized)?;
    if let Some(s) = state.db.find_admin_session(&secret).await? {
        session::check_origin(&headers)?;
        session::check_csrf(&headers, &s)?;
        state.db.delete_admin_session(&secret).await?;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie("", 0, secure_cookie(&state, &headers))) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(
            origin_of("http://127.0.0.1:8081/img").as_deref(),
            Some("http://127.0.0.1:8081")
        );
        assert_eq!(
            origin_of("https://cdn.example").as_deref(),
            Some("https://cdn.example")
        );
        assert_eq!(origin_of("nonsense"), None);
    }

    #[test]
    fn cookie_is_http_only_and_strict() {
        let c = cookie("abc", 60, true);
        assert!(c.starts_with("fp_admin=abc;"));
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(!cookie("abc", 60, false).contains("Secure"));
    }

    #[test]
    fn settings_are_checked() {
        assert!(AdminUiSettings::default().validate().is_ok());
        let bad = AdminUiSettings {
            secure_cookie: "sometimes".into(),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
