//! Image preprocessing shared by the embedders: centre crop, antialiased resize to the model's
//! square input, per-channel normalisation, planar (CHW) `f32` output.

use super::{EmbedError, RgbImage};

/// How pixel values are mapped to model inputs: `(x / 255 - mean[c]) / std[c]` per channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalise {
    /// Per-channel mean, on the 0..1 scale.
    pub mean: [f32; 3],
    /// Per-channel standard deviation, on the 0..1 scale.
    pub std: [f32; 3],
}

impl Normalise {
    /// The ImageNet statistics used by most PyTorch classifiers.
    pub const IMAGENET: Normalise = Normalise {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
    /// The statistics OpenAI CLIP was trained with.
    pub const CLIP: Normalise = Normalise {
        mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
        std: [0.268_629_54, 0.261_302_6, 0.275_777_1],
    };
    /// `(x - 127) / 128`, the TensorFlow Lite convention (EfficientNet-Lite was trained so).
    pub const TFLITE: Normalise = Normalise {
        mean: [127.0 / 255.0; 3],
        std: [128.0 / 255.0; 3],
    };
}

/// Crops the centre square of `image` covering `crop_fraction` of its shorter side, resizes it
/// to `size`×`size` with an antialiased (triangle) filter and normalises it.
///
/// Returns `3 * size * size` values, channel-major (CHW). `crop_fraction` 0.875 is the classic
/// "resize to 256, crop 224" evaluation recipe.
pub fn centre_crop_normalised(
    image: &RgbImage,
    size: usize,
    crop_fraction: f32,
    norm: Normalise,
) -> Result<Vec<f32>, EmbedError> {
    let (w, h) = (image.width as usize, image.height as usize);
    if w == 0 || h == 0 {
        return Err(EmbedError::Input("zero-sized image".into()));
    }
    if image.pixels.len() != w * h * 3 {
        return Err(EmbedError::Input(format!(
            "image {}x{} has {} bytes, expected {}",
            w,
            h,
            image.pixels.len(),
            w * h * 3
        )));
    }
    if size == 0 || !(crop_fraction > 0.0 && crop_fraction <= 1.0) {
        return Err(EmbedError::Input("bad crop settings".into()));
    }
    let side = w.min(h) as f64 * f64::from(crop_fraction);
    let x0 = (w as f64 - side) / 2.0;
    let y0 = (h as f64 - side) / 2.0;
    let cols = filter_weights(x0, side, w, size);
    let rows = filter_weights(y0, side, h, size);

    // Horizontal pass into an intermediate of h rows × size columns × 3 (only rows in use).
    let (row_lo, row_hi) = rows.iter().fold((usize::MAX, 0), |(lo, hi), t| {
        (lo.min(t.start), hi.max(t.start + t.weights.len()))
    });
    let mut mid = vec![0f32; (row_hi - row_lo) * size * 3];
    for y in row_lo..row_hi {
        let src = &image.pixels[y * w * 3..(y + 1) * w * 3];
        let dst = &mut mid[(y - row_lo) * size * 3..(y - row_lo + 1) * size * 3];
        for (ox, tap) in cols.iter().enumerate() {
            let mut acc = [0f32; 3];
            for (i, wt) in tap.weights.iter().enumerate() {
                let p = &src[(tap.start + i) * 3..(tap.start + i) * 3 + 3];
                acc[0] += wt * f32::from(p[0]);
                acc[1] += wt * f32::from(p[1]);
                acc[2] += wt * f32::from(p[2]);
            }
            dst[ox * 3..ox * 3 + 3].copy_from_slice(&acc);
        }
    }
    // Vertical pass straight into normalised CHW.
    let plane = size * size;
    let mut out = vec![0f32; 3 * plane];
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * norm.std[c]));
    let shift: [f32; 3] = std::array::from_fn(|c| norm.mean[c] / norm.std[c]);
    for (oy, tap) in rows.iter().enumerate() {
        for ox in 0..size {
            let mut acc = [0f32; 3];
            for (i, wt) in tap.weights.iter().enumerate() {
                let m = ((tap.start + i - row_lo) * size + ox) * 3;
                acc[0] += wt * mid[m];
                acc[1] += wt * mid[m + 1];
                acc[2] += wt * mid[m + 2];
            }
            for c in 0..3 {
                out[c * plane + oy * size + ox] = acc[c].clamp(0.0, 255.0) * scale[c] - shift[c];
            }
        }
    }
    Ok(out)
}

