//! Wan2.1 causal 3D VAE (`AutoencoderKLWan`): encoder, decoder and the
//! frame-chunked causal feature cache that bounds decoding memory.
//!
//! Mirrors diffusers 0.42.1 models/autoencoders/autoencoder_kl_wan.py:
//! `WanCausalConv3d`, `WanRMS_norm`, `WanResample`, `WanResidualBlock`,
//! `WanAttentionBlock`, `WanMidBlock`, `WanUpBlock`, `WanEncoder3d`,
//! `WanDecoder3d`. Decoding runs one latent frame at a time; every causal
//! convolution remembers the last two frames of its input (`CACHE_T = 2`)
//! in a cache slot taken in call order, exactly as diffusers' `feat_idx`.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use wanrt_nn::backend::{self, AttentionPrecision, Backend};
use wanrt_nn::ops::attention::AttentionBias;
use wanrt_nn::ops::PaddingFull;
use wanrt_nn::{BackendRef, Conv3d, Tensor, WeightStore};

const CACHE_T: usize = 2;

/// Latent statistics of the Wan2.1 VAE (z_dim 16), hard-coded in the original
/// release's `wan/modules/vae.py` and in diffusers' `AutoencoderKLWan` defaults.
pub const WAN21_LATENTS_MEAN: [f32; 16] = [
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517, -0.3632, -0.1922,
    -0.9497, 0.2503, -0.2921,
];
pub const WAN21_LATENTS_STD: [f32; 16] = [
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253,
    2.8251, 1.9160,
];

fn default_latents_mean() -> Vec<f32> {
    WAN21_LATENTS_MEAN.to_vec()
}
fn default_latents_std() -> Vec<f32> {
    WAN21_LATENTS_STD.to_vec()
}
fn default_base_dim() -> usize {
    96
}
fn default_z_dim() -> usize {
    16
}
fn default_dim_mult() -> Vec<usize> {
    vec![1, 2, 4, 4]
}
fn default_res_blocks() -> usize {
    2
}
fn default_temporal() -> Vec<bool> {
    vec![false, true, true]
}
fn default_rgb() -> usize {
    3
}

/// `vae/config.json` of a diffusers `AutoencoderKLWan` (defaults as diffusers).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct VaeConfig {
    #[serde(default = "default_base_dim")]
    pub base_dim: usize,
    #[serde(default)]
    pub decoder_base_dim: Option<usize>,
    #[serde(default = "default_z_dim")]
    pub z_dim: usize,
    #[serde(default = "default_dim_mult")]
    pub dim_mult: Vec<usize>,
    #[serde(default = "default_res_blocks")]
    pub num_res_blocks: usize,
    #[serde(default)]
    pub attn_scales: Vec<f64>,
    #[serde(default = "default_temporal")]
    pub temperal_downsample: Vec<bool>,
    #[serde(default = "default_latents_mean")]
    pub latents_mean: Vec<f32>,
    #[serde(default = "default_latents_std")]
    pub latents_std: Vec<f32>,
    #[serde(default)]
    pub is_residual: bool,
    #[serde(default = "default_rgb")]
    pub in_channels: usize,
    #[serde(default = "default_rgb")]
    pub out_channels: usize,
    #[serde(default)]
    pub patch_size: Option<usize>,
}

impl VaeConfig {
    /// diffusers' default `AutoencoderKLWan()` (the Wan2.1 VAE, 127M parameters).
    pub fn wan2_1() -> Self {
        serde_json::from_str("{}").expect("defaults")
    }

    pub fn validate(&self) -> Result<()> {
        let stages = self.dim_mult.len();
        if self.is_residual || self.patch_size.is_some() {
            return Err(Error::Config("VAE: the Wan2.2 VAE (is_residual / patch_size) is not supported".into()));
        }
        if !self.attn_scales.is_empty() {
            return Err(Error::Config("VAE: attn_scales must be empty (as in every released Wan VAE)".into()));
        }
        if stages == 0 || self.temperal_downsample.len() + 1 < stages || self.z_dim == 0 || self.base_dim == 0 {
            return Err(Error::Config(format!(
                "VAE: dim_mult {:?} needs {} temperal_downsample flags, found {}",
                self.dim_mult,
                stages.saturating_sub(1),
                self.temperal_downsample.len()
            )));
        }
        for (name, v) in [("latents_mean", &self.latents_mean), ("latents_std", &self.latents_std)] {
            if !v.is_empty() && v.len() != self.z_dim {
                return Err(Error::Config(format!(
                    "VAE: {name} has {} values, expected z_dim = {}",
                    v.len(),
                    self.z_dim
                )));
            }
        }
        Ok(())
    }

