//! Appearance: colour and texture statistics measured on the pixels, each turned into a
//! weighted concept ("black and white photo 0.9", "texture 0.6", "blue sky 0.4").
//!
//! No model: a few passes over the embedder's input (≤ 384 px, every second pixel). The
//! statistics are deliberately coarse; each concept's weight grows with how clearly the
//! picture shows it and is zero below a threshold.

use super::RgbImage;

/// A measured concept: which one and how strongly (0..1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// The concept.
    pub concept: Look,
    /// Strength, 0..1.
    pub weight: f32,
}

/// The concepts appearance statistics can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Look {
    /// Little or no colour.
    BlackAndWhite,
    /// Mostly dark.
    Dark,
    /// A uniform, detailed surface filling the frame.
    Texture,
    /// A texture of parallel lines (wood grain, stripes, blades).
    Lines,
    /// A texture of two crossing sets of edges (bricks, tiles, a grid).
    Grid,
    /// A fine texture without direction (gravel, sand, foliage far away).
    Grainy,
    /// Much saturated green.
    Green,
    /// Blue, smooth upper part.
    BlueSky,
    /// Bright, colourless, smooth upper part.
    Clouds,
    /// Blue or teal lower part.
    Water,
    /// Warm orange/pink light.
    WarmLight,
    /// Low contrast, pale, colourless.
    Fog,
    /// Small bright points on a dark field.
    Stars,
}

impl Look {
    /// Every look, in a fixed order.
    pub const ALL: [Look; 13] = [
        Look::BlackAndWhite,
        Look::Dark,
        Look::Texture,
        Look::Lines,
        Look::Grid,
        Look::Grainy,
        Look::Green,
        Look::BlueSky,
        Look::Clouds,
        Look::Water,
        Look::WarmLight,
        Look::Fog,
        Look::Stars,
    ];

    /// The label shown in explanations.
    pub fn label(self) -> &'static str {
        match self {
            Look::BlackAndWhite => "black and white",
            Look::Dark => "dark",
            Look::Texture => "texture",
            Look::Lines => "lines",
            Look::Grid => "grid pattern",
            Look::Grainy => "grainy surface",
            Look::Green => "green",
            Look::BlueSky => "blue sky",
            Look::Clouds => "clouds",
            Look::Water => "water",
            Look::WarmLight => "warm light",
            Look::Fog => "fog",
            Look::Stars => "stars",
        }
    }

    /// The text embedded for it.
    pub fn text(self) -> &'static str {
        match self {
            Look::BlackAndWhite => "a black and white photograph",
            Look::Dark => "a dark photo taken at night",
            Look::Texture => "a close-up of a surface texture, a repeating pattern",
            Look::Lines => "a texture of parallel lines, stripes or wood grain",
            Look::Grid => "a pattern of bricks or tiles, a wall",
            Look::Grainy => "a grainy surface of small stones, gravel, sand or grass",
            Look::Green => "green grass and plants",
            Look::BlueSky => "a blue sky",
            Look::Clouds => "clouds in the sky",
            Look::Water => "water, a lake or the sea",
            Look::WarmLight => "warm orange light of a sunset",
            Look::Fog => "fog and mist, a hazy grey scene",
            Look::Stars => "stars in the night sky, space",
        }
    }
}

/// Luma (0..255) of an RGB pixel.
fn luma(p: &[u8]) -> f32 {
    0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])
}

/// Hue (degrees), saturation and value (0..1) of an RGB pixel.
fn hsv(p: &[u8]) -> (f32, f32, f32) {
    let (r, g, b) = (
        f32::from(p[0]) / 255.0,
        f32::from(p[1]) / 255.0,
        f32::from(p[2]) / 255.0,
    );
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let d = max - min;
    let s = if max > 0.0 { d / max } else { 0.0 };
    let h = if d == 0.0 {
        0.0
    } else if max == r {
        60.0 * ((g - b) / d).rem_euclid(6.0)
    } else if max == g {
        60.0 * ((b - r) / d + 2.0)
    } else {
        60.0 * ((r - g) / d + 4.0)
    };
    (h, s, max)
}

/// `(x - lo) / (hi - lo)` clamped to 0..1.
fn ramp(x: f32, lo: f32, hi: f32) -> f32 {
    ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
}

/// Side of the 4×4 grid of tiles texture statistics are taken on.
const G: usize = 4;
/// Orientation histogram bins over 180°.
const BINS: usize = 12;

