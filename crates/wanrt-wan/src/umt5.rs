//! UMT5 text encoder (encoder stack only), the text tower of Wan2.1.
//!
//! Mirrors transformers 5.24 `UMT5EncoderModel` (models/umt5/modeling_umt5.py):
//! pre-norm blocks with T5 RMSNorm, a relative position bias in *every* layer
//! (unlike T5, which shares layer 0's), no 1/√d score scaling, and a gated
//! GELU(tanh) feed-forward. Names are the transformers state-dict names.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use wanrt_nn::backend::{Activation, AttentionBias, AttentionPrecision, Backend, BinaryOp, RelativeBuckets};
use wanrt_nn::{BackendRef, Embedding, Linear, Module, Param, ParamMut, Tensor, VarBuilder, WeightStore};

fn default_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}
fn default_eps() -> f32 {
    1e-6
}
fn default_ff() -> String {
    "gated-gelu".into()
}

/// `text_encoder/config.json` (UMT5Config).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Umt5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f32,
    #[serde(default = "default_ff")]
    pub feed_forward_proj: String,
}

impl Umt5Config {
    fn validate(&self) -> Result<()> {
        if self.feed_forward_proj != "gated-gelu" {
            return Err(Error::Config(format!(
                "text encoder feed_forward_proj {:?} is not supported; expected \"gated-gelu\" (UMT5)",
                self.feed_forward_proj
            )));
        }
        if self.relative_attention_num_buckets < 4 || self.relative_attention_max_distance < 2 {
            return Err(Error::Config("text encoder relative attention buckets/distance too small".into()));
        }
        // Widths are products of these: bound them before anything multiplies (UMT5-XXL's widest
        // is d_ff 10 240).
        const MAX_WIDTH: usize = 1 << 20;
        let inner = self.d_kv.checked_mul(self.num_heads);
        if [inner, Some(self.d_model), Some(self.d_ff), Some(self.relative_attention_num_buckets)]
            .iter()
            .any(|w| w.is_none_or(|w| w == 0 || w > MAX_WIDTH))
        {
            return Err(Error::Config(format!(
                "text encoder: d_model, d_ff, d_kv × num_heads and buckets must be 1 to {MAX_WIDTH}"
            )));
        }
        Ok(())
    }
}

/// `UMT5Block`: `layer.0` (self-attention with its own relative position bias) and `layer.1`
/// (gated-GELU feed-forward), both pre-norm.
struct Umt5Block {
    /// `layer.0.layer_norm`.
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// `relative_attention_bias.weight`: `[buckets, heads]`.
    relative_attention_bias: Tensor,
    /// `layer.1.layer_norm`.
    ff_norm: Tensor,
    wi_0: Linear,
    wi_1: Linear,
    wo: Linear,
}

impl Umt5Block {
    fn new(vb: &VarBuilder, cfg: &Umt5Config) -> Result<Self> {
        let (d, inner, ff) = (cfg.d_model, cfg.d_kv * cfg.num_heads, cfg.d_ff);
        let (attn, dense) = (vb.pp("layer.0"), vb.pp("layer.1"));
        let sa = attn.pp("SelfAttention");
        let dd = dense.pp("DenseReluDense");
        Ok(Umt5Block {
            attn_norm: attn.tensor("layer_norm.weight", &[d])?,
            q: sa.pp("q").linear(d, inner, false)?,
            k: sa.pp("k").linear(d, inner, false)?,
            v: sa.pp("v").linear(d, inner, false)?,
            o: sa.pp("o").linear(inner, d, false)?,
            relative_attention_bias: sa
                .tensor("relative_attention_bias.weight", &[cfg.relative_attention_num_buckets, cfg.num_heads])?,
            ff_norm: dense.tensor("layer_norm.weight", &[d])?,
            wi_0: dd.pp("wi_0").linear(d, ff, false)?,
            wi_1: dd.pp("wi_1").linear(d, ff, false)?,
            wo: dd.pp("wo").linear(ff, d, false)?,
        })
    }

    fn linears(&self) -> [&Linear; 7] {
        [&self.q, &self.k, &self.v, &self.o, &self.wi_0, &self.wi_1, &self.wo]
    }

    fn linears_mut(&mut self) -> [&mut Linear; 7] {
        [&mut self.q, &mut self.k, &mut self.v, &mut self.o, &mut self.wi_0, &mut self.wi_1, &mut self.wo]
    }

