//! The I3D (Inception-v1 inflated to 3D, Kinetics-400) of VideoGPT's
//! `videogpt/fvd/pytorch_i3d.py` (from piergiaj/pytorch-i3d), the network of the
//! VideoGPT-style FVD that common_metrics_on_video_quality (`fvd/videogpt/fvd.py`) uses.
//!
//! Every conv (`Unit3D`: conv3d without bias + BatchNorm eps 1e-5 + ReLU, BN folded at
//! load) and every max pool (`MaxPool3dSamePadding`) pads "same" by TensorFlow's rule,
//! computed from the input size (`pad = max(k − s, 0)` if `n % s == 0` else
//! `max(k − n % s, 0)`, front `pad / 2`), with zeros. The head is `AvgPool3d((2, 7, 7),
//! stride 1)`, the 1×1×1 `logits` conv with bias, squeezed and averaged over time:
//! `[B, 3, T, 224, 224]` → `[B, 400]` ("logits", the FVD embedding).
//!
//! Loads `i3d_pretrained_400.pt` (a state_dict: `Conv3d_1a_7x7.conv3d.weight`,
//! `Mixed_3b.b1b.bn.running_var`, `logits.conv3d.bias`, …).

use std::path::Path;

use wanrt_nn::backend::{Activation, Backend};
use wanrt_nn::ops::pool::{avg_pool3d, max_pool3d, Pool3d};
use wanrt_nn::ops::PaddingFull;
use wanrt_nn::{BackendRef, Conv3d, HostTensor, Tensor, VarBuilder, WeightStore};

use crate::error::{EvalError, Result};
use crate::layers::{conv3d_bn, on_host};

/// The usual file name of the I3D weights (named in "missing weights" errors).
pub const I3D_FILE: &str = "i3d_pretrained_400.pt";
const BN_EPS: f32 = 1e-5;

type K3 = (usize, usize, usize);

/// TensorFlow "same" padding (front, back) of one axis.
fn same_pad(n: usize, k: usize, s: usize) -> (usize, usize) {
    let p = if n % s == 0 { k.saturating_sub(s) } else { k.saturating_sub(n % s) };
    (p / 2, p - p / 2)
}

/// "Same" padding of `[N, C, T, H, W]` (`shape`) for kernel `k`, stride `s`.
fn same_pads(shape: &[usize], k: K3, s: K3) -> PaddingFull {
    PaddingFull { t: same_pad(shape[2], k.0, s.0), h: same_pad(shape[3], k.1, s.1), w: same_pad(shape[4], k.2, s.2) }
}

/// `Unit3D` (conv3d + BatchNorm + ReLU) with its BatchNorm folded.
struct Unit {
    conv: Conv3d,
    k: K3,
    s: K3,
}

impl Unit {
    fn load(vb: &VarBuilder, cin: usize, cout: usize, k: K3, s: K3) -> Result<Self> {
        Ok(Unit { conv: conv3d_bn(vb, "conv3d", &[cout, cin, k.0, k.1, k.2], s, BN_EPS)?, k, s })
    }

    /// `x: [N, cin, T, H, W]` → `[N, cout, ⌈T/s⌉, ⌈H/s⌉, ⌈W/s⌉]`.
    fn forward(&self, be: &dyn Backend, x: &Tensor) -> Result<Tensor> {
        let pad = same_pads(x.shape(), self.k, self.s);
        Ok(be.activation(self.conv.forward(be, x, None, pad)?, Activation::Relu)?)
    }
}

