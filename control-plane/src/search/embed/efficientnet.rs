//! EfficientNet-Lite0 (ImageNet-1k classifier) from a state_dict in the
//! `lukemelas/EfficientNet-PyTorch` layout (`_conv_stem`, `_bn0`, `_blocks.N.…`, `_conv_head`,
//! `_bn1`, `_fc`) converted to safetensors by `scripts/fetch-models`.
//!
//! The architecture is read from the weights' names and shapes: the blocks, their expansion,
//! kernel sizes and channels. Strides are not in a state_dict; they follow EfficientNet's seven
//! stages (a stage starts where the output width changes), whose first blocks stride
//! 1, 2, 2, 2, 1, 2, 1. The Lite variants use ReLU6, no squeeze-and-excitation and TensorFlow
//! "same" padding (asymmetric for stride 2). Batch norms are folded into the convolutions at
//! load time.
//!
//! # Forward pass
//! Weights load through candle's safetensors reader; the forward pass itself is plain Rust on
//! one thread (callers already run one image per core):
//! - activations are kept channel-last (HWC, `[pixels, channels]`), so a 1×1 convolution is
//!   one GEMM `[pixels, Cin] × [Cin, Cout]` (the `gemm` crate, no threads), followed by one
//!   pass that adds the bias and applies ReLU6 or the residual;
//! - depthwise convolutions loop over output pixels with the channels innermost (contiguous,
//!   vectorised), kernel taps clipped at the borders instead of padding the input;
//! - the stem is im2col + GEMM;
//! - the buffers (three activation buffers and the im2col matrix) are allocated once per
//!   concurrent caller and reused.

use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};

use flexphoto_tfjs::kernels::{depthwise, matmul, same_padding, Geometry, MAX_TAPS};

use super::EmbedError;

/// Strides of the first block of each of EfficientNet's seven stages.
const STAGE_STRIDES: [usize; 7] = [1, 2, 2, 2, 1, 2, 1];
/// Batch-norm epsilon of the TensorFlow-trained EfficientNets.
const BN_EPS: f64 = 1e-3;

/// What one forward pass gives for each image.
#[derive(Debug, Clone)]
pub struct Classified {
    /// Class scores before softmax (1000 for ImageNet-1k).
    pub logits: Vec<f32>,
    /// Globally pooled features before the classifier (1280 for Lite0).
    pub features: Vec<f32>,
}

/// What follows a 1×1 convolution's matrix product, in the same pass as the bias.
#[derive(Clone, Copy)]
enum Epilogue<'a> {
    /// `min(max(y + b, 0), 6)`.
    Relu6,
    /// `y + b + residual` (the block's input, same shape as the output).
    Residual(&'a [f32]),
    /// `y + b`.
    Linear,
}

/// Adds the bias (one value per channel, `rows` is `[pixels, channels]`) and applies `epi`.
fn bias_epilogue(rows: &mut [f32], bias: &[f32], epi: Epilogue<'_>) {
    let c = bias.len();
    match epi {
        Epilogue::Relu6 => {
            for row in rows.chunks_exact_mut(c) {
                for (y, b) in row.iter_mut().zip(bias) {
                    *y = (*y + b).clamp(0.0, 6.0);
                }
            }
        }
        Epilogue::Residual(res) => {
            for (row, r) in rows.chunks_exact_mut(c).zip(res.chunks_exact(c)) {
                for ((y, b), r) in row.iter_mut().zip(bias).zip(r) {
                    *y += b + r;
                }
            }
        }
        Epilogue::Linear => {
            for row in rows.chunks_exact_mut(c) {
                for (y, b) in row.iter_mut().zip(bias) {
                    *y += b;
                }
            }
        }
    }
}

/// A convolution's weights with its batch norm folded in, as read from the file.
struct Folded {
    /// `[out, in_per_group, k, k]`, row-major.
    weight: Vec<f32>,
    bias: Vec<f32>,
    out_c: usize,
    in_per_group: usize,
    kernel: usize,
}