    /// `x: [B, L, d]` with `lengths[b]` real tokens per row → `[B, L, d]`.
    fn forward(&self, be: &dyn Backend, mut x: Tensor, lengths: &[usize], cfg: &Umt5Config) -> Result<Tensor> {
        let (b, l) = (x.dim(0), x.dim(1));
        let (h, dk, eps) = (cfg.num_heads, cfg.d_kv, cfg.layer_norm_epsilon);
        // Self-attention: no 1/√d scaling; this layer's relative position bias, padded keys masked.
        let normed = be.rms_norm(x.clone(), eps, Some(&self.attn_norm))?;
        let query = self.q.forward(be, &normed)?.reshape([b, l, h, dk])?;
        let key = self.k.forward(be, &normed)?.reshape([b, l, h, dk])?;
        let value = self.v.forward(be, &normed)?.reshape([b, l, h, dk])?;
        let buckets = RelativeBuckets {
            num_buckets: cfg.relative_attention_num_buckets,
            max_distance: cfg.relative_attention_max_distance,
            bidirectional: true,
        };
        let position_bias = be.relative_position_bias(&self.relative_attention_bias, l, buckets)?;
        let bias = AttentionBias { per_head: Some(&position_bias), key_lengths: Some(lengths) };
        let attn = be.attention(&query, &key, &value, 1.0, bias, AttentionPrecision::Full)?;
        be.add_assign(&mut x, &self.o.forward(be, &attn.reshape([b, l, h * dk])?)?)?;
        // Gated-GELU feed-forward.
        let normed = be.rms_norm(x.clone(), eps, Some(&self.ff_norm))?;
        let gate = self.wi_0.forward_activation(be, &normed, Activation::GeluTanh)?;
        let hidden = be.binary(BinaryOp::Mul, &gate, &self.wi_1.forward(be, &normed)?)?;
        be.add_assign(&mut x, &self.wo.forward(be, &hidden)?)?;
        Ok(x)
    }
}

pub struct Umt5Encoder {
    pub config: Umt5Config,
    /// `shared` (tied with `encoder.embed_tokens`): `[vocab, d_model]`.
    embed_tokens: Embedding,
    blocks: Vec<Umt5Block>,
    final_layer_norm: Tensor,
    backend: BackendRef,
}

impl Umt5Encoder {
    /// Loads the encoder from `ws` (transformers names), prepared for `backend`.
    pub fn load(ws: &WeightStore, config: Umt5Config, backend: BackendRef) -> Result<Self> {
        config.validate()?;
        let vb = VarBuilder::root(ws, &*backend);
        let embed_prefix = Self::embedding_prefix(ws).ok_or_else(|| wanrt_nn::Error::MissingTensor {
            name: "shared.weight".into(),
            source_desc: ws.origin().into(),
        })?;
        let embed_tokens = vb.pp(embed_prefix).embedding(config.vocab_size, config.d_model)?;
        let encoder = vb.pp("encoder");
        let blocks = (0..config.num_layers)
            .map(|i| Umt5Block::new(&encoder.pp("block").pp(i), &config))
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm = encoder.tensor("final_layer_norm.weight", &[config.d_model])?;
        // The tied copy of the embedding is the one tensor a complete checkpoint may hold unread.
        ws.check_all_read("text encoder", &["encoder.embed_tokens.weight"])?;
        Ok(Umt5Encoder { config, embed_tokens, blocks, final_layer_norm, backend })
    }

    pub fn backend(&self) -> &BackendRef {
        &self.backend
    }

    /// The tensor prefix the token embedding is read from. The embedding is tied: files may hold
    /// `shared.weight`, `encoder.embed_tokens.weight` or both (then `shared` is used).
    pub fn embedding_prefix(ws: &WeightStore) -> Option<&'static str> {
        ["shared", "encoder.embed_tokens"].into_iter().find(|p| ws.contains(&format!("{p}.weight")))
    }

    /// The token embedding table.
    pub fn embedding(&self) -> &Embedding {
        &self.embed_tokens
    }

    /// `input_ids: [B, L]` (u32) with `lengths[b]` real tokens per row (the rest is padding,
    /// masked out of attention) → `last_hidden_state: [B, L, d_model]`.
    pub fn forward(&self, input_ids: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let &[batch, l] = input_ids.shape() else {
            return Err(Error::Shape(format!("text encoder ids must be [B, L], found {:?}", input_ids.shape())));
        };
        if lengths.len() != batch || lengths.iter().any(|&n| n > l) {
            return Err(Error::Shape(format!("text encoder: lengths {lengths:?} for ids {:?}", input_ids.shape())));
        }
        let be = &*self.backend;
        let mut x = self.embed_tokens.forward(be, input_ids)?;
        for blk in &self.blocks {
            x = blk.forward(be, x, lengths, &self.config)?;
        }
        Ok(be.rms_norm(x, self.config.layer_norm_epsilon, Some(&self.final_layer_norm))?)
    }
}

impl Module for Umt5Encoder {
    fn visit(&self, f: &mut dyn FnMut(Param<'_>)) {
        f(Param::Embedding(&self.embed_tokens));
        for b in &self.blocks {
            f(Param::Tensor(&b.attn_norm));
            b.linears().into_iter().for_each(|l| f(Param::Linear(l)));
            f(Param::Tensor(&b.relative_attention_bias));
            f(Param::Tensor(&b.ff_norm));
        }
        f(Param::Tensor(&self.final_layer_norm));
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_>)) {
        f(ParamMut::Embedding(&mut self.embed_tokens));
        for b in &mut self.blocks {
            b.linears_mut().into_iter().for_each(|l| f(ParamMut::Linear(l)));
        }
    }
}
