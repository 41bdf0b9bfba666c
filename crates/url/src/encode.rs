//! Writing keys back into URL paths.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::key::ImageKey;

/// Everything but RFC 3986's unreserved characters is escaped within a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The key as it goes into a URL path: each segment percent-encoded, `/` kept between them.
pub fn key_path(key: &ImageKey) -> String {
    key.as_str()
        .split('/')
        .map(|seg| utf8_percent_encode(seg, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// The query-form path of `key` with `query` options (`/img/{key}?{query}`).
pub fn img_path(key: &ImageKey, query: &str) -> String {
    if query.is_empty() {
        format!("{}{}", crate::IMG_PREFIX, key_path(key))
    } else {
        format!("{}{}?{query}", crate::IMG_PREFIX, key_path(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_paths() {
        for k in [
            "a/b c/d.jpg",
            "ünï/çødé.JPG",
            "x%y&z?.png",
            "2026/01/02/id-original.jpg",
        ] {
            let key = ImageKey::parse(k).unwrap();
            let path = img_path(&key, "w=10");
            let (p, q) = path.split_once('?').unwrap();
            let parsed = crate::parse_path(p, Some(q), 100).unwrap();
            assert_eq!(parsed.key, key, "{path}");
        }
        assert_eq!(key_path(&ImageKey::parse("a b/c").unwrap()), "a%20b/c");
    }
}
