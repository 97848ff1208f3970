//! The attentions of a Wan transformer block: self-attention over the video tokens with 3D RoPE,
//! cross-attention to the text tokens.
//!
//! Mirrors diffusers 0.42.1 `WanAttention` + `WanAttnProcessor` (models/transformers/
//! transformer_wan.py): `to_q`/`to_k`/`to_v` projections, RMSNorm of q and k *across heads*
//! (`qk_norm="rms_norm_across_heads"`), RoPE on interleaved pairs, scaled dot-product attention,
//! `to_out.0`. The self-attention's three projections run as one GEMM (`to_qkv`), the
//! cross-attention's key and value as another (`to_kv`).

use crate::Result;
use wanrt_nn::backend::{AttentionBias, AttentionPrecision, Backend};
use wanrt_nn::{Linear, Param, ParamMut, Tensor, VarBuilder};

/// Per-token rotary tables `cos, sin: [L, head_dim/2]` of one token grid.
pub struct RotaryEmbedding {
    pub cos: Tensor,
    pub sin: Tensor,
}

pub struct WanSelfAttention {
    /// Module path (`blocks.3.attn1`).
    path: String,
    /// Heads kept (all of them unless the model was head-pruned).
    heads: usize,
    head_dim: usize,
    eps: f32,
    /// `to_q | to_k | to_v`.
    to_qkv: Linear,
    norm_q: Tensor,
    norm_k: Tensor,
    to_out: Linear,
    /// Full, or SageAttention-style 8-bit (an optimized artifact's plan).
    precision: AttentionPrecision,
}

impl WanSelfAttention {
    pub fn new(vb: &VarBuilder, dim: usize, heads: usize, head_dim: usize, eps: f32) -> Result<Self> {
        let inner = heads * head_dim;
        Ok(WanSelfAttention {
            path: vb.prefix().to_string(),
            heads,
            head_dim,
            eps,
            to_qkv: vb.linear_fused("to_qkv", &["to_q", "to_k", "to_v"], dim, &[inner; 3], true)?,
            norm_q: vb.tensor("norm_q.weight", &[inner])?,
            norm_k: vb.tensor("norm_k.weight", &[inner])?,
            to_out: vb.pp("to_out.0").linear(inner, dim, true)?,
            precision: vb.attention_precision(),
        })
    }

    /// `x: [B, L, C]` → `[B, L, C]`.
    pub fn forward(&self, be: &dyn Backend, x: &Tensor, rotary: &RotaryEmbedding) -> Result<Tensor> {
        let (b, l) = (x.dim(0), x.dim(1));
        let (heads, hd) = (self.heads, self.head_dim);
        let inner = heads * hd;
        let qkv = self.to_qkv.forward(be, x)?;
        let query = be.narrow(&qkv, 2, 0, inner)?;
        let key = be.narrow(&qkv, 2, inner, inner)?;
        let value = be.narrow(&qkv, 2, 2 * inner, inner)?;
        drop(qkv);
        let mut query = be.rms_norm(query, self.eps, Some(&self.norm_q))?.reshape([b, l, heads, hd])?;
        let mut key = be.rms_norm(key, self.eps, Some(&self.norm_k))?.reshape([b, l, heads, hd])?;
        let value = value.reshape([b, l, heads, hd])?;
        be.rope_interleaved(&mut query, &rotary.cos, &rotary.sin)?;
        be.rope_interleaved(&mut key, &rotary.cos, &rotary.sin)?;
        let scale = 1.0 / (hd as f32).sqrt();
        let hidden = be.attention(&query, &key, &value, scale, AttentionBias::default(), self.precision)?;
        Ok(self.to_out.forward(be, &hidden.reshape([b, l, inner])?)?)
    }

    pub fn visit(&self, f: &mut dyn FnMut(Param<'_>)) {
        f(Param::Linear(&self.to_qkv));
        f(Param::Tensor(&self.norm_q));
        f(Param::Tensor(&self.norm_k));
        f(Param::Linear(&self.to_out));
        f(Param::Attention { path: &self.path, precision: self.precision });
    }

    pub fn visit_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_>)) {
        f(ParamMut::Linear(&mut self.to_qkv));
        f(ParamMut::Linear(&mut self.to_out));
        f(ParamMut::Attention { path: &self.path, precision: &mut self.precision });
    }
}

/// The text's keys and values of one cross-attention, `[B, L_text, H, D]` each: the text does not
/// change across denoising steps, so they are computed once per prompt batch.
pub struct TextKeyValues {
    pub key: Tensor,
    pub value: Tensor,
}

pub struct WanCrossAttention {
    heads: usize,
    eps: f32,
    to_q: Linear,
    /// `to_k | to_v` over the text tokens.
    to_kv: Linear,
    norm_q: Tensor,
    norm_k: Tensor,
    to_out: Linear,
}

impl WanCrossAttention {
    pub fn new(vb: &VarBuilder, dim: usize, heads: usize, eps: f32) -> Result<Self> {
        Ok(WanCrossAttention {
            heads,
            eps,
            to_q: vb.pp("to_q").linear(dim, dim, true)?,
            to_kv: vb.linear_fused("to_kv", &["to_k", "to_v"], dim, &[dim; 2], true)?,
            norm_q: vb.tensor("norm_q.weight", &[dim])?,
            norm_k: vb.tensor("norm_k.weight", &[dim])?,
            to_out: vb.pp("to_out.0").linear(dim, dim, true)?,
        })
    }

    /// `text: [B, L_text, C]` (the projected text embeddings) → this attention's keys and values.
    pub fn text_key_values(&self, be: &dyn Backend, text: &Tensor) -> Result<TextKeyValues> {
        let (b, lt, dim) = (text.dim(0), text.dim(1), text.dim(2));
        let hd = dim / self.heads;
        let kv = self.to_kv.forward(be, text)?;
        let key = be.rms_norm(be.narrow(&kv, 2, 0, dim)?, self.eps, Some(&self.norm_k))?;
        let value = be.narrow(&kv, 2, dim, dim)?;
        Ok(TextKeyValues { key: key.reshape([b, lt, self.heads, hd])?, value: value.reshape([b, lt, self.heads, hd])? })
    }

    /// `x: [B, L, C]` attending to the text → `[B, L, C]`.
    pub fn forward(&self, be: &dyn Backend, x: &Tensor, text: &TextKeyValues) -> Result<Tensor> {
        let (b, l, dim) = (x.dim(0), x.dim(1), x.dim(2));
        let hd = dim / self.heads;
        let query =
            be.rms_norm(self.to_q.forward(be, x)?, self.eps, Some(&self.norm_q))?.reshape([b, l, self.heads, hd])?;
        let scale = 1.0 / (hd as f32).sqrt();
        let hidden =
            be.attention(&query, &text.key, &text.value, scale, AttentionBias::default(), AttentionPrecision::Full)?;
        Ok(self.to_out.forward(be, &hidden.reshape([b, l, dim])?)?)
    }

    pub fn visit(&self, f: &mut dyn FnMut(Param<'_>)) {
        f(Param::Linear(&self.to_q));
        f(Param::Linear(&self.to_kv));
        f(Param::Tensor(&self.norm_q));
        f(Param::Tensor(&self.norm_k));
        f(Param::Linear(&self.to_out));
    }

    pub fn visit_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_>)) {
        f(ParamMut::Linear(&mut self.to_q));
        f(ParamMut::Linear(&mut self.to_kv));
        f(ParamMut::Linear(&mut self.to_out));
    }
}
