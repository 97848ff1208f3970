//! The building blocks of the Wan VAE: residual blocks, the mid-block's spatial attention, and
//! the resampling layers.
//!
//! Mirrors diffusers 0.42.1 models/autoencoders/autoencoder_kl_wan.py: `WanRMS_norm`,
//! `WanResidualBlock`, `WanAttentionBlock`, `WanMidBlock`, `WanResample` (the Wan2.2 VAE's
//! residual stages are in [`crate::vae_residual`]).

use crate::causal_conv3d::{last_frames, refreshed, CausalConv3d, FeatCache, Slot, CACHE_T};
use crate::Result;
use wanrt_nn::backend::{AttentionBias, AttentionPrecision};
use wanrt_nn::ops::PaddingFull;
use wanrt_nn::{Backend, Param, ParamMut, Tensor, VarBuilder};

/// `WanRMS_norm`'s gain at `vb/name.gamma`, stored `[C, 1, 1, 1]` or any shape of `C` values.
pub(crate) fn rms_gamma(vb: &VarBuilder, name: &str, c: usize) -> Result<Tensor> {
    Ok(vb.backend().weight_tensor(vb.pp(name).host_flat("gamma", c)?)?)
}

pub(crate) struct ResidualBlock {
    norm1: Tensor,
    conv1: CausalConv3d,
    norm2: Tensor,
    conv2: CausalConv3d,
    conv_shortcut: Option<CausalConv3d>,
}

impl ResidualBlock {
    pub(crate) fn new(vb: &VarBuilder, cin: usize, cout: usize) -> Result<Self> {
        let k3 = |name: &str, i: usize| CausalConv3d::new(&vb.pp(name), i, cout, [3, 3, 3], (1, 1, 1), (1, 1, 1));
        Ok(ResidualBlock {
            norm1: rms_gamma(vb, "norm1", cin)?,
            conv1: k3("conv1", cin)?,
            norm2: rms_gamma(vb, "norm2", cout)?,
            conv2: k3("conv2", cout)?,
            conv_shortcut: if cin != cout {
                Some(CausalConv3d::new(&vb.pp("conv_shortcut"), cin, cout, [1, 1, 1], (0, 0, 0), (1, 1, 1))?)
            } else {
                None
            },
        })
    }

    pub(crate) fn forward(&self, be: &dyn Backend, x: Tensor, cache: &mut FeatCache) -> Result<Tensor> {
        let h = match &self.conv_shortcut {
            Some(s) => s.forward(be, &x, None)?,
            None => x.clone(),
        };
        let y = be.channel_rms_norm(&x, &self.norm1, true)?;
        drop(x);
        let y = self.conv1.forward_cached(be, &y, cache)?;
        let y = be.channel_rms_norm(&y, &self.norm2, true)?;
        let mut y = self.conv2.forward_cached(be, &y, cache)?;
        be.add_assign(&mut y, &h)?;
        Ok(y)
    }

    pub(crate) fn visit(&self, f: &mut dyn FnMut(Param<'_>)) {
        f(Param::Tensor(&self.norm1));
        self.conv1.visit(f);
        f(Param::Tensor(&self.norm2));
        self.conv2.visit(f);
        if let Some(s) = &self.conv_shortcut {
            s.visit(f);
        }
    }

    pub(crate) fn visit_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_>)) {
        self.conv1.visit_mut(f);
        self.conv2.visit_mut(f);
        if let Some(s) = &mut self.conv_shortcut {
            s.visit_mut(f);
        }
    }
}

/// Single-head spatial self-attention applied to every frame.
pub(crate) struct AttentionBlock {
    norm: Tensor,
    /// 1×1 convolutions.
    to_qkv: CausalConv3d,
    proj: CausalConv3d,
}

