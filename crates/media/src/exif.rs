//! EXIF: the typed fields the catalogue keeps as columns, and every field as JSON. Broken or
//! missing EXIF gives empty facts, never an error.

use std::io::Cursor;

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone, Utc};
use exif::{In, Tag, Value};

/// The typed EXIF fields the schema keeps as columns, plus everything as JSON.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExifFacts {
    /// Camera make.
    pub make: Option<String>,
    /// Camera model.
    pub model: Option<String>,
    /// Lens model.
    pub lens: Option<String>,
    /// When the photo was taken (UTC; local time is taken as UTC when no offset is recorded).
    pub taken_at: Option<DateTime<Utc>>,
    /// ISO sensitivity.
    pub iso: Option<i32>,
    /// Exposure time, seconds.
    pub exposure_time: Option<f64>,
    /// Aperture.
    pub f_number: Option<f64>,
    /// Focal length, mm.
    pub focal_length: Option<f64>,
    /// Latitude, degrees north.
    pub gps_lat: Option<f64>,
    /// Longitude, degrees east.
    pub gps_lon: Option<f64>,
    /// Raw orientation tag.
    pub orientation: Option<i32>,
    /// Every EXIF field as `{"Tag": "display value"}` (large binary fields left out), plus the
    /// selected XMP properties under `"XMP"`.
    pub all: Option<serde_json::Value>,
}

fn ascii(v: &Value) -> Option<String> {
    if let Value::Ascii(parts) = v {
        let s = parts.first()?;
        let s = String::from_utf8_lossy(s)
            .trim_matches(|c: char| c == '\0' || c.is_whitespace())
            .to_owned();
        (!s.is_empty()).then_some(s)
    } else {
        None
    }
}

fn rational(v: &Value, i: usize) -> Option<f64> {
    let r = match v {
        Value::Rational(r) => r.get(i).map(|r| r.to_f64()),
        Value::SRational(r) => r.get(i).map(|r| r.to_f64()),
        _ => None,
    }?;
    r.is_finite().then_some(r)
}

fn gps_coord(exif: &exif::Exif, tag: Tag, ref_tag: Tag, neg: u8) -> Option<f64> {
    let f = exif.get_field(tag, In::PRIMARY)?;
    let (d, m, s) = (
        rational(&f.value, 0)?,
        rational(&f.value, 1).unwrap_or(0.0),
        rational(&f.value, 2).unwrap_or(0.0),
    );
    let mut deg = d + m / 60.0 + s / 3600.0;
    if let Some(r) = exif
        .get_field(ref_tag, In::PRIMARY)
        .and_then(|r| ascii(&r.value))
    {
        if r.as_bytes().first() == Some(&neg) {
            deg = -deg;
        }
    }
    deg.is_finite().then_some(deg)
}

fn taken_at(exif: &exif::Exif) -> Option<DateTime<Utc>> {
    let f = exif
        .get_field(Tag::DateTimeOriginal, In::PRIMARY)
        .or_else(|| exif.get_field(Tag::DateTime, In::PRIMARY))?;
    let Value::Ascii(parts) = &f.value else {
        return None;
    };
    let mut dt = exif::DateTime::from_ascii(parts.first()?).ok()?;
    if let Some(off) = exif.get_field(Tag::OffsetTimeOriginal, In::PRIMARY) {
        if let Value::Ascii(o) = &off.value {
            if let Some(o) = o.first() {
                let _ = dt.parse_offset(o);
            }
        }
    }
    let naive = NaiveDate::from_ymd_opt(dt.year.into(), dt.month.into(), dt.day.into())?
        .and_hms_opt(dt.hour.into(), dt.minute.into(), dt.second.into())?;
    let offset = FixedOffset::east_opt(i32::from(dt.offset.unwrap_or(0)) * 60)?;
    Some(
        offset
            .from_local_datetime(&naive)
            .single()?
            .with_timezone(&Utc),
    )
}

/// Reads EXIF from any container kamadak-exif knows (JPEG, HEIF, PNG, WebP, TIFF). Broken or
/// missing EXIF gives empty facts, never an error: metadata fails softly.
pub fn read_exif(source: &[u8]) -> ExifFacts {
    let mut reader = exif::Reader::new();
    reader.continue_on_error(true);
    let exif = match reader
        .read_from_container(&mut Cursor::new(source))
        .or_else(|e| e.distill_partial_result(|_| {}))
    {
        Ok(e) => e,
        Err(_) => return ExifFacts::default(),
    };
    let get = |t: Tag| exif.get_field(t, In::PRIMARY);
    let mut all = serde_json::Map::new();
    for f in exif.fields() {
        if f.ifd_num != In::PRIMARY || f.tag == Tag::MakerNote {
            continue;
        }
        if matches!(&f.value, Value::Undefined(b, _) | Value::Byte(b) if b.len() > 64) {
            continue;
        }
        let mut text = match &f.value {
            Value::Ascii(_) => ascii(&f.value).unwrap_or_default(),
            _ => f.display_value().with_unit(&exif).to_string(),
        };
        if text.len() > 512 {
            let mut cut = 512;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        all.insert(f.tag.to_string(), serde_json::Value::String(text));
    }
    let lat = gps_coord(&exif, Tag::GPSLatitude, Tag::GPSLatitudeRef, b'S');
    let lon = gps_coord(&exif, Tag::GPSLongitude, Tag::GPSLongitudeRef, b'W');
    let (gps_lat, gps_lon) = match (lat, lon) {
        (Some(a), Some(b)) if (-90.0..=90.0).contains(&a) && (-180.0..=180.0).contains(&b) => {
            (Some(a), Some(b))
        }
        _ => (None, None),
    };
    ExifFacts {
        make: get(Tag::Make).and_then(|f| ascii(&f.value)),
        model: get(Tag::Model).and_then(|f| ascii(&f.value)),
        lens: get(Tag::LensModel).and_then(|f| ascii(&f.value)),
        taken_at: taken_at(&exif),
        iso: get(Tag::PhotographicSensitivity)
            .and_then(|f| f.value.get_uint(0))
            .and_then(|v| i32::try_from(v).ok()),
        exposure_time: get(Tag::ExposureTime).and_then(|f| rational(&f.value, 0)),
        f_number: get(Tag::FNumber).and_then(|f| rational(&f.value, 0)),
        focal_length: get(Tag::FocalLength).and_then(|f| rational(&f.value, 0)),
        gps_lat,
        gps_lon,
        orientation: get(Tag::Orientation)
            .and_then(|f| f.value.get_uint(0))
            .and_then(|v| i32::try_from(v).ok()),
        all: (!all.is_empty()).then_some(serde_json::Value::Object(all)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_exif_is_empty() {
        assert_eq!(read_exif(b"not an image"), ExifFacts::default());
    }
}
