//! CLIP for CLIPScore, as transformers 5.24 `CLIPModel` (`models/clip/modeling_clip.py`)
//! computes `get_image_features` / `get_text_features`:
//!
//! - vision: patch conv (no bias) + class token + position embeddings, `pre_layrnorm`,
//!   pre-LN encoder layers (attention, `quick_gelu` MLP), `post_layernorm` of the class
//!   token, `visual_projection`;
//! - text: token + position embeddings, causal pre-LN encoder, `final_layer_norm`, the
//!   hidden state at the end token — `argmax(input_ids)` when the config's
//!   `eos_token_id == 2` (OpenAI's configs), else the first `eos_token_id` (position 0 if
//!   none) — and `text_projection`.
//!
//! A model folder holds `config.json`, `model.safetensors` and the CLIP tokenizer's
//! `tokenizer.json` (read with the `tokenizers` crate, the library transformers 5 uses);
//! `preprocessor_config.json` gives mean/std/crop (OpenAI defaults otherwise).

use std::path::Path;

use serde_json::Value;
use wanrt_nn::backend::{Activation, AttentionBias, AttentionPrecision, Backend, BinaryOp};
use wanrt_nn::{BackendRef, Embedding, HostTensor, Linear, Tensor, VarBuilder, WeightStore};

use crate::error::{EvalError, Result};

/// One encoder stack's sizes.
#[derive(Clone, Debug)]
struct TowerConfig {
    hidden: usize,
    layers: usize,
    heads: usize,
    inter: usize,
    eps: f32,
    act: Activation,
}

fn tower_config(v: &Value, path: &Path) -> Result<TowerConfig> {
    let get = |k: &str| -> Result<usize> {
        v.get(k)
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .ok_or_else(|| EvalError::input(path, format!("config.json: missing integer `{k}` in a tower config")))
    };
    let act = match v.get("hidden_act").and_then(Value::as_str).unwrap_or("quick_gelu") {
        "quick_gelu" => Activation::QuickGelu,
        "gelu" => Activation::GeluErf,
        act => return Err(EvalError::input(path, format!("unsupported hidden_act `{act}`"))),
    };
    Ok(TowerConfig {
        hidden: get("hidden_size")?,
        layers: get("num_hidden_layers")?,
        heads: get("num_attention_heads")?,
        inter: get("intermediate_size")?,
        eps: v.get("layer_norm_eps").and_then(Value::as_f64).unwrap_or(1e-5) as f32,
        act,
    })
}

/// `nn.LayerNorm` with its affine parameters.
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn load(vb: &VarBuilder, n: usize, eps: f32) -> Result<Self> {
        Ok(LayerNorm { weight: vb.tensor("weight", &[n])?, bias: vb.tensor("bias", &[n])?, eps })
    }
    fn forward(&self, be: &dyn Backend, x: Tensor) -> Result<Tensor> {
        Ok(be.layer_norm(x, self.eps, Some(&self.weight), Some(&self.bias))?)
    }
}

/// `CLIPEncoderLayer`: pre-LN self-attention and MLP, each added to the residual stream.
struct EncoderLayer {
    layer_norm1: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl EncoderLayer {
    fn load(vb: &VarBuilder, cfg: &TowerConfig) -> Result<Self> {
        let (h, i) = (cfg.hidden, cfg.inter);
        let (attn, mlp) = (vb.pp("self_attn"), vb.pp("mlp"));
        Ok(EncoderLayer {
            layer_norm1: LayerNorm::load(&vb.pp("layer_norm1"), h, cfg.eps)?,
            q_proj: attn.pp("q_proj").linear(h, h, true)?,
            k_proj: attn.pp("k_proj").linear(h, h, true)?,
            v_proj: attn.pp("v_proj").linear(h, h, true)?,
            out_proj: attn.pp("out_proj").linear(h, h, true)?,
            layer_norm2: LayerNorm::load(&vb.pp("layer_norm2"), h, cfg.eps)?,
            fc1: mlp.pp("fc1").linear(h, i, true)?,
            fc2: mlp.pp("fc2").linear(i, h, true)?,
        })
    }

    /// `x: [B, L, hidden]`; `mask`: the additive `[heads, L, L]` score mask (causal text).
    fn forward(&self, be: &dyn Backend, mut x: Tensor, mask: Option<&Tensor>, cfg: &TowerConfig) -> Result<Tensor> {
        let (b, l, h, nh) = (x.dim(0), x.dim(1), cfg.hidden, cfg.heads);
        let hd = h / nh;
        let y = self.layer_norm1.forward(be, x.clone())?;
        let [q, k, v] = [&self.q_proj, &self.k_proj, &self.v_proj].map(|p| p.forward(be, &y));
        let (q, k, v) = (q?.reshape([b, l, nh, hd])?, k?.reshape([b, l, nh, hd])?, v?.reshape([b, l, nh, hd])?);
        let bias = AttentionBias { per_head: mask, key_lengths: None };
        let att = be.attention(&q, &k, &v, (hd as f32).powf(-0.5), bias, AttentionPrecision::Full)?;
        be.add_assign(&mut x, &self.out_proj.forward(be, &att.reshape([b, l, h])?)?)?;
        let y = self.layer_norm2.forward(be, x.clone())?;
        let f = self.fc1.forward_activation(be, &y, cfg.act)?;
        be.add_assign(&mut x, &self.fc2.forward(be, &f)?)?;
        Ok(x)
    }
}

struct Encoder {
    cfg: TowerConfig,
    layers: Vec<EncoderLayer>,
}

impl Encoder {
    /// `{vb}.encoder.layers.{i}`.
    fn load(vb: &VarBuilder, cfg: TowerConfig) -> Result<Self> {
        let vb = vb.pp("encoder").pp("layers");
        let layers = (0..cfg.layers).map(|l| EncoderLayer::load(&vb.pp(l), &cfg)).collect::<Result<_>>()?;
        Ok(Encoder { cfg, layers })
    }