    /// Temporal compression factor (4 for Wan2.1).
    pub fn temporal_factor(&self) -> usize {
        1 << self.temperal_downsample.iter().take(self.dim_mult.len() - 1).filter(|&&t| t).count()
    }

    /// Spatial compression factor (8 for Wan2.1).
    pub fn spatial_factor(&self) -> usize {
        1 << (self.dim_mult.len() - 1)
    }
}

/// One causal-cache slot (diffusers' `feat_cache[idx]`).
#[derive(Clone)]
enum Slot {
    Empty,
    /// diffusers' `"Rep"`: an upsample3d saw its first chunk; the next one has zero history.
    Rep,
    Frames(Tensor),
}

/// Cache slots of one encode/decode pass, taken in call order.
struct FeatCache {
    slots: Vec<Slot>,
    idx: usize,
}

impl FeatCache {
    fn new() -> Self {
        FeatCache { slots: Vec::new(), idx: 0 }
    }
    fn rewind(&mut self) {
        self.idx = 0;
    }
    fn take(&mut self) -> (usize, Slot) {
        if self.idx == self.slots.len() {
            self.slots.push(Slot::Empty);
        }
        let i = self.idx;
        self.idx += 1;
        (i, std::mem::replace(&mut self.slots[i], Slot::Empty))
    }
    fn put(&mut self, i: usize, s: Slot) {
        self.slots[i] = s;
    }
}

/// Last `n` frames of `[B, C, T, H, W]`.
fn last_frames(x: &Tensor, n: usize) -> Result<Tensor> {
    let t = x.dim(2);
    Ok(x.narrow(2, t - n.min(t), n.min(t))?)
}

/// A Conv3d whose time padding is causal (front only) and may be replaced by cached frames.
struct CausalConv3d {
    conv: Conv3d,
    /// Padding as configured: (t, h, w); time is padded by 2·t at the front.
    pad: (usize, usize, usize),
}

impl CausalConv3d {
    fn load(
        ws: &WeightStore,
        name: &str,
        cin: usize,
        cout: usize,
        k: [usize; 3],
        pad: (usize, usize, usize),
    ) -> Result<Self> {
        Self::load_strided(ws, name, cin, cout, k, pad, (1, 1, 1))
    }

    fn load_strided(
        ws: &WeightStore,
        name: &str,
        cin: usize,
        cout: usize,
        k: [usize; 3],
        pad: (usize, usize, usize),
        stride: (usize, usize, usize),
    ) -> Result<Self> {
        let weight = ws.get_shaped(&format!("{name}.weight"), &[cout, cin, k[0], k[1], k[2]])?;
        Self::new(weight, ws.get_shaped(&format!("{name}.bias"), &[cout])?.into_data(), pad, stride)
    }

    fn new(weight: Tensor, bias: Vec<f32>, pad: (usize, usize, usize), stride: (usize, usize, usize)) -> Result<Self> {
        Ok(CausalConv3d { conv: Conv3d::new(weight, Some(bias), stride)?, pad })
    }

    /// `cache`: frames preceding `x` (replacing that much of the zero padding).
    fn forward(&self, be: &dyn Backend, x: &Tensor, cache: Option<&Tensor>) -> Result<Tensor> {
        let mut front = 2 * self.pad.0;
        let hist = match cache {
            Some(c) if front > 0 => {
                front = front.saturating_sub(c.dim(2));
                Some(c)
            }
            _ => None,
        };
        let pad = PaddingFull { t: (front, 0), h: (self.pad.1, self.pad.1), w: (self.pad.2, self.pad.2) };
        Ok(be.conv3d(&self.conv, x, hist, pad)?)
    }

