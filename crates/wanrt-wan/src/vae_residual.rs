//! The Wan2.2 VAE's residual stages (`is_residual=True`): each encoder stage adds an
//! average-pooled shortcut of its input to its output, each decoder stage a channel-duplicated
//! one, and the video is folded into `patch_size²` channels around the network.
//!
//! Mirrors diffusers 0.42.1 models/autoencoders/autoencoder_kl_wan.py: `AvgDown3D`, `DupUp3D`,
//! `WanResidualDownBlock`, `WanResidualUpBlock`, `patchify`, `unpatchify`. The shortcuts have no
//! weights: they are reshapes, a mean and a repeat.

use crate::causal_conv3d::FeatCache;
use crate::vae_blocks::{Resample, ResampleMode, ResidualBlock};
use crate::{Error, Result};
use wanrt_nn::backend::BinaryOp;
use wanrt_nn::{Backend, Param, ParamMut, Tensor, VarBuilder};

/// `AvgDown3D`: `[B, C, T, H, W]` → `[B, out, T/ft, H/fs, W/fs]`, each output channel the mean of
/// `group` consecutive values of the space-to-channel fold (time padded at the front to a
/// multiple of `ft`, as the causal convolutions pad).
pub(crate) struct AvgDown3d {
    out: usize,
    factor_t: usize,
    factor_s: usize,
    group: usize,
}

impl AvgDown3d {
    pub(crate) fn new(cin: usize, out: usize, factor_t: usize, factor_s: usize) -> Result<Self> {
        let factor = factor_t * factor_s * factor_s;
        if out == 0 || !(cin * factor).is_multiple_of(out) {
            return Err(Error::Config(format!(
                "VAE: a residual down stage of {cin} → {out} channels needs {cin} × {factor} divisible by {out}"
            )));
        }
        Ok(AvgDown3d { out, factor_t, factor_s, group: cin * factor / out })
    }

    pub(crate) fn forward(&self, be: &dyn Backend, x: &Tensor) -> Result<Tensor> {
        let (ft, fs) = (self.factor_t, self.factor_s);
        let pad_t = (ft - x.dim(2) % ft) % ft;
        let x = if pad_t > 0 {
            let mut shape = x.shape().to_vec();
            shape[2] = pad_t;
            be.cat(&[&be.zeros(&shape, x.dtype())?, x], 2)?
        } else {
            x.clone()
        };
        let &[b, c, t, h, w] = x.shape() else { unreachable!("5D") };
        if !h.is_multiple_of(fs) || !w.is_multiple_of(fs) {
            return Err(Error::Shape(format!("VAE encoder: a {h}×{w} feature map cannot be halved")));
        }
        let (t2, h2, w2) = (t / ft, h / fs, w / fs);
        // [B, C, T', ft, H', fs, W', fs] → [B, C, ft, fs, fs, T', H', W'] = [B, out, group, T'·H'·W']
        let folded = be.permute(&x.reshape([b, c, t2, ft, h2, fs, w2, fs])?, &[0, 1, 3, 5, 7, 2, 4, 6])?;
        let folded = folded.reshape([b, self.out, self.group, t2 * h2 * w2])?;
        // `mean(dim=2)`: the sum in order, then one division.
        let parts = (0..self.group).map(|g| be.narrow(&folded, 2, g, 1)).collect::<wanrt_nn::Result<Vec<_>>>()?;
        let terms: Vec<(f32, &Tensor)> = parts.iter().map(|p| (1.0, p)).collect();
        let mean = be.scalar(BinaryOp::Div, &be.lincomb(&terms)?, self.group as f32)?;
        Ok(mean.reshape([b, self.out, t2, h2, w2])?)
    }
}

/// `DupUp3D`: `[B, C, T, H, W]` → `[B, out, T·ft, H·fs, W·fs]`, each input channel repeated and
/// unfolded channel-to-space; the first chunk drops the `ft − 1` frames before its first one.
pub(crate) struct DupUp3d {
    out: usize,
    factor_t: usize,
    factor_s: usize,
    repeats: usize,
}

