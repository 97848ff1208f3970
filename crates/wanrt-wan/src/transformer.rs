//! Wan2.1 text-to-video diffusion transformer.
//!
//! Mirrors diffusers 0.42.1 `WanTransformer3DModel`, `WanTransformerBlock`,
//! `WanAttention` + `WanAttnProcessor` and `WanTimeTextImageEmbedding`
//! (models/transformers/transformer_wan.py). Parameter names are the
//! diffusers state-dict names; the original release layout is renamed to
//! them on load (see [`crate::names`]).

use crate::rope::{rope_tables, split_dims, RopeTables};
use crate::step_cache::StepCache;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use wanrt_nn::backend::{self, Activation, AttentionPrecision, Backend};
use wanrt_nn::ops::attention::AttentionBias;
use wanrt_nn::{BackendRef, Linear, Tensor, WeightStore};

fn default_patch() -> [usize; 3] {
    [1, 2, 2]
}
fn default_true() -> bool {
    true
}
fn default_eps() -> f32 {
    1e-6
}
fn default_rope_len() -> usize {
    1024
}
fn default_freq_dim() -> usize {
    256
}

/// `transformer/config.json` of a diffusers Wan model (defaults as diffusers).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TransformerConfig {
    #[serde(default = "default_patch")]
    pub patch_size: [usize; 3],
    pub num_attention_heads: usize,
    pub attention_head_dim: usize,
    pub in_channels: usize,
    #[serde(default)]
    pub out_channels: Option<usize>,
    pub text_dim: usize,
    #[serde(default = "default_freq_dim")]
    pub freq_dim: usize,
    pub ffn_dim: usize,
    pub num_layers: usize,
    #[serde(default = "default_true")]
    pub cross_attn_norm: bool,
    #[serde(default = "default_eps")]
    pub eps: f32,
    #[serde(default)]
    pub image_dim: Option<usize>,
    #[serde(default)]
    pub added_kv_proj_dim: Option<usize>,
    #[serde(default = "default_rope_len")]
    pub rope_max_seq_len: usize,
    /// Self-attention heads kept per block after structured head pruning
    /// (`wanrt optimize --prune-heads`); absent = all heads in every block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_attn_heads: Option<Vec<usize>>,
    /// Blocks whose self-attention runs in 8 bits (set from an optimized
    /// artifact's manifest, not from config.json).
    #[serde(skip)]
    pub int8_attention_blocks: Vec<usize>,
}

impl TransformerConfig {
    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }
    pub fn out_channels(&self) -> usize {
        self.out_channels.unwrap_or(self.in_channels)
    }
    pub fn patch_volume(&self) -> usize {
        self.patch_size.iter().product()
    }

    /// Wan2.1-T2V-1.3B, for benchmarks.
    pub fn t2v_1_3b() -> Self {
        TransformerConfig {
            patch_size: [1, 2, 2],
            num_attention_heads: 12,
            attention_head_dim: 128,
            in_channels: 16,
            out_channels: Some(16),
            text_dim: 4096,
            freq_dim: 256,
            ffn_dim: 8960,
            num_layers: 30,
            cross_attn_norm: true,
            eps: 1e-6,
            image_dim: None,
            added_kv_proj_dim: None,
            rope_max_seq_len: 1024,
            self_attn_heads: None,
            int8_attention_blocks: Vec::new(),
        }
    }

    /// Self-attention heads of block `i`.
    pub fn block_self_attn_heads(&self, i: usize) -> usize {
        self.self_attn_heads.as_ref().and_then(|h| h.get(i).copied()).unwrap_or(self.num_attention_heads)
    }

    pub fn validate(&self) -> Result<()> {
        if self.image_dim.is_some() || self.added_kv_proj_dim.is_some() {
            return Err(Error::Config(
                "transformer: image-conditioned (I2V) Wan models are not supported yet; expected a T2V config".into(),
            ));
        }
        let d = self.attention_head_dim;
        if !d.is_multiple_of(2) || split_dims(d).iter().any(|&p| p % 2 != 0) {
            return Err(Error::Config(format!("transformer: attention_head_dim {d} cannot be split for 3D RoPE")));
        }
        if self.patch_size.contains(&0) || self.num_layers == 0 || self.num_attention_heads == 0 {
            return Err(Error::Config("transformer: patch_size, num_layers and heads must be positive".into()));
        }
        if let Some(h) = &self.self_attn_heads {
            if h.len() != self.num_layers || h.iter().any(|&n| n == 0 || n > self.num_attention_heads) {
                return Err(Error::Config(format!(
                    "transformer: self_attn_heads must list 1..={} heads for each of the {} layers, found {h:?}",
                    self.num_attention_heads, self.num_layers
                )));
            }
        }
        Ok(())
    }
}

