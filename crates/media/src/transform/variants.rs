//! Every variant of one original, as ingest makes them, plus the perceptual hash of the whole
//! picture. A still image is decoded once, at the largest size any variant needs; each
//! variant (largest first), the fingerprint's sketch and smaller variants' inputs come from
//! that copy or from levels made for larger variants, so orientation and colour conversion
//! happen once. Animations go variant by variant from the original, so that outputs that can
//! animate keep their frames.

use bytes::Bytes;
use flexphoto_url::TransformSpec;

use super::geometry::Plan;
use super::working::WorkingCopy;
use super::{plan_for, resample, run, run_from_copy, Budget, EncodeSettings, Limits, Output};
use super::{Result, TransformError};
use crate::fingerprint::{dhash, dhash_of_pixels};
use crate::pixels::rgb_from_pixels;
use crate::vips::Header;

/// Side of the sketch the perceptual hash is computed from, pixels.
const SKETCH_SIDE: u32 = 64;

/// A step of [`render_all`], reported as it ends (for stage timings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The source was decoded (nothing is decoded up front for an animation).
    Decoded,
    /// The variant at this index of the specs was made.
    Variant(usize),
    /// The perceptual hash was computed.
    Fingerprinted,
}

/// What [`render_all`] made.
#[derive(Debug)]
pub struct Rendered {
    /// One output per spec, in the specs' order.
    pub outputs: Vec<Output>,
    /// The perceptual hash (dHash) of the whole picture.
    pub dhash: u64,
    /// The smallest uncropped output rendered from the original (animations only), for
    /// callers that need a small still of the picture.
    pub smallest_uncropped: Option<Bytes>,
}

/// Renders `specs` from `source` (whose [`super::probe_allowed`] header is `header`) within
/// `budget`, calling `step` as each step ends. Blocking; call from an image-pool thread.
pub fn render_all(
    source: &Bytes,
    header: &Header,
    specs: &[TransformSpec],
    limits: &Limits,
    enc: &EncodeSettings,
    budget: &Budget,
    mut step: impl FnMut(Step),
) -> Result<Rendered> {
    let (width, height) = header.oriented_size();
    let plans: Vec<Plan> = specs
        .iter()
        .map(|s| plan_for(s, width, height, limits))
        .collect();
    let mut copy = if header.pages <= 1 {
        let (cw, ch) = copy_size(&plans, width, height);
        Some(WorkingCopy::decode(source, header, limits, cw, ch, budget)?)
    } else {
        None
    };
    step(Step::Decoded);
    let mut order: Vec<usize> = (0..specs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(area(plans[i].resized)));
    let mut outputs: Vec<Option<Output>> = (0..specs.len()).map(|_| None).collect();
    // Uncropped outputs of an animation, for the fingerprint.
    let mut made: Vec<(Bytes, u32, u32)> = Vec::new();
    for i in order {
        let spec = &specs[i];
        let from_copy = match &copy {
            Some(c) => run_from_copy(c, spec, limits, enc, budget)?,
            None => None,
        };
        let output = match from_copy {
            Some((output, level)) => {
                if let (Some(c), Some(level)) = (copy.as_mut(), level) {
                    c.push_level(level);
                }
                output
            }
            None => {
                let output = run(source, spec, limits, enc, budget)?;
                if !spec.fit.crops() {
                    made.push((output.bytes.clone(), output.width, output.height));
                }
                output
            }
        };
        outputs[i] = Some(output);
        step(Step::Variant(i));
    }
    let outputs: Vec<Output> = outputs.into_iter().flatten().collect();
    if outputs.len() != specs.len() {
        return Err(TransformError::Internal(
            "a variant was not rendered".into(),
        ));
    }
    let smallest_uncropped = made
        .iter()
        .min_by_key(|(_, w, h)| area((*w, *h)))
        .map(|(b, _, _)| b.clone());
    // The fingerprint looks at the whole picture: a sketch from the smallest uncropped
    // pixels (or output) that will do.
    let hash = match &copy {
        Some(c) => {
            let (tw, th) = fit_inside(width, height, SKETCH_SIDE);
            let (px, lw, lh) = smallest_level(c, tw, th);
            let small = resample::resize(&px, (lw, lh), c.bands, (tw, th), c.has_alpha())?;
            let rgb = rgb_from_pixels(Bytes::from(small), tw, th, c.bands)?;
            dhash_of_pixels(Bytes::from(rgb.pixels), rgb.width, rgb.height, 3)?
        }
        None => dhash(smallest_uncropped.as_ref().unwrap_or(source))?,
    };
    step(Step::Fingerprinted);
    Ok(Rendered {
        outputs,
        dhash: hash,
        smallest_uncropped,
    })
}

