//! One block of the Wan diffusion transformer.
//!
//! Mirrors diffusers 0.42.1 `WanTransformerBlock.forward` (models/transformers/transformer_wan.py):
//! six modulation vectors from the block's table plus the projected timestep, then
//! 1. self-attention on the modulated LayerNorm of the tokens, gated residual;
//! 2. cross-attention to the text (and image) on `norm2` of the tokens, plain residual;
//! 3. feed-forward (GELU-tanh) on the modulated LayerNorm, gated residual.
//!
//! The modulation is one per video (`temb: [B, 6, C]`), or, for Wan2.2 TI2V's per-token
//! timesteps (`temb: [B, L, 6, C]`), one per latent frame: diffusers' pipelines give every token of
//! a frame the same timestep, so the tokens are modulated in groups of one frame
//! (`[B·F, H·W, C]` against `[B·F, 1, C]`), the same values without `L` copies of the tables.

use crate::attention::{CrossKeyValues, RotaryEmbedding, WanCrossAttention, WanSelfAttention};
use crate::transformer::TransformerConfig;
use crate::{Error, Result};
use wanrt_nn::backend::{Activation, Backend, BinaryOp};
use wanrt_nn::{param_path, Linear, Param, ParamMut, Tensor, VarBuilder};

#[derive(Clone)]
pub struct WanTransformerBlock {
    /// Module path (`blocks.3`), naming the tensors in `visit_mut`.
    path: String,
    eps: f32,
    attn1: WanSelfAttention,
    attn2: WanCrossAttention,
    /// `norm2`'s affine parameters (None when `cross_attn_norm` is false: no norm at all).
    norm2: Option<(Tensor, Tensor)>,
    /// `ffn.net.0.proj` (GELU-tanh) and `ffn.net.2`.
    ffn_in: Linear,
    ffn_out: Linear,
    /// `[1, 6, C]`.
    scale_shift_table: Tensor,
}

impl WanTransformerBlock {
    pub fn new(vb: &VarBuilder, cfg: &TransformerConfig, index: usize) -> Result<Self> {
        let dim = cfg.inner_dim();
        let norm2 = if cfg.cross_attn_norm {
            Some((vb.tensor("norm2.weight", &[dim])?, vb.tensor("norm2.bias", &[dim])?))
        } else {
            None
        };
        Ok(WanTransformerBlock {
            path: vb.prefix().to_string(),
            eps: cfg.eps,
            attn1: WanSelfAttention::new(
                &vb.pp("attn1"),
                dim,
                cfg.block_self_attn_heads(index),
                cfg.attention_head_dim,
                cfg.eps,
            )?,
            attn2: WanCrossAttention::new(
                &vb.pp("attn2"),
                dim,
                cfg.num_attention_heads,
                cfg.eps,
                cfg.added_kv_proj_dim,
            )?,
            norm2,
            ffn_in: vb.pp("ffn.net.0.proj").linear(dim, cfg.ffn_dim, true)?,
            ffn_out: vb.pp("ffn.net.2").linear(cfg.ffn_dim, dim, true)?,
            scale_shift_table: vb.tensor("scale_shift_table", &[1, 6, dim])?,
        })
    }

    pub fn attn2(&self) -> &WanCrossAttention {
        &self.attn2
    }

    /// The first modulated input of the block (the step cache's indicator).
    pub fn modulated_input(&self, be: &dyn Backend, x: &Tensor, timestep_proj: &Tensor) -> Result<Tensor> {
        let [shift_msa, scale_msa, ..] = self.modulation(be, timestep_proj)?;
        let groups = Groups::of(x, timestep_proj)?;
        groups.tokens(be.layer_norm_modulate(&groups.modulated(x.clone())?, self.eps, &scale_msa, &shift_msa)?)
    }

    /// `shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa`, each `[N, 1, C]`.
    fn modulation(&self, be: &dyn Backend, timestep_proj: &Tensor) -> Result<[Tensor; 6]> {
        let table = be.binary(BinaryOp::Add, &self.scale_shift_table, timestep_proj)?;
        let chunks = be.chunk(&table, 6, 1)?;
        Ok(chunks.try_into().expect("six chunks"))
    }

