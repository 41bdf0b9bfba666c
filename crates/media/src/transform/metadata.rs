//! Metadata policy for outputs: which fields are stripped, and the minimal EXIF block that
//! `meta=copyright` keeps.

/// Metadata fields libvips would write into an output, by name or prefix.
pub fn is_output_metadata(name: &str) -> bool {
    name.starts_with("exif-")
        || name.starts_with("png-comment-")
        || name.starts_with("heif-")
        || matches!(
            name,
            "xmp-data"
                | "iptc-data"
                | "icc-profile-data"
                | "photoshop-data"
                | "gif-comment"
                | "jpeg-comment"
        )
}

/// The value part of a libvips EXIF string field, which reads like
/// `Jane Doe (Jane Doe, ASCII, 9 components, 9 bytes)`.
pub fn exif_field_value(field: &str) -> Option<String> {
    let v = match field.rfind(" (") {
        Some(i) if field.ends_with(')') => &field[..i],
        _ => field,
    };
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_owned())
}

/// The Artist and Copyright notices of a source, which `meta=copyright` keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyrightNotice {
    /// EXIF Artist.
    pub artist: Option<String>,
    /// EXIF Copyright.
    pub copyright: Option<String>,
}

impl CopyrightNotice {
    /// The notices `img` carries in its EXIF.
    pub fn of(img: &crate::vips::Image) -> CopyrightNotice {
        let field = |name: &str| img.string_field(name).and_then(|s| exif_field_value(&s));
        CopyrightNotice {
            artist: field("exif-ifd0-Artist"),
            copyright: field("exif-ifd0-Copyright"),
        }
    }

    /// The EXIF block holding just these notices; `None` when there are none.
    pub fn exif_block(&self) -> Option<Vec<u8>> {
        copyright_exif(self.artist.as_deref(), self.copyright.as_deref())
    }
}

/// A little-endian TIFF/EXIF block holding only IFD0's Artist (0x013B) and Copyright (0x8298).
pub fn copyright_exif(artist: Option<&str>, copyright: Option<&str>) -> Option<Vec<u8>> {
    let mut entries: Vec<(u16, Vec<u8>)> = Vec::new();
    for (tag, text) in [(0x013Bu16, artist), (0x8298u16, copyright)] {
        if let Some(t) = text {
            let mut v: Vec<u8> = t.bytes().filter(|b| *b != 0).take(4096).collect();
            v.push(0);
            entries.push((tag, v));
        }
    }
    if entries.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    out.extend_from_slice(b"Exif\0\0");
    let tiff_start = out.len();
    out.extend_from_slice(b"II*\0");
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    let ifd_size = 2 + entries.len() * 12 + 4;
    let mut data_off = 8 + ifd_size;
    let mut data = Vec::new();
    for (tag, value) in &entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes()); // ASCII
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        if value.len() <= 4 {
            let mut inline = [0u8; 4];
            inline[..value.len()].copy_from_slice(value);
            out.extend_from_slice(&inline);
        } else {
            out.extend_from_slice(&(data_off as u32).to_le_bytes());
            data.extend_from_slice(value);
            data_off += value.len();
        }
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&data);
    debug_assert!(out.len() > tiff_start);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libvips_field_text() {
        assert_eq!(
            exif_field_value("Jane Doe (Jane Doe, ASCII, 9 components, 9 bytes)").as_deref(),
            Some("Jane Doe")
        );
        assert_eq!(exif_field_value("plain").as_deref(), Some("plain"));
        assert_eq!(exif_field_value(" ( )"), None);
    }

    #[test]
    fn builds_a_block_with_both_tags() {
        let b = copyright_exif(Some("Ann"), Some("(c) 2026 Ann Example")).unwrap();
        assert!(b.starts_with(b"Exif\0\0II*\0"));
        assert!(b.windows(20).any(|w| w == b"(c) 2026 Ann Example"));
        assert_eq!(copyright_exif(None, None), None);
        assert!(is_output_metadata("exif-ifd3-GPSLatitude"));
        assert!(is_output_metadata("xmp-data"));
        assert!(!is_output_metadata("page-height"));
    }
}