impl AttentionBlock {
    pub(crate) fn new(vb: &VarBuilder, c: usize) -> Result<Self> {
        let conv1x1 =
            |name: &str, cout: usize| CausalConv3d::new(&vb.pp(name), c, cout, [1, 1, 1], (0, 0, 0), (1, 1, 1));
        Ok(AttentionBlock {
            norm: rms_gamma(vb, "norm", c)?,
            to_qkv: conv1x1("to_qkv", 3 * c)?,
            proj: conv1x1("proj", c)?,
        })
    }

    pub(crate) fn forward(&self, be: &dyn Backend, x: &Tensor) -> Result<Tensor> {
        let &[b, c, t, h, w] = x.shape() else { unreachable!("5D") };
        let qkv = self.to_qkv.forward(be, &be.channel_rms_norm(x, &self.norm, false)?, None)?;
        // [B, 3C, T, H, W] → [B·T, H·W, 1, 3C]
        let qkv = be.permute(&qkv, &[0, 2, 3, 4, 1])?.reshape([b * t, h * w, 1, 3 * c])?;
        let q = be.narrow(&qkv, 3, 0, c)?;
        let k = be.narrow(&qkv, 3, c, c)?;
        let v = be.narrow(&qkv, 3, 2 * c, c)?;
        let scale = 1.0 / (c as f32).sqrt();
        let o = be.attention(&q, &k, &v, scale, AttentionBias::default(), AttentionPrecision::Full)?;
        let o = be.permute(&o.reshape([b, t, h, w, c])?, &[0, 4, 1, 2, 3])?;
        let mut y = self.proj.forward(be, &o, None)?;
        be.add_assign(&mut y, x)?;
        Ok(y)
    }

    fn visit(&self, f: &mut dyn FnMut(Param<'_>)) {
        f(Param::Tensor(&self.norm));
        self.to_qkv.visit(f);
        self.proj.visit(f);
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_>)) {
        self.to_qkv.visit_mut(f);
        self.proj.visit_mut(f);
    }
}

pub(crate) struct MidBlock {
    res0: ResidualBlock,
    attn: AttentionBlock,
    res1: ResidualBlock,
}

impl MidBlock {
    pub(crate) fn new(vb: &VarBuilder, c: usize) -> Result<Self> {
        Ok(MidBlock {
            res0: ResidualBlock::new(&vb.pp("resnets.0"), c, c)?,
            attn: AttentionBlock::new(&vb.pp("attentions.0"), c)?,
            res1: ResidualBlock::new(&vb.pp("resnets.1"), c, c)?,
        })
    }

    pub(crate) fn forward(&self, be: &dyn Backend, x: Tensor, cache: &mut FeatCache) -> Result<Tensor> {
        let x = self.res0.forward(be, x, cache)?;
        let x = self.attn.forward(be, &x)?;
        self.res1.forward(be, x, cache)
    }

    pub(crate) fn visit(&self, f: &mut dyn FnMut(Param<'_>)) {
        self.res0.visit(f);
        self.attn.visit(f);
        self.res1.visit(f);
    }

    pub(crate) fn visit_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_>)) {
        self.res0.visit_mut(f);
        self.attn.visit_mut(f);
        self.res1.visit_mut(f);
    }
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum ResampleMode {
    Up2d,
    Up3d,
    Down2d,
    Down3d,
}

pub(crate) struct Resample {
    mode: ResampleMode,
    /// The spatial 3×3 conv (`resample.1`), as a (1,3,3) conv3d.
    conv: CausalConv3d,
    time_conv: Option<CausalConv3d>,
}

