//! The option model: values a URL may carry, and the parser shared by both URL forms.
//!
//! [`RequestOptions`] holds what one URL said, each field `None` when absent. Both the query
//! form (`?w=400&fit=cover`) and Cloudflare's form (`w=400,fit=cover`) feed the same
//! [`RequestOptions::set`], so names, aliases and validation live in one place.

use std::fmt::{self, Write as _};

/// How the output box is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fit {
    /// Fit inside the box, never enlarging (the default).
    ScaleDown,
    /// Fit inside the box, enlarging when smaller (alias: `inside`).
    Contain,
    /// Fill the box exactly, cropping the excess by gravity; may enlarge.
    Cover,
    /// Stretch to the box, ignoring the aspect ratio (alias: Cloudflare's `squeeze`).
    Fill,
    /// Cover the box without cropping: the smallest size that contains it.
    Outside,
    /// Fit inside the box and pad the rest with the background colour.
    Pad,
    /// Like `cover`, but never enlarging.
    Crop,
}

impl Fit {
    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Fit::ScaleDown => "scale-down",
            Fit::Contain => "contain",
            Fit::Cover => "cover",
            Fit::Fill => "fill",
            Fit::Outside => "outside",
            Fit::Pad => "pad",
            Fit::Crop => "crop",
        }
    }

    fn parse(v: &str) -> Option<Self> {
        Some(match v {
            "scale-down" | "scaledown" => Fit::ScaleDown,
            "contain" | "inside" => Fit::Contain,
            "cover" => Fit::Cover,
            "fill" | "squeeze" => Fit::Fill,
            "outside" => Fit::Outside,
            "pad" => Fit::Pad,
            "crop" => Fit::Crop,
            _ => return None,
        })
    }

    /// Whether this fit crops, so that gravity matters.
    pub fn crops(self) -> bool {
        matches!(self, Fit::Cover | Fit::Crop)
    }
}

/// Which part of the image to keep when cropping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gravity {
    /// The middle (the default).
    Center,
    /// Top edge.
    North,
    /// Bottom edge.
    South,
    /// Right edge.
    East,
    /// Left edge.
    West,
    /// Top right.
    NorthEast,
    /// Top left.
    NorthWest,
    /// Bottom right.
    SouthEast,
    /// Bottom left.
    SouthWest,
    /// libvips' attention strategy: the most salient region.
    Smart,
    /// The region with the most entropy.
    Entropy,
    /// A focal point, in thousandths of the width and height from the top left.
    Focal {
        /// 0..=1000 across.
        x: u16,
        /// 0..=1000 down.
        y: u16,
    },
}

impl Gravity {
    fn parse(v: &str) -> Option<Self> {
        Some(match v {
            "center" | "centre" | "c" => Gravity::Center,
            "n" | "north" | "top" => Gravity::North,
            "s" | "south" | "bottom" => Gravity::South,
            "e" | "east" | "right" => Gravity::East,
            "w" | "west" | "left" => Gravity::West,
            "ne" => Gravity::NorthEast,
            "nw" => Gravity::NorthWest,
            "se" => Gravity::SouthEast,
            "sw" => Gravity::SouthWest,
            "smart" | "auto" | "attention" => Gravity::Smart,
            "entropy" => Gravity::Entropy,
            _ => {
                let (x, y) = v.split_once('x')?;
                let x: f64 = x.parse().ok()?;
                let y: f64 = y.parse().ok()?;
                if !(0.0..=1.0).contains(&x) || !(0.0..=1.0).contains(&y) {
                    return None;
                }
                Gravity::Focal {
                    x: (x * 1000.0).round() as u16,
                    y: (y * 1000.0).round() as u16,
                }
            }
        })
    }
}