/// Unit vectors at the inner bin edges of the orientation histogram, `k · 180° / BINS` for
/// `k` in `1..BINS`; the 90° edge exactly upright, so that a vertical gradient (common:
/// any flat row) falls past it as the arctangent puts it.
fn bin_edges() -> [(f32, f32); BINS - 1] {
    std::array::from_fn(|i| {
        if 2 * (i + 1) == BINS {
            return (0.0, 1.0);
        }
        let a = (i + 1) as f32 * std::f32::consts::PI / BINS as f32;
        (a.cos(), a.sin())
    })
}

/// The orientation bin (0..[`BINS`], over 0..180°) of the gradient `(gx, gy)`: how many
/// of the `edges` ([`bin_edges`]) its direction, folded into the upper half-plane, lies at
/// or past. The bin of `atan2(gy, gx) mod π` without the arctangent, which cost as much as
/// the rest of the gradient pass.
fn orientation_bin(edges: &[(f32, f32); BINS - 1], gx: f32, gy: f32) -> usize {
    // Opposite directions share a bin; fold into angles 0 ≤ a < 180°.
    let (gx, gy) = if gy < 0.0 || (gy == 0.0 && gx < 0.0) {
        (-gx, -gy)
    } else {
        (gx, gy)
    };
    // Past edge (c, s) when the cross product (c, s) × (gx, gy) is not negative.
    edges.iter().filter(|(c, s)| c * gy - s * gx >= 0.0).count()
}

