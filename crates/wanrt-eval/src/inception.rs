//! The FID Inception network of pytorch-fid 0.3.0 (`pytorch_fid/inception.py`,
//! `InceptionV3([3], resize_input=True, normalize_input=True, use_fid_inception=True)`):
//! torchvision's Inception3 stem and Mixed blocks with the FID patches
//! (`FIDInceptionA/C/E_1`: 3×3 average pooling that ignores padding; `FIDInceptionE_2`:
//! 3×3 max pooling), ending in the 2048-d global average pool ("pool_3").
//!
//! Loads pytorch-fid's state_dict (`pt_inception-2015-12-05-6726825d.pth`, names like
//! `Mixed_5b.branch1x1.conv.weight`); every `BasicConv2d` (conv without bias + BatchNorm
//! eps 0.001 + ReLU) is folded into one conv with bias at load time.

use std::path::Path;

use wanrt_nn::backend::{Activation, Backend};
use wanrt_nn::ops::pool::{avg_pool2d, global_avg_pool, max_pool2d};
use wanrt_nn::ops::resize::resize_bilinear;
use wanrt_nn::{BackendRef, HostTensor, Tensor, VarBuilder, WeightStore};

use crate::error::{EvalError, Result};
use crate::items::Frame;
use crate::layers::{conv3d_bn, on_host, Conv2d};

/// The usual file name of pytorch-fid's weights (named in "missing weights" errors).
pub const INCEPTION_FILE: &str = "pt_inception-2015-12-05-6726825d.pth";
/// Feature size of the pool_3 layer.
pub const FEATURE_DIM: usize = 2048;
const BN_EPS: f32 = 0.001;

/// torchvision's `BasicConv2d` (conv + BatchNorm + ReLU) with its BatchNorm folded.
struct BasicConv(Conv2d);

impl BasicConv {
    /// `{name}.conv.weight` `[cout, cin, kh, kw]` + `{name}.bn.{weight,bias,running_mean,running_var}`.
    fn load(
        vb: &VarBuilder,
        name: &str,
        cin: usize,
        cout: usize,
        k: (usize, usize),
        stride: usize,
        pad: (usize, usize),
    ) -> Result<Self> {
        let conv = conv3d_bn(&vb.pp(name), "conv", &[cout, cin, k.0, k.1], (1, stride, stride), BN_EPS)?;
        Ok(BasicConv(Conv2d::new(conv, pad)))
    }

    /// `x: [N, cin, H, W]` → relu(conv(x)) `[N, cout, H', W']`.
    fn forward(&self, be: &dyn Backend, x: &Tensor) -> Result<Tensor> {
        Ok(be.activation(self.0.forward(be, x)?, Activation::Relu)?)
    }
}

/// Layers applied one after the other.
fn chain(be: &dyn Backend, layers: &[BasicConv], x: &Tensor) -> Result<Tensor> {
    layers.iter().try_fold(x.clone(), |x, l| l.forward(be, &x))
}

fn cat(be: &dyn Backend, parts: &[Tensor]) -> Result<Tensor> {
    let refs: Vec<&Tensor> = parts.iter().collect();
    Ok(be.cat(&refs, 1)?)
}

/// pytorch-fid's 3×3 average pooling, stride 1, padding 1, padded values not counted.
fn avg_pool_3x3(be: &dyn Backend, x: &Tensor) -> Result<Tensor> {
    on_host(be, x, |h| Ok(avg_pool2d(h, 3, 1, 1, false)?))
}

fn max_pool(be: &dyn Backend, x: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    on_host(be, x, |h| Ok(max_pool2d(h, 3, stride, pad)?))
}

/// `FIDInceptionA` (Mixed_5b/5c/5d) and `FIDInceptionC` (Mixed_6b..6e): a 1×1 branch, two
/// conv chains and a 1×1 conv after 3×3 average pooling, concatenated.
struct BlockAc {
    b1: BasicConv,
    chains: [Vec<BasicConv>; 2],
    pool: BasicConv,
}