impl fmt::Display for Gravity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Gravity::Center => "center",
            Gravity::North => "n",
            Gravity::South => "s",
            Gravity::East => "e",
            Gravity::West => "w",
            Gravity::NorthEast => "ne",
            Gravity::NorthWest => "nw",
            Gravity::SouthEast => "se",
            Gravity::SouthWest => "sw",
            Gravity::Smart => "smart",
            Gravity::Entropy => "entropy",
            Gravity::Focal { x, y } => {
                return write!(f, "{}x{}", *x as f64 / 1000.0, *y as f64 / 1000.0)
            }
        };
        f.write_str(s)
    }
}

/// An encoded output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputFormat {
    /// Baseline JPEG.
    Jpeg,
    /// PNG.
    Png,
    /// WebP (animated when the source is).
    Webp,
    /// AVIF.
    Avif,
    /// GIF (animated when the source is).
    Gif,
}

impl OutputFormat {
    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpeg",
            OutputFormat::Png => "png",
            OutputFormat::Webp => "webp",
            OutputFormat::Avif => "avif",
            OutputFormat::Gif => "gif",
        }
    }

    /// The MIME type sent as `Content-Type`.
    pub fn mime(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Png => "image/png",
            OutputFormat::Webp => "image/webp",
            OutputFormat::Avif => "image/avif",
            OutputFormat::Gif => "image/gif",
        }
    }

    /// Whether the format can carry an alpha channel.
    pub fn has_alpha(self) -> bool {
        !matches!(self, OutputFormat::Jpeg)
    }

    /// Whether the format can carry an animation (as libvips 8.14 writes it).
    pub fn animates(self) -> bool {
        matches!(self, OutputFormat::Webp | OutputFormat::Gif)
    }
}

/// The format a URL asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FormatChoice {
    /// Negotiate from `Accept`.
    Auto,
    /// This format.
    Fixed(OutputFormat),
}

/// Which metadata survives into the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Meta {
    /// Strip everything (the default).
    None,
    /// Keep only the copyright and artist notices.
    Copyright,
    /// Keep EXIF, XMP, IPTC and the ICC profile as they are.
    Keep,
}

impl Meta {
    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Meta::None => "none",
            Meta::Copyright => "copyright",
            Meta::Keep => "keep",
        }
    }
}

/// Mirroring after rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flip {
    /// Left-right.
    H,
    /// Top-bottom.
    V,
    /// Both.
    HV,
}

/// A rectangle in source pixels (after EXIF orientation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rect {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width, at least 1.
    pub w: u32,
    /// Height, at least 1.
    pub h: u32,
}

/// An sRGB colour with alpha.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Colour {
    /// Red.
    pub r: u8,
    /// Green.
    pub g: u8,
    /// Blue.
    pub b: u8,
    /// Alpha, 255 opaque.
    pub a: u8,
}

impl Colour {
    /// Opaque white, the default background.
    pub const WHITE: Colour = Colour {
        r: 255,
        g: 255,
        b: 255,
        a: 255,
    };

    fn parse(v: &str) -> Option<Self> {
        let hex = v.strip_prefix('#').unwrap_or(v);
        match hex {
            "white" => return Some(Colour::WHITE),
            "black" => {
                return Some(Colour {
                    r: 0,
                    g: 0,
                    b: 0,
                    a: 255,
                })
            }
            "transparent" => {
                return Some(Colour {
                    r: 0,
                    g: 0,
                    b: 0,
                    a: 0,
                })
            }
            _ => {}
        }
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let nib = |i: usize| u8::from_str_radix(&hex[i..i + 1], 16).ok().map(|n| n * 17);
        let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
        match hex.len() {
            3 => Some(Colour {
                r: nib(0)?,
                g: nib(1)?,
                b: nib(2)?,
                a: 255,
            }),
            4 => Some(Colour {
                r: nib(0)?,
                g: nib(1)?,
                b: nib(2)?,
                a: nib(3)?,
            }),
            6 => Some(Colour {
                r: byte(0)?,
                g: byte(2)?,
                b: byte(4)?,
                a: 255,
            }),
            8 => Some(Colour {
                r: byte(0)?,
                g: byte(2)?,
                b: byte(4)?,
                a: byte(6)?,
            }),
            _ => None,
        }
    }
}

