//! One block of the Wan diffusion transformer.
//!
//! Mirrors diffusers 0.42.1 `WanTransformerBlock.forward` (models/transformers/transformer_wan.py):
//! six modulation vectors from the block's table plus the projected timestep, then
//! 1. self-attention on the modulated LayerNorm of the tokens, gated residual;
//! 2. cross-attention to the text (and image) on `norm2` of the tokens, plain residual;
//! 3. feed-forward (GELU-tanh) on the modulated LayerNorm, gated residual.

use crate::attention::{CrossKeyValues, RotaryEmbedding, WanCrossAttention, WanSelfAttention};
use crate::transformer::TransformerConfig;
use crate::Result;
use wanrt_nn::backend::{Activation, Backend, BinaryOp};
use wanrt_nn::{Linear, Param, ParamMut, Tensor, VarBuilder};

#[derive(Clone)]
pub struct WanTransformerBlock {
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
        Ok(be.layer_norm_modulate(x, self.eps, &scale_msa, &shift_msa)?)
    }

    /// `shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa`, each `[B, 1, C]`.
    fn modulation(&self, be: &dyn Backend, timestep_proj: &Tensor) -> Result<[Tensor; 6]> {
        let table = be.binary(BinaryOp::Add, &self.scale_shift_table, timestep_proj)?;
        let chunks = be.chunk(&table, 6, 1)?;
        Ok(chunks.try_into().expect("six chunks"))
    }

    /// `x: [B, L, C]`, `timestep_proj: [B, 6, C]` → `[B, L, C]`.
    pub fn forward(
        &self,
        be: &dyn Backend,
        mut hidden_states: Tensor,
        context: &CrossKeyValues,
        timestep_proj: &Tensor,
        rotary: &RotaryEmbedding,
    ) -> Result<Tensor> {
        let [shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa] =
            self.modulation(be, timestep_proj)?;

        // 1. Self-attention
        let norm_hidden_states = be.layer_norm_modulate(&hidden_states, self.eps, &scale_msa, &shift_msa)?;
        let attn_output = self.attn1.forward(be, &norm_hidden_states, rotary)?;
        be.add_gated(&mut hidden_states, &attn_output, &gate_msa)?;

        // 2. Cross-attention
        let norm_hidden_states = match &self.norm2 {
            Some((weight, bias)) => be.layer_norm(hidden_states.clone(), self.eps, Some(weight), Some(bias))?,
            None => hidden_states.clone(),
        };
        let attn_output = self.attn2.forward(be, &norm_hidden_states, context)?;
        be.add_assign(&mut hidden_states, &attn_output)?;

        // 3. Feed-forward
        let norm_hidden_states = be.layer_norm_modulate(&hidden_states, self.eps, &c_scale_msa, &c_shift_msa)?;
        let ff_hidden = self.ffn_in.forward_activation(be, &norm_hidden_states, Activation::GeluTanh)?;
        let ff_output = self.ffn_out.forward(be, &ff_hidden)?;
        be.add_gated(&mut hidden_states, &ff_output, &c_gate_msa)?;
        Ok(hidden_states)
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
        self.attn1.visit_mut(f);
        self.attn2.visit_mut(f);
        f(ParamMut::Linear(&mut self.ffn_in));
        f(ParamMut::Linear(&mut self.ffn_out));
    }
}
