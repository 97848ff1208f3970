//! The attentions of a Wan transformer block: self-attention over the video tokens with 3D RoPE,
//! cross-attention to the text tokens.
//!
//! Mirrors diffusers 0.42.1 `WanAttention` + `WanAttnProcessor` (models/transformers/
//! transformer_wan.py): `to_q`/`to_k`/`to_v` projections, RMSNorm of q and k *across heads*
//! (`qk_norm="rms_norm_across_heads"`), RoPE on interleaved pairs, scaled dot-product attention,
//! `to_out.0`. The self-attention's three projections run as one GEMM (`to_qkv`), the
//! cross-attention's key and value as another (`to_kv`). Image-conditioned models (I2V, FLF2V)
//! attend to the image tokens too, through `add_k_proj`/`add_v_proj` (one GEMM, `add_kv_proj`)
//! and `norm_added_k`, the two attentions summed before `to_out`.

use crate::{Error, Result};
use wanrt_nn::backend::{AttentionBias, AttentionPrecision, Backend};
use wanrt_nn::{param_path, Linear, Param, ParamMut, Tensor, VarBuilder};

/// Per-token rotary tables `cos, sin: [L, head_dim/2]` of one token grid.
pub struct RotaryEmbedding {
    pub cos: Tensor,
    pub sin: Tensor,
}

#[derive(Clone)]
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
        f(ParamMut::Tensor { name: &param_path(&self.path, "norm_q.weight"), tensor: &mut self.norm_q });
        f(ParamMut::Tensor { name: &param_path(&self.path, "norm_k.weight"), tensor: &mut self.norm_k });
        f(ParamMut::Linear(&mut self.to_out));
        f(ParamMut::Attention { path: &self.path, precision: &mut self.precision });
    }
}

/// The keys and values of one cross-attention's context, `[B, L_ctx, H, D]` each: the text (and
/// image) do not change across denoising steps, so they are computed once per prompt batch.
pub struct KeyValues {
    pub key: Tensor,
    pub value: Tensor,
}

/// What one block's cross-attention attends to: the text, and for image-conditioned models the
/// image tokens through the added projections.
pub struct CrossKeyValues {
    pub text: KeyValues,
    pub image: Option<KeyValues>,
}

/// `add_k_proj | add_v_proj` and `norm_added_k` of an image-conditioned cross-attention.
#[derive(Clone)]
struct AddedKeyValueProjection {
    to_kv: Linear,
    norm_k: Tensor,
}

#[derive(Clone)]
pub struct WanCrossAttention {
    /// Module path (`blocks.3.attn2`), naming the norms in `visit_mut`.
    path: String,
    heads: usize,
    eps: f32,
    to_q: Linear,
    /// `to_k | to_v` over the text tokens.
    to_kv: Linear,
    norm_q: Tensor,
    norm_k: Tensor,
    /// Present when the model attends to image tokens too (`added_kv_proj_dim`).
    added: Option<AddedKeyValueProjection>,
    to_out: Linear,
}

impl WanCrossAttention {
    /// `added_kv_dim`: the image tokens' width when the model is image-conditioned.
    pub fn new(vb: &VarBuilder, dim: usize, heads: usize, eps: f32, added_kv_dim: Option<usize>) -> Result<Self> {
        let added = added_kv_dim
            .map(|d| -> Result<_> {
                Ok(AddedKeyValueProjection {
                    to_kv: vb.linear_fused("add_kv_proj", &["add_k_proj", "add_v_proj"], d, &[dim; 2], true)?,
                    norm_k: vb.tensor("norm_added_k.weight", &[dim])?,
                })
            })
            .transpose()?;
        Ok(WanCrossAttention {
            path: vb.prefix().to_string(),
            heads,
            eps,
            to_q: vb.pp("to_q").linear(dim, dim, true)?,
            to_kv: vb.linear_fused("to_kv", &["to_k", "to_v"], dim, &[dim; 2], true)?,
            norm_q: vb.tensor("norm_q.weight", &[dim])?,
            norm_k: vb.tensor("norm_k.weight", &[dim])?,
            added,
            to_out: vb.pp("to_out.0").linear(dim, dim, true)?,
        })
    }