impl BlockAc {
    /// `FIDInceptionA`.
    fn load_a(vb: &VarBuilder, cin: usize, pool_features: usize) -> Result<Self> {
        let c = |n: &str, ci, co, k, pad| BasicConv::load(vb, n, ci, co, k, 1, pad);
        Ok(BlockAc {
            b1: c("branch1x1", cin, 64, (1, 1), (0, 0))?,
            chains: [
                vec![c("branch5x5_1", cin, 48, (1, 1), (0, 0))?, c("branch5x5_2", 48, 64, (5, 5), (2, 2))?],
                vec![
                    c("branch3x3dbl_1", cin, 64, (1, 1), (0, 0))?,
                    c("branch3x3dbl_2", 64, 96, (3, 3), (1, 1))?,
                    c("branch3x3dbl_3", 96, 96, (3, 3), (1, 1))?,
                ],
            ],
            pool: c("branch_pool", cin, pool_features, (1, 1), (0, 0))?,
        })
    }

    /// `FIDInceptionC` with `c7` channels in its 7×7 branches.
    fn load_c(vb: &VarBuilder, c7: usize) -> Result<Self> {
        let c = |n: &str, ci, co, k, pad| BasicConv::load(vb, n, ci, co, k, 1, pad);
        let (r, col) = (((1, 7), (0, 3)), ((7, 1), (3, 0)));
        Ok(BlockAc {
            b1: c("branch1x1", 768, 192, (1, 1), (0, 0))?,
            chains: [
                vec![
                    c("branch7x7_1", 768, c7, (1, 1), (0, 0))?,
                    c("branch7x7_2", c7, c7, r.0, r.1)?,
                    c("branch7x7_3", c7, 192, col.0, col.1)?,
                ],
                vec![
                    c("branch7x7dbl_1", 768, c7, (1, 1), (0, 0))?,
                    c("branch7x7dbl_2", c7, c7, col.0, col.1)?,
                    c("branch7x7dbl_3", c7, c7, r.0, r.1)?,
                    c("branch7x7dbl_4", c7, c7, col.0, col.1)?,
                    c("branch7x7dbl_5", c7, 192, r.0, r.1)?,
                ],
            ],
            pool: c("branch_pool", 768, 192, (1, 1), (0, 0))?,
        })
    }

    fn forward(&self, be: &dyn Backend, x: &Tensor) -> Result<Tensor> {
        let a = self.b1.forward(be, x)?;
        let b = chain(be, &self.chains[0], x)?;
        let c = chain(be, &self.chains[1], x)?;
        let d = self.pool.forward(be, &avg_pool_3x3(be, x)?)?;
        cat(be, &[a, b, c, d])
    }
}

/// torchvision `InceptionB` (Mixed_6a) and `InceptionD` (Mixed_7a), the grid reductions: two
/// conv chains ending in a stride-2 conv and a stride-2 3×3 max pool, concatenated.
struct BlockBd {
    chains: [Vec<BasicConv>; 2],
}

impl BlockBd {
    /// `InceptionB`.
    fn load_b(vb: &VarBuilder, cin: usize) -> Result<Self> {
        let c = |n: &str, ci, co, k, s, pad| BasicConv::load(vb, n, ci, co, k, s, pad);
        Ok(BlockBd {
            chains: [
                vec![c("branch3x3", cin, 384, (3, 3), 2, (0, 0))?],
                vec![
                    c("branch3x3dbl_1", cin, 64, (1, 1), 1, (0, 0))?,
                    c("branch3x3dbl_2", 64, 96, (3, 3), 1, (1, 1))?,
                    c("branch3x3dbl_3", 96, 96, (3, 3), 2, (0, 0))?,
                ],
            ],
        })
    }

    /// `InceptionD`.
    fn load_d(vb: &VarBuilder, cin: usize) -> Result<Self> {
        let c = |n: &str, ci, co, k, s, pad| BasicConv::load(vb, n, ci, co, k, s, pad);
        Ok(BlockBd {
            chains: [
                vec![c("branch3x3_1", cin, 192, (1, 1), 1, (0, 0))?, c("branch3x3_2", 192, 320, (3, 3), 2, (0, 0))?],
                vec![
                    c("branch7x7x3_1", cin, 192, (1, 1), 1, (0, 0))?,
                    c("branch7x7x3_2", 192, 192, (1, 7), 1, (0, 3))?,
                    c("branch7x7x3_3", 192, 192, (7, 1), 1, (3, 0))?,
                    c("branch7x7x3_4", 192, 192, (3, 3), 2, (0, 0))?,
                ],
            ],
        })
    }

    fn forward(&self, be: &dyn Backend, x: &Tensor) -> Result<Tensor> {
        let a = chain(be, &self.chains[0], x)?;
        let b = chain(be, &self.chains[1], x)?;
        let c = max_pool(be, x, 2, 0)?;
        cat(be, &[a, b, c])
    }
}

