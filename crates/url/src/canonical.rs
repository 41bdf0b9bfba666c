//! From what a URL said to the canonical transform that names a cache entry.
//!
//! Presets are expanded (explicit options refine them), `dpr` is multiplied into the box,
//! options that cannot change the output are dropped, defaults are folded away and the output
//! format is negotiated from `Accept`. Two requests that must produce the same bytes produce
//! equal [`TransformSpec`]s, and so the same [`TransformSpec::canonical`] string.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::options::{
    Colour, Fit, Flip, FormatChoice, Gravity, Meta, OptionError, OutputFormat, Rect, RequestOptions,
};

/// Which format the transform will write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FormatPlan {
    /// Keep the source's format when browsers can show it (JPEG, PNG, WebP, GIF, AVIF);
    /// otherwise JPEG, or PNG when the image has alpha.
    Source,
    /// Exactly this format.
    Fixed(OutputFormat),
    /// Negotiated: AVIF if accepted, then WebP, then JPEG (PNG when the image has alpha;
    /// animated sources stay animated as WebP if accepted, else GIF).
    Auto {
        /// The client accepts AVIF.
        avif: bool,
        /// The client accepts WebP.
        webp: bool,
    },
}

/// The canonical, fully resolved transform. No HTTP in it.
#[derive(Debug, Clone, PartialEq)]
pub struct TransformSpec {
    /// Output box width in device pixels (after `dpr`).
    pub width: Option<u32>,
    /// Output box height in device pixels (after `dpr`).
    pub height: Option<u32>,
    /// How the box is filled (only meaningful with a box).
    pub fit: Fit,
    /// What to keep when cropping (only meaningful when the fit crops).
    pub gravity: Gravity,
    /// Editor's crop in oriented source pixels, before resizing.
    pub crop: Option<Rect>,
    /// Output format.
    pub format: FormatPlan,
    /// Explicit quality; `None` uses the per-format default from config.
    pub quality: Option<u8>,
    /// Rotation after auto-orientation, degrees.
    pub rotate: u16,
    /// Mirroring after rotation.
    pub flip: Option<Flip>,
    /// Gaussian blur sigma.
    pub blur: Option<f32>,
    /// Sharpen sigma.
    pub sharpen: Option<f32>,
    /// Background for padding and for flattening alpha into JPEG.
    pub background: Colour,
    /// Metadata policy.
    pub meta: Meta,
}

/// Per-format default qualities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QualityDefaults {
    /// JPEG.
    pub jpeg: u8,
    /// WebP.
    pub webp: u8,
    /// AVIF.
    pub avif: u8,
}

impl QualityDefaults {
    /// The default quality for `f` (PNG and GIF are lossless here and ignore it).
    pub fn for_format(&self, f: OutputFormat) -> u8 {
        match f {
            OutputFormat::Jpeg => self.jpeg,
            OutputFormat::Webp => self.webp,
            OutputFormat::Avif => self.avif,
            OutputFormat::Png | OutputFormat::Gif => 100,
        }
    }
}

/// What resolution needs besides the URL.
#[derive(Debug, Clone, Copy)]
pub struct ResolveContext<'a> {
    /// Named presets, already parsed.
    pub presets: &'a HashMap<String, RequestOptions>,
    /// Largest output width or height; `dpr` results are clamped to it.
    pub max_dimension: u32,
    /// Per-format default qualities.
    pub quality: QualityDefaults,
    /// The request's `Accept` header, if any.
    pub accept: Option<&'a str>,
    /// The metadata policy when the URL names none.
    pub default_meta: Meta,
    /// Whether `meta=keep` (EXIF with GPS and serial numbers, XMP, ICC) may be served.
    pub allow_meta_keep: bool,
}

/// Whether `accept` lists `mime` with a non-zero q-value. Wildcards do not count: browsers send
/// `*/*` without being able to show every format.
pub fn accepts(accept: &str, mime: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';');
        let ty = parts.next().unwrap_or("").trim();
        if !ty.eq_ignore_ascii_case(mime) {
            return false;
        }
        !parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        })
    })
}