/// `MaxPool3dSamePadding`: zero padding (F.pad), then max pooling.
fn max_pool_same(be: &dyn Backend, x: &Tensor, k: K3, s: K3) -> Result<Tensor> {
    on_host(be, x, |x| {
        let pad = same_pads(x.shape(), k, s);
        let &[n, c, t, h, w] = x.shape() else {
            return Err(EvalError::Msg(format!("I3D max pool: expected a 5-D input, found {:?}", x.shape())));
        };
        let (tp, hp, wp) = (t + pad.t.0 + pad.t.1, h + pad.h.0 + pad.h.1, w + pad.w.0 + pad.w.1);
        let mut padded = vec![0.0f32; n * c * tp * hp * wp];
        for nc in 0..n * c {
            for ti in 0..t {
                for hi in 0..h {
                    let src = &x.data()[((nc * t + ti) * h + hi) * w..][..w];
                    let dst = ((nc * tp + ti + pad.t.0) * hp + hi + pad.h.0) * wp + pad.w.0;
                    padded[dst..dst + w].copy_from_slice(src);
                }
            }
        }
        let xp = HostTensor::new([n, c, tp, hp, wp], padded)?;
        Ok(max_pool3d(&xp, Pool3d { kernel: k, stride: s, pad: ((0, 0), (0, 0), (0, 0)) })?)
    })
}

/// `InceptionModule`: four branches concatenated over channels.
struct Mixed {
    b0: Unit,
    b1: [Unit; 2],
    b2: [Unit; 2],
    b3b: Unit,
}

impl Mixed {
    fn load(vb: &VarBuilder, cin: usize, c: [usize; 6]) -> Result<Self> {
        let (one, three) = ((1, 1, 1), (3, 3, 3));
        let u = |n: &str, ci, co, k| Unit::load(&vb.pp(n), ci, co, k, one);
        Ok(Mixed {
            b0: u("b0", cin, c[0], one)?,
            b1: [u("b1a", cin, c[1], one)?, u("b1b", c[1], c[2], three)?],
            b2: [u("b2a", cin, c[3], one)?, u("b2b", c[3], c[4], three)?],
            b3b: u("b3b", cin, c[5], one)?,
        })
    }
    fn forward(&self, be: &dyn Backend, x: &Tensor) -> Result<Tensor> {
        let a = self.b0.forward(be, x)?;
        let b = self.b1[1].forward(be, &self.b1[0].forward(be, x)?)?;
        let c = self.b2[1].forward(be, &self.b2[0].forward(be, x)?)?;
        let d = self.b3b.forward(be, &max_pool_same(be, x, (3, 3, 3), (1, 1, 1))?)?;
        Ok(be.cat(&[&a, &b, &c, &d], 1)?)
    }
}

const MIXED: [(&str, usize, [usize; 6]); 9] = [
    ("Mixed_3b", 192, [64, 96, 128, 16, 32, 32]),
    ("Mixed_3c", 256, [128, 128, 192, 32, 96, 64]),
    ("Mixed_4b", 480, [192, 96, 208, 16, 48, 64]),
    ("Mixed_4c", 512, [160, 112, 224, 24, 64, 64]),
    ("Mixed_4d", 512, [128, 128, 256, 24, 64, 64]),
    ("Mixed_4e", 512, [112, 144, 288, 32, 64, 64]),
    ("Mixed_4f", 528, [256, 160, 320, 32, 128, 128]),
    ("Mixed_5b", 832, [256, 160, 320, 32, 128, 128]),
    ("Mixed_5c", 832, [384, 192, 384, 48, 128, 128]),
];

/// VideoGPT's `InceptionI3d(400)`.
pub struct I3d {
    backend: BackendRef,
    conv1a: Unit,
    conv2b: Unit,
    conv2c: Unit,
    mixed: Vec<Mixed>,
    /// `logits.conv3d`: the 1×1×1 classifier (with bias, no BatchNorm).
    logits: Conv3d,
    classes: usize,
}

impl I3d {
    /// Loads `i3d_pretrained_400.pt` onto the CPU backend.
    pub fn load(path: &Path) -> Result<Self> {
        crate::weights::load(path, |store| Self::from_store(store, wanrt_nn::backend::cpu()))
    }

