//! Field types, the built-in descriptive fields every collection has, and typed values.
//!
//! Values are JSON in a canonical shape per type: text, URL, enum and term values are
//! strings; numbers are numbers; dates are `YYYY-MM-DD` or an RFC 3339 UTC time; lists are
//! arrays of strings. [`coerce`] turns what arrives (JSON from the API, text from a form, an
//! XMP or IPTC property, a CSV cell) into that shape, or says why it cannot.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The type of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// Free text.
    Text,
    /// A number.
    Number,
    /// A date (`YYYY-MM-DD`) or a time (RFC 3339).
    Date,
    /// One of the schema's allowed values.
    Enum,
    /// A list of text values.
    List,
    /// A term of the collection's vocabulary (synonyms are normalised to it).
    Term,
    /// An absolute http(s) URL.
    Url,
}

impl FieldType {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Number => "number",
            FieldType::Date => "date",
            FieldType::Enum => "enum",
            FieldType::List => "list",
            FieldType::Term => "term",
            FieldType::Url => "url",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "text" => FieldType::Text,
            "number" => FieldType::Number,
            "date" => FieldType::Date,
            "enum" => FieldType::Enum,
            "list" => FieldType::List,
            "term" => FieldType::Term,
            "url" => FieldType::Url,
            _ => return None,
        })
    }

    /// Whether values sort and compare as numbers (numbers, and dates as epoch seconds).
    pub fn is_numeric(self) -> bool {
        matches!(self, FieldType::Number | FieldType::Date)
    }
}

/// Where a built-in field's value is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// `images.caption`.
    Caption,
    /// `images.tags`.
    Keywords,
    /// The image's catalog record.
    Catalog,
}

/// A descriptive field every collection has, whatever its schema says.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// Field name.
    pub name: &'static str,
    /// Its type.
    pub kind: FieldType,
    /// Where it is kept.
    pub storage: Storage,
    /// XMP properties it is read from, in preference order.
    pub xmp: &'static [&'static str],
    /// IPTC IIM datasets it is read from (`record:dataset`), in preference order.
    pub iptc: &'static [&'static str],
    /// Whether it is one of the rights fields.
    pub rights: bool,
}

/// The built-in descriptive fields. A schema may list one of them to give it rules (its type
/// stays, except that a text field may become an `enum` or `url`).
pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "title",
        kind: FieldType::Text,
        storage: Storage::Catalog,
        xmp: &["dc:title", "photoshop:Headline"],
        iptc: &["2:05", "2:105"],
        rights: false,
    },
    Builtin {
        name: "caption",
        kind: FieldType::Text,
        storage: Storage::Caption,
        xmp: &["dc:description"],
        iptc: &["2:120"],
        rights: false,
    },
    Builtin {
        name: "keywords",
        kind: FieldType::List,
        storage: Storage::Keywords,
        xmp: &["dc:subject"],
        iptc: &["2:25"],
        rights: false,
    },
    Builtin {
        name: "credit",
        kind: FieldType::Text,
        storage: Storage::Catalog,
        xmp: &["photoshop:Credit"],
        iptc: &["2:110"],
        rights: false,
    },
    Builtin {
        name: "creator",
        kind: FieldType::Text,
        storage: Storage::Catalog,
        xmp: &["dc:creator"],
        iptc: &["2:80"],
        rights: false,
    },
    Builtin {
        name: "rights_holder",
        kind: FieldType::Text,
        storage: Storage::Catalog,
        xmp: &["plus:CopyrightOwnerName", "xmpRights:Owner", "dc:rights"],
        iptc: &["2:116"],
        rights: true,
    },
    Builtin {
        name: "licence",
        kind: FieldType::Text,
        storage: Storage::Catalog,
        xmp: &["xmpRights:WebStatement", "cc:license"],
        iptc: &[],
        rights: true,
    },
    Builtin {
        name: "usage_restrictions",
        kind: FieldType::Text,
        storage: Storage::Catalog,
        xmp: &["xmpRights:UsageTerms"],
        iptc: &["2:40"],
        rights: true,
    },
    Builtin {
        name: "rights_valid_from",
        kind: FieldType::Date,
        storage: Storage::Catalog,
        xmp: &["plus:LicenseStartDate"],
        iptc: &[],
        rights: true,
    },
    Builtin {
        name: "rights_valid_until",
        kind: FieldType::Date,
        storage: Storage::Catalog,
        xmp: &["plus:LicenseEndDate"],
        iptc: &["2:37"],
        rights: true,
    },
];