/// `FIDInceptionE_1` (Mixed_7b, average pool) / `FIDInceptionE_2` (Mixed_7c, max pool).
struct BlockE {
    b1: BasicConv,
    b3_1: BasicConv,
    b3_2a: BasicConv,
    b3_2b: BasicConv,
    dbl: [BasicConv; 2],
    d3a: BasicConv,
    d3b: BasicConv,
    pool: BasicConv,
    max_pool: bool,
}

impl BlockE {
    fn load(vb: &VarBuilder, cin: usize, max_pool: bool) -> Result<Self> {
        let c = |n: &str, ci, co, k, pad| BasicConv::load(vb, n, ci, co, k, 1, pad);
        Ok(BlockE {
            b1: c("branch1x1", cin, 320, (1, 1), (0, 0))?,
            b3_1: c("branch3x3_1", cin, 384, (1, 1), (0, 0))?,
            b3_2a: c("branch3x3_2a", 384, 384, (1, 3), (0, 1))?,
            b3_2b: c("branch3x3_2b", 384, 384, (3, 1), (1, 0))?,
            dbl: [c("branch3x3dbl_1", cin, 448, (1, 1), (0, 0))?, c("branch3x3dbl_2", 448, 384, (3, 3), (1, 1))?],
            d3a: c("branch3x3dbl_3a", 384, 384, (1, 3), (0, 1))?,
            d3b: c("branch3x3dbl_3b", 384, 384, (3, 1), (1, 0))?,
            pool: c("branch_pool", cin, 192, (1, 1), (0, 0))?,
            max_pool,
        })
    }
    fn forward(&self, be: &dyn Backend, x: &Tensor) -> Result<Tensor> {
        let a = self.b1.forward(be, x)?;
        let b = self.b3_1.forward(be, x)?;
        let (b1, b2) = (self.b3_2a.forward(be, &b)?, self.b3_2b.forward(be, &b)?);
        let c = chain(be, &self.dbl, x)?;
        let (c1, c2) = (self.d3a.forward(be, &c)?, self.d3b.forward(be, &c)?);
        let pooled = if self.max_pool { max_pool(be, x, 1, 1)? } else { avg_pool_3x3(be, x)? };
        let d = self.pool.forward(be, &pooled)?;
        cat(be, &[a, b1, b2, c1, c2, d])
    }
}

/// pytorch-fid's `InceptionV3([3])`: images → 2048-d pool_3 features.
pub struct FidInception {
    backend: BackendRef,
    stem: [BasicConv; 5],
    mixed_5: [BlockAc; 3],
    mixed_6a: BlockBd,
    mixed_6: [BlockAc; 4],
    mixed_7a: BlockBd,
    mixed_7b: BlockE,
    mixed_7c: BlockE,
}

impl FidInception {
    /// Loads pytorch-fid's state_dict (`.pth`, or a `.safetensors` with the same names) onto
    /// the CPU backend.
    pub fn load(path: &Path) -> Result<Self> {
        crate::weights::load(path, |store| Self::from_store(store, wanrt_nn::backend::cpu()))
    }