fn area((w, h): (u32, u32)) -> u64 {
    u64::from(w) * u64::from(h)
}

/// `w`×`h` fitted into a `side`² box, never enlarged.
fn fit_inside(w: u32, h: u32, side: u32) -> (u32, u32) {
    let s = (side as f64 / w.max(h).max(1) as f64).min(1.0);
    (
        ((w as f64 * s).round() as u32).max(1),
        ((h as f64 * s).round() as u32).max(1),
    )
}

/// Size of the one decoded copy of a `w`×`h` (upright) source: the original's aspect ratio,
/// large enough for every variant's planned resize, never larger than the original.
fn copy_size(plans: &[Plan], w: u32, h: u32) -> (u32, u32) {
    let (w, h) = (w.max(1), h.max(1));
    let scale = plans
        .iter()
        .map(|p| (p.resized.0 as f64 / w as f64).max(p.resized.1 as f64 / h as f64))
        .fold(0.0f64, f64::max)
        .min(1.0);
    let need_w = plans.iter().map(|p| p.resized.0.min(w)).max().unwrap_or(1);
    let need_h = plans.iter().map(|p| p.resized.1.min(h)).max().unwrap_or(1);
    (
        ((w as f64 * scale).round() as u32).max(need_w).clamp(1, w),
        ((h as f64 * scale).round() as u32).max(need_h).clamp(1, h),
    )
}

/// The smallest of a copy's levels (the top included) at least `w`×`h`, as pixels and size.
fn smallest_level(c: &WorkingCopy, w: u32, h: u32) -> (Bytes, u32, u32) {
    c.smaller
        .iter()
        .rev()
        .find(|l| l.width >= w && l.height >= h)
        .map(|l| (l.pixels.clone(), l.width, l.height))
        .unwrap_or_else(|| (c.pixels.clone(), c.width, c.height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_is_as_large_as_the_largest_variant_needs() {
        let limits = Limits::new(100_000_000, 8192);
        let spec = |q: &str| {
            let presets = std::collections::HashMap::new();
            let ctx = flexphoto_url::ResolveContext {
                presets: &presets,
                max_dimension: 8192,
                quality: flexphoto_url::QualityDefaults {
                    jpeg: 80,
                    webp: 75,
                    avif: 50,
                },
                accept: None,
                default_meta: flexphoto_url::Meta::None,
                allow_meta_keep: false,
            };
            flexphoto_url::resolve(
                &flexphoto_url::options::parse_pairs(q, '&', 8192).unwrap(),
                &ctx,
            )
            .unwrap()
        };
        let plans: Vec<Plan> = ["w=200&h=200&fit=cover", "w=1600"]
            .iter()
            .map(|q| plan_for(&spec(q), 4000, 3000, &limits))
            .collect();
        assert_eq!(copy_size(&plans, 4000, 3000), (1600, 1200));
        // Never larger than the original.
        let big: Vec<Plan> = vec![plan_for(&spec("w=6000"), 4000, 3000, &limits)];
        assert_eq!(copy_size(&big, 4000, 3000), (4000, 3000));
        assert_eq!(fit_inside(4000, 3000, 64), (64, 48));
        assert_eq!(fit_inside(10, 5, 64), (10, 5));
    }
}