/// The built-in field called `name`.
pub fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// Longest text value kept (characters), whatever the schema says.
pub const MAX_TEXT: usize = 10_000;
/// Most items a list value may have.
pub const MAX_ITEMS: usize = 500;

/// Checks a field name: a lower-case letter, then letters, digits or `_`, at most 64.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "field name {name:?} must be a lower-case letter followed by letters, digits or _ (at most 64)"
        ))
    }
}

/// Why a value does not have the field's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeError(pub String);

/// A date or time in its canonical text form, and as epoch seconds.
pub fn parse_date(s: &str) -> Option<(String, f64)> {
    let s = s.trim();
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let t = d.and_hms_opt(0, 0, 0)?.and_utc();
        return Some((d.format("%Y-%m-%d").to_string(), t.timestamp() as f64));
    }
    // IPTC dates: CCYYMMDD.
    if s.len() == 8 && s.chars().all(|c| c.is_ascii_digit()) {
        if let Ok(d) = NaiveDate::parse_from_str(s, "%Y%m%d") {
            let t = d.and_hms_opt(0, 0, 0)?.and_utc();
            return Some((d.format("%Y-%m-%d").to_string(), t.timestamp() as f64));
        }
    }
    let t: DateTime<Utc> = if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        t.with_timezone(&Utc)
    } else if let Ok(n) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S") {
        // XMP writes local times without an offset: taken as UTC.
        n.and_utc()
    } else if let Ok(n) = NaiveDateTime::parse_from_str(s, "%Y:%m:%d %H:%M:%S") {
        n.and_utc()
    } else {
        return None;
    };
    let micros = t.timestamp_micros();
    Some((
        t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        micros as f64 / 1e6,
    ))
}

/// A date value as a UTC time (a bare date is its midnight UTC).
pub fn date_time(v: &Value) -> Option<DateTime<Utc>> {
    let (_, secs) = parse_date(v.as_str()?)?;
    DateTime::from_timestamp_micros((secs * 1e6).round() as i64)
}

