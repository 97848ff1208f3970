//! UMT5 text encoder (encoder stack only), the text tower of Wan2.1.
//!
//! Mirrors transformers 5.24 `UMT5EncoderModel` (models/umt5/modeling_umt5.py):
//! pre-norm blocks with T5 RMSNorm, a relative position bias in *every* layer
//! (unlike T5, which shares layer 0's), no 1/√d score scaling, and a gated
//! GELU(tanh) feed-forward. Names are the transformers state-dict names.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use wanrt_nn::backend::{self, Activation, AttentionPrecision};
use wanrt_nn::ops::attention::AttentionBias;
use wanrt_nn::{BackendRef, Embedding, Linear, Tensor, WeightStore};

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
        Ok(())
    }
}

struct Umt5Block {
    norm1: Vec<f32>,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// `[buckets, heads]`.
    rel_bias: Vec<f32>,
    norm2: Vec<f32>,
    wi_0: Linear,
    wi_1: Linear,
    wo: Linear,
}

pub struct Umt5Encoder {
    pub config: Umt5Config,
    /// `[vocab, d_model]`.
    embed: Embedding,
    blocks: Vec<Umt5Block>,
    final_norm: Vec<f32>,
    backend: BackendRef,
}

impl Umt5Encoder {
    pub fn load(ws: &WeightStore, config: Umt5Config) -> Result<Self> {
        config.validate()?;
        let (d, inner, ff, h) = (config.d_model, config.d_kv * config.num_heads, config.d_ff, config.num_heads);
        let embed_prefix = Self::embedding_prefix(ws).ok_or_else(|| wanrt_nn::Error::MissingTensor {
            name: "shared.weight".into(),
            source_desc: ws.origin().into(),
        })?;
        let embed = Embedding::load(ws, embed_prefix, config.vocab_size, d)?;
        let vec = |name: String, n: usize| -> Result<Vec<f32>> { Ok(ws.get_shaped(&name, &[n])?.into_data()) };
        let mut blocks = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let p = format!("encoder.block.{i}.layer");
            let lin = |s: &str, i_: usize, o: usize| Linear::load(ws, &format!("{p}.{s}"), i_, o, false);
            blocks.push(Umt5Block {
                norm1: vec(format!("{p}.0.layer_norm.weight"), d)?,
                q: lin("0.SelfAttention.q", d, inner)?,
                k: lin("0.SelfAttention.k", d, inner)?,
                v: lin("0.SelfAttention.v", d, inner)?,
                o: lin("0.SelfAttention.o", inner, d)?,
                rel_bias: ws
                    .get_shaped(
                        &format!("{p}.0.SelfAttention.relative_attention_bias.weight"),
                        &[config.relative_attention_num_buckets, h],
                    )?
                    .into_data(),
                norm2: vec(format!("{p}.1.layer_norm.weight"), d)?,
                wi_0: lin("1.DenseReluDense.wi_0", d, ff)?,
                wi_1: lin("1.DenseReluDense.wi_1", d, ff)?,
                wo: lin("1.DenseReluDense.wo", ff, d)?,
            });
        }
        let final_norm = vec("encoder.final_layer_norm.weight".into(), d)?;
        Ok(Umt5Encoder { config, embed, blocks, final_norm, backend: backend::cpu() })
    }

    /// Runs every later forward on `backend` (the CPU by default).
    pub fn set_backend(&mut self, backend: BackendRef) {
        self.backend = backend;
    }

    /// The tensor prefix the token embedding is read from. The embedding is tied: files may hold
    /// `shared.weight`, `encoder.embed_tokens.weight` or both (then `shared` is used).
    pub fn embedding_prefix(ws: &WeightStore) -> Option<&'static str> {
        ["shared", "encoder.embed_tokens"].into_iter().find(|p| ws.contains(&format!("{p}.weight")))
    }

    /// Checkpoint prefixes of every linear layer (`encoder.block.{i}.layer.0.SelfAttention.q` …),
    /// the layers `wanrt optimize --text-encoder` quantizes.
    pub fn linear_prefixes(config: &Umt5Config) -> Vec<String> {
        (0..config.num_layers)
            .flat_map(|i| {
                ["0.SelfAttention.q", "0.SelfAttention.k", "0.SelfAttention.v", "0.SelfAttention.o"]
                    .into_iter()
                    .chain(["1.DenseReluDense.wi_0", "1.DenseReluDense.wi_1", "1.DenseReluDense.wo"])
                    .map(move |s| format!("encoder.block.{i}.layer.{s}"))
            })
            .collect()
    }

    /// Bytes held by the parameters: linear layers and the embedding as stored (quantized ones
    /// count codes and scales), the small vectors as f32.
    pub fn weight_bytes(&self) -> usize {
        let vectors: usize = self.blocks.iter().map(|b| b.norm1.len() + b.norm2.len() + b.rel_bias.len()).sum();
        let linears: usize = self
            .blocks
            .iter()
            .flat_map(|b| [&b.q, &b.k, &b.v, &b.o, &b.wi_0, &b.wi_1, &b.wo])
            .map(|l| l.weight.bytes())
            .sum();
        linears + self.embed.bytes() + (vectors + self.final_norm.len()) * 4
    }

    /// Bidirectional relative-position bucket of `key − query` (T5's rule, f32 log as torch).
    fn bucket(&self, relative: i64) -> usize {
        let num_buckets = self.config.relative_attention_num_buckets / 2;
        let mut bucket = if relative > 0 { num_buckets } else { 0 };
        let rel = relative.unsigned_abs() as usize;
        let max_exact = num_buckets / 2;
        if rel < max_exact {
            bucket += rel;
        } else {
            let ratio = (rel as f32 / max_exact as f32).ln()
                / ((self.config.relative_attention_max_distance as f64 / max_exact as f64).ln() as f32);
            let large = max_exact + (ratio * (num_buckets - max_exact) as f32) as usize;
            bucket += large.min(num_buckets - 1);
        }
        bucket
    }

    /// `[H, L, L]` position bias of one layer.
    fn position_bias(&self, table: &[f32], l: usize) -> Vec<f32> {
        let h = self.config.num_heads;
        let buckets: Vec<usize> = (0..l * l).map(|idx| self.bucket((idx % l) as i64 - (idx / l) as i64)).collect();
        let mut out = vec![0.0; h * l * l];
        for hi in 0..h {
            for (idx, &b) in buckets.iter().enumerate() {
                out[hi * l * l + idx] = table[b * h + hi];
            }
        }
        out
    }

    /// `ids, mask: [B, L]` → `last_hidden_state: [B, L, d_model]`.
    pub fn forward(&self, ids: &[u32], mask: &[u32], batch: usize) -> Result<Tensor> {
        let d = self.config.d_model;
        if batch == 0 || !ids.len().is_multiple_of(batch) || mask.len() != ids.len() {
            return Err(Error::Shape(format!(
                "text encoder: {} ids / {} mask for batch {batch}",
                ids.len(),
                mask.len()
            )));
        }
        let l = ids.len() / batch;
        let be = &*self.backend;
        let mut x = be.embedding(&self.embed, ids)?.reshape([batch, l, d])?;
        let key_mask: Vec<f32> = mask.iter().map(|&m| if m > 0 { 0.0 } else { f32::NEG_INFINITY }).collect();
        let (h, dk) = (self.config.num_heads, self.config.d_kv);
        let eps = self.config.layer_norm_epsilon;
        for blk in &self.blocks {
            let n = be.rms_norm(x.clone(), eps, Some(&blk.norm1))?;
            let q = be.linear(&blk.q, &n)?.reshape([batch, l, h, dk])?;
            let k = be.linear(&blk.k, &n)?.reshape([batch, l, h, dk])?;
            let v = be.linear(&blk.v, &n)?.reshape([batch, l, h, dk])?;
            let bias = self.position_bias(&blk.rel_bias, l);
            let bias = AttentionBias { per_head: Some(&bias), per_key: Some(&key_mask) };
            let a = be.attention(&q, &k, &v, 1.0, bias, AttentionPrecision::Full)?;
            be.add_assign(&mut x, &be.linear(&blk.o, &a.reshape([batch, l, h * dk])?)?)?;
            let n = be.rms_norm(x.clone(), eps, Some(&blk.norm2))?;
            let gate = be.linear_activation(&blk.wi_0, &n, Activation::GeluTanh)?;
            let hidden = be.mul(&gate, &be.linear(&blk.wi_1, &n)?)?;
            be.add_assign(&mut x, &be.linear(&blk.wo, &hidden)?)?;
        }
        Ok(be.rms_norm(x, eps, Some(&self.final_norm))?)
    }
}
