//! Kernels shared by the CPU models: TensorFlow's "same" padding, a single-threaded matrix
//! product and a depthwise convolution.

use crate::Error;

/// TensorFlow "same" padding `(before, after)` for one axis.
pub fn same_padding(len: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = len.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(len);
    (total / 2, total - total / 2)
}

/// `dst[m×n] = a[m×k] · b`, with `dst` and `a` row-major and `b`'s element `(i, j)` at
/// `b[i * b_rs + j * b_cs]`. Runs on the calling thread only.
pub fn matmul(
    dst: &mut [f32],
    a: &[f32],
    b: &[f32],
    (m, n, k): (usize, usize, usize),
    (b_rs, b_cs): (usize, usize),
) -> Result<(), Error> {
    if m == 0 || n == 0 || k == 0 {
        return Err(Error::Inference(format!(
            "empty matrix product {m}×{k}·{k}×{n}"
        )));
    }
    let b_needed = (k - 1) * b_rs + (n - 1) * b_cs + 1;
    if dst.len() < m * n || a.len() < m * k || b.len() < b_needed {
        return Err(Error::Inference(format!(
            "matrix product {m}×{k}·{k}×{n}: buffers too small ({}, {}, {})",
            dst.len(),
            a.len(),
            b.len()
        )));
    }
    let s = |x: usize| x as isize;
    // SAFETY: the checks above guarantee every element gemm reads or writes is in bounds:
    // dst (i, j) at i*n + j < m*n, a (i, l) at i*k + l < m*k, b (l, j) at l*b_rs + j*b_cs <
    // b_needed. `dst` is borrowed mutably, so it aliases neither input. With
    // `read_dst == false` the old contents of `dst` are not used.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            s(n),
            false,
            a.as_ptr(),
            1,
            s(k),
            b.as_ptr(),
            s(b_cs),
            s(b_rs),
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    Ok(())
}

/// A depthwise convolution's geometry: its input and output sizes, and where it reads —
/// kernel size, strides, dilations and the padding before the first row and column (rows,
/// then columns in each pair).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Input height, width and channels.
    pub input: (usize, usize, usize),
    /// Output height and width (the channels are the input's).
    pub output: (usize, usize),
    /// Kernel height and width.
    pub kernel: (usize, usize),
    /// Vertical and horizontal strides.
    pub strides: (usize, usize),
    /// Vertical and horizontal dilations.
    pub dilations: (usize, usize),
    /// Padding above and left of the input.
    pub pad: (usize, usize),
}

/// Most kernel taps a [`depthwise`] kernel may have.
pub const MAX_TAPS: usize = 49;

/// A depthwise convolution (one filter per channel) of `x` (`[h, w, c]`, channels last) into
/// `out` (`[oh, ow, c]`): `weight` is tap-major (`[kh * kw, c]`), `bias` per channel, then
/// `act` on each value. Taps falling outside the input read zeros.
pub fn depthwise(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: Geometry,
    act: impl Fn(f32) -> f32 + Copy,
    out: &mut [f32],
) -> Result<(), Error> {
    let ((h, w, c), (oh, ow)) = (g.input, g.output);
    let (kh, kw) = g.kernel;
    let taps = kh * kw;
    if taps == 0 || taps > MAX_TAPS {
        return Err(Error::Inference(format!(
            "a {kh}x{kw} depthwise kernel; at most {MAX_TAPS} taps are supported"
        )));
    }
    if x.len() < h * w * c
        || out.len() < oh * ow * c
        || weight.len() < taps * c
        || bias.is_some_and(|b| b.len() < c)
    {
        return Err(Error::Inference("depthwise buffers too small".into()));
    }
    let by_rows = g.strides == (1, 1) && g.dilations == (1, 1) && c < ROWS_BELOW_CHANNELS;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: `depthwise_avx2_fma` only requires the AVX2 and FMA instruction sets, which
        // the CPU was just checked to support.
        unsafe { depthwise_avx2_fma(by_rows, x, weight, bias, g, act, out) };
        return Ok(());
    }
    depthwise_kernel::<false>(by_rows, x, weight, bias, g, act, out);
    Ok(())
}