/// Whether `s` is an absolute http(s) URL with a host.
pub fn is_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    match rest {
        Some(r) => {
            let host = r.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

/// Splits list text (`a, b; c`) into items.
pub fn split_list(s: &str) -> Vec<String> {
    s.split([',', ';', '\n'])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Canonical number text: integers without a fraction.
pub fn number_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// Turns an incoming value into the canonical shape of `kind`, or says why not. `null` and
/// empty text mean "no value" (`Ok(None)`).
pub fn coerce(kind: FieldType, v: &Value) -> Result<Option<Value>, TypeError> {
    let text_of = |v: &Value| -> Option<String> {
        match v {
            Value::String(s) => Some(s.trim().to_owned()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    };
    if v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty()) {
        return Ok(None);
    }
    match kind {
        FieldType::Text | FieldType::Enum | FieldType::Term | FieldType::Url => {
            let s = text_of(v).ok_or_else(|| {
                TypeError(format!("must be a {}, not {}", kind.as_str(), kind_of(v)))
            })?;
            if s.chars().count() > MAX_TEXT {
                return Err(TypeError(format!("must be at most {MAX_TEXT} characters")));
            }
            if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
                return Err(TypeError("must not contain control characters".into()));
            }
            if kind == FieldType::Url && !is_url(&s) {
                return Err(TypeError(format!(
                    "must be an absolute http:// or https:// URL, not {s:?}"
                )));
            }
            Ok(Some(Value::String(s)))
        }
        FieldType::Number => {
            let n = match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            }
            .filter(|n| n.is_finite())
            .ok_or_else(|| TypeError(format!("must be a number, not {}", short(v))))?;
            Ok(Some(serde_json::json!(n)))
        }
        FieldType::Date => {
            let s = text_of(v).ok_or_else(|| TypeError("must be a date".into()))?;
            let (canon, _) = parse_date(&s).ok_or_else(|| {
                TypeError(format!(
                    "must be a date (YYYY-MM-DD) or an RFC 3339 time, not {s:?}"
                ))
            })?;
            Ok(Some(Value::String(canon)))
        }
        FieldType::List => {
            let items: Vec<String> = match v {
                Value::Array(a) => {
                    let mut out = Vec::with_capacity(a.len());
                    for it in a {
                        let s = text_of(it)
                            .ok_or_else(|| TypeError("list items must be text".into()))?;
                        if !s.is_empty() {
                            out.push(s);
                        }
                    }
                    out
                }
                other => split_list(
                    &text_of(other).ok_or_else(|| TypeError("must be a list of text".into()))?,
                ),
            };
            if items.len() > MAX_ITEMS {
                return Err(TypeError(format!("must have at most {MAX_ITEMS} items")));
            }
            if items.iter().any(|i| i.chars().count() > MAX_TEXT) {
                return Err(TypeError(format!(
                    "items must be at most {MAX_TEXT} characters"
                )));
            }
            let mut dedup: Vec<String> = Vec::with_capacity(items.len());
            for i in items {
                if !dedup.contains(&i) {
                    dedup.push(i);
                }
            }
            if dedup.is_empty() {
                return Ok(None);
            }
            Ok(Some(Value::Array(
                dedup.into_iter().map(Value::String).collect(),
            )))
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A value shortened for messages.
pub fn short(v: &Value) -> String {
    let s = match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

/// The rows a value becomes in the field index: `(text, number)` per item.
pub fn index_rows(kind: FieldType, v: &Value) -> Vec<(String, Option<f64>)> {
    match (kind, v) {
        (_, Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(|s| (s.to_owned(), None)))
            .collect(),
        (FieldType::Number, Value::Number(n)) => n
            .as_f64()
            .map(|f| vec![(number_text(f), Some(f))])
            .unwrap_or_default(),
        (FieldType::Date, Value::String(s)) => parse_date(s)
            .map(|(c, secs)| vec![(c, Some(secs))])
            .unwrap_or_default(),
        (_, Value::String(s)) => vec![(s.clone(), None)],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn coerces_each_type() {
        assert_eq!(
            coerce(FieldType::Number, &json!("4.50")).unwrap(),
            Some(json!(4.5))
        );
        assert!(coerce(FieldType::Number, &json!("four")).is_err());
        assert_eq!(
            coerce(FieldType::Date, &json!("20260131")).unwrap(),
            Some(json!("2026-01-31"))
        );
        assert_eq!(
            coerce(FieldType::Date, &json!("2026-01-31T10:00:00+02:00")).unwrap(),
            Some(json!("2026-01-31T08:00:00Z"))
        );
        assert!(coerce(FieldType::Date, &json!("yesterday")).is_err());
        assert_eq!(
            coerce(FieldType::List, &json!("a, b; a")).unwrap(),
            Some(json!(["a", "b"]))
        );
        assert!(coerce(FieldType::Url, &json!("ftp://x")).is_err());
        assert!(coerce(FieldType::Url, &json!("https://example.com/a")).is_ok());
        assert_eq!(coerce(FieldType::Text, &json!("  ")).unwrap(), None);
        assert_eq!(coerce(FieldType::Text, &Value::Null).unwrap(), None);
    }

    #[test]
    fn index_rows_keep_numbers_and_dates_sortable() {
        assert_eq!(
            index_rows(FieldType::Number, &json!(3.0)),
            vec![("3".to_owned(), Some(3.0))]
        );
        let d = index_rows(FieldType::Date, &json!("1970-01-02"));
        assert_eq!(d, vec![("1970-01-02".to_owned(), Some(86400.0))]);
        assert_eq!(index_rows(FieldType::List, &json!(["x", "y"])).len(), 2);
        assert!(check_name("shot_count").is_ok());
        assert!(check_name("Shot").is_err() && check_name("9a").is_err());
    }
}