impl Resample {
    /// `upsample_out`: the up modes' output channels (diffusers' `upsample_out_dim`, default `c / 2`;
    /// the Wan2.2 VAE's residual stages keep `c`).
    pub(crate) fn new(vb: &VarBuilder, c: usize, mode: ResampleMode, upsample_out: Option<usize>) -> Result<Self> {
        let up = matches!(mode, ResampleMode::Up2d | ResampleMode::Up3d);
        let cout = if up { upsample_out.unwrap_or(c / 2) } else { c };
        let (pad, stride) = if up { ((0, 1, 1), (1, 1, 1)) } else { ((0, 0, 0), (1, 2, 2)) };
        let conv = CausalConv3d::new(&vb.pp("resample.1"), c, cout, [1, 3, 3], pad, stride)?;
        let time_conv = match mode {
            ResampleMode::Up3d => {
                Some(CausalConv3d::new(&vb.pp("time_conv"), c, 2 * c, [3, 1, 1], (1, 0, 0), (1, 1, 1))?)
            }
            ResampleMode::Down3d => {
                Some(CausalConv3d::new(&vb.pp("time_conv"), c, c, [3, 1, 1], (0, 0, 0), (2, 1, 1))?)
            }
            _ => None,
        };
        Ok(Resample { mode, conv, time_conv })
    }

    pub(crate) fn forward(&self, be: &dyn Backend, mut x: Tensor, cache: &mut FeatCache) -> Result<Tensor> {
        if self.mode == ResampleMode::Up3d {
            let tc = self.time_conv.as_ref().expect("upsample3d has time_conv");
            let (i, slot) = cache.take();
            match slot {
                Slot::Empty => cache.put(i, Slot::Rep),
                Slot::Frames(prev) => {
                    let new_cache = refreshed(be, &x, Some(&prev))?;
                    let y = tc.forward(be, &x, Some(&prev))?;
                    cache.put(i, Slot::Frames(new_cache));
                    x = interleave_time(be, y)?;
                }
                Slot::Rep => {
                    // The chunk after the first: its history is zero frames.
                    let mut new_cache = last_frames(be, &x, CACHE_T)?;
                    if new_cache.dim(2) < CACHE_T {
                        let zeros = be.zeros(new_cache.shape(), new_cache.dtype())?;
                        new_cache = be.cat(&[&zeros, &new_cache], 2)?;
                    }
                    let y = tc.forward(be, &x, None)?;
                    cache.put(i, Slot::Frames(new_cache));
                    x = interleave_time(be, y)?;
                }
            }
        }
        let x = match self.mode {
            ResampleMode::Up2d | ResampleMode::Up3d => self.conv.forward(be, &be.upsample_nearest2x(&x)?, None)?,
            ResampleMode::Down2d | ResampleMode::Down3d => {
                let pad = PaddingFull { t: (0, 0), h: (0, 1), w: (0, 1) };
                self.conv.conv.forward(be, &x, None, pad)?
            }
        };
        if self.mode != ResampleMode::Down3d {
            return Ok(x);
        }
        let tc = self.time_conv.as_ref().expect("downsample3d has time_conv");
        let (i, slot) = cache.take();
        match slot {
            Slot::Frames(prev) => {
                let new_cache = last_frames(be, &x, 1)?;
                // The strided time conv has no causal padding: the previous frame is real input.
                let y = tc.conv.forward(be, &x, Some(&last_frames(be, &prev, 1)?), PaddingFull::default())?;
                cache.put(i, Slot::Frames(new_cache));
                Ok(y)
            }
            _ => {
                cache.put(i, Slot::Frames(x.clone()));
                Ok(x)
            }
        }
    }

    pub(crate) fn visit(&self, f: &mut dyn FnMut(Param<'_>)) {
        self.conv.visit(f);
        if let Some(t) = &self.time_conv {
            t.visit(f);
        }
    }

    pub(crate) fn visit_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_>)) {
        self.conv.visit_mut(f);
        if let Some(t) = &mut self.time_conv {
            t.visit_mut(f);
        }
    }
}

/// `[B, 2C, T, H, W]` → `[B, C, 2T, H, W]` with frame `2t+k` = channel block `k`.
fn interleave_time(be: &dyn Backend, y: Tensor) -> Result<Tensor> {
    let &[b, c2, t, h, w] = y.shape() else { unreachable!("5D") };
    let c = c2 / 2;
    let t6 = be.permute(&y.reshape([b, 2, c, t, h, w])?, &[0, 2, 3, 1, 4, 5])?;
    Ok(t6.reshape([b, c, 2 * t, h, w])?)
}