struct SelfAttention {
    /// Heads kept (all of them unless the model was head-pruned).
    heads: usize,
    /// SageAttention-style 8-bit scores (`ops::attention_quant`).
    int8: bool,
    /// Fused `to_q | to_k | to_v`: one GEMM instead of three.
    qkv: Linear,
    norm_q: Vec<f32>,
    norm_k: Vec<f32>,
    to_out: Linear,
}

struct CrossAttention {
    to_q: Linear,
    /// Fused `to_k | to_v` over the text tokens.
    kv: Linear,
    norm_q: Vec<f32>,
    norm_k: Vec<f32>,
    to_out: Linear,
}

struct Block {
    attn1: SelfAttention,
    attn2: CrossAttention,
    /// `norm2` affine parameters (None when `cross_attn_norm` is false).
    norm2: Option<(Vec<f32>, Vec<f32>)>,
    ffn_in: Linear,
    ffn_out: Linear,
    /// `[6, C]`: shift, scale, gate (attention), shift, scale, gate (FFN).
    scale_shift_table: Vec<f32>,
}

fn load_vec(ws: &WeightStore, name: &str, len: usize) -> Result<Vec<f32>> {
    Ok(ws.get_shaped(name, &[len])?.into_data())
}

impl Block {
    fn load(ws: &WeightStore, cfg: &TransformerConfig, i: usize) -> Result<Self> {
        let dim = cfg.inner_dim();
        let p = |s: &str| format!("blocks.{i}.{s}");
        let lin = |s: &str, i_: usize, o: usize| Linear::load(ws, &p(s), i_, o, true);
        let heads = cfg.block_self_attn_heads(i);
        let inner = heads * cfg.attention_head_dim;
        let attn1 = SelfAttention {
            heads,
            int8: cfg.int8_attention_blocks.contains(&i),
            qkv: Linear::load_fused(
                ws,
                &[&p("attn1.to_q"), &p("attn1.to_k"), &p("attn1.to_v")],
                dim,
                &[inner; 3],
                true,
            )?,
            norm_q: load_vec(ws, &p("attn1.norm_q.weight"), inner)?,
            norm_k: load_vec(ws, &p("attn1.norm_k.weight"), inner)?,
            to_out: lin("attn1.to_out.0", inner, dim)?,
        };
        let attn2 = CrossAttention {
            to_q: lin("attn2.to_q", dim, dim)?,
            kv: Linear::load_fused(ws, &[&p("attn2.to_k"), &p("attn2.to_v")], dim, &[dim; 2], true)?,
            norm_q: load_vec(ws, &p("attn2.norm_q.weight"), dim)?,
            norm_k: load_vec(ws, &p("attn2.norm_k.weight"), dim)?,
            to_out: lin("attn2.to_out.0", dim, dim)?,
        };
        let norm2 = if cfg.cross_attn_norm {
            Some((load_vec(ws, &p("norm2.weight"), dim)?, load_vec(ws, &p("norm2.bias"), dim)?))
        } else {
            None
        };
        Ok(Block {
            attn1,
            attn2,
            norm2,
            ffn_in: lin("ffn.net.0.proj", dim, cfg.ffn_dim)?,
            ffn_out: lin("ffn.net.2", cfg.ffn_dim, dim)?,
            scale_shift_table: ws.get_shaped(&p("scale_shift_table"), &[1, 6, dim])?.into_data(),
        })
    }
}