    fn forward(&self, be: &dyn Backend, x: Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        self.layers.iter().try_fold(x, |x, layer| layer.forward(be, x, mask, &self.cfg))
    }
}

/// The text model's causal mask: `−∞` above the diagonal of every head's `[L, L]` scores.
fn causal_mask(heads: usize, l: usize) -> Result<HostTensor> {
    let row = |i: usize| (0..l).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 });
    let one: Vec<f32> = (0..l).flat_map(row).collect();
    Ok(HostTensor::new([heads, l, l], one.repeat(heads))?)
}

/// A CLIP model: both towers and projections.
pub struct Clip {
    backend: BackendRef,
    // text
    token_embedding: Embedding,
    /// `[max_pos, hidden]`.
    position_embedding: Tensor,
    text: Encoder,
    final_layer_norm: LayerNorm,
    text_projection: Linear,
    eos_token_id: i64,
    max_pos: usize,
    vocab: usize,
    // vision
    /// `patch_embedding`, a bias-free convolution whose kernel equals its stride: one GEMM over
    /// the flattened patches (the implicit-GEMM convolution would run one small GEMM per kernel
    /// tap, over every column of the input rows).
    patch_embedding: Linear,
    patch_size: usize,
    /// `[1, 1, hidden]`.
    class_embedding: Tensor,
    /// `[patches + 1, hidden]`.
    vision_position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    vision: Encoder,
    post_layernorm: LayerNorm,
    visual_projection: Linear,
    pub image_size: usize,
}