    /// `x: [B, L, C]`, `timestep_proj: [N, 6, C]` (`N` = B, or B·frames) → `[B, L, C]`.
    pub fn forward(
        &self,
        be: &dyn Backend,
        hidden_states: Tensor,
        context: &CrossKeyValues,
        timestep_proj: &Tensor,
        rotary: &RotaryEmbedding,
    ) -> Result<Tensor> {
        let [shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa] =
            self.modulation(be, timestep_proj)?;
        let g = Groups::of(&hidden_states, timestep_proj)?;

        // 1. Self-attention
        let norm_hidden_states = g.tokens(be.layer_norm_modulate(
            &g.modulated(hidden_states.clone())?,
            self.eps,
            &scale_msa,
            &shift_msa,
        )?)?;
        let attn_output = self.attn1.forward(be, &norm_hidden_states, rotary)?;
        let mut grouped = g.modulated(hidden_states)?;
        be.add_gated(&mut grouped, &g.modulated(attn_output)?, &gate_msa)?;
        let mut hidden_states = g.tokens(grouped)?;

        // 2. Cross-attention
        let norm_hidden_states = match &self.norm2 {
            Some((weight, bias)) => be.layer_norm(hidden_states.clone(), self.eps, Some(weight), Some(bias))?,
            None => hidden_states.clone(),
        };
        let attn_output = self.attn2.forward(be, &norm_hidden_states, context)?;
        be.add_assign(&mut hidden_states, &attn_output)?;

        // 3. Feed-forward
        let mut grouped = g.modulated(hidden_states)?;
        let norm_hidden_states = be.layer_norm_modulate(&grouped, self.eps, &c_scale_msa, &c_shift_msa)?;
        let ff_hidden = self.ffn_in.forward_activation(be, &g.tokens(norm_hidden_states)?, Activation::GeluTanh)?;
        let ff_output = self.ffn_out.forward(be, &ff_hidden)?;
        be.add_gated(&mut grouped, &g.modulated(ff_output)?, &c_gate_msa)?;
        g.tokens(grouped)
    }

    pub fn visit(&self, f: &mut dyn FnMut(Param<'_>)) {
        self.attn1.visit(f);
        self.attn2.visit(f);
        if let Some((w, b)) = &self.norm2 {
            f(Param::Tensor(w));
            f(Param::Tensor(b));
        }
        f(Param::Linear(&self.ffn_in));
        f(Param::Linear(&self.ffn_out));
        f(Param::Tensor(&self.scale_shift_table));
    }

    pub fn visit_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_>)) {
        let name = |leaf: &str| param_path(&self.path, leaf);
        self.attn1.visit_mut(f);
        self.attn2.visit_mut(f);
        if let Some((w, b)) = &mut self.norm2 {
            f(ParamMut::Tensor { name: &name("norm2.weight"), tensor: w });
            f(ParamMut::Tensor { name: &name("norm2.bias"), tensor: b });
        }
        f(ParamMut::Linear(&mut self.ffn_in));
        f(ParamMut::Linear(&mut self.ffn_out));
        f(ParamMut::Tensor { name: &name("scale_shift_table"), tensor: &mut self.scale_shift_table });
    }
}

/// How `[B, L, C]` tokens share the `N` modulations of a `[N, …, C]` table: `[N, B·L/N, C]`
/// (N = B: per video; N = B·F: per latent frame, the tokens being frame-major).
pub(crate) struct Groups {
    tokens: [usize; 3],
    modulated: [usize; 3],
}

impl Groups {
    pub(crate) fn of(x: &Tensor, table: &Tensor) -> Result<Self> {
        let &[b, l, c] = x.shape() else {
            return Err(Error::Shape(format!("block input must be [B, L, C], found {:?}", x.shape())));
        };
        let n = table.dim(0);
        if n == 0 || !n.is_multiple_of(b) || !(b * l).is_multiple_of(n) {
            return Err(Error::Shape(format!("{n} modulations cannot be shared by {b}×{l} tokens")));
        }
        Ok(Groups { tokens: [b, l, c], modulated: [n, b * l / n, c] })
    }

    /// `[B, L, C]` → `[N, B·L/N, C]` (a view).
    pub(crate) fn modulated(&self, x: Tensor) -> Result<Tensor> {
        Ok(x.reshape(self.modulated)?)
    }

    /// `[N, B·L/N, C]` → `[B, L, C]` (a view).
    pub(crate) fn tokens(&self, x: Tensor) -> Result<Tensor> {
        Ok(x.reshape(self.tokens)?)
    }
}
