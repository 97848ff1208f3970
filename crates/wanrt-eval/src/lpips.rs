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

use std::collections::HashMap;
use std::path::Path;

use wanrt_nn::ops::conv2d;
use wanrt_nn::ops::pool::max_pool2d;
use wanrt_nn::HostTensor;

use crate::compare::FrameMetric;
use crate::error::{EvalError, Result};
use crate::inception::frame_to_nchw;
use crate::items::Frame;
use crate::weights::StateDict;

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
    Conv { weight: HostTensor, bias: Vec<f32>, stride: usize, pad: usize },
    Relu,
    MaxPool(usize, usize),
}

/// An LPIPS model ready to score frame pairs.
pub struct Lpips {
    net: LpipsNet,
    layers: Vec<Layer>,
    lins: Vec<Vec<f32>>,
    shift: [f32; 3],
    scale: [f32; 3],
}

/// `net.slice{k}.{i}.x` → `features.{i}.x`; other names unchanged.
fn canonical(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("net.slice") {
        if let Some((_, tail)) = rest.split_once('.') {
            return format!("features.{tail}");
        }
    }
    name.to_string()
}

impl Lpips {
    /// Loads LPIPS weights: one `lpips.LPIPS` state_dict, or heads + a torchvision backbone.
    pub fn load(net: LpipsNet, heads: &Path, backbone: Option<&Path>) -> Result<Self> {
        let mut names: HashMap<String, (String, usize)> = HashMap::new();
        let mut files = vec![StateDict::open(heads)?];
        if let Some(b) = backbone {
            files.push(StateDict::open(b)?);
        }
        for (fi, f) in files.iter().enumerate() {
            for n in f.names() {
                names.insert(canonical(n), (n.to_string(), fi));
            }
        }
        let get = |canon: &str, shape: Option<&[usize]>| -> Result<HostTensor> {
            let (orig, fi) = names.get(canon).ok_or_else(|| EvalError::Weights {
                path: heads.to_path_buf(),
                msg: format!(
                    "missing tensor `{canon}` (an lpips.LPIPS state_dict has `net.sliceK.{{i}}.*` \
                     and `linK.model.1.weight`; a lin-only file needs the torchvision backbone too)"
                ),
            })?;
            files[*fi].get(orig, shape)
        };
        let chans = net.channels();
        let last = net.slice_ends()[4];
        let mut layers = Vec::new();
        let mut cin = 3;
        for idx in 0..=last {
            let wname = format!("features.{idx}.weight");
            if names.contains_key(&wname) {
                let weight = get(&wname, None)?;
                let &[co, ci, kh, kw] = weight.shape() else {
                    return Err(EvalError::Weights {
                        path: heads.to_path_buf(),
                        msg: format!("`{wname}` must be 4-D, found {:?}", weight.shape()),
                    });
                };
                if ci != cin || kh != kw {
                    return Err(EvalError::Weights {
                        path: heads.to_path_buf(),
                        msg: format!("`{wname}`: expected [*, {cin}, k, k], found {:?}", weight.shape()),
                    });
                }
                let bias = get(&format!("features.{idx}.bias"), Some(&[co]))?.into_data();
                let (stride, pad) = net.conv_geometry(idx);
                layers.push(Layer::Conv { weight, bias, stride, pad });
                cin = co;
            } else if let Some((k, s)) = net.pool(idx) {
                layers.push(Layer::MaxPool(k, s));
            } else {
                layers.push(Layer::Relu);
            }
        }
        let mut lins = Vec::new();
        for (k, &c) in chans.iter().enumerate() {
            lins.push(get(&format!("lin{k}.model.1.weight"), Some(&[1, c, 1, 1]))?.into_data());
        }
        let mut shift = [-0.030, -0.088, -0.188];
        let mut scale = [0.458, 0.448, 0.450];
        if let Ok(t) = get("scaling_layer.shift", Some(&[1, 3, 1, 1])) {
            shift.copy_from_slice(t.data());
        }
        if let Ok(t) = get("scaling_layer.scale", Some(&[1, 3, 1, 1])) {
            scale.copy_from_slice(t.data());
        }
        Ok(Lpips { net, layers, lins, shift, scale })
    }

    /// The five slice outputs for `x: [1, 3, H, W]` already scaled.
    fn features(&self, x: HostTensor) -> Result<Vec<HostTensor>> {
        let ends = self.net.slice_ends();
        let mut outs = Vec::with_capacity(5);
        let mut h = x;
        for (idx, layer) in self.layers.iter().enumerate() {
            h = match layer {
                Layer::Conv { weight, bias, stride, pad } => {
                    conv2d(&h, weight, Some(bias), (*stride, *stride), ((*pad, *pad), (*pad, *pad)))?
                }
                Layer::Relu => h.map(|v| v.max(0.0)),
                Layer::MaxPool(k, s) => max_pool2d(&h, *k, *s, 0)
                    .map_err(|e| EvalError::Msg(format!("LPIPS: frame too small for the backbone ({e})")))?,
            };
            if ends.contains(&idx) {
                outs.push(h.clone());
            }
        }
        Ok(outs)
    }

    fn prepare(&self, f: &Frame) -> HostTensor {
        let mut x = frame_to_nchw(f);
        let plane = f.height * f.width;
        for c in 0..3 {
            let (sh, sc) = (self.shift[c], self.scale[c]);
            x.data_mut()[c * plane..(c + 1) * plane].iter_mut().for_each(|v| *v = ((2.0 * *v - 1.0) - sh) / sc);
        }
        x
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
        let fa = self.features(self.prepare(a))?;
        let fb = self.features(self.prepare(b))?;
        let mut total = 0.0f64;
        for ((ta, tb), lin) in fa.iter().zip(&fb).zip(&self.lins) {
            let (c, h, w) = (ta.dim(1), ta.dim(2), ta.dim(3));
            let plane = h * w;
            let (da, db) = (ta.data(), tb.data());
            let mut acc = 0.0f64;
            for p in 0..plane {
                let na = (0..c).map(|k| da[k * plane + p].powi(2)).sum::<f32>().sqrt() + 1e-10;
                let nb = (0..c).map(|k| db[k * plane + p].powi(2)).sum::<f32>().sqrt() + 1e-10;
                let mut s = 0.0f32;
                for k in 0..c {
                    let d = da[k * plane + p] / na - db[k * plane + p] / nb;
                    s += lin[k] * d * d;
                }
                acc += s as f64;
            }
            total += acc / plane as f64;
        }
        Ok(total)
    }
}

impl FrameMetric for Lpips {
    fn score(&self, reference: &Frame, candidate: &Frame) -> Result<f64> {
        self.distance(reference, candidate)
    }
}