    /// Cached call: uses and refreshes this conv's slot with the last frames of its input.
    fn forward_cached(&self, be: &dyn Backend, x: &Tensor, cache: &mut FeatCache) -> Result<Tensor> {
        let (i, slot) = cache.take();
        let prev = match slot {
            Slot::Frames(t) => Some(t),
            _ => None,
        };
        let mut new_cache = last_frames(x, CACHE_T)?;
        if new_cache.dim(2) < CACHE_T {
            if let Some(p) = &prev {
                new_cache = Tensor::cat(&[&last_frames(p, 1)?, &new_cache], 2)?;
            }
        }
        let y = self.forward(be, x, prev.as_ref())?;
        cache.put(i, Slot::Frames(new_cache));
        Ok(y)
    }
}

fn load_gamma(ws: &WeightStore, name: &str, c: usize) -> Result<Vec<f32>> {
    let t = ws.get(name)?;
    if t.numel() != c {
        return Err(wanrt_nn::Error::TensorShape {
            name: name.into(),
            expected: vec![c, 1, 1, 1],
            found: t.shape().to_vec(),
        }
        .into());
    }
    Ok(t.into_data())
}

struct ResidualBlock {
    norm1: Vec<f32>,
    conv1: CausalConv3d,
    norm2: Vec<f32>,
    conv2: CausalConv3d,
    shortcut: Option<CausalConv3d>,
}

impl ResidualBlock {
    fn load(ws: &WeightStore, p: &str, cin: usize, cout: usize) -> Result<Self> {
        Ok(ResidualBlock {
            norm1: load_gamma(ws, &format!("{p}.norm1.gamma"), cin)?,
            conv1: CausalConv3d::load(ws, &format!("{p}.conv1"), cin, cout, [3, 3, 3], (1, 1, 1))?,
            norm2: load_gamma(ws, &format!("{p}.norm2.gamma"), cout)?,
            conv2: CausalConv3d::load(ws, &format!("{p}.conv2"), cout, cout, [3, 3, 3], (1, 1, 1))?,
            shortcut: if cin != cout {
                Some(CausalConv3d::load(ws, &format!("{p}.conv_shortcut"), cin, cout, [1, 1, 1], (0, 0, 0))?)
            } else {
                None
            },
        })
    }

    fn forward(&self, be: &dyn Backend, x: Tensor, cache: &mut FeatCache) -> Result<Tensor> {
        // Without a shortcut the residual `h` is `x` itself (moved, not copied).
        let (x, h) = match &self.shortcut {
            Some(s) => {
                let h = s.forward(be, &x, None)?;
                (Some(x), h)
            }
            None => (None, x),
        };
        let y = be.channel_rms_norm(x.as_ref().unwrap_or(&h), &self.norm1, true)?;
        drop(x);
        let y = self.conv1.forward_cached(be, &y, cache)?;
        let y = be.channel_rms_norm(&y, &self.norm2, true)?;
        let mut y = self.conv2.forward_cached(be, &y, cache)?;
        be.add_assign(&mut y, &h)?;
        Ok(y)
    }
}

/// Single-head spatial self-attention applied to every frame.
struct AttentionBlock {
    norm: Vec<f32>,
    /// 1×1 convs as `[C_out, C_in, 1, 1, 1]` conv3d weights.
    to_qkv: CausalConv3d,
    proj: CausalConv3d,
}

impl AttentionBlock {
    fn load(ws: &WeightStore, p: &str, c: usize) -> Result<Self> {
        let conv1x1 = |name: &str, cout: usize| -> Result<CausalConv3d> {
            let w = ws.get_shaped(&format!("{p}.{name}.weight"), &[cout, c, 1, 1])?;
            let bias = ws.get_shaped(&format!("{p}.{name}.bias"), &[cout])?.into_data();
            CausalConv3d::new(w.reshape([cout, c, 1, 1, 1])?, bias, (0, 0, 0), (1, 1, 1))
        };
        Ok(AttentionBlock {
            norm: load_gamma(ws, &format!("{p}.norm.gamma"), c)?,
            to_qkv: conv1x1("to_qkv", 3 * c)?,
            proj: conv1x1("proj", c)?,
        })
    }