/// Per-forward timestep conditioning shared by all blocks.
struct Conditioning {
    /// `[B, C]`.
    temb: Vec<f32>,
    /// `[B, 6, C]` projected timestep.
    timestep_proj: Vec<f32>,
}

/// The text side of every cross-attention, computed once per prompt batch:
/// the text tokens do not change across denoising steps, so their projected,
/// normalised keys and values are reused by every step (exactly the same
/// arithmetic as recomputing them).
pub struct TextContext {
    /// Per block: keys and values `[B, L_text, H, D]`.
    kv: Vec<(Tensor, Tensor)>,
    batch: usize,
}

impl TextContext {
    pub fn batch(&self) -> usize {
        self.batch
    }
}

/// A linear layer of a transformer block with the checkpoint names of the
/// tensors fused into it.
pub struct BlockLinear<'a> {
    pub block: usize,
    /// `blocks.{i}.attn1.to_qkv` for the fused projection, else the tensor prefix.
    pub name: String,
    /// Checkpoint prefixes (`blocks.{i}.attn1.to_q` …) and their output rows, in order.
    pub parts: Vec<(String, usize)>,
    pub linear: &'a mut Linear,
}

pub struct WanTransformer {
    pub config: TransformerConfig,
    /// Patch embedding as a GEMM: `[C, in·pt·ph·pw]`.
    patch_embed: Linear,
    time_linear_1: Linear,
    time_linear_2: Linear,
    time_proj: Linear,
    text_linear_1: Linear,
    text_linear_2: Linear,
    blocks: Vec<Block>,
    proj_out: Linear,
    /// `[2, C]`: shift, scale of the output norm.
    scale_shift_table: Vec<f32>,
    backend: BackendRef,
}

impl WanTransformer {
    pub fn load(ws: &WeightStore, config: TransformerConfig) -> Result<Self> {
        config.validate()?;
        let dim = config.inner_dim();
        let [pt, ph, pw] = config.patch_size;
        let patch_in = config.in_channels * pt * ph * pw;
        let pe_w = ws.get_shaped("patch_embedding.weight", &[dim, config.in_channels, pt, ph, pw])?;
        let patch_embed =
            Linear::from_f32(pe_w.reshape([dim, patch_in])?, Some(load_vec(ws, "patch_embedding.bias", dim)?));
        let ce = |s: &str, i: usize, o: usize| Linear::load(ws, &format!("condition_embedder.{s}"), i, o, true);
        let blocks = (0..config.num_layers).map(|i| Block::load(ws, &config, i)).collect::<Result<Vec<_>>>()?;
        Ok(WanTransformer {
            patch_embed,
            time_linear_1: ce("time_embedder.linear_1", config.freq_dim, dim)?,
            time_linear_2: ce("time_embedder.linear_2", dim, dim)?,
            time_proj: ce("time_proj", dim, 6 * dim)?,
            text_linear_1: ce("text_embedder.linear_1", config.text_dim, dim)?,
            text_linear_2: ce("text_embedder.linear_2", dim, dim)?,
            blocks,
            proj_out: Linear::load(ws, "proj_out", dim, config.out_channels() * config.patch_volume(), true)?,
            scale_shift_table: ws.get_shaped("scale_shift_table", &[1, 2, dim])?.into_data(),
            config,
            backend: backend::cpu(),
        })
    }

    /// Runs every later forward on `backend` (the CPU by default).
    pub fn set_backend(&mut self, backend: BackendRef) {
        self.backend = backend;
    }

    fn be(&self) -> &dyn Backend {
        &*self.backend
    }

    /// Number of parameters held (for reports).
    pub fn num_params(&self) -> usize {
        self.fold_params(|l| l.num_params(), 1)
    }

    /// Bytes held by the parameters (quantized layers count their codes and scales).
    pub fn weight_bytes(&self) -> usize {
        self.fold_params(|l| l.weight.bytes() + l.bias.as_ref().map_or(0, |b| b.len() * 4), 4)
    }