/// Measures the picture; returns the concepts it shows, strongest first.
pub fn measure(img: &RgbImage) -> Vec<Measured> {
    let (w, h) = (img.width as usize, img.height as usize);
    if w < 16 || h < 16 || img.pixels.len() < w * h * 3 {
        return Vec::new();
    }
    // Every second pixel: a grey grid for gradients, colour counts on the way.
    let step = 2;
    let (gw, gh) = (w / step, h / step);
    let mut grey = vec![0f32; gw * gh];
    let (mut chroma, mut dark, mut green, mut warm, mut bright) = (0f32, 0f32, 0f32, 0f32, 0f32);
    let (mut top_n, mut top_blue, mut top_cloud) = (0f32, 0f32, 0f32);
    let (mut bottom_n, mut bottom_water) = (0f32, 0f32);
    let (mut sum, mut sum2) = (0f32, 0f32);
    for gy in 0..gh {
        for gx in 0..gw {
            let (x, y) = (gx * step, gy * step);
            let p = &img.pixels[(y * w + x) * 3..][..3];
            let (hue, s, v) = hsv(p);
            let l = luma(p);
            grey[gy * gw + gx] = l;
            sum += l;
            sum2 += l * l;
            chroma += s * v;
            dark += f32::from(l < 50.0);
            bright += f32::from(l > 140.0);
            if s > 0.25 && v > 0.2 && (70.0..170.0).contains(&hue) {
                green += 1.0;
            }
            if s > 0.3 && v > 0.35 && !(45.0..=300.0).contains(&hue) {
                warm += 1.0;
            }
            if y < h / 3 {
                top_n += 1.0;
                if s > 0.2 && v > 0.4 && (190.0..250.0).contains(&hue) {
                    top_blue += 1.0;
                }
                if s < 0.15 && v > 0.7 {
                    top_cloud += 1.0;
                }
            }
            if y >= 2 * h / 3 {
                bottom_n += 1.0;
                if s > 0.2 && v > 0.2 && (170.0..240.0).contains(&hue) {
                    bottom_water += 1.0;
                }
            }
        }
    }
    let n = (gw * gh) as f32;
    let mean_luma = sum / n;
    let contrast = (sum2 / n - mean_luma * mean_luma).max(0.0).sqrt();
    let colourfulness = chroma / n;

    // Gradients: energy per tile, and a doubled-angle orientation histogram (structure).
    let mut tile_energy = [0f32; G * G];
    let mut tile_n = [0f32; G * G];
    let mut hist = [0f32; BINS];
    let edges = bin_edges();
    let (mut jxx, mut jyy, mut jxy) = (0f32, 0f32, 0f32);
    let mut isolated = 0f32;
    for y in 1..gh - 1 {
        for x in 1..gw - 1 {
            let c = grey[y * gw + x];
            let gx = (grey[y * gw + x + 1] - grey[y * gw + x - 1]) / 2.0;
            let gy = (grey[(y + 1) * gw + x] - grey[(y - 1) * gw + x]) / 2.0;
            let mag = (gx * gx + gy * gy).sqrt();
            let t = (y * G / gh) * G + x * G / gw;
            tile_energy[t] += mag;
            tile_n[t] += 1.0;
            jxx += gx * gx;
            jyy += gy * gy;
            jxy += gx * gy;
            if mag > 2.0 {
                hist[orientation_bin(&edges, gx, gy)] += mag;
            }
            // A point brighter than all four neighbours by a margin, on a dark field.
            let around = [
                grey[y * gw + x - 1],
                grey[y * gw + x + 1],
                grey[(y - 1) * gw + x],
                grey[(y + 1) * gw + x],
            ];
            if c > 60.0 && around.iter().all(|a| c > a + 25.0) {
                isolated += 1.0;
            }
        }
    }
    let energy: Vec<f32> = tile_energy
        .iter()
        .zip(&tile_n)
        .map(|(e, n)| e / n.max(1.0))
        .collect();
    let e_mean = energy.iter().sum::<f32>() / energy.len() as f32;
    let e_min = energy.iter().copied().fold(f32::INFINITY, f32::min);
    let e_sd =
        (energy.iter().map(|e| (e - e_mean).powi(2)).sum::<f32>() / energy.len() as f32).sqrt();
    // A texture fills the frame with detail everywhere: every tile busy, and alike.
    let texture = (1.0 - ramp(e_sd / e_mean.max(1e-3), 0.2, 0.5)) * ramp(e_min, 3.0, 8.0);
    // One dominant direction (coherence of the structure tensor).
    let coherence = ((jxx - jyy).powi(2) + 4.0 * jxy * jxy).sqrt() / (jxx + jyy).max(1e-3);
    // Two directions a right angle apart, each holding a good share of the edges.
    let total: f32 = hist.iter().sum::<f32>().max(1e-3);
    let peak = (0..BINS)
        .max_by(|&a, &b| hist[a].total_cmp(&hist[b]))
        .unwrap_or(0);
    let share =
        |b: usize| (hist[b % BINS] + hist[(b + 1) % BINS] + hist[(b + BINS - 1) % BINS]) / total;
    let (first, second) = (share(peak), share(peak + BINS / 2));
    // 0.5 for edges in every direction; near 1 when two crossing directions hold them all.
    let peaks = first + second;
    let balance = second / first.max(1e-3);

    let mut out = Vec::new();
    let mut push = |concept: Look, weight: f32| {
        if weight > 0.05 {
            out.push(Measured { concept, weight });
        }
    };
    push(Look::BlackAndWhite, 1.0 - ramp(colourfulness, 0.03, 0.10));
    push(Look::Dark, ramp(dark / n, 0.45, 0.8));
    push(Look::Green, ramp(green / n, 0.3, 0.7));
    push(Look::BlueSky, ramp(top_blue / top_n.max(1.0), 0.4, 0.8));
    push(
        Look::Clouds,
        ramp(top_cloud / top_n.max(1.0), 0.3, 0.7) * (1.0 - texture),
    );
    push(
        Look::Water,
        ramp(bottom_water / bottom_n.max(1.0), 0.3, 0.7),
    );
    push(Look::WarmLight, ramp(warm / n, 0.35, 0.7));
    push(
        Look::Fog,
        (1.0 - ramp(contrast, 18.0, 35.0))
            * ramp(mean_luma, 60.0, 110.0)
            * (1.0 - ramp(colourfulness, 0.10, 0.25)),
    );
    push(
        Look::Stars,
        ramp(dark / n, 0.5, 0.8)
            * ramp(isolated / n, 0.002, 0.01)
            * (1.0 - ramp(bright / n, 0.15, 0.3)),
    );
    push(Look::Texture, texture);
    // Brick courses hold more edge than the joints between bricks: a weak second direction
    // already makes a grid.
    let crossing = ramp(balance, 0.12, 0.3);
    push(
        Look::Lines,
        texture * ramp(coherence, 0.3, 0.6) * (1.0 - crossing),
    );
    push(Look::Grid, texture * ramp(peaks, 0.55, 0.65) * crossing);
    push(
        Look::Grainy,
        texture * (1.0 - ramp(peaks, 0.55, 0.7)) * (1.0 - ramp(coherence, 0.15, 0.3)),
    );
    out.sort_by(|a, b| b.weight.total_cmp(&a.weight));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orientation_bins_match_the_arctangent() {
        // Directions all round the circle, and gradients of every size: the bin of
        // atan2 mod π, except within a hair of a bin edge where rounding may differ.
        let width = std::f32::consts::PI / BINS as f32;
        let (edges, mut checked) = (bin_edges(), 0);
        for i in 0..3600 {
            let a = i as f32 * std::f32::consts::TAU / 3600.0 + 0.0001;
            for r in [0.5f32, 3.0, 250.0] {
                let (gx, gy) = (r * a.cos(), r * a.sin());
                let angle = gy.atan2(gx).rem_euclid(std::f32::consts::PI);
                let edge = (angle / width).round() * width;
                if (angle - edge).abs() < 1e-4 {
                    continue;
                }
                let want = ((angle / std::f32::consts::PI) * BINS as f32) as usize % BINS;
                assert_eq!(
                    orientation_bin(&edges, gx, gy),
                    want,
                    "({gx}, {gy}) at {angle}"
                );
                checked += 1;
            }
        }
        assert!(checked > 10_000);
        // Axis directions, either sign: horizontal edges in bin 0, vertical at 90°.
        assert_eq!(orientation_bin(&edges, 1.0, 0.0), 0);
        assert_eq!(orientation_bin(&edges, -1.0, 0.0), 0);
        assert_eq!(orientation_bin(&edges, -1.0, -0.0), 0);
        assert_eq!(orientation_bin(&edges, 0.0, 1.0), BINS / 2);
        assert_eq!(orientation_bin(&edges, 0.0, -1.0), BINS / 2);
    }

    fn image(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> RgbImage {
        let mut pixels = Vec::new();
        for y in 0..h {
            for x in 0..w {
                pixels.extend_from_slice(&f(x, y));
            }
        }
        RgbImage {
            width: w,
            height: h,
            pixels,
        }
    }

    fn has(m: &[Measured], l: Look) -> f32 {
        m.iter().find(|c| c.concept == l).map_or(0.0, |c| c.weight)
    }

    #[test]
    fn grey_noise_is_a_black_and_white_texture() {
        let img = image(64, 64, |x, y| {
            let v = ((x * 7919 + y * 104_729) % 255) as u8;
            [v, v, v]
        });
        let m = measure(&img);
        assert!(has(&m, Look::BlackAndWhite) > 0.9, "{m:?}");
        assert!(has(&m, Look::Texture) > 0.5, "{m:?}");
        assert_eq!(has(&m, Look::Green), 0.0);
    }

    #[test]
    fn blue_top_and_green_bottom() {
        let img = image(60, 60, |_, y| {
            if y < 30 {
                [70, 130, 220]
            } else {
                [40, 160, 40]
            }
        });
        let m = measure(&img);
        assert!(has(&m, Look::BlueSky) > 0.9, "{m:?}");
        assert!(has(&m, Look::Green) > 0.2, "{m:?}");
        assert_eq!(has(&m, Look::BlackAndWhite), 0.0);
        assert_eq!(has(&m, Look::Texture), 0.0, "flat colours are no texture");
    }

    #[test]
    fn stripes_bricks_and_stars() {
        let stripes = measure(&image(96, 96, |x, _| {
            let v = if (x / 3) % 2 == 0 { 40 } else { 200 };
            [v, v, v]
        }));
        assert!(has(&stripes, Look::Lines) > 0.5, "{stripes:?}");
        assert!(has(&stripes, Look::Grid) < 0.2, "{stripes:?}");
        let bricks = measure(&image(96, 96, |x, y| {
            let offset = if (y / 8) % 2 == 0 { 0 } else { 6 };
            let v = if y % 8 < 2 || (x + offset) % 12 < 2 {
                60
            } else {
                190
            };
            [v, v / 2, v / 3]
        }));
        assert!(has(&bricks, Look::Grid) > 0.5, "{bricks:?}");
        assert!(has(&bricks, Look::Lines) < 0.2, "{bricks:?}");
        let stars = measure(&image(128, 128, |x, y| {
            let v = if x % 16 < 2 && y % 16 < 2 { 230 } else { 8 };
            [v, v, v]
        }));
        assert!(has(&stars, Look::Stars) > 0.5, "{stars:?}");
        assert!(has(&stars, Look::Dark) > 0.9, "{stars:?}");
    }
}