    fn forward(&self, be: &dyn Backend, x: &Tensor) -> Result<Tensor> {
        let &[b, c, t, h, w] = x.shape() else { unreachable!("5D") };
        let qkv = self.to_qkv.forward(be, &be.channel_rms_norm(x, &self.norm, false)?, None)?;
        // [B, 3C, T, H, W] → [B·T, H·W, 1, 3C]
        let qkv = qkv.permute(&[0, 2, 3, 4, 1])?.reshape([b * t, h * w, 1, 3 * c])?;
        let q = qkv.narrow(3, 0, c)?;
        let k = qkv.narrow(3, c, c)?;
        let v = qkv.narrow(3, 2 * c, c)?;
        let scale = 1.0 / (c as f32).sqrt();
        let o = be.attention(&q, &k, &v, scale, AttentionBias::default(), AttentionPrecision::Full)?;
        let o = o.reshape([b, t, h, w, c])?.permute(&[0, 4, 1, 2, 3])?;
        let mut y = self.proj.forward(be, &o, None)?;
        be.add_assign(&mut y, x)?;
        Ok(y)
    }
}

struct MidBlock {
    res0: ResidualBlock,
    attn: AttentionBlock,
    res1: ResidualBlock,
}

impl MidBlock {
    fn load(ws: &WeightStore, p: &str, c: usize) -> Result<Self> {
        Ok(MidBlock {
            res0: ResidualBlock::load(ws, &format!("{p}.resnets.0"), c, c)?,
            attn: AttentionBlock::load(ws, &format!("{p}.attentions.0"), c)?,
            res1: ResidualBlock::load(ws, &format!("{p}.resnets.1"), c, c)?,
        })
    }