impl DupUp3d {
    pub(crate) fn new(cin: usize, out: usize, factor_t: usize, factor_s: usize) -> Result<Self> {
        let factor = factor_t * factor_s * factor_s;
        if cin == 0 || !(out * factor).is_multiple_of(cin) {
            return Err(Error::Config(format!(
                "VAE: a residual up stage of {cin} → {out} channels needs {out} × {factor} divisible by {cin}"
            )));
        }
        Ok(DupUp3d { out, factor_t, factor_s, repeats: out * factor / cin })
    }

    pub(crate) fn forward(&self, be: &dyn Backend, x: &Tensor, first_chunk: bool) -> Result<Tensor> {
        let &[b, c, t, h, w] = x.shape() else { unreachable!("5D") };
        let (ft, fs) = (self.factor_t, self.factor_s);
        // `repeat_interleave(repeats, dim=1)`: channel c·r + k is input channel c.
        let flat = x.clone().reshape([b, c, 1, t * h * w])?;
        let repeated = be.cat(&vec![&flat; self.repeats], 2)?;
        // [B, out, ft, fs, fs, T, H, W] → [B, out, T, ft, H, fs, W, fs]
        let spread = repeated.reshape([b, self.out, ft, fs, fs, t, h, w])?;
        let y = be.permute(&spread, &[0, 1, 5, 2, 6, 3, 7, 4])?.reshape([b, self.out, t * ft, h * fs, w * fs])?;
        Ok(if first_chunk && ft > 1 { be.narrow(&y, 2, ft - 1, t * ft - (ft - 1))? } else { y })
    }
}

/// `WanResidualDownBlock`: residual blocks and the stage's downsampler, plus the pooled input.
pub(crate) struct ResidualDownBlock {
    shortcut: AvgDown3d,
    resnets: Vec<ResidualBlock>,
    downsampler: Option<Resample>,
}

impl ResidualDownBlock {
    /// `down`: `Some(temporal)` for every stage but the last.
    pub(crate) fn new(vb: &VarBuilder, cin: usize, cout: usize, blocks: usize, down: Option<bool>) -> Result<Self> {
        let temporal = down == Some(true);
        let shortcut = AvgDown3d::new(cin, cout, if temporal { 2 } else { 1 }, if down.is_some() { 2 } else { 1 })?;
        let resnets = (0..blocks)
            .map(|j| ResidualBlock::new(&vb.pp("resnets").pp(j), if j == 0 { cin } else { cout }, cout))
            .collect::<Result<Vec<_>>>()?;
        let downsampler = down
            .map(|t| {
                let mode = if t { ResampleMode::Down3d } else { ResampleMode::Down2d };
                Resample::new(&vb.pp("downsampler"), cout, mode, None)
            })
            .transpose()?;
        Ok(ResidualDownBlock { shortcut, resnets, downsampler })
    }

    pub(crate) fn forward(&self, be: &dyn Backend, x: Tensor, cache: &mut FeatCache) -> Result<Tensor> {
        let shortcut = self.shortcut.forward(be, &x)?;
        let mut x = x;
        for r in &self.resnets {
            x = r.forward(be, x, cache)?;
        }
        if let Some(d) = &self.downsampler {
            x = d.forward(be, x, cache)?;
        }
        be.add_assign(&mut x, &shortcut)?;
        Ok(x)
    }

    pub(crate) fn visit(&self, f: &mut dyn FnMut(Param<'_>)) {
        self.resnets.iter().for_each(|r| r.visit(f));
        if let Some(d) = &self.downsampler {
            d.visit(f);
        }
    }

    pub(crate) fn visit_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_>)) {
        self.resnets.iter_mut().for_each(|r| r.visit_mut(f));
        if let Some(d) = &mut self.downsampler {
            d.visit_mut(f);
        }
    }
}