    pub fn attends_to_image(&self) -> bool {
        self.added.is_some()
    }

    /// `text: [B, L_text, C]` (the projected text embeddings) and, for image-conditioned models,
    /// `image: [B, L_img, C]` (the embedded image tokens) → this attention's keys and values.
    pub fn context_key_values(
        &self,
        be: &dyn Backend,
        text: &Tensor,
        image: Option<&Tensor>,
    ) -> Result<CrossKeyValues> {
        let text = self.key_values(be, &self.to_kv, &self.norm_k, text)?;
        let image = match (&self.added, image) {
            (Some(added), Some(image)) => Some(self.key_values(be, &added.to_kv, &added.norm_k, image)?),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::Config("this image-conditioned transformer needs image embeddings".into()))
            }
            (None, Some(_)) => {
                return Err(Error::Config("this transformer is not image-conditioned: it takes no image".into()))
            }
        };
        Ok(CrossKeyValues { text, image })
    }

    fn key_values(&self, be: &dyn Backend, to_kv: &Linear, norm_k: &Tensor, x: &Tensor) -> Result<KeyValues> {
        let (b, l, dim) = (x.dim(0), x.dim(1), to_kv.out_dim() / 2);
        let hd = dim / self.heads;
        let kv = to_kv.forward(be, x)?;
        let key = be.rms_norm(be.narrow(&kv, 2, 0, dim)?, self.eps, Some(norm_k))?;
        let value = be.narrow(&kv, 2, dim, dim)?;
        Ok(KeyValues { key: key.reshape([b, l, self.heads, hd])?, value: value.reshape([b, l, self.heads, hd])? })
    }

    /// `x: [B, L, C]` attending to the text (and the image) → `[B, L, C]`.
    pub fn forward(&self, be: &dyn Backend, x: &Tensor, context: &CrossKeyValues) -> Result<Tensor> {
        let (b, l, dim) = (x.dim(0), x.dim(1), x.dim(2));
        let hd = dim / self.heads;
        let query =
            be.rms_norm(self.to_q.forward(be, x)?, self.eps, Some(&self.norm_q))?.reshape([b, l, self.heads, hd])?;
        let scale = 1.0 / (hd as f32).sqrt();
        let attend = |kv: &KeyValues| {
            be.attention(&query, &kv.key, &kv.value, scale, AttentionBias::default(), AttentionPrecision::Full)
        };
        let mut hidden = attend(&context.text)?;
        if let Some(image) = &context.image {
            // diffusers adds the image attention to the text attention before `to_out`.
            be.add_assign(&mut hidden, &attend(image)?)?;
        }
        Ok(self.to_out.forward(be, &hidden.reshape([b, l, dim])?)?)
    }

    pub fn visit(&self, f: &mut dyn FnMut(Param<'_>)) {
        f(Param::Linear(&self.to_q));
        f(Param::Linear(&self.to_kv));
        f(Param::Tensor(&self.norm_q));
        f(Param::Tensor(&self.norm_k));
        if let Some(added) = &self.added {
            f(Param::Linear(&added.to_kv));
            f(Param::Tensor(&added.norm_k));
        }
        f(Param::Linear(&self.to_out));
    }

    pub fn visit_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_>)) {
        let name = |leaf: &str| param_path(&self.path, leaf);
        f(ParamMut::Linear(&mut self.to_q));
        f(ParamMut::Linear(&mut self.to_kv));
        f(ParamMut::Tensor { name: &name("norm_q.weight"), tensor: &mut self.norm_q });
        f(ParamMut::Tensor { name: &name("norm_k.weight"), tensor: &mut self.norm_k });
        if let Some(added) = &mut self.added {
            f(ParamMut::Linear(&mut added.to_kv));
            f(ParamMut::Tensor { name: &name("norm_added_k.weight"), tensor: &mut added.norm_k });
        }
        f(ParamMut::Linear(&mut self.to_out));
    }
}