/// The source pixels (and weights) behind one output pixel.
struct Taps {
    start: usize,
    weights: Vec<f32>,
}

/// Triangle-filter taps mapping the source span `[origin, origin + span)` (of a `len`-pixel
/// axis) onto `out` pixels; the filter widens when shrinking so every source pixel counts.
fn filter_weights(origin: f64, span: f64, len: usize, out: usize) -> Vec<Taps> {
    let scale = span / out as f64;
    let support = scale.max(1.0);
    (0..out)
        .map(|o| {
            let centre = origin + (o as f64 + 0.5) * scale;
            let lo = ((centre - support).floor().max(0.0)) as usize;
            let hi = ((centre + support).ceil() as usize).min(len);
            let mut weights: Vec<f32> = (lo..hi)
                .map(|i| {
                    let d = ((i as f64 + 0.5 - centre) / support).abs();
                    (1.0 - d).max(0.0) as f32
                })
                .collect();
            let sum: f32 = weights.iter().sum();
            if sum > 0.0 {
                weights.iter_mut().for_each(|w| *w /= sum);
            } else {
                // Only when the span is degenerate: take the nearest pixel.
                weights = vec![1.0];
                let n = (centre.floor().max(0.0) as usize).min(len - 1);
                return Taps { start: n, weights };
            }
            Taps { start: lo, weights }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(w: u32, h: u32, rgb: [u8; 3]) -> RgbImage {
        RgbImage {
            width: w,
            height: h,
            pixels: rgb
                .iter()
                .copied()
                .cycle()
                .take((w * h * 3) as usize)
                .collect(),
        }
    }

    #[test]
    fn solid_colour_stays_solid_and_normalised() {
        let img = solid(300, 200, [255, 0, 128]);
        let v = centre_crop_normalised(&img, 16, 0.875, Normalise::IMAGENET).unwrap();
        assert_eq!(v.len(), 3 * 16 * 16);
        let n = Normalise::IMAGENET;
        let want = [
            (1.0 - n.mean[0]) / n.std[0],
            (0.0 - n.mean[1]) / n.std[1],
            (128.0 / 255.0 - n.mean[2]) / n.std[2],
        ];
        for c in 0..3 {
            for &x in &v[c * 256..(c + 1) * 256] {
                assert!(
                    (x - want[c]).abs() < 1e-4,
                    "channel {c}: {x} vs {}",
                    want[c]
                );
            }
        }
    }

    #[test]
    fn crops_the_centre() {
        // Left third red, middle third green, right third blue: the centre crop is green.
        let (w, h) = (300u32, 100u32);
        let mut px = Vec::new();
        for _ in 0..h {
            for x in 0..w {
                px.extend_from_slice(match x / 100 {
                    0 => &[255, 0, 0],
                    1 => &[0, 255, 0],
                    _ => &[0, 0, 255],
                });
            }
        }
        let img = RgbImage {
            width: w,
            height: h,
            pixels: px,
        };
        let norm = Normalise {
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let v = centre_crop_normalised(&img, 8, 0.875, norm).unwrap();
        assert!(v[64..128].iter().all(|&g| (g - 1.0).abs() < 1e-4));
        assert!(v[..64].iter().chain(&v[128..]).all(|&x| x.abs() < 1e-4));
    }

    #[test]
    fn upscales_tiny_images() {
        let img = solid(1, 1, [10, 20, 30]);
        let norm = Normalise {
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let v = centre_crop_normalised(&img, 4, 1.0, norm).unwrap();
        assert!((v[0] - 10.0 / 255.0).abs() < 1e-5);
        assert!((v[47] - 30.0 / 255.0).abs() < 1e-5);
    }

    #[test]
    fn rejects_bad_input() {
        let empty = RgbImage {
            width: 0,
            height: 5,
            pixels: vec![],
        };
        assert!(centre_crop_normalised(&empty, 4, 1.0, Normalise::IMAGENET).is_err());
        let short = RgbImage {
            width: 2,
            height: 2,
            pixels: vec![0; 5],
        };
        assert!(centre_crop_normalised(&short, 4, 1.0, Normalise::IMAGENET).is_err());
    }
}