/// Resolves a URL's options into the canonical transform.
pub fn resolve(
    opts: &RequestOptions,
    ctx: &ResolveContext<'_>,
) -> Result<TransformSpec, OptionError> {
    let mut o = opts.clone();
    if let Some(name) = &opts.preset {
        let preset = ctx
            .presets
            .get(name)
            .ok_or_else(|| OptionError::new("preset", format!("no preset named {name:?}")))?;
        o.refine(preset);
    }
    let dpr = o.dpr.unwrap_or(1.0);
    let scale = |v: u32| -> u32 {
        let scaled = (v as f64 * dpr as f64).round() as u64;
        scaled.clamp(1, ctx.max_dimension as u64) as u32
    };
    let width = o.width.map(scale);
    let height = o.height.map(scale);
    let has_box = width.is_some() || height.is_some();
    let mut fit = if has_box {
        o.fit.unwrap_or(Fit::ScaleDown)
    } else {
        Fit::ScaleDown
    };
    // With only one side given, every fit but `fill` reduces to fitting that side.
    if has_box && (width.is_none() || height.is_none()) && fit != Fit::ScaleDown {
        fit = match fit {
            Fit::Crop => Fit::ScaleDown,
            _ => Fit::Contain,
        };
    }
    let gravity = if fit.crops() {
        o.gravity.unwrap_or(Gravity::Center)
    } else {
        Gravity::Center
    };
    let format = match o.format {
        None => FormatPlan::Source,
        Some(FormatChoice::Fixed(f)) => FormatPlan::Fixed(f),
        Some(FormatChoice::Auto) => {
            let accept = ctx.accept.unwrap_or("");
            FormatPlan::Auto {
                avif: accepts(accept, "image/avif"),
                webp: accepts(accept, "image/webp"),
            }
        }
    };
    let quality = match (o.quality, format) {
        (Some(q), FormatPlan::Fixed(f)) if q == ctx.quality.for_format(f) => None,
        (Some(_), FormatPlan::Fixed(OutputFormat::Png | OutputFormat::Gif)) => None,
        (q, _) => q,
    };
    let rotate = o.rotate.unwrap_or(0);
    Ok(TransformSpec {
        width,
        height,
        fit,
        gravity,
        crop: o.crop,
        format,
        quality,
        rotate,
        flip: o.flip,
        blur: o.blur,
        sharpen: o.sharpen,
        background: o.background.unwrap_or(Colour::WHITE),
        meta: match o.meta.unwrap_or(ctx.default_meta) {
            Meta::Keep if !ctx.allow_meta_keep => {
                return Err(OptionError::new(
                    "meta",
                    "keep is disabled here (it would serve GPS positions, serial numbers and \
                     names); use copyright or none",
                ))
            }
            m => m,
        },
    })
}

impl TransformSpec {
    /// A box of `width`×`height` filled by `fit`, written as `format` at `quality` (the
    /// format's default when `None`): what stored variants and presets are made of. Equal to
    /// what [`resolve`] gives for the same options in a URL.
    pub fn for_box(
        width: u32,
        height: u32,
        fit: Fit,
        format: OutputFormat,
        quality: Option<u8>,
    ) -> Self {
        TransformSpec {
            width: Some(width),
            height: Some(height),
            fit,
            gravity: Gravity::Center,
            crop: None,
            format: FormatPlan::Fixed(format),
            quality: match format {
                OutputFormat::Png | OutputFormat::Gif => None,
                _ => quality,
            },
            rotate: 0,
            flip: None,
            blur: None,
            sharpen: None,
            background: Colour::WHITE,
            meta: Meta::None,
        }
    }

    /// Whether the response depends on the request's `Accept` header.
    pub fn varies_on_accept(&self) -> bool {
        matches!(self.format, FormatPlan::Auto { .. })
    }

