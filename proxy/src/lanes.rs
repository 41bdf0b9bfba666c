//! Which transform lane a miss goes to. The light lane keeps a worker for cheap transforms so
//! they keep flowing while the heavy lane is full of expensive ones (while the heavy lane has
//! a free worker, cheap transforms take it, so they are not held to one core); "cheap" must therefore
//! bound the whole cost of a request, the encoder's included: an AVIF encode costs about ten
//! times a JPEG one per pixel, and an animated source multiplies every cost by its frames
//! (unknown until it is decoded), so requests that may be animated never count as light.

use flexphoto_url::{FormatPlan, Gravity, ImageKey, OutputFormat, TransformSpec};

/// Bounds of the light lane (`transform.light_*`).
#[derive(Debug, Clone, Copy)]
pub struct LightBounds {
    /// Largest source read for a light transform without a working copy, bytes.
    pub max_source_bytes: u64,
    /// Largest output, in JPEG-equivalent pixels (output pixels × [`encode_cost`]).
    pub max_output_pixels: u64,
}

/// Whether a transform of `key` is light: a small source (or one whose working copy serves
/// it), a small output counting its encoder's cost, no blur or sharpen, no smart crop, and a
/// source that cannot be animated.
pub fn is_light(
    spec: &TransformSpec,
    key: &ImageKey,
    source_bytes: u64,
    has_copy: bool,
    bounds: LightBounds,
) -> bool {
    let Some(cost) = encode_cost(spec, key) else {
        return false;
    };
    let area = match (spec.width, spec.height) {
        (Some(w), Some(h)) => u64::from(w) * u64::from(h),
        (Some(s), None) | (None, Some(s)) => u64::from(s) * u64::from(s),
        (None, None) => return false,
    };
    area.saturating_mul(cost) <= bounds.max_output_pixels
        && (has_copy || source_bytes <= bounds.max_source_bytes)
        && spec.blur.is_none()
        && spec.sharpen.is_none()
        && !matches!(spec.gravity, Gravity::Smart | Gravity::Entropy)
}

/// Relative encoder cost per output pixel (baseline JPEG = 1), the most the output format
/// can cost when it is negotiated; `None` when the output may be animated (GIF output, or a
/// source whose name says GIF or WebP).
pub fn encode_cost(spec: &TransformSpec, key: &ImageKey) -> Option<u64> {
    let ext = key
        .as_str()
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    if matches!(ext.as_str(), "gif" | "webp") {
        return None;
    }
    let fixed = |f: OutputFormat| match f {
        OutputFormat::Jpeg => Some(1),
        OutputFormat::Png => Some(2),
        OutputFormat::Webp => Some(3),
        OutputFormat::Avif => Some(12),
        OutputFormat::Gif => None,
    };
    match spec.format {
        FormatPlan::Fixed(f) => fixed(f),
        FormatPlan::Auto { avif: true, .. } => Some(12),
        FormatPlan::Auto { webp: true, .. } => Some(3),
        FormatPlan::Auto { .. } => Some(2),
        FormatPlan::Source => match ext.as_str() {
            "avif" | "heic" | "heif" => Some(12),
            "png" => Some(2),
            _ => Some(1),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flexphoto_url::{Meta, QualityDefaults};

    const BOUNDS: LightBounds = LightBounds {
        max_source_bytes: 2 << 20,
        max_output_pixels: 4_000_000,
    };

    /// The spec of an options query, as a browser accepting AVIF and WebP asks for it.
    fn spec(q: &str) -> TransformSpec {
        let presets = std::collections::HashMap::new();
        let ctx = flexphoto_url::ResolveContext {
            presets: &presets,
            max_dimension: 8192,
            quality: QualityDefaults {
                jpeg: 80,
                webp: 75,
                avif: 50,
            },
            accept: Some("image/avif,image/webp,*/*"),
            default_meta: Meta::None,
            allow_meta_keep: false,
        };
        flexphoto_url::resolve(
            &flexphoto_url::options::parse_pairs(q, '&', 8192).unwrap(),
            &ctx,
        )
        .unwrap()
    }

    fn key(s: &str) -> ImageKey {
        ImageKey::parse(s).unwrap()
    }

    fn light(q: &str, k: &str) -> bool {
        is_light(&spec(q), &key(k), 1000, false, BOUNDS)
    }

    #[test]
    fn encoder_cost_and_animation_decide_with_the_size() {
        assert!(light("w=400&fmt=jpeg", "a.jpg"));
        assert!(light("w=1900&fmt=jpeg", "a.jpg"));
        // The same box in AVIF costs twelve JPEG boxes.
        assert!(light("w=400&fmt=avif", "a.jpg"));
        assert!(!light("w=1900&fmt=avif", "a.jpg"));
        assert!(!light("w=1000&fmt=auto", "a.jpg"));
        // Possibly animated: never light, whatever the size.
        for k in ["a.gif", "b.WEBP"] {
            assert!(!light("w=40&fmt=jpeg", k), "{k}");
        }
        assert!(!light("w=40&fmt=gif", "a.png"));
        // The source's format: AVIF sources stay AVIF.
        assert_eq!(encode_cost(&spec("w=1"), &key("x.avif")), Some(12));
        assert_eq!(encode_cost(&spec("w=1"), &key("x")), Some(1));
    }

    #[test]
    fn large_sources_filters_and_smart_crops_are_heavy() {
        let k = key("a.jpg");
        let jpeg = spec("w=100&fmt=jpeg");
        assert!(!is_light(&jpeg, &k, 3 << 20, false, BOUNDS));
        assert!(is_light(&jpeg, &k, 3 << 20, true, BOUNDS));
        assert!(!light("w=100&fmt=jpeg&blur=2", "a.jpg"));
        assert!(!light("w=100&h=100&fit=cover&g=smart&fmt=jpeg", "a.jpg"));
        assert!(!light("fmt=jpeg", "a.jpg"));
    }
}