/// Channel counts below which a stride-1 [`depthwise`] convolution runs row by row: with few
/// channels a pixel, setting up each pixel's taps cost more than its multiply-adds.
const ROWS_BELOW_CHANNELS: usize = 32;

/// [`depthwise_kernel`] compiled for AVX2 with fused multiply-adds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn depthwise_avx2_fma(
    by_rows: bool,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: Geometry,
    act: impl Fn(f32) -> f32 + Copy,
    out: &mut [f32],
) {
    depthwise_kernel::<true>(by_rows, x, weight, bias, g, act, out);
}

/// The kernel behind [`depthwise`]: [`depthwise_rows`] when `by_rows`, else
/// [`depthwise_with`] (sizes already checked; `FMA` uses fused multiply-adds, only fast where
/// the CPU has them).
#[inline(always)]
fn depthwise_kernel<const FMA: bool>(
    by_rows: bool,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: Geometry,
    act: impl Fn(f32) -> f32 + Copy,
    out: &mut [f32],
) {
    if by_rows {
        depthwise_rows::<FMA>(x, weight, bias, g, act, out);
    } else {
        depthwise_with::<FMA>(x, weight, bias, g, act, out);
    }
}

/// [`depthwise`] for strides and dilations of 1, an output row at a time: each tap adds its
/// weights (repeated along the row) times the input row it reads, shifted, as one long vector
/// loop. The same sums in the same order as [`depthwise_with`], so the same values.
#[inline(always)]
fn depthwise_rows<const FMA: bool>(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: Geometry,
    act: impl Fn(f32) -> f32 + Copy,
    out: &mut [f32],
) {
    let ((h, w, c), (oh, ow)) = (g.input, g.output);
    let (kh, kw) = g.kernel;
    let (pt, pl) = g.pad;
    let row = ow * c;
    // Per-channel values repeated along an output row.
    fn along_row(per_channel: &[f32], row: usize) -> impl Iterator<Item = f32> + '_ {
        per_channel.iter().cycle().take(row).copied()
    }
    let weights: Vec<f32> = weight[..kh * kw * c]
        .chunks_exact(c)
        .flat_map(|t| along_row(t, row))
        .collect();
    let start: Vec<f32> = match bias {
        Some(b) => along_row(&b[..c], row).collect(),
        None => vec![0.0; row],
    };
    for (oy, dst) in out[..oh * row].chunks_exact_mut(row).enumerate() {
        dst.copy_from_slice(&start);
        for ky in 0..kh {
            let Some(iy) = (oy + ky).checked_sub(pt).filter(|&v| v < h) else {
                continue;
            };
            let src = &x[iy * w * c..][..w * c];
            for kx in 0..kw {
                // The output pixels whose tap lands inside the input (0 <= ox + kx - pl < w).
                let lo = pl.saturating_sub(kx);
                let hi = (w + pl).saturating_sub(kx).min(ow);
                if lo >= hi {
                    continue;
                }
                let ws = &weights[(ky * kw + kx) * row..][lo * c..hi * c];
                let xs = &src[(lo + kx - pl) * c..(hi + kx - pl) * c];
                for ((d, xv), wv) in dst[lo * c..hi * c].iter_mut().zip(xs).zip(ws) {
                    *d = madd::<FMA>(*xv, *wv, *d);
                }
            }
        }
        dst.iter_mut().for_each(|d| *d = act(*d));
    }
}