    fn forward(&self, be: &dyn Backend, x: Tensor, cache: &mut FeatCache) -> Result<Tensor> {
        let x = self.res0.forward(be, x, cache)?;
        let x = self.attn.forward(be, &x)?;
        self.res1.forward(be, x, cache)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum ResampleMode {
    Up2d,
    Up3d,
    Down2d,
    Down3d,
}

struct Resample {
    mode: ResampleMode,
    /// The spatial 3×3 conv (`resample.1`), as a (1,3,3) conv3d.
    conv: CausalConv3d,
    time_conv: Option<CausalConv3d>,
}

impl Resample {
    fn load(ws: &WeightStore, p: &str, c: usize, mode: ResampleMode) -> Result<Self> {
        let up = matches!(mode, ResampleMode::Up2d | ResampleMode::Up3d);
        let cout = if up { c / 2 } else { c };
        let w = ws.get_shaped(&format!("{p}.resample.1.weight"), &[cout, c, 3, 3])?;
        let conv = CausalConv3d::new(
            w.reshape([cout, c, 1, 3, 3])?,
            ws.get_shaped(&format!("{p}.resample.1.bias"), &[cout])?.into_data(),
            (0, if up { 1 } else { 0 }, if up { 1 } else { 0 }),
            if up { (1, 1, 1) } else { (1, 2, 2) },
        )?;
        let time_conv = match mode {
            ResampleMode::Up3d => {
                Some(CausalConv3d::load(ws, &format!("{p}.time_conv"), c, 2 * c, [3, 1, 1], (1, 0, 0))?)
            }
            ResampleMode::Down3d => {
                Some(CausalConv3d::load_strided(ws, &format!("{p}.time_conv"), c, c, [3, 1, 1], (0, 0, 0), (2, 1, 1))?)
            }
            _ => None,
        };
        Ok(Resample { mode, conv, time_conv })
    }

    fn forward(&self, be: &dyn Backend, mut x: Tensor, cache: &mut FeatCache) -> Result<Tensor> {
        if self.mode == ResampleMode::Up3d {
            let tc = self.time_conv.as_ref().expect("upsample3d has time_conv");
            let (i, slot) = cache.take();
            match slot {
                Slot::Empty => cache.put(i, Slot::Rep),
                slot => {
                    let mut new_cache = last_frames(&x, CACHE_T)?;
                    let y = match &slot {
                        Slot::Frames(prev) => {
                            if new_cache.dim(2) < CACHE_T {
                                new_cache = Tensor::cat(&[&last_frames(prev, 1)?, &new_cache], 2)?;
                            }
                            tc.forward(be, &x, Some(prev))?
                        }
                        _ => {
                            if new_cache.dim(2) < CACHE_T {
                                let zeros = Tensor::zeros(new_cache.shape().to_vec());
                                new_cache = Tensor::cat(&[&zeros, &new_cache], 2)?;
                            }
                            tc.forward(be, &x, None)?
                        }
                    };
                    cache.put(i, Slot::Frames(new_cache));
                    x = interleave_time(&y)?;
                }
            }
        }
        let x = match self.mode {
            ResampleMode::Up2d | ResampleMode::Up3d => self.conv.forward(be, &be.upsample_nearest2x(&x)?, None)?,
            ResampleMode::Down2d | ResampleMode::Down3d => {
                let pad = PaddingFull { t: (0, 0), h: (0, 1), w: (0, 1) };
                be.conv3d(&self.conv.conv, &x, None, pad)?
            }
        };
        if self.mode != ResampleMode::Down3d {
            return Ok(x);
        }
        let tc = self.time_conv.as_ref().expect("downsample3d has time_conv");
        let (i, slot) = cache.take();
        match slot {
            Slot::Frames(prev) => {
                let new_cache = last_frames(&x, 1)?;
                // The strided time conv has no causal padding: the previous frame is real input.
                let y = be.conv3d(&tc.conv, &x, Some(&last_frames(&prev, 1)?), PaddingFull::default())?;
                cache.put(i, Slot::Frames(new_cache));
                Ok(y)
            }
            _ => {
                cache.put(i, Slot::Frames(x.clone()));
                Ok(x)
            }
        }
    }
}

/// `[B, 2C, T, H, W]` → `[B, C, 2T, H, W]` with frame `2t+k` = channel block `k`.
fn interleave_time(y: &Tensor) -> Result<Tensor> {
    let &[b, c2, t, h, w] = y.shape() else { unreachable!("5D") };
    let c = c2 / 2;
    Ok(y.clone().reshape([b, 2, c, t, h, w])?.permute(&[0, 2, 3, 1, 4, 5])?.reshape([b, c, 2 * t, h, w])?)
}

enum DownLayer {
    Res(Box<ResidualBlock>),
    Resample(Box<Resample>),
}

pub struct Encoder {
    conv_in: CausalConv3d,
    layers: Vec<DownLayer>,
    mid: MidBlock,
    norm_out: Vec<f32>,
    conv_out: CausalConv3d,
}

impl Encoder {
    fn load(ws: &WeightStore, cfg: &VaeConfig) -> Result<Self> {
        let dim = cfg.base_dim;
        let dims: Vec<usize> = std::iter::once(1).chain(cfg.dim_mult.iter().copied()).map(|u| u * dim).collect();
        let stages = cfg.dim_mult.len();
        let mut layers = Vec::new();
        for i in 0..stages {
            let (mut cin, cout) = (dims[i], dims[i + 1]);
            for _ in 0..cfg.num_res_blocks {
                let p = format!("encoder.down_blocks.{}", layers.len());
                layers.push(DownLayer::Res(Box::new(ResidualBlock::load(ws, &p, cin, cout)?)));
                cin = cout;
            }
            if i != stages - 1 {
                let mode = if cfg.temperal_downsample[i] { ResampleMode::Down3d } else { ResampleMode::Down2d };
                let p = format!("encoder.down_blocks.{}", layers.len());
                layers.push(DownLayer::Resample(Box::new(Resample::load(ws, &p, cout, mode)?)));
            }
        }
        let top = dims[stages];
        Ok(Encoder {
            conv_in: CausalConv3d::load(ws, "encoder.conv_in", cfg.in_channels, dims[0], [3, 3, 3], (1, 1, 1))?,
            layers,
            mid: MidBlock::load(ws, "encoder.mid_block", top)?,
            norm_out: load_gamma(ws, "encoder.norm_out.gamma", top)?,
            conv_out: CausalConv3d::load(ws, "encoder.conv_out", top, 2 * cfg.z_dim, [3, 3, 3], (1, 1, 1))?,
        })
    }

    fn forward(&self, be: &dyn Backend, x: &Tensor, cache: &mut FeatCache) -> Result<Tensor> {
        let mut x = self.conv_in.forward_cached(be, x, cache)?;
        for l in &self.layers {
            x = match l {
                DownLayer::Res(r) => r.forward(be, x, cache)?,
                DownLayer::Resample(r) => r.forward(be, x, cache)?,
            };
        }
        let x = self.mid.forward(be, x, cache)?;
        let x = be.channel_rms_norm(&x, &self.norm_out, true)?;
        self.conv_out.forward_cached(be, &x, cache)
    }
}

struct UpBlock {
    resnets: Vec<ResidualBlock>,
    upsampler: Option<Resample>,
}

pub struct Decoder {
    conv_in: CausalConv3d,
    mid: MidBlock,
    up_blocks: Vec<UpBlock>,
    norm_out: Vec<f32>,
    conv_out: CausalConv3d,
}

impl Decoder {
    fn load(ws: &WeightStore, cfg: &VaeConfig) -> Result<Self> {
        let dim = cfg.decoder_base_dim.unwrap_or(cfg.base_dim);
        let mult = &cfg.dim_mult;
        let stages = mult.len();
        let dims: Vec<usize> =
            std::iter::once(mult[stages - 1]).chain(mult.iter().rev().copied()).map(|u| u * dim).collect();
        let temporal_up: Vec<bool> = cfg.temperal_downsample.iter().take(stages - 1).rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(stages);
        for i in 0..stages {
            let mut cin = if i > 0 { dims[i] / 2 } else { dims[i] };
            let cout = dims[i + 1];
            let mut resnets = Vec::new();
            for j in 0..=cfg.num_res_blocks {
                resnets.push(ResidualBlock::load(ws, &format!("decoder.up_blocks.{i}.resnets.{j}"), cin, cout)?);
                cin = cout;
            }
            let upsampler = if i != stages - 1 {
                let mode = if temporal_up[i] { ResampleMode::Up3d } else { ResampleMode::Up2d };
                Some(Resample::load(ws, &format!("decoder.up_blocks.{i}.upsamplers.0"), cout, mode)?)
            } else {
                None
            };
            up_blocks.push(UpBlock { resnets, upsampler });
        }
        let last = dims[stages];
        Ok(Decoder {
            conv_in: CausalConv3d::load(ws, "decoder.conv_in", cfg.z_dim, dims[0], [3, 3, 3], (1, 1, 1))?,
            mid: MidBlock::load(ws, "decoder.mid_block", dims[0])?,
            up_blocks,
            norm_out: load_gamma(ws, "decoder.norm_out.gamma", last)?,
            conv_out: CausalConv3d::load(ws, "decoder.conv_out", last, cfg.out_channels, [3, 3, 3], (1, 1, 1))?,
        })
    }

    fn forward(&self, be: &dyn Backend, x: &Tensor, cache: &mut FeatCache) -> Result<Tensor> {
        let x = self.conv_in.forward_cached(be, x, cache)?;
        let mut x = self.mid.forward(be, x, cache)?;
        for blk in &self.up_blocks {
            for r in &blk.resnets {
                x = r.forward(be, x, cache)?;
            }
            if let Some(u) = &blk.upsampler {
                x = u.forward(be, x, cache)?;
            }
        }
        let x = be.channel_rms_norm(&x, &self.norm_out, true)?;
        self.conv_out.forward_cached(be, &x, cache)
    }
}

pub struct WanVae {
    pub config: VaeConfig,
    encoder: Option<Encoder>,
    decoder: Decoder,
    quant_conv: Option<CausalConv3d>,
    post_quant_conv: CausalConv3d,
    backend: BackendRef,
}

impl WanVae {
    /// Loads the decoder, and the encoder when its weights are present.
    pub fn load(ws: &WeightStore, config: VaeConfig) -> Result<Self> {
        config.validate()?;
        let z = config.z_dim;
        let has_encoder = ws.contains("encoder.conv_in.weight");
        Ok(WanVae {
            encoder: if has_encoder { Some(Encoder::load(ws, &config)?) } else { None },
            quant_conv: if has_encoder {
                Some(CausalConv3d::load(ws, "quant_conv", 2 * z, 2 * z, [1, 1, 1], (0, 0, 0))?)
            } else {
                None
            },
            decoder: Decoder::load(ws, &config)?,
            post_quant_conv: CausalConv3d::load(ws, "post_quant_conv", z, z, [1, 1, 1], (0, 0, 0))?,
            config,
            backend: backend::cpu(),
        })
    }

    /// Runs every later encode/decode on `backend` (the CPU by default).
    pub fn set_backend(&mut self, backend: BackendRef) {
        self.backend = backend;
    }

    /// Undo the latent normalisation: `z / (1/std) + mean` (diffusers' order of operations).
    pub fn denormalize(&self, z: &Tensor) -> Result<Tensor> {
        let c = self.config.z_dim;
        if self.config.latents_mean.len() != c || self.config.latents_std.len() != c {
            return Err(Error::Config("VAE config lacks latents_mean/latents_std of length z_dim".into()));
        }
        if z.rank() != 5 || z.dim(1) != c {
            return Err(Error::Shape(format!("latents must be [B, {c}, T, H, W], found {:?}", z.shape())));
        }
        let plane: usize = z.shape()[2..].iter().product();
        let mut out = z.clone();
        for (i, chunk) in out.data_mut().chunks_exact_mut(plane).enumerate() {
            let ch = i % c;
            let inv_std = 1.0 / self.config.latents_std[ch];
            let mean = self.config.latents_mean[ch];
            chunk.iter_mut().for_each(|v| *v = *v / inv_std + mean);
        }
        Ok(out)
    }

    /// Decodes `[B, z, T', H', W']` latents (already de-normalised) to `[B, 3, F, H, W]` in [-1, 1],
    /// one latent frame at a time; `on_frame` is called after each latent frame.
    pub fn decode(&self, z: &Tensor, mut on_frame: impl FnMut(usize, usize)) -> Result<Tensor> {
        if z.rank() != 5 || z.dim(1) != self.config.z_dim {
            return Err(Error::Shape(format!(
                "VAE decode expects [B, {}, T, H, W], found {:?}",
                self.config.z_dim,
                z.shape()
            )));
        }
        let be = &*self.backend;
        let mut videos = Vec::with_capacity(z.dim(0));
        for b in 0..z.dim(0) {
            let x = self.post_quant_conv.forward(be, &z.narrow(0, b, 1)?, None)?;
            let frames = x.dim(2);
            let mut cache = FeatCache::new();
            let mut outs = Vec::with_capacity(frames);
            for i in 0..frames {
                cache.rewind();
                outs.push(self.decoder.forward(be, &x.narrow(2, i, 1)?, &mut cache)?);
                on_frame(i + 1, frames);
            }
            let refs: Vec<&Tensor> = outs.iter().collect();
            let mut out = Tensor::cat(&refs, 2)?;
            be.affine_clamp(&mut out, 1.0, 0.0, -1.0, 1.0)?;
            videos.push(out);
        }
        let refs: Vec<&Tensor> = videos.iter().collect();
        Ok(Tensor::cat(&refs, 0)?)
    }

    /// Encodes `[B, 3, F, H, W]` in [-1, 1] to the posterior mean `[B, z, T', H', W']`
    /// (not normalised), in chunks of 1, 4, 4, … frames.
    pub fn encode_mean(&self, x: &Tensor) -> Result<Tensor> {
        let (enc, quant) = match (&self.encoder, &self.quant_conv) {
            (Some(e), Some(q)) => (e, q),
            _ => return Err(Error::Config("this VAE has no encoder weights".into())),
        };
        if x.rank() != 5 || x.dim(1) != self.config.in_channels {
            return Err(Error::Shape(format!("VAE encode expects [B, 3, F, H, W], found {:?}", x.shape())));
        }
        let be = &*self.backend;
        let mut means = Vec::with_capacity(x.dim(0));
        for b in 0..x.dim(0) {
            let xb = x.narrow(0, b, 1)?;
            let frames = xb.dim(2);
            let mut cache = FeatCache::new();
            let mut outs = Vec::new();
            let chunks = 1 + frames.saturating_sub(1) / 4;
            for i in 0..chunks {
                cache.rewind();
                let (s, n) = if i == 0 { (0, 1) } else { (1 + 4 * (i - 1), 4) };
                outs.push(enc.forward(be, &xb.narrow(2, s, n)?, &mut cache)?);
            }
            let refs: Vec<&Tensor> = outs.iter().collect();
            let h = quant.forward(be, &Tensor::cat(&refs, 2)?, None)?;
            means.push(h.narrow(1, 0, self.config.z_dim)?);
        }
        let refs: Vec<&Tensor> = means.iter().collect();
        Ok(Tensor::cat(&refs, 0)?)
    }
}