fn fold_bn(st: &Weights, conv: &str, bn: &str) -> Result<Folded, EmbedError> {
    let w = st.get(&format!("{conv}.weight"))?;
    let (out_c, in_per_group, kh, kw) = w.dims4().map_err(inf)?;
    if kh != kw {
        return Err(EmbedError::Model(format!(
            "{conv}: non-square kernel {kh}x{kw}"
        )));
    }
    let mut weight = st.vec(&w)?;
    let vector = |name: &str| -> Result<Vec<f32>, EmbedError> {
        let v = st.vec(&st.get(&format!("{bn}.{name}"))?)?;
        if v.len() != out_c {
            return Err(EmbedError::Model(format!(
                "{bn}.{name}: {} values for {out_c} channels",
                v.len()
            )));
        }
        Ok(v)
    };
    let (gamma, beta) = (vector("weight")?, vector("bias")?);
    let (mean, var) = (vector("running_mean")?, vector("running_var")?);
    let per_out = in_per_group * kh * kw;
    let mut bias = Vec::with_capacity(out_c);
    for (o, ws) in weight.chunks_exact_mut(per_out).enumerate() {
        let scale = f64::from(gamma[o]) / (f64::from(var[o]) + BN_EPS).sqrt();
        ws.iter_mut()
            .for_each(|w| *w = (f64::from(*w) * scale) as f32);
        bias.push((f64::from(beta[o]) - f64::from(mean[o]) * scale) as f32);
    }
    Ok(Folded {
        weight,
        bias,
        out_c,
        in_per_group,
        kernel: kh,
    })
}

/// A 1×1 convolution: weight `[cin, cout]` (transposed for the channel-last GEMM).
struct Pointwise {
    weight: Vec<f32>,
    bias: Vec<f32>,
    cin: usize,
    cout: usize,
}

impl Pointwise {
    fn load(st: &Weights, conv: &str, bn: &str) -> Result<Self, EmbedError> {
        let f = fold_bn(st, conv, bn)?;
        if f.kernel != 1 {
            return Err(EmbedError::Model(format!(
                "{conv}: expected a 1x1 convolution, found {0}x{0}",
                f.kernel
            )));
        }
        let (cin, cout) = (f.in_per_group, f.out_c);
        let mut weight = vec![0f32; cin * cout];
        for (o, row) in f.weight.chunks_exact(cin).enumerate() {
            for (i, w) in row.iter().enumerate() {
                weight[i * cout + o] = *w;
            }
        }
        Ok(Self {
            weight,
            bias: f.bias,
            cin,
            cout,
        })
    }

    /// `out[pixels, cout] = x[pixels, cin] · W + b`, then `epi`.
    fn run(
        &self,
        x: &[f32],
        pixels: usize,
        out: &mut [f32],
        epi: Epilogue<'_>,
    ) -> Result<(), EmbedError> {
        let out = out
            .get_mut(..pixels * self.cout)
            .ok_or_else(|| EmbedError::Inference("pointwise output buffer too small".into()))?;
        matmul(
            out,
            x,
            &self.weight,
            (pixels, self.cout, self.cin),
            (self.cout, 1),
        )?;
        if let Epilogue::Residual(r) = epi {
            if r.len() < out.len() {
                return Err(EmbedError::Inference("residual shape mismatch".into()));
            }
        }
        bias_epilogue(out, &self.bias, epi);
        Ok(())
    }
}

/// A depthwise convolution with fused ReLU6: weight `[k*k, c]` (tap-major, channels last).
struct Depthwise {
    weight: Vec<f32>,
    bias: Vec<f32>,
    channels: usize,
    kernel: usize,
    stride: usize,
}

impl Depthwise {
    fn load(st: &Weights, conv: &str, bn: &str, stride: usize) -> Result<Self, EmbedError> {
        let f = fold_bn(st, conv, bn)?;
        if f.in_per_group != 1 {
            return Err(EmbedError::Model(format!(
                "{conv}: expected a depthwise convolution, found {} inputs per group",
                f.in_per_group
            )));
        }
        if f.kernel * f.kernel > MAX_TAPS {
            return Err(EmbedError::Model(format!(
                "{conv}: {0}x{0} depthwise kernel; at most {MAX_TAPS} taps supported",
                f.kernel
            )));
        }
        let (c, kk) = (f.out_c, f.kernel * f.kernel);
        let mut weight = vec![0f32; kk * c];
        for (ch, taps) in f.weight.chunks_exact(kk).enumerate() {
            for (t, w) in taps.iter().enumerate() {
                weight[t * c + ch] = *w;
            }
        }
        Ok(Self {
            weight,
            bias: f.bias,
            channels: c,
            kernel: f.kernel,
            stride,
        })
    }

    fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        (h.div_ceil(self.stride), w.div_ceil(self.stride))
    }

    /// `x` is `[h, w, c]`; writes `[oh, ow, c]` (after ReLU6) to `out` and returns `(oh, ow)`.
    fn run(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        out: &mut [f32],
    ) -> Result<(usize, usize), EmbedError> {
        let (k, s) = (self.kernel, self.stride);
        let (oh, ow) = self.out_size(h, w);
        let g = Geometry {
            input: (h, w, self.channels),
            output: (oh, ow),
            kernel: (k, k),
            strides: (s, s),
            dilations: (1, 1),
            pad: (same_padding(h, k, s).0, same_padding(w, k, s).0),
        };
        depthwise(
            x,
            &self.weight,
            Some(&self.bias),
            g,
            |v| v.clamp(0.0, 6.0),
            out,
        )?;
        Ok((oh, ow))
    }
}

/// The dense stem convolution as im2col + GEMM: weight `[k*k*cin, cout]` in `(ky, kx, ci)`
/// row order, with fused ReLU6.
struct Stem {
    weight: Vec<f32>,
    bias: Vec<f32>,
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
}

impl Stem {
    fn load(st: &Weights, conv: &str, bn: &str, stride: usize) -> Result<Self, EmbedError> {
        let f = fold_bn(st, conv, bn)?;
        let (cin, cout, k) = (f.in_per_group, f.out_c, f.kernel);
        let mut weight = vec![0f32; k * k * cin * cout];
        // File order [cout, cin, ky, kx] → [(ky, kx, ci), cout].
        for (i, w) in f.weight.iter().enumerate() {
            let (o, ci, ky, kx) = (i / (cin * k * k), i / (k * k) % cin, i / k % k, i % k);
            weight[((ky * k + kx) * cin + ci) * cout + o] = *w;
        }
        Ok(Self {
            weight,
            bias: f.bias,
            cin,
            cout,
            kernel: k,
            stride,
        })
    }

    fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        (h.div_ceil(self.stride), w.div_ceil(self.stride))
    }

    /// Length of the working buffer [`Stem::run`] needs: the im2col matrix and a channel-last
    /// copy of the input.
    fn col_len(&self, h: usize, w: usize) -> usize {
        let (oh, ow) = self.out_size(h, w);
        oh * ow * self.kernel * self.kernel * self.cin + h * w * self.cin
    }

    /// `chw` is the planar input `[cin, h, w]`; writes `[oh, ow, cout]` to `out`.
    fn run(
        &self,
        chw: &[f32],
        (h, w): (usize, usize),
        col: &mut [f32],
        out: &mut [f32],
    ) -> Result<(usize, usize), EmbedError> {
        let (k, s, cin) = (self.kernel, self.stride, self.cin);
        let (oh, ow) = self.out_size(h, w);
        let row_len = k * k * cin;
        if col.len() < self.col_len(h, w) || chw.len() < cin * h * w {
            return Err(EmbedError::Inference("stem buffers too small".into()));
        }
        let (col, hwc) = col.split_at_mut(oh * ow * row_len);
        // Channel-last copy of the input: then each kernel row of an im2col row is one
        // contiguous run of the input.
        for (ci, plane) in chw.chunks_exact(h * w).take(cin).enumerate() {
            for (px, v) in plane.iter().enumerate() {
                hwc[px * cin + ci] = *v;
            }
        }
        let (pt, _) = same_padding(h, k, s);
        let (pl, _) = same_padding(w, k, s);
        for (p, row) in col.chunks_exact_mut(row_len).enumerate() {
            let (oy, ox) = (p / ow, p % ow);
            // Kernel columns kx0..kx1 fall inside the image, from input column ix0.
            let kx0 = pl.saturating_sub(ox * s);
            let kx1 = k.min((w + pl).saturating_sub(ox * s));
            let ix0 = ox * s + kx0 - pl;
            for (ky, dst) in row.chunks_exact_mut(k * cin).enumerate() {
                match (oy * s + ky).checked_sub(pt).filter(|&iy| iy < h) {
                    Some(iy) if kx0 < kx1 => {
                        dst[..kx0 * cin].fill(0.0);
                        dst[kx0 * cin..kx1 * cin]
                            .copy_from_slice(&hwc[(iy * w + ix0) * cin..][..(kx1 - kx0) * cin]);
                        dst[kx1 * cin..].fill(0.0);
                    }
                    _ => dst.fill(0.0),
                }
            }
        }
        let out = out
            .get_mut(..oh * ow * self.cout)
            .ok_or_else(|| EmbedError::Inference("stem output buffer too small".into()))?;
        matmul(
            out,
            col,
            &self.weight,
            (oh * ow, self.cout, row_len),
            (self.cout, 1),
        )?;
        bias_epilogue(out, &self.bias, Epilogue::Relu6);
        Ok((oh, ow))
    }
}