/// [`depthwise`] a pixel at a time, channels in register blocks; where every tap of
/// [`PIXELS`] neighbouring output pixels lies inside the input, those pixels share each
/// weight load. Every value is its bias plus its in-bounds taps in kernel order either way.
#[inline(always)]
fn depthwise_with<const FMA: bool>(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: Geometry,
    act: impl Fn(f32) -> f32 + Copy,
    out: &mut [f32],
) {
    let ((h, w, c), (oh, ow)) = (g.input, g.output);
    let (kh, kw) = g.kernel;
    let (sy, sx) = g.strides;
    let (dy, dx) = g.dilations;
    let (pt, pl) = g.pad;
    // Output columns whose every tap lies inside the input's width: `lo..hi`.
    let inside_x = |ox: usize| ox * sx >= pl && ox * sx + (kw - 1) * dx < w + pl;
    let lo = (0..ow).find(|&ox| inside_x(ox)).unwrap_or(ow);
    let hi = (lo..ow).find(|&ox| !inside_x(ox)).unwrap_or(ow);
    // (input offset, weight offset) of each tap inside the image, for one output pixel.
    let mut taps = [(0usize, 0usize); MAX_TAPS];
    for oy in 0..oh {
        let inside_y = oy * sy >= pt && oy * sy + (kh - 1) * dy < h + pt;
        let mut ox = 0;
        while ox < ow {
            let mut n = 0;
            for ky in 0..kh {
                let Some(iy) = (oy * sy + ky * dy).checked_sub(pt).filter(|&v| v < h) else {
                    continue;
                };
                for kx in 0..kw {
                    let Some(ix) = (ox * sx + kx * dx).checked_sub(pl).filter(|&v| v < w) else {
                        continue;
                    };
                    taps[n] = ((iy * w + ix) * c, (ky * kw + kx) * c);
                    n += 1;
                }
            }
            let (taps, step) = (&taps[..n], sx * c);
            if inside_y && ox >= lo && ox + PIXELS <= hi {
                let dst = &mut out[(oy * ow + ox) * c..][..PIXELS * c];
                let mut c0 = 0;
                c0 = dw_pixels::<PIXELS, 16, FMA>(c0, c, dst, bias, taps, step, x, weight, act);
                c0 = dw_pixels::<PIXELS, 8, FMA>(c0, c, dst, bias, taps, step, x, weight, act);
                dw_pixels::<PIXELS, 1, FMA>(c0, c, dst, bias, taps, step, x, weight, act);
                ox += PIXELS;
                continue;
            }
            let dst = &mut out[(oy * ow + ox) * c..][..c];
            let mut c0 = 0;
            c0 = dw_pixels::<1, 32, FMA>(c0, c, dst, bias, taps, step, x, weight, act);
            c0 = dw_pixels::<1, 8, FMA>(c0, c, dst, bias, taps, step, x, weight, act);
            dw_pixels::<1, 1, FMA>(c0, c, dst, bias, taps, step, x, weight, act);
            ox += 1;
        }
    }
}

/// Neighbouring output pixels [`depthwise_with`] computes together where it can.
const PIXELS: usize = 4;

/// `P` neighbouring output pixels (`step` input values apart) of a depthwise convolution
/// whose `taps` all lie inside the input for each of them, channels `c0..c` in blocks of `L`
/// accumulated in registers over all `taps` (each weight block loaded once for all the
/// pixels), then `act`; returns where the whole blocks ended.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn dw_pixels<const P: usize, const L: usize, const FMA: bool>(
    mut c0: usize,
    c: usize,
    dst: &mut [f32],
    bias: Option<&[f32]>,
    taps: &[(usize, usize)],
    step: usize,
    x: &[f32],
    weight: &[f32],
    act: impl Fn(f32) -> f32,
) -> usize {
    while c0 + L <= c {
        let mut acc = [[0f32; L]; P];
        if let Some(b) = bias {
            for a in &mut acc {
                a.copy_from_slice(&b[c0..c0 + L]);
            }
        }
        for &(xo, wo) in taps {
            let ws = &weight[wo + c0..wo + c0 + L];
            let xs = &x[xo + c0..xo + c0 + (P - 1) * step + L];
            for (p, a) in acc.iter_mut().enumerate() {
                let xs = &xs[p * step..p * step + L];
                for i in 0..L {
                    a[i] = madd::<FMA>(xs[i], ws[i], a[i]);
                }
            }
        }
        for (p, a) in acc.iter().enumerate() {
            for (d, v) in dst[p * c + c0..p * c + c0 + L].iter_mut().zip(a) {
                *d = act(*v);
            }
        }
        c0 += L;
    }
    c0
}

