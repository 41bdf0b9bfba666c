//! The path grammar: which URL form a request used, and where its key and options are.
//!
//! Two forms reach the same option model:
//! - `/img/{key}?w=400&h=300&fit=cover&fmt=auto` (our query form),
//! - `/cdn-cgi/image/w=400,h=300,fit=cover,f=auto/{key}` (Cloudflare Image Resizing's form).

use crate::key::{ImageKey, KeyError};
use crate::options::{self, OptionError, RequestOptions};

/// Path prefix of the query form.
pub const IMG_PREFIX: &str = "/img/";
/// Path prefix of Cloudflare's form.
pub const CF_PREFIX: &str = "/cdn-cgi/image/";

/// Which URL form a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlForm {
    /// `/img/{key}?{options}`.
    Query,
    /// `/cdn-cgi/image/{options}/{key}`.
    Cloudflare,
}

/// A parsed image URL.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedUrl {
    /// The object to transform.
    pub key: ImageKey,
    /// What the URL asked for.
    pub options: RequestOptions,
    /// The form it was written in.
    pub form: UrlForm,
}

/// Why an image URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// The path is not an image URL at all.
    #[error("not an image path")]
    NotImagePath,
    /// The key is unsafe or malformed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// An option is malformed or out of range.
    #[error(transparent)]
    Option(#[from] OptionError),
}

/// Parses a raw (still percent-encoded) path and query string. `max_dimension` bounds `w`/`h`.
pub fn parse_path(
    path: &str,
    query: Option<&str>,
    max_dimension: u32,
) -> Result<ParsedUrl, UrlError> {
    if let Some(rest) = path.strip_prefix(IMG_PREFIX) {
        let key = ImageKey::from_url_path(rest)?;
        let options = options::parse_pairs(query.unwrap_or(""), '&', max_dimension)?;
        return Ok(ParsedUrl {
            key,
            options,
            form: UrlForm::Query,
        });
    }
    if let Some(rest) = path.strip_prefix(CF_PREFIX) {
        let (opts, key) = rest.split_once('/').ok_or(KeyError::Empty)?;
        let opts = percent_encoding::percent_decode_str(opts)
            .decode_utf8()
            .map_err(|_| OptionError::new("options", "not valid UTF-8"))?;
        let mut options = options::parse_pairs(&opts, ',', max_dimension)?;
        // Cloudflare's form may also carry the signature in the query string.
        if let Some(q) = query {
            let extra = options::parse_pairs(q, '&', max_dimension)?;
            if let Some(sig) = extra.signature {
                options.set("sig", &sig, max_dimension)?;
            }
            if let Some(exp) = extra.expires {
                options.set("exp", &exp.to_string(), max_dimension)?;
            }
        }
        let key = ImageKey::from_url_path(key)?;
        return Ok(ParsedUrl {
            key,
            options,
            form: UrlForm::Cloudflare,
        });
    }
    Err(UrlError::NotImagePath)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{Fit, FormatChoice, OutputFormat};

    #[test]
    fn query_form() {
        let p = parse_path("/img/a/b/c.jpg", Some("w=400&fit=cover"), 8192).unwrap();
        assert_eq!(p.key.as_str(), "a/b/c.jpg");
        assert_eq!(p.options.width, Some(400));
        assert_eq!(p.options.fit, Some(Fit::Cover));
        assert_eq!(p.form, UrlForm::Query);
        let bare = parse_path("/img/x.png", None, 8192).unwrap();
        assert_eq!(bare.options, RequestOptions::default());
    }

    #[test]
    fn cloudflare_form_matches_query_form() {
        let cf = parse_path(
            "/cdn-cgi/image/w=400,h=300,fit=cover,f=auto/photos/cat.jpg",
            None,
            8192,
        )
        .unwrap();
        let q = parse_path(
            "/img/photos/cat.jpg",
            Some("fmt=auto&fit=cover&h=300&w=400"),
            8192,
        )
        .unwrap();
        assert_eq!(cf.key, q.key);
        assert_eq!(cf.options, q.options);
        assert_eq!(cf.options.format, Some(FormatChoice::Auto));
        let cf2 = parse_path("/cdn-cgi/image/format=webp,quality=50/x.jpg", None, 8192).unwrap();
        assert_eq!(
            cf2.options.format,
            Some(FormatChoice::Fixed(OutputFormat::Webp))
        );
        assert_eq!(cf2.options.quality, Some(50));
    }

    #[test]
    fn hostile_paths() {
        for (p, q) in [
            ("/img/", None),
            ("/img//etc/passwd", None),
            ("/img/../secret", None),
            ("/img/a/%2e%2e/%2e%2e/etc/passwd", None),
            ("/img/a%00.jpg", None),
            ("/cdn-cgi/image/w=10/https://evil.example/x.jpg", None),
            ("/cdn-cgi/image/w=10", None),
            ("/cdn-cgi/image/w=10/../x.jpg", None),
        ] {
            assert!(parse_path(p, q, 8192).is_err(), "accepted {p}");
        }
        assert_eq!(
            parse_path("/other/x.jpg", None, 8192),
            Err(UrlError::NotImagePath)
        );
    }

    #[test]
    fn cloudflare_bad_option_is_named() {
        match parse_path("/cdn-cgi/image/w=10,fit=zoom/x.jpg", None, 8192) {
            Err(UrlError::Option(e)) => assert_eq!(e.option, "fit"),
            other => panic!("{other:?}"),
        }
    }
}
