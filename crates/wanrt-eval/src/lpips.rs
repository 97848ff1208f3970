//! LPIPS as the `lpips` package 0.1.4 computes it (`lpips/lpips.py::LPIPS`, version 0.1,
//! `lpips=True`, `spatial=False`, `normalize=True` for [0,1] inputs): inputs scaled to
//! [−1, 1], the `ScalingLayer` (`(x − shift) / scale`), torchvision AlexNet or VGG16
//! `features` cut into five slices (`lpips/pretrained_networks.py`), every slice output
//! unit-normalized over channels (`normalize_tensor`, eps 1e-10), squared differences
//! weighted by the 1×1 linear heads (`lin{k}.model.1.weight`), averaged over space and
//! summed over the five layers.
//!
//! Weights: the state_dict of an `lpips.LPIPS` module (`net.slice{k}.{i}.*`,
//! `lin{k}.model.1.weight`, `scaling_layer.*`) in one `.pth`; or the package's linear
//! heads (`weights/v0.1/alex.pth`) plus torchvision's backbone (`features.{i}.*`, e.g.
//! `alexnet-owt-7be5be79.pth`) given separately.

use std::path::Path;

use wanrt_nn::backend::{Activation, BinaryOp};
use wanrt_nn::ops::pool::max_pool2d;
use wanrt_nn::{BackendRef, HostTensor, Tensor, VarBuilder, WeightStore};

use crate::compare::FrameMetric;
use crate::error::{EvalError, Result};
use crate::inception::frame_to_nchw;
use crate::items::Frame;
use crate::layers::{conv3d_no_bias, on_host, Conv2d};

/// The backbone of an LPIPS model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LpipsNet {
    Alex,
    Vgg,
}

impl std::str::FromStr for LpipsNet {
    type Err = EvalError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "alex" => Ok(LpipsNet::Alex),
            "vgg" | "vgg16" => Ok(LpipsNet::Vgg),
            _ => Err(EvalError::mismatch("--lpips-net", "alex or vgg", s)),
        }
    }
}

impl LpipsNet {
    /// Index of the last layer of each of the five slices in torchvision's `features`.
    fn slice_ends(self) -> [usize; 5] {
        match self {
            LpipsNet::Alex => [1, 4, 7, 9, 11],
            LpipsNet::Vgg => [3, 8, 15, 22, 29],
        }
    }
    fn channels(self) -> [usize; 5] {
        match self {
            LpipsNet::Alex => [64, 192, 384, 256, 256],
            LpipsNet::Vgg => [64, 128, 256, 512, 512],
        }
    }
    /// (kernel, stride) of the max pools, by layer index.
    fn pool(self, idx: usize) -> Option<(usize, usize)> {
        match (self, idx) {
            (LpipsNet::Alex, 2 | 5) => Some((3, 2)),
            (LpipsNet::Vgg, 4 | 9 | 16 | 23) => Some((2, 2)),
            _ => None,
        }
    }
    /// (stride, padding) of the conv at `idx`.
    fn conv_geometry(self, idx: usize) -> (usize, usize) {
        match (self, idx) {
            (LpipsNet::Alex, 0) => (4, 2),
            (LpipsNet::Alex, 3) => (1, 2),
            _ => (1, 1),
        }
    }
}

enum Layer {
    Conv(Conv2d),
    Relu,
    MaxPool(usize, usize),
}

/// An LPIPS model ready to score frame pairs.
pub struct Lpips {
    backend: BackendRef,
    net: LpipsNet,
    layers: Vec<Layer>,
    /// The linear heads `lin{k}.model.1`: 1×1 convolutions `C_k → 1` without bias.
    lins: Vec<Conv2d>,
    shift: [f32; 3],
    scale: [f32; 3],
}

/// `net.slice{k}.{i}.x` → `features.{i}.x`; other names unchanged.
fn canonical(name: &str) -> Option<String> {
    if let Some(rest) = name.strip_prefix("net.slice") {
        if let Some((_, tail)) = rest.split_once('.') {
            return Some(format!("features.{tail}"));
        }
    }
    Some(name.to_string())
}

/// `x / (‖x‖ + 1e-10)` over the channels of `[1, C, H, W]` (lpips' `normalize_tensor`).
fn normalize_channels(x: &HostTensor) -> HostTensor {
    let (c, plane) = (x.dim(1), x.dim(2) * x.dim(3));
    let mut out = x.clone();
    let d = out.data_mut();
    for p in 0..plane {
        let norm = (0..c).map(|k| d[k * plane + p].powi(2)).sum::<f32>().sqrt() + 1e-10;
        (0..c).for_each(|k| d[k * plane + p] /= norm);
    }
    out
}

impl Lpips {
    /// Loads LPIPS weights: one `lpips.LPIPS` state_dict, or heads + a torchvision backbone,
    /// onto the CPU backend.
    pub fn load(net: LpipsNet, heads: &Path, backbone: Option<&Path>) -> Result<Self> {
        // One store under torchvision's names (`features.{i}.*`); the backbone file's tensors
        // replace the heads file's.
        let mut store = crate::weights::open(heads)?.renamed(canonical);
        if let Some(b) = backbone {
            let extra = crate::weights::open(b)?.renamed(canonical);
            for n in extra.names() {
                store.insert(n, extra.raw(n)?.clone());
            }
        }
        crate::weights::from_file(heads, || Self::from_store(net, &store, wanrt_nn::backend::cpu())).map_err(
            |e| match e {
                EvalError::Weights { path, msg } if msg.starts_with("missing tensor") => EvalError::Weights {
                    path,
                    msg: format!(
                        "{msg} (an lpips.LPIPS state_dict has `net.sliceK.{{i}}.*` and `linK.model.1.weight`; \
                     a lin-only file needs the torchvision backbone too)"
                    ),
                },
                e => e,
            },
        )
    }

