//! The Wan causal 3D VAE (`AutoencoderKLWan`): encoder, decoder and the frame-chunked causal
//! feature cache that bounds decoding memory. Both releases: Wan2.1's (z_dim 16, 8× spatial) and
//! Wan2.2's (`is_residual`, `patch_size` 2, z_dim 48, 16× spatial).
//!
//! Mirrors diffusers 0.42.1 models/autoencoders/autoencoder_kl_wan.py: `WanEncoder3d`,
//! `WanDecoder3d`, `AutoencoderKLWan` (blocks in [`crate::vae_blocks`], the Wan2.2 residual stages
//! and patching in [`crate::vae_residual`], the causal convolution in [`crate::causal_conv3d`]).
//! Decoding runs one latent frame at a time; encoding in chunks of 1, 4, 4, … frames, as
//! diffusers does.

use crate::causal_conv3d::{CausalConv3d, FeatCache};
use crate::vae_blocks::{rms_gamma, MidBlock, Resample, ResampleMode, ResidualBlock};
use crate::vae_residual::{patchify, unpatchify, AvgDown3d, DupUp3d, ResidualDownBlock, ResidualUpBlock};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use wanrt_nn::backend::BinaryOp;
use wanrt_nn::{Backend, BackendRef, HostTensor, Module, Param, ParamMut, Tensor, VarBuilder, WeightStore};

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
/// The Wan2.2 VAE's (z_dim 48) latent statistics, as `Wan2_2_VAE` (wan/modules/vae2_2.py) and
/// diffusers' conversion script state them: `Wan2.2_VAE.pth` carries none.
pub const WAN22_LATENTS_MEAN: [f32; 48] = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891, 0.1570,
    -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502, -0.2055, -0.0322,
    0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520,
    0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
];
pub const WAN22_LATENTS_STD: [f32; 48] = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165,
    0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659, 0.7069, 0.5338, 0.4889, 0.4917,
    0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600,
    0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
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
    /// Wan2.2: the video is folded into `patch_size²` channels before the encoder and unfolded
    /// after the decoder (`in_channels` / `out_channels` count the folded channels).
    #[serde(default)]
    pub patch_size: Option<usize>,
    /// The compression the pipeline assumes (diffusers reads these, not the architecture): must
    /// agree with the architecture when stated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_factor_temporal: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_factor_spatial: Option<usize>,
}

/// More channels than any VAE stage could have (Wan's widest is 384).
const MAX_CHANNELS: usize = 1 << 16;
/// More stages than a spatial factor `2^(stages − 1)` could sensibly have (Wan's have 4).
const MAX_STAGES: usize = 8;

impl VaeConfig {
    /// diffusers' default `AutoencoderKLWan()` (the Wan2.1 VAE, 127M parameters).
    pub fn wan2_1() -> Self {
        serde_json::from_str("{}").expect("defaults")
    }