impl fmt::Display for Colour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}{:02x}{:02x}", self.r, self.g, self.b)?;
        if self.a != 255 {
            write!(f, "{:02x}", self.a)?;
        }
        Ok(())
    }
}

/// A refused option: which one, and why, in words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("option `{option}`: {reason}")]
pub struct OptionError {
    /// The option's name as written in the URL.
    pub option: String,
    /// What is wrong with it.
    pub reason: String,
}

impl OptionError {
    pub(crate) fn new(option: &str, reason: impl Into<String>) -> Self {
        Self {
            option: option.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Everything one URL said, before presets, defaults and negotiation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestOptions {
    /// Requested width in CSS pixels.
    pub width: Option<u32>,
    /// Requested height in CSS pixels.
    pub height: Option<u32>,
    /// Device pixel ratio, 1..=4.
    pub dpr: Option<f32>,
    /// How the box is filled.
    pub fit: Option<Fit>,
    /// What to keep when cropping.
    pub gravity: Option<Gravity>,
    /// Editor's crop, before resizing.
    pub crop: Option<Rect>,
    /// Output format.
    pub format: Option<FormatChoice>,
    /// Encoder quality, 1..=100.
    pub quality: Option<u8>,
    /// Rotation in degrees after auto-orientation.
    pub rotate: Option<u16>,
    /// Mirroring.
    pub flip: Option<Flip>,
    /// Gaussian blur sigma.
    pub blur: Option<f32>,
    /// Sharpening sigma.
    pub sharpen: Option<f32>,
    /// Background for `pad` and for flattening alpha.
    pub background: Option<Colour>,
    /// Metadata policy.
    pub meta: Option<Meta>,
    /// A named preset from config.
    pub preset: Option<String>,
    /// URL signature (hex HMAC-SHA256).
    pub signature: Option<String>,
    /// Signature expiry, Unix seconds.
    pub expires: Option<u64>,
}

/// Largest blur or sharpen sigma accepted; beyond it the cost grows with no visible use.
pub const MAX_SIGMA: f32 = 100.0;

fn parse_num<T: std::str::FromStr>(name: &str, v: &str, what: &str) -> Result<T, OptionError> {
    v.parse::<T>()
        .map_err(|_| OptionError::new(name, format!("expected {what}, got {v:?}")))
}

fn parse_sigma(name: &str, v: &str) -> Result<f32, OptionError> {
    let s: f32 = parse_num(name, v, "a number")?;
    if !(s.is_finite() && s > 0.0 && s <= MAX_SIGMA) {
        return Err(OptionError::new(
            name,
            format!("must be greater than 0 and at most {MAX_SIGMA}, got {v}"),
        ));
    }
    // Quantise so that 1.0 and 1.00001 share a cache entry.
    Ok((s * 100.0).round() / 100.0)
}

fn parse_dimension(name: &str, v: &str, max: u32) -> Result<u32, OptionError> {
    let n: u64 = parse_num(name, v, "a whole number of pixels")?;
    if n == 0 || n > max as u64 {
        return Err(OptionError::new(
            name,
            format!("must be between 1 and {max}, got {n}"),
        ));
    }
    Ok(n as u32)
}

impl RequestOptions {
    /// Applies one `name=value` pair; `max_dimension` bounds `w` and `h`.
    ///
    /// Names accept both our short forms and Cloudflare's long ones (`w`/`width`,
    /// `fmt`/`f`/`format`, `q`/`quality`, `g`/`gravity`, `rot`/`rotate`, `bg`/`background`,
    /// `meta`/`metadata`). A repeated option is an error rather than a silent last-wins.
    pub fn set(&mut self, name: &str, value: &str, max_dimension: u32) -> Result<(), OptionError> {
        fn once<T>(slot: &mut Option<T>, name: &str, v: T) -> Result<(), OptionError> {
            if slot.is_some() {
                return Err(OptionError::new(name, "given more than once"));
            }
            *slot = Some(v);
            Ok(())
        }
        match name {
            "w" | "width" => {
                let v = parse_dimension(name, value, max_dimension)?;
                once(&mut self.width, name, v)
            }
            "h" | "height" => {
                let v = parse_dimension(name, value, max_dimension)?;
                once(&mut self.height, name, v)
            }
            "dpr" => {
                let d: f32 = parse_num(name, value, "a number")?;
                if !(d.is_finite() && (1.0..=4.0).contains(&d)) {
                    return Err(OptionError::new(
                        name,
                        format!("must be between 1 and 4, got {value}"),
                    ));
                }
                once(&mut self.dpr, name, (d * 100.0).round() / 100.0)
            }
            "fit" => {
                let f = Fit::parse(value).ok_or_else(|| {
                    OptionError::new(
                        name,
                        format!(
                            "unknown fit {value:?}; expected scale-down, contain, cover, fill, \
                             inside, outside, pad or crop"
                        ),
                    )
                })?;
                once(&mut self.fit, name, f)
            }
            "g" | "gravity" => {
                let g = Gravity::parse(value).ok_or_else(|| {
                    OptionError::new(
                        name,
                        format!(
                            "unknown gravity {value:?}; expected center, n, s, e, w, ne, nw, se, \
                             sw, smart, entropy or a focal point such as 0.3x0.6"
                        ),
                    )
                })?;
                once(&mut self.gravity, name, g)
            }
            "crop" => {
                let parts: Vec<&str> = value.split([',', ':']).collect();
                let nums: Option<Vec<u32>> = parts.iter().map(|p| p.parse().ok()).collect();
                let r = match nums.as_deref() {
                    Some(&[x, y, w, h]) if w > 0 && h > 0 => Rect { x, y, w, h },
                    _ => {
                        return Err(OptionError::new(
                            name,
                            format!(
                                "expected x,y,width,height in source pixels with width and \
                                 height above 0, got {value:?}"
                            ),
                        ))
                    }
                };
                once(&mut self.crop, name, r)
            }
            "fmt" | "f" | "format" => {
                let f = match value {
                    "auto" => FormatChoice::Auto,
                    "jpeg" | "jpg" | "baseline-jpeg" => FormatChoice::Fixed(OutputFormat::Jpeg),
                    "png" => FormatChoice::Fixed(OutputFormat::Png),
                    "webp" => FormatChoice::Fixed(OutputFormat::Webp),
                    "avif" => FormatChoice::Fixed(OutputFormat::Avif),
                    "gif" => FormatChoice::Fixed(OutputFormat::Gif),
                    _ => {
                        return Err(OptionError::new(
                            name,
                            format!(
                                "unknown format {value:?}; expected auto, jpeg, png, webp, avif \
                                 or gif"
                            ),
                        ))
                    }
                };
                once(&mut self.format, name, f)
            }
            "q" | "quality" => {
                let q: u32 = parse_num(name, value, "a whole number")?;
                if !(1..=100).contains(&q) {
                    return Err(OptionError::new(
                        name,
                        format!("must be between 1 and 100, got {q}"),
                    ));
                }
                once(&mut self.quality, name, q as u8)
            }
            "rot" | "rotate" => {
                let r: u32 = parse_num(name, value, "0, 90, 180 or 270")?;
                if !r.is_multiple_of(90) || r >= 360 {
                    return Err(OptionError::new(
                        name,
                        format!("must be 0, 90, 180 or 270, got {r}"),
                    ));
                }
                once(&mut self.rotate, name, r as u16)
            }
            "flip" => {
                let f = match value {
                    "h" => Flip::H,
                    "v" => Flip::V,
                    "hv" | "vh" => Flip::HV,
                    _ => {
                        return Err(OptionError::new(
                            name,
                            format!("must be h, v or hv, got {value:?}"),
                        ))
                    }
                };
                once(&mut self.flip, name, f)
            }
            "blur" => {
                let s = parse_sigma(name, value)?;
                once(&mut self.blur, name, s)
            }
            "sharpen" => {
                let s = parse_sigma(name, value)?;
                once(&mut self.sharpen, name, s)
            }
            "bg" | "background" => {
                let c = Colour::parse(&value.to_ascii_lowercase()).ok_or_else(|| {
                    OptionError::new(
                        name,
                        format!(
                            "expected a hex colour (rgb, rgba, rrggbb, rrggbbaa, optional #) or \
                             white, black, transparent; got {value:?}"
                        ),
                    )
                })?;
                once(&mut self.background, name, c)
            }
            "meta" | "metadata" => {
                let m = match value {
                    "none" | "strip" => Meta::None,
                    "copyright" => Meta::Copyright,
                    "keep" | "all" => Meta::Keep,
                    _ => {
                        return Err(OptionError::new(
                            name,
                            format!("must be none, copyright or keep, got {value:?}"),
                        ))
                    }
                };
                once(&mut self.meta, name, m)
            }
            "preset" => {
                if value.is_empty()
                    || value.len() > 64
                    || !value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(OptionError::new(
                        name,
                        format!(
                            "expected a preset name of letters, digits, - and _, got {value:?}"
                        ),
                    ));
                }
                once(&mut self.preset, name, value.to_owned())
            }
            "sig" | "s" => {
                if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(OptionError::new(
                        name,
                        "expected 64 hex digits (HMAC-SHA256)",
                    ));
                }
                once(&mut self.signature, name, value.to_ascii_lowercase())
            }
            "exp" | "expires" => {
                let e: u64 = parse_num(name, value, "Unix seconds")?;
                once(&mut self.expires, name, e)
            }
            _ => Err(OptionError::new(name, "unknown option")),
        }
    }

    /// Fills every field this one lacks from `base` (a preset): explicit options refine presets.
    pub fn refine(&mut self, base: &RequestOptions) {
        macro_rules! fill {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = base.$f.clone(); } )* };
        }
        fill!(
            width, height, dpr, fit, gravity, crop, format, quality, rotate, flip, blur, sharpen,
            background, meta
        );
    }

    /// The options as a canonical string, excluding the signature: fixed order, one spelling
    /// per value. Two URLs that say the same thing give the same string; it is what signatures
    /// cover.
    pub fn canonical(&self) -> String {
        let mut s = String::new();
        let mut put = |k: &str, v: &dyn fmt::Display| {
            if !s.is_empty() {
                s.push(',');
            }
            let _ = write!(s, "{k}={v}");
        };
        if let Some(p) = &self.preset {
            put("preset", p);
        }
        if let Some(v) = self.width {
            put("w", &v);
        }
        if let Some(v) = self.height {
            put("h", &v);
        }
        if let Some(v) = self.dpr {
            put("dpr", &v);
        }
        if let Some(v) = self.fit {
            put("fit", &v.name());
        }
        if let Some(v) = self.gravity {
            put("g", &v);
        }
        if let Some(r) = self.crop {
            put("crop", &format_args!("{},{},{},{}", r.x, r.y, r.w, r.h));
        }
        match self.format {
            Some(FormatChoice::Auto) => put("f", &"auto"),
            Some(FormatChoice::Fixed(f)) => put("f", &f.name()),
            None => {}
        }
        if let Some(v) = self.quality {
            put("q", &v);
        }
        if let Some(v) = self.rotate {
            put("rot", &v);
        }
        if let Some(v) = self.flip {
            put("flip", &format!("{v:?}").to_ascii_lowercase());
        }
        if let Some(v) = self.blur {
            put("blur", &v);
        }
        if let Some(v) = self.sharpen {
            put("sharpen", &v);
        }
        if let Some(v) = self.background {
            put("bg", &v);
        }
        if let Some(v) = self.meta {
            put("meta", &format!("{v:?}").to_ascii_lowercase());
        }
        if let Some(v) = self.expires {
            put("exp", &v);
        }
        s
    }

    /// Whether the URL asked for nothing but (optionally) a preset, so that unsigned access
    /// can be limited to named presets.
    pub fn is_preset_only(&self) -> bool {
        let mut bare = self.clone();
        bare.preset = None;
        bare.signature = None;
        bare.expires = None;
        self.preset.is_some() && bare == RequestOptions::default()
    }
}