/// One mobile inverted bottleneck (MBConv) block without squeeze-and-excitation.
struct Block {
    expand: Option<Pointwise>,
    depthwise: Depthwise,
    project: Pointwise,
    residual: bool,
}

/// Tensors of a safetensors file, with errors that name the missing tensor.
struct Weights {
    tensors: std::collections::HashMap<String, Tensor>,
    file: String,
}

impl Weights {
    fn get(&self, name: &str) -> Result<Tensor, EmbedError> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| EmbedError::Model(format!("{}: no tensor {name}", self.file)))?;
        t.to_dtype(DType::F32).map_err(inf)
    }

    fn vec(&self, t: &Tensor) -> Result<Vec<f32>, EmbedError> {
        t.flatten_all().and_then(|t| t.to_vec1()).map_err(inf)
    }
}

fn inf(e: candle_core::Error) -> EmbedError {
    EmbedError::Inference(e.to_string())
}

/// Working memory of one forward pass, reused across calls.
#[derive(Default)]
struct Scratch {
    /// Three activation buffers (input, expanded, depthwise output), rotated per block.
    act: [Vec<f32>; 3],
    /// The stem's im2col matrix and channel-last input.
    col: Vec<f32>,
}

/// The kind of layer a forward pass just finished (for profiling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    Stem,
    Pointwise,
    Depthwise,
    /// Head convolution, pooling and classifier.
    Head,
}

/// EfficientNet-Lite0: image (3×224×224, normalised) → 1000 logits and 1280 features.
pub struct EfficientNetLite {
    stem: Stem,
    blocks: Vec<Block>,
    head: Pointwise,
    /// Classifier weight `[classes, features]`, row-major.
    fc_weight: Vec<f32>,
    fc_bias: Vec<f32>,
    /// Idle scratch buffers, one per concurrent caller so far.
    scratch: Mutex<Vec<Scratch>>,
}

impl EfficientNetLite {
    /// Loads the network from a safetensors state_dict (see the module doc for the layout).
    pub fn load(path: &Path) -> Result<Self, EmbedError> {
        let file = path.display().to_string();
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| EmbedError::Model(format!("cannot read {file}: {e}")))?;
        let st = Weights { tensors, file };
        let bad = |what: String| EmbedError::Model(format!("{}: {what}", st.file));
        let stem = Stem::load(&st, "_conv_stem", "_bn0", 2)?;