impl Clip {
    /// Loads `config.json` + `model.safetensors` from a Hugging Face CLIP folder onto the CPU
    /// backend.
    pub fn load(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| EvalError::input(&cfg_path, e.to_string()))?;
        let cfg: Value =
            serde_json::from_str(&text).map_err(|e| EvalError::input(&cfg_path, format!("invalid JSON: {e}")))?;
        crate::weights::load(&dir.join("model.safetensors"), |store| {
            Self::from_store(&cfg, &cfg_path, store, wanrt_nn::backend::cpu())
        })
    }

    fn from_store(cfg: &Value, cfg_path: &Path, store: &WeightStore, backend: BackendRef) -> Result<Self> {
        let tc = cfg.get("text_config").ok_or_else(|| EvalError::input(cfg_path, "no `text_config`"))?;
        let vc = cfg.get("vision_config").ok_or_else(|| EvalError::input(cfg_path, "no `vision_config`"))?;
        let tcfg = tower_config(tc, cfg_path)?;
        let vcfg = tower_config(vc, cfg_path)?;
        let proj = cfg.get("projection_dim").and_then(Value::as_u64).unwrap_or(512) as usize;
        let vocab = tc.get("vocab_size").and_then(Value::as_u64).unwrap_or(49408) as usize;
        let max_pos = tc.get("max_position_embeddings").and_then(Value::as_u64).unwrap_or(77) as usize;
        let eos_token_id = tc.get("eos_token_id").and_then(Value::as_i64).unwrap_or(2);
        let image_size = vc.get("image_size").and_then(Value::as_u64).unwrap_or(224) as usize;
        let p = vc.get("patch_size").and_then(Value::as_u64).unwrap_or(32) as usize;
        let (th, vh) = (tcfg.hidden, vcfg.hidden);
        let g = image_size / p;
        let vb = VarBuilder::root(store, &*backend);
        let (tm, vm) = (vb.pp("text_model"), vb.pp("vision_model"));
        let (te, ve) = (tm.pp("embeddings"), vm.pp("embeddings"));
        Ok(Clip {
            token_embedding: te.pp("token_embedding").embedding(vocab, th)?,
            position_embedding: te.tensor("position_embedding.weight", &[max_pos, th])?,
            final_layer_norm: LayerNorm::load(&tm.pp("final_layer_norm"), th, tcfg.eps)?,
            text_projection: vb.pp("text_projection").linear(th, proj, false)?,
            text: Encoder::load(&tm, tcfg)?,
            eos_token_id,
            max_pos,
            vocab,
            patch_embedding: ve.pp("patch_embedding").linear_flattened(&[3, p, p], vh, false)?,
            patch_size: p,
            class_embedding: ve.tensor("class_embedding", &[vh])?.reshape([1, 1, vh])?,
            vision_position_embedding: ve.tensor("position_embedding.weight", &[g * g + 1, vh])?,
            pre_layrnorm: LayerNorm::load(&vm.pp("pre_layrnorm"), vh, vcfg.eps)?,
            post_layernorm: LayerNorm::load(&vm.pp("post_layernorm"), vh, vcfg.eps)?,
            visual_projection: vb.pp("visual_projection").linear(vh, proj, false)?,
            vision: Encoder::load(&vm, vcfg)?,
            image_size,
            backend,
        })
    }

    /// `get_text_features` for one tokenized caption (already truncated to 77 ids).
    pub fn text_features(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let l = ids.len();
        if l == 0 || l > self.max_pos {
            return Err(EvalError::mismatch("caption token count", format!("1..={}", self.max_pos), l));
        }
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab) {
            return Err(EvalError::mismatch("token id", format!("< {}", self.vocab), id));
        }
        let be = &*self.backend;
        let tokens = self.token_embedding.forward(be, &be.upload_ids(&[1, l], ids)?)?;
        let x = be.binary(BinaryOp::Add, &tokens, &be.narrow(&self.position_embedding, 0, 0, l)?)?;
        let mask = be.upload(&causal_mask(self.text.cfg.heads, l)?)?;
        let y = self.final_layer_norm.forward(be, self.text.forward(be, x, Some(&mask))?)?;
        let pos = if self.eos_token_id == 2 {
            // torch.argmax: first position of the largest id
            let mut best = 0;
            for (i, &id) in ids.iter().enumerate() {
                if id > ids[best] {
                    best = i;
                }
            }
            best
        } else {
            ids.iter().position(|&id| id as i64 == self.eos_token_id).unwrap_or(0)
        };
        let pooled = be.narrow(&y, 1, pos, 1)?;
        Ok(be.to_host(&self.text_projection.forward(be, &pooled)?)?.into_data())
    }

    /// `get_image_features` for `pixel_values: [1, 3, S, S]` (normalized).
    pub fn image_features(&self, pixels: &HostTensor) -> Result<Vec<f32>> {
        Ok(self.image_features_batch(pixels)?.pop().unwrap_or_default())
    }

    /// `get_image_features` for a batch `pixel_values: [N, 3, S, S]`, one vector per
    /// image. The network runs image by image, so an image's embedding does not depend on the
    /// batch it is in.
    pub fn image_features_batch(&self, pixels: &HostTensor) -> Result<Vec<Vec<f32>>> {
        let be = &*self.backend;
        let (p, s) = (self.patch_size, self.image_size);
        let g = s / p;
        let n = pixels.shape().first().copied().unwrap_or(0);
        pixels.expect_shape("CLIP pixel values", &[n, 3, s, s])?;
        let pixels = be.upload(pixels)?;
        (0..n)
            .map(|b| {
                // [1, 3, g·p, g·p] → [1, g², 3·p·p]: patches in row-major grid order, each
                // flattened as the kernel is
                let image = be.narrow(&pixels, 0, b, 1)?.reshape([1, 3, g, p, g, p])?;
                let patches = be.permute(&image, &[0, 2, 4, 1, 3, 5])?.reshape([1, g * g, 3 * p * p])?;
                let embedded = self.patch_embedding.forward(be, &patches)?;
                let tokens = be.cat(&[&self.class_embedding, &embedded], 1)?;
                let x = be.binary(BinaryOp::Add, &tokens, &self.vision_position_embedding)?;
                let y = self.vision.forward(be, self.pre_layrnorm.forward(be, x)?, None)?;
                let cls = self.post_layernorm.forward(be, be.narrow(&y, 1, 0, 1)?)?;
                Ok(be.to_host(&self.visual_projection.forward(be, &cls)?)?.into_data())
            })
            .collect()
    }
}