/// Parses option pairs separated by `sep` (`&` for query strings, `,` for Cloudflare's form).
/// Values in query strings are percent-decoded; `+` stands for a space.
pub fn parse_pairs(
    text: &str,
    sep: char,
    max_dimension: u32,
) -> Result<RequestOptions, OptionError> {
    let mut opts = RequestOptions::default();
    for pair in text.split(sep).filter(|p| !p.is_empty()) {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| OptionError::new(pair, "expected name=value"))?;
        let value = percent_encoding::percent_decode_str(&value.replace('+', " "))
            .decode_utf8()
            .map_err(|_| OptionError::new(name, "value is not valid UTF-8"))?
            .into_owned();
        let name = name.to_ascii_lowercase();
        opts.set(&name, value.trim(), max_dimension)?;
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<RequestOptions, OptionError> {
        parse_pairs(q, '&', 8192)
    }

    #[test]
    fn parses_every_option() {
        let o = parse(
            "w=400&h=300&dpr=2&fit=cover&g=0.3x0.6&crop=10,20,300,200&fmt=webp&q=70&rot=90\
             &flip=hv&blur=2.5&sharpen=1&bg=%23ff0000&meta=copyright&preset=thumb&exp=99",
        )
        .unwrap();
        assert_eq!(o.width, Some(400));
        assert_eq!(o.height, Some(300));
        assert_eq!(o.dpr, Some(2.0));
        assert_eq!(o.fit, Some(Fit::Cover));
        assert_eq!(o.gravity, Some(Gravity::Focal { x: 300, y: 600 }));
        assert_eq!(
            o.crop,
            Some(Rect {
                x: 10,
                y: 20,
                w: 300,
                h: 200
            })
        );
        assert_eq!(o.format, Some(FormatChoice::Fixed(OutputFormat::Webp)));
        assert_eq!(o.quality, Some(70));
        assert_eq!(o.rotate, Some(90));
        assert_eq!(o.flip, Some(Flip::HV));
        assert_eq!(o.blur, Some(2.5));
        assert_eq!(o.sharpen, Some(1.0));
        assert_eq!(
            o.background,
            Some(Colour {
                r: 255,
                g: 0,
                b: 0,
                a: 255
            })
        );
        assert_eq!(o.meta, Some(Meta::Copyright));
        assert_eq!(o.preset.as_deref(), Some("thumb"));
        assert_eq!(o.expires, Some(99));
    }

    #[test]
    fn aliases_share_a_canonical_form() {
        let a = parse("width=400&format=jpg&fit=inside&gravity=top&quality=80").unwrap();
        let b = parse("q=80&g=n&fit=contain&fmt=jpeg&w=400").unwrap();
        let c = parse_pairs("w=400,f=jpeg,fit=contain,g=north,q=80", ',', 8192).unwrap();
        assert_eq!(a.canonical(), b.canonical());
        assert_eq!(b.canonical(), c.canonical());
    }

    #[test]
    fn gravity_values() {
        for (v, g) in [
            ("center", Gravity::Center),
            ("n", Gravity::North),
            ("s", Gravity::South),
            ("e", Gravity::East),
            ("w", Gravity::West),
            ("ne", Gravity::NorthEast),
            ("nw", Gravity::NorthWest),
            ("se", Gravity::SouthEast),
            ("sw", Gravity::SouthWest),
            ("smart", Gravity::Smart),
            ("auto", Gravity::Smart),
            ("entropy", Gravity::Entropy),
            ("0x1", Gravity::Focal { x: 0, y: 1000 }),
        ] {
            assert_eq!(Gravity::parse(v), Some(g), "{v}");
        }
        for bad in ["1.5x0.5", "x", "0.5", "up", "-0.1x0.5", "nanxnan"] {
            assert_eq!(Gravity::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn fit_values() {
        for v in [
            "scale-down",
            "contain",
            "cover",
            "fill",
            "inside",
            "outside",
            "pad",
            "crop",
            "squeeze",
        ] {
            assert!(Fit::parse(v).is_some(), "{v}");
        }
        assert_eq!(Fit::parse("stretch"), None);
    }

    #[test]
    fn colours() {
        assert_eq!(Colour::parse("fff"), Some(Colour::WHITE));
        assert_eq!(
            Colour::parse("#00000080"),
            Some(Colour {
                r: 0,
                g: 0,
                b: 0,
                a: 128
            })
        );
        assert_eq!(Colour::parse("transparent").map(|c| c.a), Some(0));
        assert_eq!(Colour::parse("ggg"), None);
        assert_eq!(Colour::parse("12345"), None);
        assert_eq!(Colour::parse("é1"), None);
        assert_eq!(
            Colour {
                r: 1,
                g: 2,
                b: 3,
                a: 255
            }
            .to_string(),
            "010203"
        );
    }

    #[test]
    fn every_bad_value_names_its_option() {
        for (q, opt) in [
            ("w=0", "w"),
            ("w=abc", "w"),
            ("w=-5", "w"),
            ("w=9000", "w"),
            ("h=99999999999999999999", "h"),
            ("width=1.5", "width"),
            ("dpr=0.5", "dpr"),
            ("dpr=5", "dpr"),
            ("dpr=NaN", "dpr"),
            ("dpr=inf", "dpr"),
            ("fit=stretch", "fit"),
            ("g=up", "g"),
            ("crop=1,2,3", "crop"),
            ("crop=1,2,0,4", "crop"),
            ("crop=a,b,c,d", "crop"),
            ("fmt=bmp", "fmt"),
            ("f=json", "f"),
            ("q=0", "q"),
            ("q=101", "q"),
            ("rot=45", "rot"),
            ("rot=360", "rot"),
            ("flip=x", "flip"),
            ("blur=0", "blur"),
            ("blur=1000", "blur"),
            ("sharpen=-1", "sharpen"),
            ("bg=red", "bg"),
            ("meta=some", "meta"),
            ("preset=a/b", "preset"),
            ("preset=", "preset"),
            ("sig=xyz", "sig"),
            ("exp=soon", "exp"),
            ("zoom=2", "zoom"),
            ("w=1&w=2", "w"),
            ("w=1&width=2", "width"),
        ] {
            let err = parse(q).expect_err(q);
            assert_eq!(err.option, opt, "{q}: {err}");
            assert!(!err.reason.is_empty());
        }
        assert_eq!(parse("novalue").unwrap_err().option, "novalue");
    }

    #[test]
    fn empty_pairs_are_ignored_and_values_decoded() {
        let o = parse("&w=10&&bg=%23FFF&").unwrap();
        assert_eq!(o.width, Some(10));
        assert_eq!(o.background, Some(Colour::WHITE));
    }

    #[test]
    fn preset_only() {
        assert!(parse("preset=thumb").unwrap().is_preset_only());
        assert!(parse("preset=thumb&exp=5").unwrap().is_preset_only());
        assert!(!parse("preset=thumb&w=5").unwrap().is_preset_only());
        assert!(!parse("w=5").unwrap().is_preset_only());
    }

    #[test]
    fn refine_keeps_explicit_values() {
        let mut o = parse("w=100").unwrap();
        o.refine(&parse("w=200&h=200&fit=cover").unwrap());
        assert_eq!(
            (o.width, o.height, o.fit),
            (Some(100), Some(200), Some(Fit::Cover))
        );
    }
}