    /// The canonical text of this transform: equal specs give equal strings, and only fields
    /// that differ from their defaults appear.
    pub fn canonical(&self) -> String {
        let mut s = String::with_capacity(64);
        let mut put = |k: &str, v: std::fmt::Arguments<'_>| {
            if !s.is_empty() {
                s.push(',');
            }
            s.push_str(k);
            s.push('=');
            let _ = s.write_fmt(v);
        };
        if let Some(w) = self.width {
            put("w", format_args!("{w}"));
        }
        if let Some(h) = self.height {
            put("h", format_args!("{h}"));
        }
        if self.fit != Fit::ScaleDown {
            put("fit", format_args!("{}", self.fit.name()));
        }
        if self.gravity != Gravity::Center {
            put("g", format_args!("{}", self.gravity));
        }
        if let Some(r) = self.crop {
            put("crop", format_args!("{},{},{},{}", r.x, r.y, r.w, r.h));
        }
        match self.format {
            FormatPlan::Source => put("f", format_args!("source")),
            FormatPlan::Fixed(f) => put("f", format_args!("{}", f.name())),
            FormatPlan::Auto { avif, webp } => put(
                "f",
                format_args!(
                    "auto-{}{}",
                    if avif { "a" } else { "" },
                    if webp { "w" } else { "" }
                ),
            ),
        }
        if let Some(q) = self.quality {
            put("q", format_args!("{q}"));
        }
        if self.rotate != 0 {
            put("rot", format_args!("{}", self.rotate));
        }
        if let Some(f) = self.flip {
            put("flip", format_args!("{f:?}"));
        }
        if let Some(b) = self.blur {
            put("blur", format_args!("{b}"));
        }
        if let Some(b) = self.sharpen {
            put("sharpen", format_args!("{b}"));
        }
        if self.background != Colour::WHITE {
            put("bg", format_args!("{}", self.background));
        }
        put("meta", format_args!("{}", self.meta.name()));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::parse_pairs;

    const Q: QualityDefaults = QualityDefaults {
        jpeg: 80,
        webp: 75,
        avif: 50,
    };

    fn spec(q: &str, accept: Option<&str>) -> TransformSpec {
        let mut presets = HashMap::new();
        presets.insert(
            "thumb".to_owned(),
            parse_pairs("w=200,h=200,fit=cover", ',', 8192).unwrap(),
        );
        let ctx = ResolveContext {
            presets: &presets,
            max_dimension: 4096,
            quality: Q,
            accept,
            default_meta: Meta::None,
            allow_meta_keep: true,
        };
        resolve(&parse_pairs(q, '&', 8192).unwrap(), &ctx).unwrap()
    }

    #[test]
    fn equivalent_requests_share_a_key() {
        let groups: &[&[&str]] = &[
            &[
                "w=400&dpr=2",
                "w=800",
                "width=800&dpr=1",
                "w=800&fit=scale-down",
            ],
            &["w=400&h=300&fit=inside", "h=300&w=400&fit=contain"],
            &["fmt=jpeg&q=80&w=10", "w=10&f=jpg", "w=10&fmt=jpeg&g=ne"],
            &[
                "preset=thumb",
                "w=200&h=200&fit=cover",
                "preset=thumb&g=center",
            ],
            &["w=10&bg=fff", "w=10", "w=10&meta=none&rot=0"],
            &["", "fit=cover", "g=smart", "dpr=3"],
            &["w=100&fit=cover", "w=100&fit=contain"],
        ];
        for g in groups {
            let first = spec(g[0], None).canonical();
            for q in &g[1..] {
                assert_eq!(spec(q, None).canonical(), first, "{q} vs {}", g[0]);
            }
        }
    }

    #[test]
    fn different_requests_do_not_share() {
        let all = [
            "w=400",
            "w=401",
            "h=400",
            "w=400&h=400",
            "w=400&h=400&fit=cover",
            "w=400&h=400&fit=cover&g=n",
            "w=400&h=400&fit=pad",
            "w=400&h=400&fit=fill",
            "w=400&fmt=webp",
            "w=400&q=50",
            "w=400&rot=90",
            "w=400&flip=h",
            "w=400&blur=1",
            "w=400&sharpen=1",
            "w=400&meta=keep",
            "w=400&crop=0,0,10,10",
            "w=400&fit=pad&bg=000",
        ];
        let keys: std::collections::HashSet<_> =
            all.iter().map(|q| spec(q, None).canonical()).collect();
        assert_eq!(keys.len(), all.len());
    }

    #[test]
    fn dpr_multiplies_and_clamps() {
        let s = spec("w=300&h=200&dpr=2.5", None);
        assert_eq!((s.width, s.height), (Some(750), Some(500)));
        let s = spec("w=4000&dpr=4", None);
        assert_eq!(s.width, Some(4096));
    }