/// `acc + x·w`: one rounding with `FMA`, else two. Every kernel here accumulates through
/// this, so their sums agree bit for bit.
#[inline(always)]
fn madd<const FMA: bool>(x: f32, w: f32, acc: f32) -> f32 {
    if FMA {
        x.mul_add(w, acc)
    } else {
        acc + x * w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        assert_eq!(same_padding(224, 3, 2), (0, 1));
        assert_eq!(same_padding(56, 5, 2), (1, 2));
        assert_eq!(same_padding(14, 5, 1), (2, 2));
        assert_eq!(same_padding(7, 3, 1), (1, 1));
    }

    #[test]
    fn matmul_with_strided_b() {
        // [1 2; 3 4] · [5 6; 7 8], b given column-major.
        let mut dst = [0f32; 4];
        matmul(
            &mut dst,
            &[1., 2., 3., 4.],
            &[5., 7., 6., 8.],
            (2, 2, 2),
            (1, 2),
        )
        .unwrap();
        assert_eq!(dst, [19., 22., 43., 50.]);
        assert!(matmul(&mut dst, &[1.], &[1.], (2, 2, 2), (1, 2)).is_err());
    }

    /// `inputs` varied input values, a `k`×`k` kernel's weights and biases for `c` channels.
    fn layer(inputs: usize, k: usize, c: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let x = (0..inputs)
            .map(|i| ((i * 37) % 23) as f32 * 0.13 - 1.4)
            .collect();
        let wt = (0..k * k * c)
            .map(|i| ((i * 11) % 17) as f32 * 0.07 - 0.5)
            .collect();
        let b = (0..c).map(|i| i as f32 * 0.01 - 0.03).collect();
        (x, wt, b)
    }

    #[test]
    fn row_kernel_gives_the_pixel_kernels_values() {
        // Stride 1 with few channels takes the row kernel: the same sums in the same order,
        // so bit for bit the pixel kernel's values, padding on every side included.
        for (c, k, pad) in [
            (3, 3, (1, 1)),
            (11, 5, (2, 2)),
            (16, 3, (0, 2)),
            (5, 5, (4, 0)),
        ] {
            let (h, w) = (6, 7);
            let (x, wt, b) = layer(h * w * c, k, c);
            let g = Geometry {
                input: (h, w, c),
                output: (h + 2 * pad.0 + 1 - k, w + 2 * pad.1 + 1 - k),
                kernel: (k, k),
                strides: (1, 1),
                dilations: (1, 1),
                pad,
            };
            let n = g.output.0 * g.output.1 * c;
            let act = |v: f32| v.clamp(-1.0, 6.0);
            let (mut rows, mut pixels) = (vec![f32::NAN; n], vec![f32::NAN; n]);
            depthwise_rows::<false>(&x, &wt, Some(&b), g, act, &mut rows);
            depthwise_with::<false>(&x, &wt, Some(&b), g, act, &mut pixels);
            assert_eq!(rows, pixels, "{c} channels, {k}x{k}, pad {pad:?}");
            depthwise_rows::<true>(&x, &wt, None, g, act, &mut rows);
            depthwise_with::<true>(&x, &wt, None, g, act, &mut pixels);
            assert_eq!(rows, pixels, "fused multiply-adds, no bias");
            let mut public = vec![f32::NAN; n];
            depthwise(&x, &wt, None, g, act, &mut public).unwrap();
            assert!(public.iter().zip(&rows).all(|(p, r)| (p - r).abs() < 1e-5));
        }
    }

    #[test]
    fn pixel_blocks_give_the_values_of_a_sum_in_kernel_order() {
        // Wide rows take the blocks of neighbouring pixels; every value must still be its
        // bias plus its in-bounds taps in kernel order, bit for bit.
        for (c, k, stride, dilation) in [
            (3, 3, 1, 1),
            (8, 3, 2, 1),
            (21, 5, 1, 1),
            (40, 3, 2, 2),
            (72, 5, 2, 1),
            (35, 3, 1, 2),
        ] {
            let (h, w) = (9usize, 19usize);
            let (x, wt, b) = layer(h * w * c, k, c);
            let span = (k - 1) * dilation + 1;
            let (oh, ow) = (h.div_ceil(stride), w.div_ceil(stride));
            let pad = (
                same_padding(h, span, stride).0,
                same_padding(w, span, stride).0,
            );
            let g = Geometry {
                input: (h, w, c),
                output: (oh, ow),
                kernel: (k, k),
                strides: (stride, stride),
                dilations: (dilation, dilation),
                pad,
            };
            let act = |v: f32| v.clamp(-1.0, 6.0);
            let direct = |fma: bool, bias: bool| {
                let mut out = vec![0f32; oh * ow * c];
                for oy in 0..oh {
                    for ox in 0..ow {
                        for ch in 0..c {
                            let mut acc = if bias { b[ch] } else { 0.0 };
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy =
                                        (oy * stride + ky * dilation) as isize - pad.0 as isize;
                                    let ix =
                                        (ox * stride + kx * dilation) as isize - pad.1 as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let v = x[(iy as usize * w + ix as usize) * c + ch];
                                    let wv = wt[(ky * k + kx) * c + ch];
                                    acc = if fma {
                                        v.mul_add(wv, acc)
                                    } else {
                                        acc + v * wv
                                    };
                                }
                            }
                            out[(oy * ow + ox) * c + ch] = act(acc);
                        }
                    }
                }
                out
            };
            let mut got = vec![f32::NAN; oh * ow * c];
            depthwise_with::<false>(&x, &wt, Some(&b), g, act, &mut got);
            assert_eq!(
                got,
                direct(false, true),
                "{c} channels, {k}x{k}, stride {stride}"
            );
            depthwise_with::<true>(&x, &wt, None, g, act, &mut got);
            assert_eq!(got, direct(true, false), "fused multiply-adds, no bias");
        }
    }

    #[test]
    fn depthwise_matches_a_direct_sum() {
        // 3x4 input, 11 channels (blocks of 8 and a remainder), 3x3 kernel, stride 2, pad 1.
        let (h, w, c) = (3, 4, 11);
        let x: Vec<f32> = (0..h * w * c).map(|i| (i % 7) as f32 - 3.0).collect();
        let wt: Vec<f32> = (0..9 * c).map(|i| (i % 5) as f32 * 0.5 - 1.0).collect();
        let b: Vec<f32> = (0..c).map(|i| i as f32 * 0.1).collect();
        let (oh, ow) = (2, 2);
        let g = Geometry {
            input: (h, w, c),
            output: (oh, ow),
            kernel: (3, 3),
            strides: (2, 2),
            dilations: (1, 1),
            pad: (1, 1),
        };
        let mut got = vec![0f32; oh * ow * c];
        depthwise(&x, &wt, Some(&b), g, |v| v.max(0.0), &mut got).unwrap();
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let mut want = b[ch];
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (iy, ix) = ((oy * 2 + ky) as i64 - 1, (ox * 2 + kx) as i64 - 1);
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                want += x[((iy as usize) * w + ix as usize) * c + ch]
                                    * wt[(ky * 3 + kx) * c + ch];
                            }
                        }
                    }
                    let g = got[(oy * ow + ox) * c + ch];
                    assert!(
                        (g - want.max(0.0)).abs() < 1e-5,
                        "{oy},{ox},{ch}: {g} vs {want}"
                    );
                }
            }
        }
    }
}
