//! The Wan VAE's causal 3D convolution and its frame cache.
//!
//! Mirrors diffusers 0.42.1 `WanCausalConv3d` (models/autoencoders/autoencoder_kl_wan.py): time is
//! padded at the front only, and when the VAE runs chunk by chunk the last `CACHE_T = 2` frames
//! of each convolution's input are kept and replace that much of the next chunk's front padding,
//! in a cache slot taken in call order (diffusers' `feat_cache` / `feat_idx`).

use crate::Result;
use wanrt_nn::ops::PaddingFull;
use wanrt_nn::{Backend, Conv3d, Param, ParamMut, Tensor, VarBuilder};

pub(crate) const CACHE_T: usize = 2;

/// One causal-cache slot (diffusers' `feat_cache[idx]`).
#[derive(Clone)]
pub(crate) enum Slot {
    Empty,
    /// diffusers' `"Rep"`: an upsample3d saw its first chunk; the next one has zero history.
    Rep,
    Frames(Tensor),
}

/// Cache slots of one encode/decode pass, taken in call order.
pub(crate) struct FeatCache {
    slots: Vec<Slot>,
    idx: usize,
}

impl FeatCache {
    pub(crate) fn new() -> Self {
        FeatCache { slots: Vec::new(), idx: 0 }
    }
    pub(crate) fn rewind(&mut self) {
        self.idx = 0;
    }
    pub(crate) fn take(&mut self) -> (usize, Slot) {
        if self.idx == self.slots.len() {
            self.slots.push(Slot::Empty);
        }
        let i = self.idx;
        self.idx += 1;
        (i, std::mem::replace(&mut self.slots[i], Slot::Empty))
    }
    pub(crate) fn put(&mut self, i: usize, s: Slot) {
        self.slots[i] = s;
    }
}

/// Last `n` frames of `[B, C, T, H, W]`.
pub(crate) fn last_frames(be: &dyn Backend, x: &Tensor, n: usize) -> Result<Tensor> {
    let t = x.dim(2);
    Ok(be.narrow(x, 2, t - n.min(t), n.min(t))?)
}

/// The newest `CACHE_T` frames for a conv's slot: the input's last frames, preceded by the
/// previous chunk's last frame when the input is shorter.
pub(crate) fn refreshed(be: &dyn Backend, x: &Tensor, previous: Option<&Tensor>) -> Result<Tensor> {
    let new_cache = last_frames(be, x, CACHE_T)?;
    Ok(match previous {
        Some(p) if new_cache.dim(2) < CACHE_T => be.cat(&[&last_frames(be, p, 1)?, &new_cache], 2)?,
        _ => new_cache,
    })
}

/// A Conv3d whose time padding is causal (front only) and may be replaced by cached frames.
pub(crate) struct CausalConv3d {
    pub(crate) conv: Conv3d,
    /// Padding as configured: (t, h, w); time is padded by 2·t at the front.
    pad: (usize, usize, usize),
}

impl CausalConv3d {
    /// The conv at `vb`'s path: weight `[cout, cin, k…]` (2D kernels are read with `kt = 1`).
    pub(crate) fn new(
        vb: &VarBuilder,
        cin: usize,
        cout: usize,
        k: [usize; 3],
        pad: (usize, usize, usize),
        stride: (usize, usize, usize),
    ) -> Result<Self> {
        Ok(CausalConv3d { conv: vb.conv3d([cout, cin, k[0], k[1], k[2]], stride)?, pad })
    }

    /// `cache`: frames preceding `x` (replacing that much of the zero padding).
    pub(crate) fn forward(&self, be: &dyn Backend, x: &Tensor, cache: Option<&Tensor>) -> Result<Tensor> {
        let mut front = 2 * self.pad.0;
        let hist = match cache {
            Some(c) if front > 0 => {
                front = front.saturating_sub(c.dim(2));
                Some(c)
            }
            _ => None,
        };
        let pad = PaddingFull { t: (front, 0), h: (self.pad.1, self.pad.1), w: (self.pad.2, self.pad.2) };
        Ok(self.conv.forward(be, x, hist, pad)?)
    }

    /// Cached call: uses and refreshes this conv's slot with the last frames of its input.
    pub(crate) fn forward_cached(&self, be: &dyn Backend, x: &Tensor, cache: &mut FeatCache) -> Result<Tensor> {
        let (i, slot) = cache.take();
        let prev = match slot {
            Slot::Frames(t) => Some(t),
            _ => None,
        };
        let new_cache = refreshed(be, x, prev.as_ref())?;
        let y = self.forward(be, x, prev.as_ref())?;
        cache.put(i, Slot::Frames(new_cache));
        Ok(y)
    }

    pub(crate) fn visit(&self, f: &mut dyn FnMut(Param<'_>)) {
        f(Param::Conv3d(&self.conv));
    }

    pub(crate) fn visit_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_>)) {
        f(ParamMut::Conv3d(&mut self.conv));
    }
}
