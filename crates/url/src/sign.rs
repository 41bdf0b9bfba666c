//! URL signatures: HMAC-SHA256 over the image key and the canonical options.
//!
//! The signed message is `{key}?{options.canonical()}` (the decoded key, and the options in
//! canonical order without the signature, including `exp` when present), so the same
//! signature serves both URL forms and any spelling of the same options. Several keys may be
//! configured: the first signs, all verify, which lets keys rotate.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::grammar::{parse_path, UrlError, UrlForm, CF_PREFIX};
use crate::{ImageKey, RequestOptions};

type HmacSha256 = Hmac<Sha256>;

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// None given where one is required.
    #[error("this URL must be signed (sig parameter)")]
    Missing,
    /// Does not match any key.
    #[error("the URL signature is not valid")]
    Invalid,
    /// `exp` is in the past.
    #[error("the signed URL has expired")]
    Expired,
    /// No keys are configured, so nothing can be signed.
    #[error("no signing keys are configured")]
    NoKeys,
    /// The URL to sign does not parse.
    #[error("cannot sign: {0}")]
    BadUrl(String),
}

/// Signs and verifies image URLs.
#[derive(Clone, Default)]
pub struct Signer {
    keys: Vec<Vec<u8>>,
}

fn message(key: &ImageKey, opts: &RequestOptions) -> String {
    format!("{}?{}", key.as_str(), opts.canonical())
}

impl Signer {
    /// A signer with these keys (first signs).
    pub fn new(keys: Vec<Vec<u8>>) -> Self {
        Self { keys }
    }

    /// Whether any key is configured (and so signatures are enforced).
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The hex signature of `key` with `opts` under the first key.
    pub fn signature(&self, key: &ImageKey, opts: &RequestOptions) -> Result<String, SignError> {
        let k = self.keys.first().ok_or(SignError::NoKeys)?;
        let mut mac = HmacSha256::new_from_slice(k).map_err(|_| SignError::NoKeys)?;
        mac.update(message(key, opts).as_bytes());
        Ok(hex::encode(mac.finalize().into_bytes()))
    }

    /// Checks the signature and expiry carried in `opts`; `now` is Unix seconds.
    pub fn verify(&self, key: &ImageKey, opts: &RequestOptions, now: u64) -> Result<(), SignError> {
        let sig = opts.signature.as_deref().ok_or(SignError::Missing)?;
        let sig = hex::decode(sig).map_err(|_| SignError::Invalid)?;
        let msg = message(key, opts);
        let ok = self.keys.iter().any(|k| {
            HmacSha256::new_from_slice(k)
                .map(|mut mac| {
                    mac.update(msg.as_bytes());
                    // verify_slice compares in constant time.
                    mac.verify_slice(&sig).is_ok()
                })
                .unwrap_or(false)
        });
        if !ok {
            return Err(SignError::Invalid);
        }
        if opts.expires.is_some_and(|e| e < now) {
            return Err(SignError::Expired);
        }
        Ok(())
    }

    /// Signs a path such as `/img/cat.jpg?w=400` or `/cdn-cgi/image/w=400/cat.jpg`, returning
    /// it with the signature appended in the same form.
    pub fn sign_path(&self, path_and_query: &str, max_dimension: u32) -> Result<String, SignError> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let parsed = parse_path(path, query, max_dimension)
            .map_err(|e: UrlError| SignError::BadUrl(e.to_string()))?;
        if parsed.options.signature.is_some() {
            return Err(SignError::BadUrl(
                "the URL already carries a signature".into(),
            ));
        }
        let sig = self.signature(&parsed.key, &parsed.options)?;
        Ok(match (parsed.form, query) {
            (UrlForm::Query, Some(q)) if !q.is_empty() => format!("{path}?{q}&sig={sig}"),
            (UrlForm::Query, _) => format!("{path}?sig={sig}"),
            (UrlForm::Cloudflare, _) => {
                let rest = &path[CF_PREFIX.len()..];
                let (opts, key) = rest.split_once('/').unwrap_or((rest, ""));
                let q = query.map(|q| format!("?{q}")).unwrap_or_default();
                format!("{}{opts},sig={sig}/{key}{q}", CF_PREFIX)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::new(vec![
            b"0123456789abcdef".to_vec(),
            b"older-key-still-valid".to_vec(),
        ])
    }

    fn verify(s: &Signer, url: &str) -> Result<(), SignError> {
        let (p, q) = url
            .split_once('?')
            .map(|(p, q)| (p, Some(q)))
            .unwrap_or((url, None));
        let parsed = parse_path(p, q, 8192).unwrap();
        s.verify(&parsed.key, &parsed.options, 1_000)
    }

    #[test]
    fn signed_urls_verify_in_both_forms() {
        let s = signer();
        let a = s.sign_path("/img/a/cat.jpg?w=400&fit=cover", 8192).unwrap();
        assert!(a.starts_with("/img/a/cat.jpg?w=400&fit=cover&sig="));
        assert_eq!(verify(&s, &a), Ok(()));
        let b = s
            .sign_path("/cdn-cgi/image/w=400,fit=cover/a/cat.jpg", 8192)
            .unwrap();
        assert_eq!(verify(&s, &b), Ok(()));
        // Same canonical options, same signature.
        assert_eq!(
            a.rsplit("sig=").next(),
            b.split("sig=").nth(1).map(|r| r.split('/').next().unwrap())
        );
    }

    #[test]
    fn tampering_is_refused() {
        let s = signer();
        let a = s.sign_path("/img/cat.jpg?w=400", 8192).unwrap();
        assert_eq!(
            verify(&s, &a.replace("w=400", "w=401")),
            Err(SignError::Invalid)
        );
        assert_eq!(
            verify(&s, &a.replace("cat.jpg", "dog.jpg")),
            Err(SignError::Invalid)
        );
        assert_eq!(verify(&s, "/img/cat.jpg?w=400"), Err(SignError::Missing));
        let other = Signer::new(vec![b"another-key-entirely".to_vec()]);
        assert_eq!(verify(&other, &a), Err(SignError::Invalid));
    }

    #[test]
    fn rotation_and_expiry() {
        let old = Signer::new(vec![b"older-key-still-valid".to_vec()]);
        let a = old.sign_path("/img/cat.jpg?w=10", 8192).unwrap();
        assert_eq!(verify(&signer(), &a), Ok(()));
        let expired = signer()
            .sign_path("/img/cat.jpg?w=10&exp=999", 8192)
            .unwrap();
        assert_eq!(verify(&signer(), &expired), Err(SignError::Expired));
        let fresh = signer()
            .sign_path("/img/cat.jpg?w=10&exp=1001", 8192)
            .unwrap();
        assert_eq!(verify(&signer(), &fresh), Ok(()));
        assert_eq!(
            Signer::default().signature(&ImageKey::parse("x").unwrap(), &RequestOptions::default()),
            Err(SignError::NoKeys)
        );
    }
}