        let mut count = 0;
        while st
            .tensors
            .contains_key(&format!("_blocks.{count}._depthwise_conv.weight"))
        {
            count += 1;
        }
        if count == 0 {
            return Err(bad("no _blocks found".into()));
        }
        let mut blocks = Vec::with_capacity(count);
        let mut in_c = stem.cout;
        let mut stage = 0usize;
        let mut stage_out: Option<usize> = None;
        for b in 0..count {
            let p = format!("_blocks.{b}");
            let out_c = st.get(&format!("{p}._project_conv.weight"))?.dims()[0];
            // A new stage starts where the output width changes.
            let first_of_stage = match stage_out {
                None => true,
                Some(prev) if prev != out_c => {
                    stage += 1;
                    true
                }
                Some(_) => false,
            };
            stage_out = Some(out_c);
            let stride = match (first_of_stage, STAGE_STRIDES.get(stage)) {
                (false, _) => 1,
                (true, Some(&s)) => s,
                (true, None) => {
                    return Err(bad(format!(
                        "more than {} stages; not an EfficientNet-Lite0 layout",
                        STAGE_STRIDES.len()
                    )))
                }
            };
            let expand = if st.tensors.contains_key(&format!("{p}._expand_conv.weight")) {
                Some(Pointwise::load(
                    &st,
                    &format!("{p}._expand_conv"),
                    &format!("{p}._bn0"),
                )?)
            } else {
                None
            };
            let depthwise = Depthwise::load(
                &st,
                &format!("{p}._depthwise_conv"),
                &format!("{p}._bn1"),
                stride,
            )?;
            let project =
                Pointwise::load(&st, &format!("{p}._project_conv"), &format!("{p}._bn2"))?;
            let mid = expand.as_ref().map_or(in_c, |e| e.cout);
            let expand_in = expand.as_ref().map_or(in_c, |e| e.cin);
            if expand_in != in_c || depthwise.channels != mid || project.cin != mid {
                return Err(bad(format!("{p}: channel counts do not chain")));
            }
            blocks.push(Block {
                expand,
                depthwise,
                project,
                residual: stride == 1 && in_c == out_c,
            });
            in_c = out_c;
        }
        let head = Pointwise::load(&st, "_conv_head", "_bn1")?;
        if head.cin != in_c {
            return Err(bad("_conv_head: channel counts do not chain".into()));
        }
        let fc_weight = st.vec(&st.get("_fc.weight")?)?;
        let fc_bias = st.vec(&st.get("_fc.bias")?)?;
        if fc_bias.is_empty() || fc_weight.len() != fc_bias.len() * head.cout {
            return Err(bad("_fc: shape does not match the head".into()));
        }
        tracing::debug!(
            blocks = count,
            stages = stage + 1,
            "loaded EfficientNet-Lite"
        );
        Ok(Self {
            stem,
            blocks,
            head,
            fc_weight,
            fc_bias,
            scratch: Mutex::new(Vec::new()),
        })
    }

    /// Number of classes the classifier scores.
    pub fn num_classes(&self) -> usize {
        self.fc_bias.len()
    }

    /// Length of the pooled feature vector.
    pub fn feature_dims(&self) -> usize {
        self.head.cout
    }

    /// Runs the network on one normalised CHW image of `size`×`size`.
    pub fn classify(&self, chw: Vec<f32>, size: usize) -> Result<Classified, EmbedError> {
        let mut scratch = self
            .scratch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        let out = self.forward(&chw, size, &mut scratch, |_| {});
        self.scratch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(scratch);
        out
    }

    /// Sizes of the activation and im2col buffers for a `size`×`size` input.
    fn buffer_lens(&self, size: usize) -> (usize, usize) {
        let (mut h, mut w) = self.stem.out_size(size, size);
        let col = self.stem.col_len(size, size);
        let mut act = h * w * self.stem.cout;
        for b in &self.blocks {
            let mid = b.depthwise.channels;
            act = act.max(h * w * mid);
            (h, w) = b.depthwise.out_size(h, w);
            act = act.max(h * w * mid.max(b.project.cout));
        }
        (act.max(h * w * self.head.cout), col)
    }

    /// The forward pass on one planar image; `lap` is called after each layer.
    fn forward(
        &self,
        chw: &[f32],
        size: usize,
        scratch: &mut Scratch,
        mut lap: impl FnMut(Layer),
    ) -> Result<Classified, EmbedError> {
        if size == 0 || chw.len() != self.stem.cin * size * size {
            return Err(EmbedError::Input(format!(
                "expected {}×{size}×{size} values, got {}",
                self.stem.cin,
                chw.len()
            )));
        }
        let (act_len, col_len) = self.buffer_lens(size);
        // Grown once, never cleared: every layer writes its whole output before it is read.
        if scratch.col.len() < col_len {
            scratch.col.resize(col_len, 0.0);
        }
        let [a, b, c] = &mut scratch.act;
        for v in [&mut *a, &mut *b, &mut *c] {
            if v.len() < act_len {
                v.resize(act_len, 0.0);
            }
        }
        let (mut cur, mut spare, mid) = (&mut a[..], &mut b[..], &mut c[..]);

        let (mut h, mut w) = self.stem.run(chw, (size, size), &mut scratch.col, cur)?;
        lap(Layer::Stem);
        let mut channels = self.stem.cout;
        for blk in &self.blocks {
            let pixels = h * w;
            let x = &cur[..pixels * channels];
            let dw_in: &[f32] = match &blk.expand {
                Some(e) => {
                    e.run(x, pixels, spare, Epilogue::Relu6)?;
                    lap(Layer::Pointwise);
                    &spare[..pixels * e.cout]
                }
                None => x,
            };
            let (oh, ow) = blk.depthwise.run(dw_in, (h, w), mid)?;
            lap(Layer::Depthwise);
            let dw_out = &mid[..oh * ow * blk.depthwise.channels];
            let epi = if blk.residual {
                Epilogue::Residual(x)
            } else {
                Epilogue::Linear
            };
            blk.project.run(dw_out, oh * ow, spare, epi)?;
            lap(Layer::Pointwise);
            std::mem::swap(&mut cur, &mut spare);
            (h, w, channels) = (oh, ow, blk.project.cout);
        }

        let pixels = h * w;
        self.head
            .run(&cur[..pixels * channels], pixels, spare, Epilogue::Relu6)?;
        let mut features = vec![0f32; self.head.cout];
        for row in spare[..pixels * self.head.cout].chunks_exact(self.head.cout) {
            features.iter_mut().zip(row).for_each(|(f, y)| *f += y);
        }
        let inv = 1.0 / pixels as f32;
        features.iter_mut().for_each(|f| *f *= inv);
        let mut logits = vec![0f32; self.fc_bias.len()];
        matmul(
            &mut logits,
            &features,
            &self.fc_weight,
            (1, self.fc_bias.len(), self.head.cout),
            (1, self.head.cout),
        )?;
        logits
            .iter_mut()
            .zip(&self.fc_bias)
            .for_each(|(l, b)| *l += b);
        lap(Layer::Head);
        Ok(Classified { logits, features })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Channel-last tensor data of a `(1, c, h, w)` tensor.
    fn hwc(t: &Tensor) -> Vec<f32> {
        t.squeeze(0)
            .unwrap()
            .permute((1, 2, 0))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn depthwise_loop_matches_grouped_convolution() {
        let dev = Device::Cpu;
        // 44 channels: register blocks of 32 and 8, and a remainder.
        let c = 44;
        for (size, k, stride) in [
            (9, 3, 1),
            (9, 3, 2),
            (8, 5, 2),
            (7, 5, 1),
            (8, 3, 2),
            (2, 5, 2),
            (1, 3, 1),
        ] {
            let x = Tensor::randn(0f32, 2.0, (1, c, size, size), &dev).unwrap();
            let w = Tensor::randn(0f32, 1.0, (c, 1, k, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, c, &dev).unwrap();
            let conv = Depthwise {
                weight: w
                    .reshape((c, k * k))
                    .unwrap()
                    .t()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap(),
                bias: b.to_vec1().unwrap(),
                channels: c,
                kernel: k,
                stride,
            };
            let (oh, ow) = conv.out_size(size, size);
            let mut got = vec![f32::NAN; oh * ow * c];
            assert_eq!(
                conv.run(&hwc(&x), (size, size), &mut got).unwrap(),
                (oh, ow)
            );
            let (pt, pb) = same_padding(size, k, stride);
            let xp = x
                .pad_with_zeros(2, pt, pb)
                .unwrap()
                .pad_with_zeros(3, pt, pb)
                .unwrap();
            let want = xp
                .conv2d(&w, 0, stride, 1, c)
                .unwrap()
                .broadcast_add(&b.reshape((1, c, 1, 1)).unwrap())
                .unwrap()
                .clamp(0f32, 6f32)
                .unwrap();
            let want = hwc(&want);
            assert_eq!(got.len(), want.len(), "size {size} k {k} stride {stride}");
            let diff = got
                .iter()
                .zip(&want)
                .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
            assert!(diff < 1e-4, "size {size} k {k} stride {stride}: {diff}");
        }
    }

    #[test]
    fn stem_matches_convolution() {
        let dev = Device::Cpu;
        let (cin, cout, k, size) = (3, 5, 3, 9);
        let x = Tensor::randn(0f32, 1.0, (1, cin, size, size), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (cout, cin, k, k), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, cout, &dev).unwrap();
        let wv: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        let mut weight = vec![0f32; wv.len()];
        for o in 0..cout {
            for ci in 0..cin {
                for t in 0..k * k {
                    weight[(t * cin + ci) * cout + o] = wv[(o * cin + ci) * k * k + t];
                }
            }
        }
        let stem = Stem {
            weight,
            bias: b.to_vec1().unwrap(),
            cin,
            cout,
            kernel: k,
            stride: 2,
        };
        let (oh, ow) = stem.out_size(size, size);
        let mut col = vec![f32::NAN; stem.col_len(size, size)];
        let mut got = vec![0f32; oh * ow * cout];
        let chw: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        stem.run(&chw, (size, size), &mut col, &mut got).unwrap();
        let (p0, p1) = same_padding(size, k, 2);
        let want = x
            .pad_with_zeros(2, p0, p1)
            .unwrap()
            .pad_with_zeros(3, p0, p1)
            .unwrap()
            .conv2d(&w, 0, 2, 1, 1)
            .unwrap()
            .broadcast_add(&b.reshape((1, cout, 1, 1)).unwrap())
            .unwrap()
            .clamp(0f32, 6f32)
            .unwrap();
        let diff = got
            .iter()
            .zip(&hwc(&want))
            .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
        assert!(diff < 1e-4, "{diff}");
    }
}

/// An independent, straightforward candle formulation of the network (explicit padding,
/// candle's `conv2d` with groups for the depthwise convolutions, batch norm applied as is, not
/// folded): the yardstick the fast path is checked against.
#[cfg(test)]
mod reference {
    use super::*;

    pub struct RefNet {
        tensors: std::collections::HashMap<String, Tensor>,
    }

    impl RefNet {
        pub fn load(path: &Path) -> RefNet {
            RefNet {
                tensors: candle_core::safetensors::load(path, &Device::Cpu).unwrap(),
            }
        }

        fn t(&self, name: &str) -> Tensor {
            self.tensors[name].to_dtype(DType::F32).unwrap()
        }

        fn conv_bn(&self, x: &Tensor, conv: &str, bn: &str, stride: usize) -> Tensor {
            let w = self.t(&format!("{conv}.weight"));
            let (out_c, in_per_group, k, _) = w.dims4().unwrap();
            let in_c = x.dims()[1];
            let groups = in_c / in_per_group;
            let (_, _, h, wd) = x.dims4().unwrap();
            let (pt, pb) = same_padding(h, k, stride);
            let (pl, pr) = same_padding(wd, k, stride);
            let xp = x
                .pad_with_zeros(2, pt, pb)
                .unwrap()
                .pad_with_zeros(3, pl, pr)
                .unwrap();
            let y = xp.conv2d(&w, 0, stride, 1, groups).unwrap();
            let c = |n: &str| {
                self.t(&format!("{bn}.{n}"))
                    .reshape((1, out_c, 1, 1))
                    .unwrap()
            };
            let sd = (c("running_var") + BN_EPS).unwrap().sqrt().unwrap();
            y.broadcast_sub(&c("running_mean"))
                .unwrap()
                .broadcast_div(&sd)
                .unwrap()
                .broadcast_mul(&c("weight"))
                .unwrap()
                .broadcast_add(&c("bias"))
                .unwrap()
        }

        /// Logits and pooled features of one normalised CHW image.
        pub fn run(&self, chw: Vec<f32>, size: usize) -> (Vec<f32>, Vec<f32>) {
            let r6 = |t: Tensor| t.clamp(0f32, 6f32).unwrap();
            let x = Tensor::from_vec(chw, (1, 3, size, size), &Device::Cpu).unwrap();
            let mut y = r6(self.conv_bn(&x, "_conv_stem", "_bn0", 2));
            let (mut stage, mut prev_out) = (0, None);
            let mut b = 0;
            while self
                .tensors
                .contains_key(&format!("_blocks.{b}._depthwise_conv.weight"))
            {
                let p = format!("_blocks.{b}");
                let out_c = self.t(&format!("{p}._project_conv.weight")).dims()[0];
                let stride = match prev_out {
                    Some(o) if o == out_c => 1,
                    Some(_) => {
                        stage += 1;
                        STAGE_STRIDES[stage]
                    }
                    None => STAGE_STRIDES[0],
                };
                prev_out = Some(out_c);
                let inp = y.clone();
                if self
                    .tensors
                    .contains_key(&format!("{p}._expand_conv.weight"))
                {
                    y = r6(self.conv_bn(&y, &format!("{p}._expand_conv"), &format!("{p}._bn0"), 1));
                }
                y = r6(self.conv_bn(
                    &y,
                    &format!("{p}._depthwise_conv"),
                    &format!("{p}._bn1"),
                    stride,
                ));
                y = self.conv_bn(&y, &format!("{p}._project_conv"), &format!("{p}._bn2"), 1);
                if inp.dims() == y.dims() {
                    y = (y + inp).unwrap();
                }
                b += 1;
            }
            y = r6(self.conv_bn(&y, "_conv_head", "_bn1", 1));
            let features = y
                .flatten_from(2)
                .unwrap()
                .mean(candle_core::D::Minus1)
                .unwrap();
            let logits = features
                .matmul(&self.t("_fc.weight").t().unwrap())
                .unwrap()
                .broadcast_add(&self.t("_fc.bias"))
                .unwrap();
            (
                logits.squeeze(0).unwrap().to_vec1().unwrap(),
                features.squeeze(0).unwrap().to_vec1().unwrap(),
            )
        }
    }
}

#[cfg(test)]
mod equivalence {
    use super::*;
    use crate::search::embed::preprocess::{centre_crop_normalised, Normalise};
    use crate::search::embed::testutil;

    fn top5(v: &[f32]) -> Vec<usize> {
        let mut i: Vec<usize> = (0..v.len()).collect();
        i.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
        i.truncate(5);
        i
    }

    fn max_abs(v: &[f32]) -> f32 {
        v.iter().fold(0f32, |m, x| m.max(x.abs()))
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
    }

    /// The network's logits and features match the plain candle formulation on the labelled
    /// fixture photos: max abs difference below 1e-3 of the vectors' scale, same top-5 classes.
    #[test]
    fn matches_reference_on_fixture_photos() {
        let Some(dir) = testutil::model_dir() else {
            return;
        };
        let Some(fx) = testutil::fixtures_dir() else {
            return;
        };
        let weights = dir.join("efficientnet-lite0.safetensors");
        let net = EfficientNetLite::load(&weights).unwrap();
        let reference = reference::RefNet::load(&weights);
        let mut photos: Vec<_> = std::fs::read_dir(fx.join("labelled"))
            .unwrap()
            .map(|d| d.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "jpg" || x == "png"))
            .collect();
        photos.sort();
        assert!(!photos.is_empty());
        let (mut worst_l, mut worst_f) = (0f32, 0f32);
        for p in &photos {
            let img = testutil::load_rgb(p, 384);
            let chw = centre_crop_normalised(&img, 224, 0.875, Normalise::TFLITE).unwrap();
            let (ref_logits, ref_features) = reference.run(chw.clone(), 224);
            let got = net.classify(chw, 224).unwrap();
            let dl = max_diff(&got.logits, &ref_logits) / max_abs(&ref_logits);
            let df = max_diff(&got.features, &ref_features) / max_abs(&ref_features);
            println!(
                "{}: logits max|Δ| {:.2e} of scale {:.2}, features max|Δ| {:.2e} of scale {:.2}, top-5 {:?}",
                p.file_name().unwrap().to_string_lossy(),
                dl,
                max_abs(&ref_logits),
                df,
                max_abs(&ref_features),
                top5(&ref_logits)
            );
            assert!(dl < 1e-3 && df < 1e-3, "{}", p.display());
            assert_eq!(top5(&got.logits), top5(&ref_logits), "{}", p.display());
            worst_l = worst_l.max(dl);
            worst_f = worst_f.max(df);
        }
        println!(
            "{} photos: worst relative max|Δ| logits {worst_l:.2e}, features {worst_f:.2e}",
            photos.len()
        );
    }
}

#[cfg(test)]
mod profile {
    use super::*;
    use crate::search::embed::testutil;

    fn cpu_clock(clock: libc::clockid_t) -> f64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
        let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
        assert_eq!(rc, 0);
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    }

    /// CPU seconds used by the whole process (all threads, so helper threads would count).
    pub fn process_cpu() -> f64 {
        cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
    }

    /// CPU seconds used by the calling thread.
    pub fn thread_cpu() -> f64 {
        cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
    }

    /// Where a forward pass spends its CPU time, by layer kind (release build:
    /// `cargo test --release -p flexphoto-control-plane --lib efficientnet::profile -- --ignored --nocapture`).
    /// Thread CPU time per layer; process CPU time overall (equal when no helper threads run).
    #[test]
    #[ignore = "timing run; use a release build"]
    fn forward_profile() {
        let Some(dir) = testutil::model_dir() else {
            return;
        };
        let net = EfficientNetLite::load(&dir.join("efficientnet-lite0.safetensors")).unwrap();
        let x: Vec<f32> = Tensor::randn(0f32, 1.0, (3, 224, 224), &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut scratch = Scratch::default();
        net.forward(&x, 224, &mut scratch, |_| {}).unwrap();
        let n = 50;
        let mut spent = [0f64; 4];
        let (p0, t0) = (process_cpu(), thread_cpu());
        for _ in 0..n {
            let mut last = thread_cpu();
            net.forward(&x, 224, &mut scratch, |layer| {
                let now = thread_cpu();
                spent[layer as usize] += now - last;
                last = now;
            })
            .unwrap();
        }
        let (process, thread) = (process_cpu() - p0, thread_cpu() - t0);
        let ms = |s: f64| s * 1e3 / n as f64;
        println!(
            "forward {:.1} ms CPU ({:.1} ms process CPU): stem {:.1}, pointwise {:.1}, \
             depthwise {:.1}, head+fc {:.1}",
            ms(thread),
            ms(process),
            ms(spent[Layer::Stem as usize]),
            ms(spent[Layer::Pointwise as usize]),
            ms(spent[Layer::Depthwise as usize]),
            ms(spent[Layer::Head as usize]),
        );
    }
}
