//! The one table of image formats: how each is recognised (libvips' loader, magic bytes,
//! MIME type), what it is called, which extension it is stored under, and which loaders may
//! ever run on untrusted bytes.

use flexphoto_url::OutputFormat;

/// A still or animated image format FlexPhotoDB can be asked to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageFormat {
    /// JPEG.
    Jpeg,
    /// PNG (and APNG's first frame).
    Png,
    /// WebP, still or animated.
    Webp,
    /// GIF, still or animated.
    Gif,
    /// AVIF (AV1 in HEIF).
    Avif,
    /// HEIC/HEIF (HEVC in HEIF).
    Heif,
    /// TIFF.
    Tiff,
    /// JPEG XL.
    Jxl,
}

/// Every format, in table order.
pub const ALL: [ImageFormat; 8] = [
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::Webp,
    ImageFormat::Gif,
    ImageFormat::Avif,
    ImageFormat::Heif,
    ImageFormat::Tiff,
    ImageFormat::Jxl,
];

impl ImageFormat {
    /// The short name used in config, logs and the API (`jpeg`, `png`, …).
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Png => "png",
            ImageFormat::Webp => "webp",
            ImageFormat::Gif => "gif",
            ImageFormat::Avif => "avif",
            ImageFormat::Heif => "heif",
            ImageFormat::Tiff => "tiff",
            ImageFormat::Jxl => "jxl",
        }
    }

    /// The MIME type.
    pub fn mime(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Png => "image/png",
            ImageFormat::Webp => "image/webp",
            ImageFormat::Gif => "image/gif",
            ImageFormat::Avif => "image/avif",
            ImageFormat::Heif => "image/heif",
            ImageFormat::Tiff => "image/tiff",
            ImageFormat::Jxl => "image/jxl",
        }
    }

    /// The file extension objects of this format are stored under.
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpg",
            ImageFormat::Png => "png",
            ImageFormat::Webp => "webp",
            ImageFormat::Gif => "gif",
            ImageFormat::Avif => "avif",
            ImageFormat::Heif => "heic",
            ImageFormat::Tiff => "tif",
            ImageFormat::Jxl => "jxl",
        }
    }

    /// libvips' loader family for this format (`jpegload`, `heifload`, …).
    pub fn loader(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpegload",
            ImageFormat::Png => "pngload",
            ImageFormat::Webp => "webpload",
            ImageFormat::Gif => "gifload",
            ImageFormat::Avif | ImageFormat::Heif => "heifload",
            ImageFormat::Tiff => "tiffload",
            ImageFormat::Jxl => "jxlload",
        }
    }

    /// Parses a name as [`ImageFormat::name`] or [`ImageFormat::extension`] writes it.
    pub fn from_name(name: &str) -> Option<Self> {
        let n = name.trim().to_ascii_lowercase();
        ALL.into_iter()
            .find(|f| f.name() == n || f.extension() == n)
            .or(match n.as_str() {
                "jpe" => Some(ImageFormat::Jpeg),
                "tiff" => Some(ImageFormat::Tiff),
                "hif" | "heics" => Some(ImageFormat::Heif),
                _ => None,
            })
    }

    /// The format of a MIME type (parameters ignored; `image/heic` is HEIF).
    pub fn from_mime(mime: &str) -> Option<Self> {
        let m = mime
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match m.as_str() {
            "image/jpg" | "image/pjpeg" => return Some(ImageFormat::Jpeg),
            "image/heic" | "image/heic-sequence" | "image/heif-sequence" => {
                return Some(ImageFormat::Heif)
            }
            _ => {}
        }
        ALL.into_iter().find(|f| f.mime() == m)
    }

    /// The format libvips' `loader` (e.g. `heifload_buffer`) reads, told apart by the file's
    /// first bytes where one loader reads several formats (AVIF and HEIC).
    pub fn from_loader(loader: &str, head: &[u8]) -> Option<Self> {
        let family = loader
            .trim_end_matches("_buffer")
            .trim_end_matches("_source");
        Some(match family {
            "jpegload" => ImageFormat::Jpeg,
            "pngload" => ImageFormat::Png,
            "webpload" => ImageFormat::Webp,
            "gifload" => ImageFormat::Gif,
            "tiffload" => ImageFormat::Tiff,
            "jxlload" => ImageFormat::Jxl,
            "heifload" if is_avif(head) => ImageFormat::Avif,
            "heifload" => ImageFormat::Heif,
            _ => return None,
        })
    }

    /// The format the first bytes of a file announce, without asking libvips.
    pub fn sniff(head: &[u8]) -> Option<Self> {
        if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(ImageFormat::Jpeg)
        } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageFormat::Png)
        } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
            Some(ImageFormat::Gif)
        } else if head.len() >= 12 && &head[0..4] == b"RIFF" && &head[8..12] == b"WEBP" {
            Some(ImageFormat::Webp)
        } else if head.starts_with(b"II*\0") || head.starts_with(b"MM\0*") {
            Some(ImageFormat::Tiff)
        } else if head.starts_with(&[0xFF, 0x0A]) || head.starts_with(b"\0\0\0\x0cJXL \r\n\x87\n") {
            Some(ImageFormat::Jxl)
        } else if head.len() >= 12 && &head[4..8] == b"ftyp" {
            if is_avif(head) {
                Some(ImageFormat::Avif)
            } else {
                match &head[8..12] {
                    b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" | b"mif1"
                    | b"msf1" => Some(ImageFormat::Heif),
                    _ => None,
                }
            }
        } else {
            None
        }
    }

    /// The web format that can carry this one unchanged, if browsers show it.
    pub fn web_output(self) -> Option<OutputFormat> {
        match self {
            ImageFormat::Jpeg => Some(OutputFormat::Jpeg),
            ImageFormat::Png => Some(OutputFormat::Png),
            ImageFormat::Webp => Some(OutputFormat::Webp),
            ImageFormat::Gif => Some(OutputFormat::Gif),
            ImageFormat::Avif => Some(OutputFormat::Avif),
            _ => None,
        }
    }

    /// Whether the format can hold several frames that libvips loads with `n=-1`.
    pub fn animates(self) -> bool {
        matches!(self, ImageFormat::Gif | ImageFormat::Webp)
    }
}