    /// Σ `linear(l)` over every layer + `per_value` × the count of other parameters.
    fn fold_params(&self, linear: impl Fn(&Linear) -> usize, per_value: usize) -> usize {
        let mut n = [&self.patch_embed, &self.time_linear_1, &self.time_linear_2, &self.time_proj]
            .iter()
            .chain([&self.text_linear_1, &self.text_linear_2, &self.proj_out].iter())
            .map(|l| linear(l))
            .sum::<usize>()
            + self.scale_shift_table.len() * per_value;
        for b in &self.blocks {
            n += [&b.attn1.qkv, &b.attn1.to_out, &b.attn2.to_q, &b.attn2.kv, &b.attn2.to_out, &b.ffn_in, &b.ffn_out]
                .iter()
                .map(|l| linear(l))
                .sum::<usize>();
            let vectors = (b.attn1.norm_q.len() + b.attn2.norm_q.len()) * 2
                + b.scale_shift_table.len()
                + b.norm2.as_ref().map_or(0, |(w, bb)| w.len() + bb.len());
            n += vectors * per_value;
        }
        n
    }

    /// Runs the self-attention of the listed blocks in 8 bits (SageAttention-style).
    pub fn set_int8_attention(&mut self, blocks: &[usize]) {
        for (i, b) in self.blocks.iter_mut().enumerate() {
            b.attn1.int8 = blocks.contains(&i);
        }
        self.config.int8_attention_blocks = blocks.to_vec();
    }

    /// Sinusoidal timestep features `[B, freq_dim]` (flip_sin_to_cos=True,
    /// downscale_freq_shift=0), computed in f32 like diffusers' `Timesteps`.
    fn timestep_features(&self, timesteps: &[f32]) -> Tensor {
        let dim = self.config.freq_dim;
        let half = dim / 2;
        let freqs: Vec<f32> = (0..half).map(|i| (-(10000f32.ln()) * i as f32 / half as f32).exp()).collect();
        let mut out = Vec::with_capacity(timesteps.len() * dim);
        for &t in timesteps {
            out.extend(freqs.iter().map(|&f| (t * f).cos()));
            out.extend(freqs.iter().map(|&f| (t * f).sin()));
            out.extend(std::iter::repeat_n(0.0, dim - 2 * half));
        }
        Tensor::new([timesteps.len(), dim], out).expect("sizes match")
    }

    fn condition(&self, timesteps: &[f32]) -> Result<Conditioning> {
        let t = self.timestep_features(timesteps);
        let be = self.be();
        let hidden = be.linear_activation(&self.time_linear_1, &t, Activation::Silu)?;
        let temb = be.linear(&self.time_linear_2, &hidden)?;
        let timestep_proj = be.linear(&self.time_proj, &be.activation(temb.clone(), Activation::Silu)?)?;
        Ok(Conditioning { temb: temb.into_data(), timestep_proj: timestep_proj.into_data() })
    }