    /// The network from `store` (pytorch-fid's names), run on `backend`.
    pub fn from_store(store: &WeightStore, backend: BackendRef) -> Result<Self> {
        if !store.contains("Mixed_7c.branch_pool.conv.weight") {
            return Err(EvalError::Weights {
                path: store.origin().into(),
                msg: format!(
                    "not a pytorch-fid Inception state_dict (no `Mixed_7c.branch_pool.conv.weight`; \
                     expected the layout of `{INCEPTION_FILE}`)"
                ),
            });
        }
        let vb = VarBuilder::root(store, &*backend);
        let c = |n: &str, ci, co, k, s, pad| BasicConv::load(&vb, n, ci, co, k, s, pad);
        Ok(FidInception {
            stem: [
                c("Conv2d_1a_3x3", 3, 32, (3, 3), 2, (0, 0))?,
                c("Conv2d_2a_3x3", 32, 32, (3, 3), 1, (0, 0))?,
                c("Conv2d_2b_3x3", 32, 64, (3, 3), 1, (1, 1))?,
                c("Conv2d_3b_1x1", 64, 80, (1, 1), 1, (0, 0))?,
                c("Conv2d_4a_3x3", 80, 192, (3, 3), 1, (0, 0))?,
            ],
            mixed_5: [
                BlockAc::load_a(&vb.pp("Mixed_5b"), 192, 32)?,
                BlockAc::load_a(&vb.pp("Mixed_5c"), 256, 64)?,
                BlockAc::load_a(&vb.pp("Mixed_5d"), 288, 64)?,
            ],
            mixed_6a: BlockBd::load_b(&vb.pp("Mixed_6a"), 288)?,
            mixed_6: [
                BlockAc::load_c(&vb.pp("Mixed_6b"), 128)?,
                BlockAc::load_c(&vb.pp("Mixed_6c"), 160)?,
                BlockAc::load_c(&vb.pp("Mixed_6d"), 160)?,
                BlockAc::load_c(&vb.pp("Mixed_6e"), 192)?,
            ],
            mixed_7a: BlockBd::load_d(&vb.pp("Mixed_7a"), 768)?,
            mixed_7b: BlockE::load(&vb.pp("Mixed_7b"), 1280, false)?,
            mixed_7c: BlockE::load(&vb.pp("Mixed_7c"), 2048, true)?,
            backend,
        })
    }

    /// `x: [N, 3, H, W]` in [0, 1] → `[N, 2048]` (resize to 299 bilinear, 2x−1, network).
    pub fn forward(&self, x: &HostTensor) -> Result<HostTensor> {
        self.forward_prepared(&Self::prepare(x)?)
    }

    /// pytorch-fid's input transform: `[N, 3, H, W]` in [0, 1] → `[N, 3, 299, 299]` in [−1, 1].
    pub fn prepare(x: &HostTensor) -> Result<HostTensor> {
        Ok(resize_bilinear(x, 299, 299)?.map(|v| 2.0 * v - 1.0))
    }

    /// The network on prepared input `[N, 3, 299, 299]` → `[N, 2048]`. Every op works
    /// sample by sample, so a sample's features do not depend on the batch it is in.
    pub fn forward_prepared(&self, x: &HostTensor) -> Result<HostTensor> {
        let be = &*self.backend;
        let mut x = be.upload(x)?;
        for (i, conv) in self.stem.iter().enumerate() {
            x = conv.forward(be, &x)?;
            // torchvision's `maxpool1` after Conv2d_2b, `maxpool2` after Conv2d_4a
            if i == 2 || i == 4 {
                x = max_pool(be, &x, 2, 0)?;
            }
        }
        for b in &self.mixed_5 {
            x = b.forward(be, &x)?;
        }
        x = self.mixed_6a.forward(be, &x)?;
        for b in &self.mixed_6 {
            x = b.forward(be, &x)?;
        }
        x = self.mixed_7a.forward(be, &x)?;
        x = self.mixed_7b.forward(be, &x)?;
        x = self.mixed_7c.forward(be, &x)?;
        Ok(global_avg_pool(&be.to_host(&x)?)?)
    }

    /// Features of one uint8 frame (as pytorch-fid's `ToTensor()` → x/255).
    pub fn features(&self, frame: &Frame) -> Result<Vec<f32>> {
        let x = frame_to_nchw(frame);
        Ok(self.forward(&x)?.into_data())
    }

    /// Features of frames of any sizes, run as one batch `[N, 2048]` (row-major): each
    /// frame is resized on its own, then the batch goes through the network together.
    pub fn features_batch(&self, frames: &[Frame]) -> Result<Vec<f32>> {
        if frames.is_empty() {
            return Ok(Vec::new());
        }
        let prepared = frames.iter().map(|f| Self::prepare(&frame_to_nchw(f))).collect::<Result<Vec<_>>>()?;
        let refs: Vec<&HostTensor> = prepared.iter().collect();
        let x = HostTensor::cat(&refs, 0)?;
        drop(prepared);
        Ok(self.forward_prepared(&x)?.into_data())
    }
}

/// `[H, W, 3]` uint8 → `[1, 3, H, W]` f32 in [0, 1].
pub fn frame_to_nchw(frame: &Frame) -> HostTensor {
    let (h, w) = (frame.height, frame.width);
    let mut data = vec![0.0f32; 3 * h * w];
    for (i, px) in frame.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            data[c * h * w + i] = px[c] as f32 / 255.0;
        }
    }
    HostTensor::new([1, 3, h, w], data).expect("shape matches data")
}
