//! The Wan diffusion transformer (Wan2.1, Wan2.2 A14B experts and TI2V-5B).
//!
//! Mirrors diffusers 0.42.1 `WanTransformer3DModel` and `WanTimeTextImageEmbedding`
//! (models/transformers/transformer_wan.py); the blocks are in [`crate::transformer_block`], the
//! attentions in [`crate::attention`]. Timesteps are one per video, or one per latent frame for
//! Wan2.2 TI2V's `expand_timesteps` (diffusers' per-token `[B, L]` timesteps, which its pipelines
//! hold constant over each frame's tokens). Parameter names are the diffusers state-dict names; the
//! original release layout is renamed to them on load (see [`crate::names`]).

use crate::attention::{CrossKeyValues, RotaryEmbedding};
use crate::image_embedding::WanImageEmbedding;
use crate::rope::split_dims;
use crate::step_cache::StepCache;
use crate::transformer_block::{Groups, WanTransformerBlock};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use wanrt_nn::backend::{Activation, Backend, BinaryOp};
use wanrt_nn::{BackendRef, Linear, Module, Param, ParamMut, Tensor, VarBuilder, WeightStore};

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
    /// First-last-frame models: the image embedder's position embedding length (2 × image tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pos_embed_seq_len: Option<usize>,
    #[serde(default = "default_rope_len")]
    pub rope_max_seq_len: usize,
    /// Self-attention heads kept per block after structured head pruning
    /// (`wanrt optimize --prune-heads`); absent = all heads in every block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_attn_heads: Option<Vec<usize>>,
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

    fn patch_volume_checked(&self) -> Result<usize> {
        self.patch_size
            .iter()
            .try_fold(1usize, |a, &p| a.checked_mul(p))
            .ok_or_else(|| Error::Config(format!("transformer: patch_size {:?} is far too large", self.patch_size)))
    }

    fn inner_dim_checked(&self) -> Option<usize> {
        self.num_attention_heads.checked_mul(self.attention_head_dim)
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
            pos_embed_seq_len: None,
            rope_max_seq_len: 1024,
            self_attn_heads: None,
        }
    }

    /// Self-attention heads of block `i`.
    pub fn block_self_attn_heads(&self, i: usize) -> usize {
        self.self_attn_heads.as_ref().and_then(|h| h.get(i).copied()).unwrap_or(self.num_attention_heads)
    }

    /// Whether the model is conditioned on images (Wan2.1 I2V / FLF2V).
    pub fn is_image_conditioned(&self) -> bool {
        self.image_dim.is_some()
    }

    pub fn validate(&self) -> Result<()> {
        // Widths are products of these: bound them before anything multiplies (the 14B model's
        // widest, the FFN, is 13 824).
        const MAX_WIDTH: usize = 1 << 20;
        let widths = [
            self.num_attention_heads.checked_mul(self.attention_head_dim),
            self.in_channels.checked_mul(self.patch_volume_checked()?),
            self.out_channels().checked_mul(self.patch_volume_checked()?),
            Some(self.ffn_dim),
            Some(self.text_dim),
            Some(self.freq_dim),
            self.image_dim.or(Some(0)),
            self.added_kv_proj_dim.or(Some(0)),
            self.inner_dim_checked().and_then(|d| d.checked_mul(6)),
        ];
        if widths.iter().any(|w| w.is_none_or(|w| w > MAX_WIDTH)) {
            return Err(Error::Config(format!(
                "transformer: heads × head dim, channels × patch, ffn_dim, text_dim, freq_dim and image dims must \
                 stay within {MAX_WIDTH}"
            )));
        }
        match (self.image_dim, self.added_kv_proj_dim, self.pos_embed_seq_len) {
            (None, None, None) | (Some(_), Some(_), _) => {}
            _ => {
                return Err(Error::Config(format!(
                    "transformer: image_dim {:?}, added_kv_proj_dim {:?} and pos_embed_seq_len {:?} disagree: an \
                     image-conditioned model sets image_dim and added_kv_proj_dim (and pos_embed_seq_len for \
                     first-last-frame), a text-to-video model none of them",
                    self.image_dim, self.added_kv_proj_dim, self.pos_embed_seq_len
                )))
            }
        }
        if self.image_dim == Some(0) || self.added_kv_proj_dim == Some(0) || self.pos_embed_seq_len == Some(0) {
            return Err(Error::Config(
                "transformer: image_dim, added_kv_proj_dim and pos_embed_seq_len must be positive".into(),
            ));
        }
        if let Some(n) = self.pos_embed_seq_len {
            if n % 2 != 0 {
                return Err(Error::Config(format!(
                    "transformer: pos_embed_seq_len {n} must cover two images' tokens (an even number)"
                )));
            }
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

/// `WanTimeTextImageEmbedding`.
#[derive(Clone)]
struct ConditionEmbedder {
    freq_dim: usize,
    /// `time_embedder.linear_1` (SiLU) and `linear_2`.
    time_linear_1: Linear,
    time_linear_2: Linear,
    time_proj: Linear,
    /// `text_embedder.linear_1` (GELU-tanh) and `linear_2`.
    text_linear_1: Linear,
    text_linear_2: Linear,
    /// Image-conditioned models only.
    image_embedder: Option<WanImageEmbedding>,
}

impl ConditionEmbedder {
    fn new(vb: &VarBuilder, cfg: &TransformerConfig) -> Result<Self> {
        let dim = cfg.inner_dim();
        Ok(ConditionEmbedder {
            freq_dim: cfg.freq_dim,
            time_linear_1: vb.pp("time_embedder.linear_1").linear(cfg.freq_dim, dim, true)?,
            time_linear_2: vb.pp("time_embedder.linear_2").linear(dim, dim, true)?,
            time_proj: vb.pp("time_proj").linear(dim, 6 * dim, true)?,
            text_linear_1: vb.pp("text_embedder.linear_1").linear(cfg.text_dim, dim, true)?,
            text_linear_2: vb.pp("text_embedder.linear_2").linear(dim, dim, true)?,
            image_embedder: cfg
                .image_dim
                .map(|d| WanImageEmbedding::new(&vb.pp("image_embedder"), d, dim, cfg.pos_embed_seq_len))
                .transpose()?,
        })
    }

    /// `temb: [N, C]` and `timestep_proj: [N, 6, C]` of the `N` timesteps.
    fn time(&self, be: &dyn Backend, timesteps: &[f32]) -> Result<(Tensor, Tensor)> {
        // `Timesteps(freq_dim, flip_sin_to_cos=True, downscale_freq_shift=0)`.
        let timestep = be.timestep_embedding(timesteps, self.freq_dim, true, 0.0)?;
        let hidden = self.time_linear_1.forward_activation(be, &timestep, Activation::Silu)?;
        let temb = self.time_linear_2.forward(be, &hidden)?;
        let timestep_proj = self.time_proj.forward(be, &be.activation(temb.clone(), Activation::Silu)?)?;
        let (b, dim) = (temb.dim(0), temb.dim(1));
        Ok((temb, timestep_proj.reshape([b, 6, dim])?))
    }

    /// `PixArtAlphaTextProjection`: UMT5 embeddings `[B, L, text_dim]` → `[B, L, C]`.
    fn text(&self, be: &dyn Backend, text: &Tensor) -> Result<Tensor> {
        let hidden = self.text_linear_1.forward_activation(be, text, Activation::GeluTanh)?;
        Ok(self.text_linear_2.forward(be, &hidden)?)
    }

    fn linears(&self) -> [&Linear; 5] {
        [&self.time_linear_1, &self.time_linear_2, &self.time_proj, &self.text_linear_1, &self.text_linear_2]
    }

    fn linears_mut(&mut self) -> [&mut Linear; 5] {
        [
            &mut self.time_linear_1,
            &mut self.time_linear_2,
            &mut self.time_proj,
            &mut self.text_linear_1,
            &mut self.text_linear_2,
        ]
    }
}

/// The context side of every cross-attention (text, and image for image-conditioned models),
/// computed once per prompt batch: the context does not change across denoising steps, so its
/// projected, normalised keys and values are reused by every step (exactly the same arithmetic as
/// recomputing them).
pub struct CrossAttentionContext {
    /// Per block.
    kv: Vec<CrossKeyValues>,
    batch: usize,
}

impl CrossAttentionContext {
    pub fn batch(&self) -> usize {
        self.batch
    }
}

#[derive(Clone)]
pub struct WanTransformer {
    pub config: TransformerConfig,
    /// The patch embedding (a Conv3d whose kernel equals its stride) as a GEMM over flattened
    /// patches: `[C, in·pt·ph·pw]`.
    patch_embedding: Linear,
    condition_embedder: ConditionEmbedder,
    blocks: Vec<WanTransformerBlock>,
    proj_out: Linear,
    /// `[1, 2, C]`: shift, scale of the output norm.
    scale_shift_table: Tensor,
    backend: BackendRef,
}

impl WanTransformer {
    /// Loads the transformer from `ws` (diffusers names), prepared for `backend`.
    pub fn load(ws: &WeightStore, config: TransformerConfig, backend: BackendRef) -> Result<Self> {
        config.validate()?;
        let vb = VarBuilder::root(ws, &*backend);
        let dim = config.inner_dim();
        let [pt, ph, pw] = config.patch_size;
        let patch_embedding =
            vb.pp("patch_embedding").linear_flattened(&[config.in_channels, pt, ph, pw], dim, true)?;
        let blocks = (0..config.num_layers)
            .map(|i| WanTransformerBlock::new(&vb.pp("blocks").pp(i), &config, i))
            .collect::<Result<Vec<_>>>()?;
        let transformer = WanTransformer {
            patch_embedding,
            condition_embedder: ConditionEmbedder::new(&vb.pp("condition_embedder"), &config)?,
            blocks,
            proj_out: vb.pp("proj_out").linear(dim, config.out_channels() * config.patch_volume(), true)?,
            scale_shift_table: vb.tensor("scale_shift_table", &[1, 2, dim])?,
            config,
            backend,
        };
        // Blocks past `num_layers`, or tensors of another model, are refused, not ignored.
        ws.check_all_read("transformer", &[])?;
        Ok(transformer)
    }

    pub fn backend(&self) -> &BackendRef {
        &self.backend
    }

    fn be(&self) -> &dyn Backend {
        &*self.backend
    }

    /// `text: [B, L_text, text_dim]` (UMT5 embeddings) → the cross-attention keys/values of every
    /// block of a text-to-video model.
    pub fn prepare_text(&self, text: &Tensor) -> Result<CrossAttentionContext> {
        self.prepare_context(text, None)
    }

    /// How many images condition one video (1 for I2V, 2 for first-last-frame, 0 for T2V).
    pub fn images_per_video(&self) -> usize {
        self.condition_embedder.image_embedder.as_ref().map_or(0, |e| e.images_per_video())
    }

    /// [`Self::prepare_text`] plus, for image-conditioned models, `image: [B·n, L_img, image_dim]`
    /// — the image encoder's states of each video's `n` = [`Self::images_per_video`] images.
    pub fn prepare_context(&self, text: &Tensor, image: Option<&Tensor>) -> Result<CrossAttentionContext> {
        if text.rank() != 3 || text.dim(2) != self.config.text_dim {
            return Err(Error::Shape(format!(
                "text embeddings must be [B, L, {}], found {:?}",
                self.config.text_dim,
                text.shape()
            )));
        }
        let be = self.be();
        let encoder_hidden_states = self.condition_embedder.text(be, text)?;
        let image_states = match (&self.condition_embedder.image_embedder, image) {
            (Some(embedder), Some(image)) => {
                let states = embedder.forward(be, image)?;
                if states.dim(0) != text.dim(0) {
                    return Err(Error::Shape(format!(
                        "{} image embedding(s) for a text batch of {}",
                        states.dim(0),
                        text.dim(0)
                    )));
                }
                Some(states)
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::Config("this image-to-video transformer needs image embeddings".into()))
            }
            (None, Some(_)) => {
                return Err(Error::Config("this text-to-video transformer takes no image embeddings".into()))
            }
        };
        let kv = self
            .blocks
            .iter()
            .map(|blk| blk.attn2().context_key_values(be, &encoder_hidden_states, image_states.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Ok(CrossAttentionContext { kv, batch: text.dim(0) })
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

    /// `WanRotaryPosEmbed`: rotary tables for a token grid (theta 10000).
    pub fn rope(&self, grid: [usize; 3]) -> Result<RotaryEmbedding> {
        let (cos, sin) = self.be().rope_tables(grid, split_dims(self.config.attention_head_dim), 10000.0)?;
        Ok(RotaryEmbedding { cos, sin })
    }

    /// `latents: [B, C_in, F, H, W]`, `timesteps: [B]` (or `[B, F/pt]`: one per latent frame, for
    /// `expand_timesteps` models), `text: [B, L_text, text_dim]` → `[B, C_out, F, H, W]` (the flow
    /// prediction).
    pub fn forward(&self, latents: &Tensor, timesteps: &[f32], text: &Tensor) -> Result<Tensor> {
        self.forward_prepared(latents, timesteps, &self.prepare_text(text)?)
    }

    /// [`Self::forward`] with the text side prepared once by [`Self::prepare_text`].
    pub fn forward_prepared(
        &self,
        latents: &Tensor,
        timesteps: &[f32],
        text: &CrossAttentionContext,
    ) -> Result<Tensor> {
        Ok(self.forward_cached(latents, timesteps, text, None)?.0)
    }

    /// [`Self::forward_prepared`] that may reuse the residual of an earlier step
    /// (see [`StepCache`]); also says whether the blocks ran.
    pub fn forward_cached(
        &self,
        latents: &Tensor,
        timesteps: &[f32],
        text: &CrossAttentionContext,
        cache: Option<&mut StepCache>,
    ) -> Result<(Tensor, bool)> {
        let &[b, c, f, h, w] = latents.shape() else {
            return Err(Error::Shape(format!(
                "transformer input must be [B, C, F, H, W], found {:?}",
                latents.shape()
            )));
        };
        let grid = self.grid(f, h, w)?;
        let per_frame = b * grid[0];
        if c != self.config.in_channels || (timesteps.len() != b && timesteps.len() != per_frame) || text.batch != b {
            return Err(Error::Shape(format!(
                "transformer inputs: latents {:?} (expected {} channels), {} timesteps (expected {b}, or \
                 {per_frame}: one per latent frame), text batch {} (expected {b})",
                latents.shape(),
                self.config.in_channels,
                timesteps.len(),
                text.batch
            )));
        }
        let rotary_emb = self.rope(grid)?;
        let (temb, timestep_proj) = self.time_conditioning(timesteps)?;
        self.forward_from(latents, grid, &temb, &timestep_proj, &rotary_emb, text, cache)
    }

    /// A step's time conditioning, `temb: [N, C]` and `timestep_proj: [N, 6, C]` of the `N`
    /// timesteps: device tensors, so a captured step ([`Self::forward_conditioned`] under
    /// `Backend::capture`) takes them as inputs instead of freezing the timestep into its kernels.
    pub fn time_conditioning(&self, timesteps: &[f32]) -> Result<(Tensor, Tensor)> {
        self.condition_embedder.time(self.be(), timesteps)
    }

    /// The forward pass after the time conditioning and rotary tables (no step cache): no upload
    /// and no host read inside, so a CUDA graph can capture it.
    pub fn forward_conditioned(
        &self,
        latents: &Tensor,
        temb: &Tensor,
        timestep_proj: &Tensor,
        rotary_emb: &RotaryEmbedding,
        text: &CrossAttentionContext,
    ) -> Result<Tensor> {
        let &[_, _, f, h, w] = latents.shape() else {
            return Err(Error::Shape(format!(
                "transformer input must be [B, C, F, H, W], found {:?}",
                latents.shape()
            )));
        };
        let grid = self.grid(f, h, w)?;
        Ok(self.forward_from(latents, grid, temb, timestep_proj, rotary_emb, text, None)?.0)
    }

    /// [`Self::forward_conditioned`] as the step a backend captures (`Backend::capture`): its
    /// inputs are `[latents, temb, timestep_proj]`; the rotary tables and the text context are
    /// fixed for the capture's life.
    pub fn captured_pass<'a>(
        &'a self,
        rotary_emb: &'a RotaryEmbedding,
        text: &'a CrossAttentionContext,
    ) -> impl Fn(&[Tensor]) -> wanrt_nn::Result<Tensor> + 'a {
        move |x: &[Tensor]| {
            self.forward_conditioned(&x[0], &x[1], &x[2], rotary_emb, text)
                .map_err(|e| wanrt_nn::Error::Msg(e.to_string()))
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_from(
        &self,
        latents: &Tensor,
        grid: [usize; 3],
        temb: &Tensor,
        timestep_proj: &Tensor,
        rotary_emb: &RotaryEmbedding,
        text: &CrossAttentionContext,
        cache: Option<&mut StepCache>,
    ) -> Result<(Tensor, bool)> {
        let be = self.be();
        let mut hidden_states = self.patch_embedding.forward(be, &patchify(be, latents, self.config.patch_size)?)?;

        let computed = match cache {
            Some(cache) => {
                let indicator = self.blocks[0].modulated_input(be, &hidden_states, timestep_proj)?;
                match cache.decide(be, &indicator)? {
                    Some(residual) => {
                        be.add_assign(&mut hidden_states, residual)?;
                        false
                    }
                    None => {
                        let before = hidden_states.clone();
                        hidden_states = self.run_blocks(hidden_states, text, timestep_proj, rotary_emb)?;
                        cache.store_residual(be.binary(BinaryOp::Sub, &hidden_states, &before)?);
                        true
                    }
                }
            }
            None => {
                hidden_states = self.run_blocks(hidden_states, text, timestep_proj, rotary_emb)?;
                true
            }
        };

        // 5. Output norm, projection & unpatchify
        let (n, dim) = (temb.dim(0), self.config.inner_dim());
        let table = be.binary(BinaryOp::Add, &self.scale_shift_table, &temb.clone().reshape([n, 1, dim])?)?;
        let [shift, scale]: [Tensor; 2] = be.chunk(&table, 2, 1)?.try_into().expect("two chunks");
        let g = Groups::of(&hidden_states, &table)?;
        let hidden_states =
            g.tokens(be.layer_norm_modulate(&g.modulated(hidden_states)?, self.config.eps, &scale, &shift)?)?;
        let hidden_states = self.proj_out.forward(be, &hidden_states)?;
        let out = unpatchify(be, hidden_states, self.config.out_channels(), grid, self.config.patch_size)?;
        Ok((out, computed))
    }

    fn run_blocks(
        &self,
        mut hidden_states: Tensor,
        text: &CrossAttentionContext,
        timestep_proj: &Tensor,
        rotary_emb: &RotaryEmbedding,
    ) -> Result<Tensor> {
        for (block, kv) in self.blocks.iter().zip(&text.kv) {
            hidden_states = block.forward(self.be(), hidden_states, kv, timestep_proj, rotary_emb)?;
        }
        Ok(hidden_states)
    }
}

impl Module for WanTransformer {
    fn visit(&self, f: &mut dyn FnMut(Param<'_>)) {
        f(Param::Linear(&self.patch_embedding));
        self.condition_embedder.linears().into_iter().for_each(|l| f(Param::Linear(l)));
        if let Some(e) = &self.condition_embedder.image_embedder {
            e.visit(f);
        }
        self.blocks.iter().for_each(|b| b.visit(f));
        f(Param::Linear(&self.proj_out));
        f(Param::Tensor(&self.scale_shift_table));
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_>)) {
        f(ParamMut::Linear(&mut self.patch_embedding));
        self.condition_embedder.linears_mut().into_iter().for_each(|l| f(ParamMut::Linear(l)));
        if let Some(e) = &mut self.condition_embedder.image_embedder {
            e.visit_mut(f);
        }
        self.blocks.iter_mut().for_each(|b| b.visit_mut(f));
        f(ParamMut::Linear(&mut self.proj_out));
        f(ParamMut::Tensor { name: "scale_shift_table", tensor: &mut self.scale_shift_table });
    }
}

/// `[B, C, F, H, W]` → `[B, L, C·pt·ph·pw]` with features ordered `(c, pt, ph, pw)`
/// like the flattened Conv3d weight.
fn patchify(be: &dyn Backend, x: &Tensor, patch: [usize; 3]) -> Result<Tensor> {
    let &[b, c, f, h, w] = x.shape() else { unreachable!("checked by caller") };
    let [pt, ph, pw] = patch;
    let (gf, gh, gw) = (f / pt, h / ph, w / pw);
    // [B, C, gf, pt, gh, ph, gw, pw] → [B, gf, gh, gw, C, pt, ph, pw]
    let t = be.permute(&x.clone().reshape([b, c, gf, pt, gh, ph, gw, pw])?, &[0, 2, 4, 6, 1, 3, 5, 7])?;
    Ok(t.reshape([b, gf * gh * gw, c * pt * ph * pw])?)
}

/// `[B, L, pt·ph·pw·C]` (features ordered `(pt, ph, pw, c)`) → `[B, C, F, H, W]`.
fn unpatchify(be: &dyn Backend, x: Tensor, c: usize, grid: [usize; 3], patch: [usize; 3]) -> Result<Tensor> {
    let b = x.dim(0);
    let [gf, gh, gw] = grid;
    let [pt, ph, pw] = patch;
    let t = be.permute(&x.reshape([b, gf, gh, gw, pt, ph, pw, c])?, &[0, 7, 1, 4, 2, 5, 3, 6])?;
    Ok(t.reshape([b, c, gf * pt, gh * ph, gw * pw])?)
}