/// `WanResidualUpBlock`: `num_res_blocks + 1` residual blocks and the stage's upsampler (to
/// `cout` channels, not half), plus the duplicated input.
pub(crate) struct ResidualUpBlock {
    shortcut: Option<DupUp3d>,
    resnets: Vec<ResidualBlock>,
    upsampler: Option<Resample>,
}

impl ResidualUpBlock {
    /// `up`: `Some(temporal)` for every stage but the last.
    pub(crate) fn new(vb: &VarBuilder, cin: usize, cout: usize, blocks: usize, up: Option<bool>) -> Result<Self> {
        let shortcut = up.map(|t| DupUp3d::new(cin, cout, if t { 2 } else { 1 }, 2)).transpose()?;
        let resnets = (0..=blocks)
            .map(|j| ResidualBlock::new(&vb.pp("resnets").pp(j), if j == 0 { cin } else { cout }, cout))
            .collect::<Result<Vec<_>>>()?;
        let upsampler = up
            .map(|t| {
                let mode = if t { ResampleMode::Up3d } else { ResampleMode::Up2d };
                Resample::new(&vb.pp("upsampler"), cout, mode, Some(cout))
            })
            .transpose()?;
        Ok(ResidualUpBlock { shortcut, resnets, upsampler })
    }

    pub(crate) fn forward(
        &self,
        be: &dyn Backend,
        x: Tensor,
        cache: &mut FeatCache,
        first_chunk: bool,
    ) -> Result<Tensor> {
        let shortcut = self.shortcut.as_ref().map(|s| s.forward(be, &x, first_chunk)).transpose()?;
        let mut x = x;
        for r in &self.resnets {
            x = r.forward(be, x, cache)?;
        }
        if let Some(u) = &self.upsampler {
            x = u.forward(be, x, cache)?;
        }
        if let Some(s) = &shortcut {
            be.add_assign(&mut x, s)?;
        }
        Ok(x)
    }

    pub(crate) fn visit(&self, f: &mut dyn FnMut(Param<'_>)) {
        self.resnets.iter().for_each(|r| r.visit(f));
        if let Some(u) = &self.upsampler {
            u.visit(f);
        }
    }

    pub(crate) fn visit_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_>)) {
        self.resnets.iter_mut().for_each(|r| r.visit_mut(f));
        if let Some(u) = &mut self.upsampler {
            u.visit_mut(f);
        }
    }
}

/// `patchify`: `[B, C, F, H, W]` → `[B, C·p², F, H/p, W/p]`, channel `c·p² + pw·p + ph` (the
/// width offset before the height offset, as diffusers permutes).
pub(crate) fn patchify(be: &dyn Backend, x: &Tensor, p: usize) -> Result<Tensor> {
    let &[b, c, f, h, w] = x.shape() else { unreachable!("5D") };
    if !h.is_multiple_of(p) || !w.is_multiple_of(p) {
        return Err(Error::Shape(format!("VAE: height {h} and width {w} must be divisible by patch_size {p}")));
    }
    let t = be.permute(&x.clone().reshape([b, c, f, h / p, p, w / p, p])?, &[0, 1, 6, 4, 2, 3, 5])?;
    Ok(t.reshape([b, c * p * p, f, h / p, w / p])?)
}

/// `unpatchify`, the inverse of [`patchify`].
pub(crate) fn unpatchify(be: &dyn Backend, x: &Tensor, p: usize) -> Result<Tensor> {
    let &[b, cp, f, h, w] = x.shape() else { unreachable!("5D") };
    let c = cp / (p * p);
    let t = be.permute(&x.clone().reshape([b, c, p, p, f, h, w])?, &[0, 1, 4, 5, 3, 6, 2])?;
    Ok(t.reshape([b, c, f, h * p, w * p])?)
}