    pub fn validate(&self) -> Result<()> {
        let stages = self.dim_mult.len();
        // Bounded before anything multiplies by it (Wan2.2's is 2).
        let p = self.patch();
        if p == 0 || p > MAX_PATCH {
            return Err(Error::Config(format!("VAE: patch_size {p} must be 1 to {MAX_PATCH}")));
        }
        for (name, c) in [("in_channels", self.in_channels), ("out_channels", self.out_channels)] {
            if c != RGB * p * p {
                return Err(Error::Config(format!(
                    "VAE: {name} {c} must be {} (RGB folded by patch_size {p})",
                    RGB * p * p
                )));
            }
        }
        if !self.attn_scales.is_empty() {
            return Err(Error::Config("VAE: attn_scales must be empty (as in every released Wan VAE)".into()));
        }
        if stages == 0 || stages > MAX_STAGES {
            return Err(Error::Config(format!("VAE: dim_mult must list 1 to {MAX_STAGES} stages, found {stages}")));
        }
        if self.temperal_downsample.len() + 1 < stages || self.z_dim == 0 || self.base_dim == 0 {
            return Err(Error::Config(format!(
                "VAE: dim_mult {:?} needs {} temperal_downsample flags, found {}",
                self.dim_mult,
                stages.saturating_sub(1),
                self.temperal_downsample.len()
            )));
        }
        // Channel counts are products of these: bound them before anything multiplies.
        let widest = self.dim_mult.iter().copied().max().unwrap_or(0);
        for base in [self.base_dim, self.decoder_base_dim.unwrap_or(self.base_dim)] {
            if self.dim_mult.contains(&0) || base.checked_mul(widest).is_none_or(|c| c > MAX_CHANNELS) {
                return Err(Error::Config(format!(
                    "VAE: base_dim {base} × dim_mult {:?} must give 1 to {MAX_CHANNELS} channels per stage",
                    self.dim_mult
                )));
            }
        }
        if self.z_dim > MAX_CHANNELS {
            return Err(Error::Config(format!("VAE: z_dim {} is beyond {MAX_CHANNELS}", self.z_dim)));
        }
        for (name, stated, actual) in [
            ("scale_factor_temporal", self.scale_factor_temporal, self.temporal_factor()),
            ("scale_factor_spatial", self.scale_factor_spatial, self.spatial_factor()),
        ] {
            if let Some(s) = stated.filter(|&s| s != actual) {
                return Err(Error::Config(format!(
                    "VAE: {name} {s} disagrees with the architecture's {actual} (dim_mult, temperal_downsample, \
                     patch_size)"
                )));
            }
        }
        if self.is_residual {
            self.check_residual_stages()?;
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

    /// Spatial compression factor (8 for Wan2.1, 16 for Wan2.2: its patching halves again).
    pub fn spatial_factor(&self) -> usize {
        (1 << (self.dim_mult.len() - 1)) * self.patch()
    }

    fn patch(&self) -> usize {
        self.patch_size.unwrap_or(1)
    }

    /// `WanEncoder3d`'s `dims`: the width before and after each stage.
    fn encoder_dims(&self) -> Vec<usize> {
        std::iter::once(1).chain(self.dim_mult.iter().copied()).map(|u| u * self.base_dim).collect()
    }

    /// `WanDecoder3d`'s `dims`: the widest stage's width, then each stage's output width.
    fn decoder_dims(&self) -> Vec<usize> {
        let dim = self.decoder_base_dim.unwrap_or(self.base_dim);
        let mult = &self.dim_mult;
        std::iter::once(mult[mult.len() - 1]).chain(mult.iter().rev().copied()).map(|u| u * dim).collect()
    }

    /// The decoder's temporal upsampling flags (the encoder's, reversed).
    fn temporal_upsample(&self) -> Vec<bool> {
        self.temperal_downsample.iter().take(self.dim_mult.len() - 1).rev().copied().collect()
    }

    /// The residual stages' shortcuts fold channels into space and back: each stage's widths must
    /// divide evenly (diffusers asserts it when building `AvgDown3D` / `DupUp3D`).
    fn check_residual_stages(&self) -> Result<()> {
        let last = self.dim_mult.len() - 1;
        for (i, w) in self.encoder_dims().windows(2).enumerate() {
            let temporal = i != last && self.temperal_downsample[i];
            AvgDown3d::new(w[0], w[1], if temporal { 2 } else { 1 }, if i != last { 2 } else { 1 })?;
        }
        let temporal_up = self.temporal_upsample();
        for (i, w) in self.decoder_dims().windows(2).enumerate().take(last) {
            DupUp3d::new(w[0], w[1], if temporal_up[i] { 2 } else { 1 }, 2)?;
        }
        Ok(())
    }
}

/// Pixel channels (the VAE's `in_channels` before patching).
const RGB: usize = 3;
/// Far beyond any released VAE's patch (Wan2.2: 2).
const MAX_PATCH: usize = 16;

fn conv3x3(vb: &VarBuilder, name: &str, cin: usize, cout: usize) -> Result<CausalConv3d> {
    CausalConv3d::new(&vb.pp(name), cin, cout, [3, 3, 3], (1, 1, 1), (1, 1, 1))
}

enum DownLayer {
    Res(Box<ResidualBlock>),
    Resample(Box<Resample>),
    /// The Wan2.2 VAE: a whole stage.
    ResidualStage(Box<ResidualDownBlock>),
}

/// `WanEncoder3d`.
pub struct Encoder {
    conv_in: CausalConv3d,
    down_blocks: Vec<DownLayer>,
    mid_block: MidBlock,
    norm_out: Tensor,
    conv_out: CausalConv3d,
}

impl Encoder {
    fn new(vb: &VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        let dims = cfg.encoder_dims();
        let stages = cfg.dim_mult.len();
        let mut down_blocks = Vec::new();
        let blocks = vb.pp("down_blocks");
        for i in 0..stages {
            let (mut cin, cout) = (dims[i], dims[i + 1]);
            if cfg.is_residual {
                let down = (i != stages - 1).then(|| cfg.temperal_downsample[i]);
                let stage = ResidualDownBlock::new(&blocks.pp(i), cin, cout, cfg.num_res_blocks, down)?;
                down_blocks.push(DownLayer::ResidualStage(Box::new(stage)));
                continue;
            }
            for _ in 0..cfg.num_res_blocks {
                let b = ResidualBlock::new(&blocks.pp(down_blocks.len()), cin, cout)?;
                down_blocks.push(DownLayer::Res(Box::new(b)));
                cin = cout;
            }
            if i != stages - 1 {
                let mode = if cfg.temperal_downsample[i] { ResampleMode::Down3d } else { ResampleMode::Down2d };
                let r = Resample::new(&blocks.pp(down_blocks.len()), cout, mode, None)?;
                down_blocks.push(DownLayer::Resample(Box::new(r)));
            }
        }
        let top = dims[stages];
        Ok(Encoder {
            conv_in: conv3x3(vb, "conv_in", cfg.in_channels, dims[0])?,
            down_blocks,
            mid_block: MidBlock::new(&vb.pp("mid_block"), top)?,
            norm_out: rms_gamma(vb, "norm_out", top)?,
            conv_out: conv3x3(vb, "conv_out", top, 2 * cfg.z_dim)?,
        })
    }

    fn forward(&self, be: &dyn Backend, x: &Tensor, cache: &mut FeatCache) -> Result<Tensor> {
        let mut x = self.conv_in.forward_cached(be, x, cache)?;
        for l in &self.down_blocks {
            x = match l {
                DownLayer::Res(r) => r.forward(be, x, cache)?,
                DownLayer::Resample(r) => r.forward(be, x, cache)?,
                DownLayer::ResidualStage(r) => r.forward(be, x, cache)?,
            };
        }
        let x = self.mid_block.forward(be, x, cache)?;
        let x = be.channel_rms_norm(&x, &self.norm_out, true)?;
        self.conv_out.forward_cached(be, &x, cache)
    }

    fn visit(&self, f: &mut dyn FnMut(Param<'_>)) {
        self.conv_in.visit(f);
        for l in &self.down_blocks {
            match l {
                DownLayer::Res(r) => r.visit(f),
                DownLayer::Resample(r) => r.visit(f),
                DownLayer::ResidualStage(r) => r.visit(f),
            }
        }
        self.mid_block.visit(f);
        f(Param::Tensor(&self.norm_out));
        self.conv_out.visit(f);
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_>)) {
        self.conv_in.visit_mut(f);
        for l in &mut self.down_blocks {
            match l {
                DownLayer::Res(r) => r.visit_mut(f),
                DownLayer::Resample(r) => r.visit_mut(f),
                DownLayer::ResidualStage(r) => r.visit_mut(f),
            }
        }
        self.mid_block.visit_mut(f);
        self.conv_out.visit_mut(f);
    }
}

/// `WanUpBlock`.
struct UpBlock {
    resnets: Vec<ResidualBlock>,
    upsampler: Option<Resample>,
}

enum UpStage {
    Plain(UpBlock),
    /// The Wan2.2 VAE.
    Residual(ResidualUpBlock),
}

/// `WanDecoder3d`.
pub struct Decoder {
    conv_in: CausalConv3d,
    mid_block: MidBlock,
    up_blocks: Vec<UpStage>,
    norm_out: Tensor,
    conv_out: CausalConv3d,
}

impl Decoder {
    fn new(vb: &VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        let stages = cfg.dim_mult.len();
        let dims = cfg.decoder_dims();
        let temporal_up = cfg.temporal_upsample();
        let mut up_blocks = Vec::with_capacity(stages);
        for i in 0..stages {
            let blk = vb.pp("up_blocks").pp(i);
            let cout = dims[i + 1];
            if cfg.is_residual {
                let up = (i != stages - 1).then(|| temporal_up[i]);
                up_blocks.push(UpStage::Residual(ResidualUpBlock::new(&blk, dims[i], cout, cfg.num_res_blocks, up)?));
                continue;
            }
            // Wan2.1: each upsampler halves the channels.
            let mut cin = if i > 0 { dims[i] / 2 } else { dims[i] };
            let mut resnets = Vec::new();
            for j in 0..=cfg.num_res_blocks {
                resnets.push(ResidualBlock::new(&blk.pp("resnets").pp(j), cin, cout)?);
                cin = cout;
            }
            let upsampler = if i != stages - 1 {
                let mode = if temporal_up[i] { ResampleMode::Up3d } else { ResampleMode::Up2d };
                Some(Resample::new(&blk.pp("upsamplers.0"), cout, mode, None)?)
            } else {
                None
            };
            up_blocks.push(UpStage::Plain(UpBlock { resnets, upsampler }));
        }
        let last = dims[stages];
        Ok(Decoder {
            conv_in: conv3x3(vb, "conv_in", cfg.z_dim, dims[0])?,
            mid_block: MidBlock::new(&vb.pp("mid_block"), dims[0])?,
            up_blocks,
            norm_out: rms_gamma(vb, "norm_out", last)?,
            conv_out: conv3x3(vb, "conv_out", last, cfg.out_channels)?,
        })
    }

    /// `first_chunk`: the first latent frame (the residual stages' shortcuts trim it).
    fn forward(&self, be: &dyn Backend, x: &Tensor, cache: &mut FeatCache, first_chunk: bool) -> Result<Tensor> {
        let x = self.conv_in.forward_cached(be, x, cache)?;
        let mut x = self.mid_block.forward(be, x, cache)?;
        for stage in &self.up_blocks {
            x = match stage {
                UpStage::Plain(blk) => {
                    for r in &blk.resnets {
                        x = r.forward(be, x, cache)?;
                    }
                    match &blk.upsampler {
                        Some(u) => u.forward(be, x, cache)?,
                        None => x,
                    }
                }
                UpStage::Residual(blk) => blk.forward(be, x, cache, first_chunk)?,
            };
        }
        let x = be.channel_rms_norm(&x, &self.norm_out, true)?;
        self.conv_out.forward_cached(be, &x, cache)
    }

    fn visit(&self, f: &mut dyn FnMut(Param<'_>)) {
        self.conv_in.visit(f);
        self.mid_block.visit(f);
        for stage in &self.up_blocks {
            match stage {
                UpStage::Plain(b) => {
                    b.resnets.iter().for_each(|r| r.visit(f));
                    if let Some(u) = &b.upsampler {
                        u.visit(f);
                    }
                }
                UpStage::Residual(b) => b.visit(f),
            }
        }
        f(Param::Tensor(&self.norm_out));
        self.conv_out.visit(f);
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_>)) {
        self.conv_in.visit_mut(f);
        self.mid_block.visit_mut(f);
        for stage in &mut self.up_blocks {
            match stage {
                UpStage::Plain(b) => {
                    b.resnets.iter_mut().for_each(|r| r.visit_mut(f));
                    if let Some(u) = &mut b.upsampler {
                        u.visit_mut(f);
                    }
                }
                UpStage::Residual(b) => b.visit_mut(f),
            }
        }
        self.conv_out.visit_mut(f);
    }
}

/// `AutoencoderKLWan`.
pub struct WanVae {
    pub config: VaeConfig,
    encoder: Option<Encoder>,
    decoder: Decoder,
    quant_conv: Option<CausalConv3d>,
    post_quant_conv: CausalConv3d,
    /// `[1, z, 1, 1, 1]` each: the latent statistics as diffusers' pipeline broadcasts them.
    latents_mean: Tensor,
    latents_inv_std: Tensor,
    backend: BackendRef,
}

impl WanVae {
    /// Loads the decoder, and the encoder when `with_encoder` and its weights are present,
    /// prepared for `backend`. Text-to-video only decodes: leaving the encoder out saves its
    /// weights (a third of the VAE's, more once transformed for Winograd).
    pub fn load(ws: &WeightStore, config: VaeConfig, backend: BackendRef, with_encoder: bool) -> Result<Self> {
        config.validate()?;
        let vb = VarBuilder::root(ws, &*backend);
        let z = config.z_dim;
        let has_encoder = with_encoder && vb.contains("encoder.conv_in.weight");
        let conv1x1 = |name: &str, c: usize| CausalConv3d::new(&vb.pp(name), c, c, [1, 1, 1], (0, 0, 0), (1, 1, 1));
        // Missing statistics are reported when decoding needs them, not at load (encode-only use).
        let stat = |v: &[f32], f: fn(f32) -> f32| -> Result<Tensor> {
            let values = if v.len() == z { v.iter().map(|&x| f(x)).collect() } else { vec![f32::NAN; z] };
            Ok(backend.weight_tensor(HostTensor::new([1, z, 1, 1, 1], values)?)?)
        };
        let vae = WanVae {
            encoder: if has_encoder { Some(Encoder::new(&vb.pp("encoder"), &config)?) } else { None },
            quant_conv: if has_encoder { Some(conv1x1("quant_conv", 2 * z)?) } else { None },
            decoder: Decoder::new(&vb.pp("decoder"), &config)?,
            post_quant_conv: conv1x1("post_quant_conv", z)?,
            latents_mean: stat(&config.latents_mean, |m| m)?,
            latents_inv_std: stat(&config.latents_std, |s| 1.0 / s)?,
            config,
            backend,
        };
        // The encoder's weights are unread when it is not loaded; anything else must be used.
        let skipped: &[&str] = if has_encoder { &[] } else { &["encoder.", "quant_conv."] };
        ws.check_all_read("VAE", skipped)?;
        Ok(vae)
    }

    pub fn backend(&self) -> &BackendRef {
        &self.backend
    }

    /// Wan2.2: pixels folded into channels before the encoder.
    fn patchify(&self, x: &Tensor) -> Result<Tensor> {
        match self.config.patch_size {
            Some(p) if p > 1 => patchify(&*self.backend, x, p),
            _ => Ok(x.clone()),
        }
    }

    /// Wan2.2: the decoder's channels unfolded into pixels.
    fn unpatchify(&self, x: &Tensor) -> Result<Tensor> {
        match self.config.patch_size {
            Some(p) if p > 1 => unpatchify(&*self.backend, x, p),
            _ => Ok(x.clone()),
        }
    }

    fn check_latents(&self, z: &Tensor) -> Result<()> {
        let c = self.config.z_dim;
        if self.config.latents_mean.len() != c || self.config.latents_std.len() != c {
            return Err(Error::Config("VAE config lacks latents_mean/latents_std of length z_dim".into()));
        }
        if z.rank() != 5 || z.dim(1) != c {
            return Err(Error::Shape(format!("latents must be [B, {c}, T, H, W], found {:?}", z.shape())));
        }
        Ok(())
    }

    /// The latent normalisation of an encoded image: `(z − mean) · (1/std)` (diffusers' order).
    pub fn normalize(&self, z: &Tensor) -> Result<Tensor> {
        self.check_latents(z)?;
        let be = &*self.backend;
        let centered = be.binary(BinaryOp::Sub, z, &self.latents_mean)?;
        Ok(be.binary(BinaryOp::Mul, &centered, &self.latents_inv_std)?)
    }

    /// Undo the latent normalisation: `z / (1/std) + mean` (diffusers' order of operations).
    pub fn denormalize(&self, z: &Tensor) -> Result<Tensor> {
        self.check_latents(z)?;
        let be = &*self.backend;
        let scaled = be.binary(BinaryOp::Div, z, &self.latents_inv_std)?;
        Ok(be.binary(BinaryOp::Add, &scaled, &self.latents_mean)?)
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
            let x = self.post_quant_conv.forward(be, &be.narrow(z, 0, b, 1)?, None)?;
            let frames = x.dim(2);
            let mut cache = FeatCache::new();
            let mut outs = Vec::with_capacity(frames);
            for i in 0..frames {
                cache.rewind();
                outs.push(self.decoder.forward(be, &be.narrow(&x, 2, i, 1)?, &mut cache, i == 0)?);
                on_frame(i + 1, frames);
            }
            let refs: Vec<&Tensor> = outs.iter().collect();
            let mut out = self.unpatchify(&be.cat(&refs, 2)?)?;
            be.affine_clamp(&mut out, 1.0, 0.0, -1.0, 1.0)?;
            videos.push(out);
        }
        let refs: Vec<&Tensor> = videos.iter().collect();
        Ok(be.cat(&refs, 0)?)
    }

    /// Encodes `[B, 3, F, H, W]` in [-1, 1] to the posterior mean `[B, z, T', H', W']`
    /// (not normalised), in chunks of 1, 4, 4, … frames.
    pub fn encode_mean(&self, x: &Tensor) -> Result<Tensor> {
        let (enc, quant) = match (&self.encoder, &self.quant_conv) {
            (Some(e), Some(q)) => (e, q),
            _ => {
                return Err(Error::Config("this VAE was loaded without its encoder (or has no encoder weights)".into()))
            }
        };
        // (The Wan2.2 VAE's patching and pooled shortcuts refuse sizes they cannot halve.)
        if x.rank() != 5 || x.dim(1) != RGB {
            return Err(Error::Shape(format!("VAE encode expects [B, 3, F, H, W], found {:?}", x.shape())));
        }
        let be = &*self.backend;
        let mut means = Vec::with_capacity(x.dim(0));
        for b in 0..x.dim(0) {
            let xb = self.patchify(&be.narrow(x, 0, b, 1)?)?;
            let frames = xb.dim(2);
            let mut cache = FeatCache::new();
            let mut outs = Vec::new();
            let chunks = 1 + frames.saturating_sub(1) / 4;
            for i in 0..chunks {
                cache.rewind();
                let (s, n) = if i == 0 { (0, 1) } else { (1 + 4 * (i - 1), 4) };
                outs.push(enc.forward(be, &be.narrow(&xb, 2, s, n)?, &mut cache)?);
            }
            let refs: Vec<&Tensor> = outs.iter().collect();
            let h = quant.forward(be, &be.cat(&refs, 2)?, None)?;
            means.push(be.narrow(&h, 1, 0, self.config.z_dim)?);
        }
        let refs: Vec<&Tensor> = means.iter().collect();
        Ok(be.cat(&refs, 0)?)
    }
}

impl Module for WanVae {
    fn visit(&self, f: &mut dyn FnMut(Param<'_>)) {
        if let (Some(e), Some(q)) = (&self.encoder, &self.quant_conv) {
            e.visit(f);
            q.visit(f);
        }
        self.decoder.visit(f);
        self.post_quant_conv.visit(f);
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_>)) {
        if let (Some(e), Some(q)) = (&mut self.encoder, &mut self.quant_conv) {
            e.visit_mut(f);
            q.visit_mut(f);
        }
        self.decoder.visit_mut(f);
        self.post_quant_conv.visit_mut(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The architecture of Wan2.2-TI2V-5B-Diffusers' `vae/config.json` (statistics left out).
    fn wan2_2() -> serde_json::Value {
        serde_json::json!({
            "base_dim": 160, "decoder_base_dim": 256, "dim_mult": [1, 2, 4, 4], "in_channels": 12,
            "out_channels": 12, "is_residual": true, "num_res_blocks": 2, "patch_size": 2, "z_dim": 48,
            "scale_factor_spatial": 16, "scale_factor_temporal": 4, "temperal_downsample": [false, true, true],
            "latents_mean": [], "latents_std": []
        })
    }

    #[test]
    fn the_released_configs_validate_with_their_compression() {
        let cfg: VaeConfig = serde_json::from_value(wan2_2()).unwrap();
        cfg.validate().unwrap();
        assert_eq!((cfg.temporal_factor(), cfg.spatial_factor()), (4, 16));
        let cfg = VaeConfig::wan2_1();
        cfg.validate().unwrap();
        assert_eq!((cfg.temporal_factor(), cfg.spatial_factor()), (4, 8));
    }

    #[test]
    fn a_wan2_1_vae_claiming_the_wan2_2_compression_is_refused() {
        let mut v = wan2_2();
        v["patch_size"] = serde_json::Value::Null;
        v["in_channels"] = serde_json::json!(3);
        v["out_channels"] = serde_json::json!(3);
        let msg = serde_json::from_value::<VaeConfig>(v).unwrap().validate().unwrap_err().to_string();
        assert!(msg.contains("scale_factor_spatial 16 disagrees with the architecture's 8"), "{msg}");
    }
}