    #[test]
    fn format_negotiation_is_in_the_key_not_the_header() {
        let chrome = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8";
        let old = "image/webp,*/*";
        let none = "*/*";
        let a = spec("fmt=auto", Some(chrome));
        let b = spec("fmt=auto", Some("image/avif, image/webp"));
        assert_eq!(a.canonical(), b.canonical());
        assert_eq!(
            a.format,
            FormatPlan::Auto {
                avif: true,
                webp: true
            }
        );
        assert_ne!(a.canonical(), spec("fmt=auto", Some(old)).canonical());
        assert_eq!(
            spec("fmt=auto", Some(none)).format,
            FormatPlan::Auto {
                avif: false,
                webp: false
            }
        );
        assert_eq!(
            spec("fmt=auto", Some("image/avif;q=0, image/webp")).format,
            FormatPlan::Auto {
                avif: false,
                webp: true
            }
        );
        assert!(a.varies_on_accept());
        assert!(!spec("fmt=webp", Some(chrome)).varies_on_accept());
    }

    #[test]
    fn boxes_match_resolved_urls() {
        for (q, fit, f) in [
            (
                "w=320&h=320&fit=cover&fmt=webp&q=75",
                Fit::Cover,
                OutputFormat::Webp,
            ),
            (
                "w=2048&h=2048&fmt=jpeg&q=85",
                Fit::ScaleDown,
                OutputFormat::Jpeg,
            ),
            ("w=64&h=32&fit=pad&fmt=png", Fit::Pad, OutputFormat::Png),
        ] {
            let resolved = spec(q, None);
            let (w, h) = (resolved.width.unwrap(), resolved.height.unwrap());
            let quality = parse_pairs(q, '&', 8192).unwrap().quality;
            let boxed = TransformSpec::for_box(w, h, fit, f, quality);
            assert_eq!(
                resolve(
                    &parse_pairs(&boxed_query(&boxed), '&', 8192).unwrap(),
                    &ctx()
                )
                .unwrap()
                .canonical(),
                resolved.canonical(),
                "{q}"
            );
        }
    }

    fn ctx() -> ResolveContext<'static> {
        static PRESETS: std::sync::OnceLock<HashMap<String, RequestOptions>> =
            std::sync::OnceLock::new();
        ResolveContext {
            presets: PRESETS.get_or_init(HashMap::new),
            max_dimension: 4096,
            quality: Q,
            accept: None,
            default_meta: Meta::None,
            allow_meta_keep: true,
        }
    }

    fn boxed_query(s: &TransformSpec) -> String {
        s.canonical().replace(',', "&").replace("f=", "fmt=")
    }

    #[test]
    fn metadata_policy_defaults_and_keep_switch() {
        let presets = HashMap::new();
        let ctx = |default_meta, allow_meta_keep| ResolveContext {
            presets: &presets,
            max_dimension: 4096,
            quality: Q,
            accept: None,
            default_meta,
            allow_meta_keep,
        };
        let opts = |q: &str| parse_pairs(q, '&', 8192).unwrap();
        let s = resolve(&opts("w=10"), &ctx(Meta::Copyright, false)).unwrap();
        assert_eq!(s.meta, Meta::Copyright);
        assert_eq!(
            s.canonical(),
            resolve(&opts("w=10&meta=copyright"), &ctx(Meta::Copyright, false))
                .unwrap()
                .canonical()
        );
        let e = resolve(&opts("w=10&meta=keep"), &ctx(Meta::Copyright, false)).unwrap_err();
        assert_eq!(e.option, "meta");
        assert!(resolve(&opts("w=10&meta=keep"), &ctx(Meta::None, true)).is_ok());
        // The policy is part of the cache key whatever the default.
        assert_ne!(
            resolve(&opts("w=10"), &ctx(Meta::None, true))
                .unwrap()
                .canonical(),
            resolve(&opts("w=10"), &ctx(Meta::Copyright, true))
                .unwrap()
                .canonical()
        );
    }

    #[test]
    fn unknown_preset_is_an_option_error() {
        let presets = HashMap::new();
        let ctx = ResolveContext {
            presets: &presets,
            max_dimension: 10,
            quality: Q,
            accept: None,
            default_meta: Meta::None,
            allow_meta_keep: true,
        };
        let err = resolve(&parse_pairs("preset=nope", '&', 10).unwrap(), &ctx).unwrap_err();
        assert_eq!(err.option, "preset");
    }
}