    /// `text: [B, L_text, text_dim]` (UMT5 embeddings) → the cross-attention keys/values of every block.
    pub fn prepare_text(&self, text: &Tensor) -> Result<TextContext> {
        if text.rank() != 3 || text.dim(2) != self.config.text_dim {
            return Err(Error::Shape(format!(
                "text embeddings must be [B, L, {}], found {:?}",
                self.config.text_dim,
                text.shape()
            )));
        }
        let (b, lt) = (text.dim(0), text.dim(1));
        let dim = self.config.inner_dim();
        let heads = self.config.num_attention_heads;
        let hd = dim / heads;
        let be = self.be();
        let ctx =
            be.linear(&self.text_linear_2, &be.linear_activation(&self.text_linear_1, text, Activation::GeluTanh)?)?;
        let kv = self
            .blocks
            .iter()
            .map(|blk| {
                let a = &blk.attn2;
                let kv = be.linear(&a.kv, &ctx)?;
                let k = be
                    .rms_norm(kv.narrow(2, 0, dim)?, self.config.eps, Some(&a.norm_k))?
                    .reshape([b, lt, heads, hd])?;
                let v = kv.narrow(2, dim, dim)?.reshape([b, lt, heads, hd])?;
                Ok((k, v))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TextContext { kv, batch: b })
    }

    /// Token grid `(f, h, w)` for latents of `(frames, height, width)`.
    pub fn grid(&self, frames: usize, height: usize, width: usize) -> Result<[usize; 3]> {
        let [pt, ph, pw] = self.config.patch_size;
        if !frames.is_multiple_of(pt) || !height.is_multiple_of(ph) || !width.is_multiple_of(pw) {
            return Err(Error::Shape(format!(
                "latent size {frames}×{height}×{width} is not divisible by patch size {:?}",
                self.config.patch_size
            )));
        }
        let grid = [frames / pt, height / ph, width / pw];
        if grid.iter().any(|&g| g > self.config.rope_max_seq_len) {
            return Err(Error::Shape(format!(
                "token grid {grid:?} exceeds rope_max_seq_len {}",
                self.config.rope_max_seq_len
            )));
        }
        Ok(grid)
    }

    /// Rotary tables for a token grid; callers running many steps on one
    /// shape compute them once.
    pub fn rope(&self, grid: [usize; 3]) -> RopeTables {
        rope_tables(self.config.attention_head_dim, grid, 10000.0)
    }

    /// `latents: [B, C_in, F, H, W]`, `timesteps: [B]`, `text: [B, L_text, text_dim]`
    /// → `[B, C_out, F, H, W]` (the flow prediction).
    pub fn forward(&self, latents: &Tensor, timesteps: &[f32], text: &Tensor) -> Result<Tensor> {
        self.forward_prepared(latents, timesteps, &self.prepare_text(text)?)
    }

    /// [`Self::forward`] with the text side prepared once by [`Self::prepare_text`].
    pub fn forward_prepared(&self, latents: &Tensor, timesteps: &[f32], text: &TextContext) -> Result<Tensor> {
        Ok(self.forward_cached(latents, timesteps, text, None)?.0)
    }

    /// [`Self::forward_prepared`] that may reuse the residual of an earlier step
    /// (see [`StepCache`]); also says whether the blocks ran.
    pub fn forward_cached(
        &self,
        latents: &Tensor,
        timesteps: &[f32],
        text: &TextContext,
        cache: Option<&mut StepCache>,
    ) -> Result<(Tensor, bool)> {
        let &[b, c, f, h, w] = latents.shape() else {
            return Err(Error::Shape(format!(
                "transformer input must be [B, C, F, H, W], found {:?}",
                latents.shape()
            )));
        };
        if c != self.config.in_channels || timesteps.len() != b || text.batch != b {
            return Err(Error::Shape(format!(
                "transformer inputs: latents {:?} (expected {} channels), {} timesteps, text batch {} (expected {b})",
                latents.shape(),
                self.config.in_channels,
                timesteps.len(),
                text.batch
            )));
        }
        let grid = self.grid(f, h, w)?;
        let rope = self.rope(grid);
        let cond = self.condition(timesteps)?;
        let be = self.be();
        let mut x = be.linear(&self.patch_embed, &patchify(latents, self.config.patch_size)?)?;
        let computed = match cache {
            Some(cache) => {
                let first = &self.blocks[0];
                let indicator = be.layer_norm_modulate(
                    &x,
                    self.config.eps,
                    &block_mod(first, &cond, 1),
                    &block_mod(first, &cond, 0),
                )?;
                match cache.decide(&indicator)? {
                    Some(residual) => {
                        be.add_assign(&mut x, residual)?;
                        false
                    }
                    None => {
                        let before = x.clone();
                        x = self.run_blocks(x, &cond, text, &rope)?;
                        cache.store_residual(x.sub(&before)?);
                        true
                    }
                }
            }
            None => {
                x = self.run_blocks(x, &cond, text, &rope)?;
                true
            }
        };
        // Output norm with the final shift/scale table.
        let dim = self.config.inner_dim();
        let (mut shift, mut scale) = (Vec::with_capacity(b * dim), Vec::with_capacity(b * dim));
        for bi in 0..b {
            let temb = &cond.temb[bi * dim..(bi + 1) * dim];
            shift.extend((0..dim).map(|i| self.scale_shift_table[i] + temb[i]));
            scale.extend((0..dim).map(|i| self.scale_shift_table[dim + i] + temb[i]));
        }
        let x = be.layer_norm_modulate(&x, self.config.eps, &scale, &shift)?;
        let x = be.linear(&self.proj_out, &x)?;
        Ok((unpatchify(&x, b, self.config.out_channels(), grid, self.config.patch_size)?, computed))
    }

    fn run_blocks(&self, mut x: Tensor, cond: &Conditioning, text: &TextContext, rope: &RopeTables) -> Result<Tensor> {
        for (block, kv) in self.blocks.iter().zip(&text.kv) {
            x = self.block_forward(block, x, cond, kv, rope)?;
        }
        Ok(x)
    }

    /// Every linear layer of the transformer blocks, named as the checkpoint
    /// tensors they hold (the layers quantization and pruning act on).
    pub fn block_linears_mut(&mut self) -> Vec<BlockLinear<'_>> {
        fn named<'a>(i: usize, name: &str, parts: &[(&str, usize)], linear: &'a mut Linear) -> BlockLinear<'a> {
            let p = |s: &str| format!("blocks.{i}.{s}");
            BlockLinear { block: i, name: p(name), parts: parts.iter().map(|&(s, r)| (p(s), r)).collect(), linear }
        }
        let mut out = Vec::new();
        for (i, blk) in self.blocks.iter_mut().enumerate() {
            let (inner, dim, ffn) = (blk.attn1.norm_q.len(), blk.attn2.norm_q.len(), blk.ffn_in.out_dim());
            out.extend([
                named(
                    i,
                    "attn1.to_qkv",
                    &[("attn1.to_q", inner), ("attn1.to_k", inner), ("attn1.to_v", inner)],
                    &mut blk.attn1.qkv,
                ),
                named(i, "attn1.to_out.0", &[("attn1.to_out.0", dim)], &mut blk.attn1.to_out),
                named(i, "attn2.to_q", &[("attn2.to_q", dim)], &mut blk.attn2.to_q),
                named(i, "attn2.to_kv", &[("attn2.to_k", dim), ("attn2.to_v", dim)], &mut blk.attn2.kv),
                named(i, "attn2.to_out.0", &[("attn2.to_out.0", dim)], &mut blk.attn2.to_out),
                named(i, "ffn.net.0.proj", &[("ffn.net.0.proj", ffn)], &mut blk.ffn_in),
                named(i, "ffn.net.2", &[("ffn.net.2", dim)], &mut blk.ffn_out),
            ]);
        }
        out
    }

    fn block_forward(
        &self,
        blk: &Block,
        mut x: Tensor,
        cond: &Conditioning,
        text_kv: &(Tensor, Tensor),
        rope: &RopeTables,
    ) -> Result<Tensor> {
        let heads = self.config.num_attention_heads;
        let eps = self.config.eps;
        let mods: Vec<Vec<f32>> = (0..6).map(|k| block_mod(blk, cond, k)).collect();
        let be = self.be();

        // Self-attention.
        let nx = be.layer_norm_modulate(&x, eps, &mods[1], &mods[0])?;
        let attn = self.self_attention(&blk.attn1, &nx, rope)?;
        be.add_gated(&mut x, &attn, &mods[2])?;

        // Cross-attention over the text tokens.
        let nx = match &blk.norm2 {
            Some((wt, bs)) => be.layer_norm(x.clone(), eps, Some(wt), Some(bs))?,
            None => x.clone(),
        };
        let attn = self.cross_attention(&blk.attn2, &nx, text_kv, heads)?;
        be.add_assign(&mut x, &attn)?;

        // Feed-forward.
        let nx = be.layer_norm_modulate(&x, eps, &mods[4], &mods[3])?;
        let hidden = be.linear_activation(&blk.ffn_in, &nx, Activation::GeluTanh)?;
        let ff = be.linear(&blk.ffn_out, &hidden)?;
        be.add_gated(&mut x, &ff, &mods[5])?;
        Ok(x)
    }

    fn self_attention(&self, a: &SelfAttention, x: &Tensor, rope: &RopeTables) -> Result<Tensor> {
        let (b, l) = (x.dim(0), x.dim(1));
        let (heads, hd) = (a.heads, self.config.attention_head_dim);
        let inner = heads * hd;
        let be = self.be();
        let qkv = be.linear(&a.qkv, x)?;
        let q = qkv.narrow(2, 0, inner)?;
        let k = qkv.narrow(2, inner, inner)?;
        let v = qkv.narrow(2, 2 * inner, inner)?;
        drop(qkv);
        let mut q = be.rms_norm(q, self.config.eps, Some(&a.norm_q))?.reshape([b, l, heads, hd])?;
        let mut k = be.rms_norm(k, self.config.eps, Some(&a.norm_k))?.reshape([b, l, heads, hd])?;
        be.rope_interleaved(&mut q, &rope.cos, &rope.sin)?;
        be.rope_interleaved(&mut k, &rope.cos, &rope.sin)?;
        let v = v.reshape([b, l, heads, hd])?;
        let precision = if a.int8 { AttentionPrecision::Int8 } else { AttentionPrecision::Full };
        let o = be.attention(&q, &k, &v, 1.0 / (hd as f32).sqrt(), AttentionBias::default(), precision)?;
        Ok(be.linear(&a.to_out, &o.reshape([b, l, inner])?)?)
    }

    fn cross_attention(&self, a: &CrossAttention, x: &Tensor, kv: &(Tensor, Tensor), heads: usize) -> Result<Tensor> {
        let (b, l, dim) = (x.dim(0), x.dim(1), x.dim(2));
        let hd = dim / heads;
        let be = self.be();
        let q = be.rms_norm(be.linear(&a.to_q, x)?, self.config.eps, Some(&a.norm_q))?.reshape([b, l, heads, hd])?;
        let o = be.attention(
            &q,
            &kv.0,
            &kv.1,
            1.0 / (hd as f32).sqrt(),
            AttentionBias::default(),
            AttentionPrecision::Full,
        )?;
        Ok(be.linear(&a.to_out, &o.reshape([b, l, dim])?)?)
    }
}