/// A set of formats: the loaders that may ever run on untrusted bytes. Checked against the
/// loader libvips names from a file's first bytes, before any header is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FormatSet(u16);

impl FormatSet {
    /// No format.
    pub const NONE: FormatSet = FormatSet(0);

    /// The web formats and the camera formats FlexPhotoDB serves by default: JPEG, PNG,
    /// WebP, GIF, AVIF, HEIF and TIFF (JPEG XL is opt-in).
    pub fn default_allowed() -> FormatSet {
        [
            ImageFormat::Jpeg,
            ImageFormat::Png,
            ImageFormat::Webp,
            ImageFormat::Gif,
            ImageFormat::Avif,
            ImageFormat::Heif,
            ImageFormat::Tiff,
        ]
        .into_iter()
        .collect()
    }

    /// Whether `f` is in the set.
    pub fn contains(self, f: ImageFormat) -> bool {
        self.0 & (1 << f as u16) != 0
    }

    /// The set with `f` added.
    pub fn with(self, f: ImageFormat) -> FormatSet {
        FormatSet(self.0 | (1 << f as u16))
    }

    /// The formats in table order.
    pub fn iter(self) -> impl Iterator<Item = ImageFormat> {
        ALL.into_iter().filter(move |f| self.contains(*f))
    }

    /// The names, comma-separated, for messages.
    pub fn names(self) -> String {
        self.iter()
            .map(ImageFormat::name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Default for FormatSet {
    fn default() -> Self {
        FormatSet::default_allowed()
    }
}

impl FromIterator<ImageFormat> for FormatSet {
    fn from_iter<I: IntoIterator<Item = ImageFormat>>(iter: I) -> Self {
        iter.into_iter().fold(FormatSet::NONE, FormatSet::with)
    }
}

/// The format of an encoded output, in the same table.
pub fn of_output(f: OutputFormat) -> ImageFormat {
    match f {
        OutputFormat::Jpeg => ImageFormat::Jpeg,
        OutputFormat::Png => ImageFormat::Png,
        OutputFormat::Webp => ImageFormat::Webp,
        OutputFormat::Gif => ImageFormat::Gif,
        OutputFormat::Avif => ImageFormat::Avif,
    }
}

/// Whether an ISO-BMFF file's major or compatible brands say AVIF.
fn is_avif(head: &[u8]) -> bool {
    if head.len() < 12 || &head[4..8] != b"ftyp" {
        return false;
    }
    if matches!(&head[8..12], b"avif" | b"avis") {
        return true;
    }
    let box_len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let end = box_len.min(head.len());
    (16..end)
        .step_by(4)
        .filter_map(|i| head.get(i..i + 4))
        .any(|b| b == b"avif" || b == b"avis")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_magic() {
        assert_eq!(
            ImageFormat::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some(ImageFormat::Jpeg)
        );
        assert_eq!(
            ImageFormat::sniff(b"\x89PNG\r\n\x1a\nxxxx"),
            Some(ImageFormat::Png)
        );
        assert_eq!(
            ImageFormat::sniff(b"\0\0\0\x1cftypheic"),
            Some(ImageFormat::Heif)
        );
        assert_eq!(
            ImageFormat::sniff(b"\0\0\0\x1cftypavif"),
            Some(ImageFormat::Avif)
        );
        assert_eq!(
            ImageFormat::sniff(b"\0\0\0\x1cftypmif1\0\0\0\0mif1avif"),
            Some(ImageFormat::Avif)
        );
        assert_eq!(ImageFormat::sniff(b"hello world"), None);
        assert_eq!(ImageFormat::sniff(b""), None);
    }

    #[test]
    fn format_sets() {
        let d = FormatSet::default();
        assert!(d.contains(ImageFormat::Jpeg) && d.contains(ImageFormat::Heif));
        assert!(!d.contains(ImageFormat::Jxl));
        let s: FormatSet = [ImageFormat::Png].into_iter().collect();
        assert_eq!(s.names(), "png");
        assert!(!FormatSet::NONE.contains(ImageFormat::Png));
    }

    #[test]
    fn loaders_mimes_and_names_agree() {
        for f in ALL {
            assert_eq!(ImageFormat::from_mime(f.mime()), Some(f));
            assert_eq!(ImageFormat::from_name(f.name()), Some(f));
            assert_eq!(ImageFormat::from_name(f.extension()), Some(f));
        }
        assert_eq!(
            ImageFormat::from_loader("heifload_buffer", b"\0\0\0\x1cftypavif"),
            Some(ImageFormat::Avif)
        );
        assert_eq!(
            ImageFormat::from_loader("heifload_buffer", b"\0\0\0\x1cftypheic"),
            Some(ImageFormat::Heif)
        );
        assert_eq!(ImageFormat::from_loader("svgload_buffer", b"<svg"), None);
        assert_eq!(
            ImageFormat::from_mime("image/heic"),
            Some(ImageFormat::Heif)
        );
        assert_eq!(
            ImageFormat::from_mime("IMAGE/JPEG; q=1"),
            Some(ImageFormat::Jpeg)
        );
    }
}