    /// The network from `store` (pytorch-i3d's names), run on `backend`.
    pub fn from_store(store: &WeightStore, backend: BackendRef) -> Result<Self> {
        let bad = |msg: String| EvalError::Weights { path: store.origin().into(), msg };
        if !store.contains("Mixed_5c.b3b.conv3d.weight") {
            return Err(bad(format!(
                "not a pytorch-i3d InceptionI3d state_dict (no `Mixed_5c.b3b.conv3d.weight`; \
                 expected the layout of `{I3D_FILE}`)"
            )));
        }
        let &[classes, 1024, 1, 1, 1] = store.shape_of("logits.conv3d.weight")? else {
            return Err(bad(format!(
                "`logits.conv3d.weight`: expected [classes, 1024, 1, 1, 1], found {:?}",
                store.shape_of("logits.conv3d.weight")?
            )));
        };
        let vb = VarBuilder::root(store, &*backend);
        Ok(I3d {
            conv1a: Unit::load(&vb.pp("Conv3d_1a_7x7"), 3, 64, (7, 7, 7), (2, 2, 2))?,
            conv2b: Unit::load(&vb.pp("Conv3d_2b_1x1"), 64, 64, (1, 1, 1), (1, 1, 1))?,
            conv2c: Unit::load(&vb.pp("Conv3d_2c_3x3"), 64, 192, (3, 3, 3), (1, 1, 1))?,
            mixed: MIXED.iter().map(|(n, cin, c)| Mixed::load(&vb.pp(n), *cin, *c)).collect::<Result<_>>()?,
            logits: vb.pp("logits").pp("conv3d").conv3d([classes, 1024, 1, 1, 1], (1, 1, 1))?,
            classes,
            backend,
        })
    }

    /// `x: [1, 3, T, 224, 224]` in [−1, 1] → the `classes` logits averaged over time.
    pub fn forward(&self, x: &HostTensor) -> Result<Vec<f32>> {
        self.forward_batch(x)
    }

    /// `x: [N, 3, T, 224, 224]` in [−1, 1] → `[N, classes]` logits averaged over time
    /// (row-major). Every op works sample by sample: a video's logits do not depend on
    /// the batch it is in.
    pub fn forward_batch(&self, x: &HostTensor) -> Result<Vec<f32>> {
        let be = &*self.backend;
        let mut x = self.conv1a.forward(be, &be.upload(x)?)?;
        x = max_pool_same(be, &x, (1, 3, 3), (1, 2, 2))?;
        x = self.conv2b.forward(be, &x)?;
        x = self.conv2c.forward(be, &x)?;
        x = max_pool_same(be, &x, (1, 3, 3), (1, 2, 2))?;
        for (i, m) in self.mixed.iter().enumerate() {
            if i == 2 {
                x = max_pool_same(be, &x, (3, 3, 3), (2, 2, 2))?;
            }
            if i == 7 {
                x = max_pool_same(be, &x, (2, 2, 2), (2, 2, 2))?;
            }
            x = m.forward(be, &x)?;
        }
        let pool = Pool3d { kernel: (2, 7, 7), stride: (1, 1, 1), pad: ((0, 0), (0, 0), (0, 0)) };
        let x = on_host(be, &x, |x| {
            avg_pool3d(x, pool, true).map_err(|e| {
                EvalError::Msg(format!(
                    "I3D: video too short or small for the (2, 7, 7) average pool (need ≥ 9 frames): {e}"
                ))
            })
        })?;
        let y = be.to_host(&self.logits.forward(be, &x, None, PaddingFull::default())?)?;
        // y: [N, classes, T', H', W']; torch squeezes H', W' (= 1 at 224) and averages T'
        let &[n, _, t, h, w] = y.shape() else { unreachable!("conv3d returns 5-D") };
        if (h, w) != (1, 1) {
            return Err(EvalError::mismatch("I3D logits spatial size", "1x1 (224x224 input)", format!("{h}x{w}")));
        }
        let per = self.classes * t;
        Ok((0..n)
            .flat_map(|b| {
                let yb = &y.data()[b * per..(b + 1) * per];
                (0..self.classes).map(move |c| {
                    let s: f32 = yb[c * t..(c + 1) * t].iter().sum();
                    s / t as f32
                })
            })
            .collect())
    }
}