/// Modulation vector `k` of a block, `[B, C]` = scale_shift_table[k] + timestep_proj[:, k]
/// (0‥5: shift, scale, gate of attention; shift, scale, gate of the FFN).
fn block_mod(blk: &Block, cond: &Conditioning, k: usize) -> Vec<f32> {
    let dim = blk.scale_shift_table.len() / 6;
    let b = cond.temb.len() / dim;
    (0..b)
        .flat_map(|bi| {
            let tp = &cond.timestep_proj[(bi * 6 + k) * dim..(bi * 6 + k + 1) * dim];
            let table = &blk.scale_shift_table[k * dim..(k + 1) * dim];
            tp.iter().zip(table).map(|(a, t)| a + t).collect::<Vec<_>>()
        })
        .collect()
}

/// `[B, C, F, H, W]` → `[B, L, C·pt·ph·pw]` with features ordered `(c, pt, ph, pw)`
/// like the flattened Conv3d weight.
fn patchify(x: &Tensor, patch: [usize; 3]) -> Result<Tensor> {
    let &[b, c, f, h, w] = x.shape() else { unreachable!("checked by caller") };
    let [pt, ph, pw] = patch;
    let (gf, gh, gw) = (f / pt, h / ph, w / pw);
    // [B, C, gf, pt, gh, ph, gw, pw] → [B, gf, gh, gw, C, pt, ph, pw]
    let t = x.clone().reshape([b, c, gf, pt, gh, ph, gw, pw])?.permute(&[0, 2, 4, 6, 1, 3, 5, 7])?;
    Ok(t.reshape([b, gf * gh * gw, c * pt * ph * pw])?)
}

/// `[B, L, pt·ph·pw·C]` (features ordered `(pt, ph, pw, c)`) → `[B, C, F, H, W]`.
fn unpatchify(x: &Tensor, b: usize, c: usize, grid: [usize; 3], patch: [usize; 3]) -> Result<Tensor> {
    let [gf, gh, gw] = grid;
    let [pt, ph, pw] = patch;
    let t = x.clone().reshape([b, gf, gh, gw, pt, ph, pw, c])?.permute(&[0, 7, 1, 4, 2, 5, 3, 6])?;
    Ok(t.reshape([b, c, gf * pt, gh * ph, gw * pw])?)
}