    fn from_store(net: LpipsNet, store: &WeightStore, backend: BackendRef) -> Result<Self> {
        let bad = |msg: String| EvalError::Weights { path: store.origin().into(), msg };
        let vb = VarBuilder::root(store, &*backend);
        let last = net.slice_ends()[4];
        let mut layers = Vec::new();
        let mut cin = 3;
        for idx in 0..=last {
            let layer = vb.pp("features").pp(idx);
            if layer.contains("weight") {
                let shape = store.shape_of(&layer.path("weight"))?.to_vec();
                let &[co, ci, kh, kw] = shape.as_slice() else {
                    return Err(bad(format!("`{}` must be 4-D, found {shape:?}", layer.path("weight"))));
                };
                if ci != cin || kh != kw {
                    return Err(bad(format!("`{}`: expected [*, {cin}, k, k], found {shape:?}", layer.path("weight"))));
                }
                let (stride, pad) = net.conv_geometry(idx);
                let conv = layer.conv3d([co, ci, 1, kh, kw], (1, stride, stride))?;
                layers.push(Layer::Conv(Conv2d::new(conv, (pad, pad))));
                cin = co;
            } else if let Some((k, s)) = net.pool(idx) {
                layers.push(Layer::MaxPool(k, s));
            } else {
                layers.push(Layer::Relu);
            }
        }
        let lins = net
            .channels()
            .iter()
            .enumerate()
            .map(|(k, &c)| {
                let lin = vb.pp(format!("lin{k}")).pp("model").pp(1);
                Ok(Conv2d::new(conv3d_no_bias(&lin, &[1, c, 1, 1], (1, 1, 1))?, (0, 0)))
            })
            .collect::<Result<_>>()?;
        let mut shift = [-0.030, -0.088, -0.188];
        let mut scale = [0.458, 0.448, 0.450];
        let sl = vb.pp("scaling_layer");
        if sl.contains("shift") {
            shift.copy_from_slice(sl.host("shift", &[1, 3, 1, 1])?.data());
        }
        if sl.contains("scale") {
            scale.copy_from_slice(sl.host("scale", &[1, 3, 1, 1])?.data());
        }
        Ok(Lpips { backend, net, layers, lins, shift, scale })
    }

    /// The five slice outputs for `x: [1, 3, H, W]` already scaled.
    fn features(&self, x: Tensor) -> Result<Vec<Tensor>> {
        let be = &*self.backend;
        let ends = self.net.slice_ends();
        let mut outs = Vec::with_capacity(5);
        let mut h = x;
        for (idx, layer) in self.layers.iter().enumerate() {
            h = match layer {
                Layer::Conv(conv) => conv.forward(be, &h)?,
                Layer::Relu => be.activation(h, Activation::Relu)?,
                Layer::MaxPool(k, s) => on_host(be, &h, |h| {
                    max_pool2d(h, *k, *s, 0)
                        .map_err(|e| EvalError::Msg(format!("LPIPS: frame too small for the backbone ({e})")))
                })?,
            };
            if ends.contains(&idx) {
                outs.push(h.clone());
            }
        }
        Ok(outs)
    }

    fn prepare(&self, f: &Frame) -> Result<Tensor> {
        let mut x = frame_to_nchw(f);
        let plane = f.height * f.width;
        for c in 0..3 {
            let (sh, sc) = (self.shift[c], self.scale[c]);
            x.data_mut()[c * plane..(c + 1) * plane].iter_mut().for_each(|v| *v = ((2.0 * *v - 1.0) - sh) / sc);
        }
        Ok(self.backend.upload(&x)?)
    }

    /// LPIPS distance of two equally sized frames.
    pub fn distance(&self, a: &Frame, b: &Frame) -> Result<f64> {
        if (a.height, a.width) != (b.height, b.width) {
            return Err(EvalError::mismatch(
                "frame size",
                format!("{}x{}", a.height, a.width),
                format!("{}x{}", b.height, b.width),
            ));
        }
        let be = &*self.backend;
        let fa = self.features(self.prepare(a)?)?;
        let fb = self.features(self.prepare(b)?)?;
        let mut total = 0.0f64;
        for ((ta, tb), lin) in fa.iter().zip(&fb).zip(&self.lins) {
            // lin((normalize(a) − normalize(b))²), averaged over space
            let [na, nb] = [ta, tb].map(|t| on_host(be, t, |h| Ok(normalize_channels(h))));
            let d = be.binary(BinaryOp::Sub, &na?, &nb?)?;
            let y = be.to_host(&lin.forward(be, &be.binary(BinaryOp::Mul, &d, &d)?)?)?;
            total += y.data().iter().map(|&v| v as f64).sum::<f64>() / y.numel() as f64;
        }
        Ok(total)
    }
}

impl FrameMetric for Lpips {
    fn score(&self, reference: &Frame, candidate: &Frame) -> Result<f64> {
        self.distance(reference, candidate)
    }
}
