//! Browser sessions of the admin UI: signing in with an API key creates a row in
//! `admin_sessions` (so every process on the database accepts it) and an HttpOnly,
//! SameSite=Strict cookie holding a random secret; the API then accepts the cookie in place
//! of `Authorization`, with the key's role and scope. Requests that change anything must
//! also carry the session's CSRF token in `X-CSRF-Token` and, when the browser sends one, an
//! `Origin` of this host.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use flexphoto_media::fingerprint::sha256_hex;
use http::request::Parts;
use http::{HeaderMap, Method};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::auth::Caller;
use crate::domain::{Owner, Role};
use crate::error::ApiError;
use crate::on_db;
use crate::state::AppState;
use crate::store::{now, Db, Result as StoreResult, StoreError};

/// The session cookie's name.
pub const COOKIE: &str = "fp_admin";
/// The header that carries the CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A live session with its key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    /// The key the session acts as.
    pub key_id: Uuid,
    /// The key's name.
    pub name: String,
    /// The key's role.
    pub role: Role,
    /// The key's owner scope.
    pub owner_scope: Option<Owner>,
    /// The token state-changing requests must echo.
    pub csrf_token: String,
    /// When the session ends.
    pub expires_at: DateTime<Utc>,
}

impl SessionRow {
    /// The API caller this session acts as.
    pub fn caller(&self) -> Caller {
        Caller {
            role: self.role,
            owner_scope: self.owner_scope.clone(),
            actor: format!("{} ({}) via admin UI", self.name, self.key_id),
            key_id: self.key_id,
        }
    }
}

/// A new random secret (256 bits, hex).
fn random_secret() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

impl Db {
    /// Creates a session for `key_id` lasting `ttl`; returns the cookie secret and the
    /// CSRF token. Expired sessions are deleted on the way.
    pub async fn create_admin_session(
        &self,
        key_id: Uuid,
        ttl: std::time::Duration,
    ) -> StoreResult<(String, String, DateTime<Utc>)> {
        let secret = random_secret();
        let csrf = random_secret();
        let t = now();
        let expires = t + ChronoDuration::from_std(ttl).unwrap_or(ChronoDuration::hours(12));
        on_db!(self, |p, _pg| {
            sqlx::query("DELETE FROM admin_sessions WHERE expires_at < $1")
                .bind(t)
                .execute(p)
                .await?;
            sqlx::query(
                "INSERT INTO admin_sessions (id_hash, key_id, csrf_token, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(sha256_hex(secret.as_bytes()))
            .bind(key_id)
            .bind(&csrf)
            .bind(t)
            .bind(expires)
            .execute(p)
            .await
            .map_err(StoreError::classify)?;
        });
        Ok((secret, csrf, expires))
    }

    /// The live session with this cookie secret whose key is not revoked.
    pub async fn find_admin_session(&self, secret: &str) -> StoreResult<Option<SessionRow>> {
        let t = now();
        Ok(on_db!(self, |p, _pg| {
            sqlx::query_as::<_, SessionRow>(
                "SELECT k.id AS key_id, k.name, k.role, k.owner_scope, s.csrf_token, s.expires_at \
                 FROM admin_sessions s JOIN api_keys k ON k.id = s.key_id \
                 WHERE s.id_hash = $1 AND s.expires_at > $2 AND k.revoked_at IS NULL",
            )
            .bind(sha256_hex(secret.as_bytes()))
            .bind(t)
            .fetch_optional(p)
            .await?
        }))
    }

    /// Ends the session with this cookie secret.
    pub async fn delete_admin_session(&self, secret: &str) -> StoreResult<()> {
        on_db!(self, |p, _pg| {
            sqlx::query("DELETE FROM admin_sessions WHERE id_hash = $1")
                .bind(sha256_hex(secret.as_bytes()))
                .execute(p)
                .await?;
        });
        Ok(())
    }
}

/// The session cookie's secret in `headers`, if any.
pub fn cookie_secret(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// Whether a request with this method may change something (and so needs the CSRF token).
pub fn is_state_changing(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Refuses a cross-site request: an `Origin` (browsers send it on every non-GET) must name
/// the host the request was sent to.
pub fn check_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(http::header::ORIGIN) else {
        return Ok(());
    };
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, h)| h)
        .unwrap_or("");
    if !host.is_empty() && origin_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "cross-site request refused (Origin does not match Host)".into(),
        ))
    }
}

/// Checks the CSRF token of a state-changing request against the session's.
pub fn check_csrf(headers: &HeaderMap, session: &SessionRow) -> Result<(), ApiError> {
    let given = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !given.is_empty() && bool::from(given.as_bytes().ct_eq(session.csrf_token.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "this change needs the session's CSRF token in X-CSRF-Token".into(),
        ))
    }
}

/// The caller of a request without `Authorization`: its session cookie's key, after the
/// origin and CSRF checks for changes. No cookie, or an unknown or expired one: 401.
pub async fn caller_from_cookie(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let secret = cookie_secret(&parts.headers).ok_or(ApiError::Unauthorized)?;
    let session = state
        .db
        .find_admin_session(&secret)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if is_state_changing(&parts.method) {
        check_origin(&parts.headers)?;
        check_csrf(&parts.headers, &session)?;
    }
    state.rate_limits.check(session.key_id)?;
    Ok(session.caller())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn session() -> SessionRow {
        SessionRow {
            key_id: Uuid::nil(),
            name: "k".into(),
            role: Role::Viewer,
            owner_scope: None,
            csrf_token: "tok".into(),
            expires_at: Utc::now(),
        }
    }

    #[test]
    fn finds_the_cookie_among_others() {
        let h = headers(&[("cookie", "a=1; fp_admin=abc ; b=2")]);
        assert_eq!(cookie_secret(&h).as_deref(), Some("abc"));
        assert_eq!(cookie_secret(&headers(&[("cookie", "fp_adminx=1")])), None);
        assert_eq!(cookie_secret(&headers(&[("cookie", "fp_admin=")])), None);
    }

    #[test]
    fn csrf_must_match() {
        let s = session();
        assert!(check_csrf(&headers(&[("x-csrf-token", "tok")]), &s).is_ok());
        assert!(check_csrf(&headers(&[("x-csrf-token", "tox")]), &s).is_err());
        assert!(check_csrf(&headers(&[]), &s).is_err());
    }

    #[test]
    fn origin_must_be_this_host() {
        let ok = headers(&[
            ("host", "a.example:8080"),
            ("origin", "http://a.example:8080"),
        ]);
        assert!(check_origin(&ok).is_ok());
        let bad = headers(&[
            ("host", "a.example:8080"),
            ("origin", "https://evil.example"),
        ]);
        assert!(check_origin(&bad).is_err());
        assert!(check_origin(&headers(&[("host", "a")])).is_ok());
        assert!(check_origin(&headers(&[("origin", "null")])).is_err());
    }

    #[test]
    fn only_safe_methods_skip_csrf() {
        assert!(!is_state_changing(&Method::GET));
        assert!(is_state_changing(&Method::POST));
        assert!(is_state_changing(&Method::PATCH));
        assert!(is_state_changing(&Method::DELETE));
    }
}
