//! Object keys taken from URLs: parsed once, trusted afterwards.

use std::fmt;

use percent_encoding::percent_decode_str;

/// Longest key accepted, in bytes after percent-decoding.
pub const MAX_KEY_BYTES: usize = 1024;

/// An object key that is safe to hand to any origin: relative, no `..`, no control characters,
/// no empty or `.` segments, no backslashes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageKey(String);

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Nothing after the prefix.
    #[error("the image key is empty")]
    Empty,
    /// Longer than [`MAX_KEY_BYTES`].
    #[error("the image key is longer than {MAX_KEY_BYTES} bytes")]
    TooLong,
    /// Percent-decoding produced bytes that are not UTF-8.
    #[error("the image key is not valid UTF-8 after percent-decoding")]
    NotUtf8,
    /// A path trick: the text says which.
    #[error("the image key {0}")]
    Unsafe(&'static str),
}

impl ImageKey {
    /// Parses a key as it appears in a URL path (percent-encoded).
    pub fn from_url_path(raw: &str) -> Result<Self, KeyError> {
        let decoded = percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| KeyError::NotUtf8)?;
        Self::parse(&decoded)
    }

    /// Parses an already-decoded key.
    pub fn parse(key: &str) -> Result<Self, KeyError> {
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong);
        }
        if key.starts_with('/') {
            return Err(KeyError::Unsafe("must not start with '/'"));
        }
        if key.contains("..") {
            return Err(KeyError::Unsafe("must not contain '..'"));
        }
        if key.contains('\\') {
            return Err(KeyError::Unsafe("must not contain a backslash"));
        }
        if key.chars().any(|c| c.is_control()) {
            return Err(KeyError::Unsafe(
                "must not contain NUL or other control characters",
            ));
        }
        if key.split('/').any(|seg| seg.is_empty() || seg == ".") {
            return Err(KeyError::Unsafe("must not contain empty or '.' segments"));
        }
        if key.len() >= 2 && key.as_bytes()[1] == b':' && key.as_bytes()[0].is_ascii_alphabetic() {
            return Err(KeyError::Unsafe("must not look like a drive path"));
        }
        Ok(Self(key.to_owned()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment's extension, lower-cased, if any.
    pub fn extension(&self) -> Option<String> {
        let name = self.0.rsplit('/').next()?;
        let (_, ext) = name.rsplit_once('.')?;
        Some(ext.to_ascii_lowercase())
    }
}

impl fmt::Display for ImageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_nested_keys_and_decodes() {
        let k = ImageKey::from_url_path("a/b%20c/d.jpg").unwrap();
        assert_eq!(k.as_str(), "a/b c/d.jpg");
        assert_eq!(k.extension().as_deref(), Some("jpg"));
        assert_eq!(
            ImageKey::parse("ünï/çødé.JPG")
                .unwrap()
                .extension()
                .as_deref(),
            Some("jpg")
        );
    }

    #[test]
    fn rejects_path_tricks() {
        for bad in [
            "",
            "/etc/passwd",
            "%2Fetc/passwd",
            "../x.jpg",
            "a/../../x.jpg",
            "a/%2e%2e/x.jpg",
            "a%2F..%2Fb",
            "a/b..c",
            "a%00b.jpg",
            "a\\b.jpg",
            "a%5Cb.jpg",
            "a//b.jpg",
            "a/./b.jpg",
            "./b.jpg",
            "a/",
            "C:/win.ini",
            "a%0Ab",
            "%ff%fe",
        ] {
            assert!(ImageKey::from_url_path(bad).is_err(), "accepted {bad:?}");
        }
        assert_eq!(
            ImageKey::from_url_path(&"a".repeat(MAX_KEY_BYTES + 1)),
            Err(KeyError::TooLong)
        );
    }
}
