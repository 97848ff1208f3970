//! What the evaluation networks need on top of wanrt-nn's layers: 2D convolutions as its
//! [`Conv3d`] with `kt = 1` (the kernel `ops::conv2d` runs too, plus the CPU backend's Winograd
//! path for stride-1 3×3 kernels), BatchNorm folded into the convolution before it at load, and
//! a bridge to the CPU kernels of `wanrt_nn::ops` for the ops no backend has (pooling,
//! resizing: the evaluation networks run on the CPU, and Wan needs neither).

use wanrt_nn::backend::Backend;
use wanrt_nn::ops::PaddingFull;
use wanrt_nn::weights::RawTensor;
use wanrt_nn::{Conv3d, HostTensor, Tensor, VarBuilder};

use crate::error::Result;

/// `f` on `x`'s values in host memory, the result back on `be`: for the ops no backend has.
/// On the CPU backend both transfers share the buffer (no copy).
pub fn on_host(be: &dyn Backend, x: &Tensor, f: impl FnOnce(&HostTensor) -> Result<HostTensor>) -> Result<Tensor> {
    Ok(be.upload(&f(&be.to_host(x)?)?)?)
}

/// A convolution over f32 weights `[C_out, C_in, kt, kh, kw]` (computed at load, e.g. with a
/// BatchNorm folded in), prepared for `vb`'s backend and named after `vb`'s path.
fn conv3d_from(
    vb: &VarBuilder,
    weight: HostTensor,
    bias: Option<Vec<f32>>,
    stride: (usize, usize, usize),
) -> Result<Conv3d> {
    let mut conv = Conv3d::new(vb.prefix(), RawTensor::from_f32(&weight), bias, stride)?;
    conv.prepare(vb.backend())?;
    Ok(conv)
}

/// `{vb}.weight` checked to its stored shape `[C_out, C_in, (kt,) kh, kw]`, as a 5-D kernel
/// (a 2D one with `kt = 1`).
fn kernel(vb: &VarBuilder, stored: &[usize]) -> Result<HostTensor> {
    let w = vb.host("weight", stored)?;
    Ok(match *stored {
        [co, ci, kh, kw] => w.reshape([co, ci, 1, kh, kw])?,
        _ => w,
    })
}

/// The bias-free convolution at `vb` (stored shape `stored`).
pub fn conv3d_no_bias(vb: &VarBuilder, stored: &[usize], stride: (usize, usize, usize)) -> Result<Conv3d> {
    conv3d_from(vb, kernel(vb, stored)?, None, stride)
}

/// `{vb}.{conv}` (no bias, stored shape `stored`) followed by the eval-mode BatchNorm `{vb}.bn`
/// (epsilon `eps`), folded into one convolution: weights `w·s`, bias `β − μ·s` with
/// `s = γ / √(σ² + eps)`.
pub fn conv3d_bn(
    vb: &VarBuilder,
    conv: &str,
    stored: &[usize],
    stride: (usize, usize, usize),
    eps: f32,
) -> Result<Conv3d> {
    let cout = stored[0];
    let mut weight = kernel(&vb.pp(conv), stored)?;
    let bn = vb.pp("bn");
    let [g, b, m, v] = ["weight", "bias", "running_mean", "running_var"].map(|n| bn.host(n, &[cout]));
    let (g, b, m, v) = (g?, b?, m?, v?);
    let per = weight.numel() / cout;
    let bias = weight
        .data_mut()
        .chunks_exact_mut(per)
        .enumerate()
        .map(|(o, w)| {
            let s = g.data()[o] / (v.data()[o] + eps).sqrt();
            w.iter_mut().for_each(|w| *w *= s);
            b.data()[o] - m.data()[o] * s
        })
        .collect();
    conv3d_from(&vb.pp(conv), weight, Some(bias), stride)
}

/// A 2D convolution (`[N, C, H, W]`) as wanrt-nn's [`Conv3d`] with `kt = 1`.
pub struct Conv2d {
    conv: Conv3d,
    pad: PaddingFull,
}

impl Conv2d {
    /// `conv` (`kt = 1`, stride 1 in time) with zero padding `pad` = (rows, columns) on both sides.
    pub fn new(conv: Conv3d, pad: (usize, usize)) -> Self {
        debug_assert!(conv.weight_shape()[2] == 1 && conv.stride().0 == 1, "{}: not a 2D kernel", conv.name);
        Conv2d { conv, pad: PaddingFull { t: (0, 0), h: (pad.0, pad.0), w: (pad.1, pad.1) } }
    }

    /// `x: [N, C_in, H, W]` → `[N, C_out, H', W']`.
    pub fn forward(&self, be: &dyn Backend, x: &Tensor) -> Result<Tensor> {
        x.expect_rank("conv2d input", 4)?;
        let (n, c, h, w) = (x.dim(0), x.dim(1), x.dim(2), x.dim(3));
        let y = self.conv.forward(be, &x.clone().reshape([n, c, 1, h, w])?, None, self.pad)?;
        let (co, ho, wo) = (y.dim(1), y.dim(3), y.dim(4));
        Ok(y.reshape([n, co, ho, wo])?)
    }
}
