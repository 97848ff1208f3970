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
use wanrt_nn::backend::BinaryOp;
use wanrt_nn::{BackendRef, Embedding, HostTensor, LayerNorm, Linear, Tensor, VarBuilder, WeightStore};
use wanrt_wan::clip::{ClipEncoder, ClipTowerConfig, ClipVisionModel};

use crate::error::{EvalError, Result};

fn tower_config(v: &Value, path: &Path) -> Result<ClipTowerConfig> {
    let cfg: ClipTowerConfig = serde_json::from_value(v.clone())
        .map_err(|e| EvalError::input(path, format!("config.json: invalid tower config: {e}")))?;
    cfg.activation().map_err(|e| EvalError::input(path, e.to_string()))?;
    Ok(cfg)
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
    text: ClipEncoder,
    text_heads: usize,
    final_layer_norm: LayerNorm,
    text_projection: Linear,
    eos_token_id: i64,
    max_pos: usize,
    vocab: usize,
    // vision
    vision: ClipVisionModel,
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
        let (th, vh) = (tcfg.hidden_size, vcfg.hidden_size);
        let image_size = vcfg.image_size;
        let vb = VarBuilder::root(store, &*backend);
        let tm = vb.pp("text_model");
        let te = tm.pp("embeddings");
        Ok(Clip {
            token_embedding: te.pp("token_embedding").embedding(vocab, th)?,
            position_embedding: te.tensor("position_embedding.weight", &[max_pos, th])?,
            final_layer_norm: LayerNorm::load(&tm.pp("final_layer_norm"), th, tcfg.layer_norm_eps as f32)?,
            text_projection: vb.pp("text_projection").linear(th, proj, false)?,
            text: ClipEncoder::new(&tm.pp("encoder"), &tcfg)?,
            text_heads: tcfg.num_attention_heads,
            eos_token_id,
            max_pos,
            vocab,
            vision: ClipVisionModel::load(store, vcfg, "vision_model", backend.clone())?,
            visual_projection: vb.pp("visual_projection").linear(vh, proj, false)?,
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
        let mask = be.upload(&causal_mask(self.text_heads, l)?)?;
        let y = self.text.forward(be, x, Some(&mask), self.text.num_layers())?;
        let y = self.final_layer_norm.forward(be, y)?;
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
        let s = self.image_size;
        let n = pixels.shape().first().copied().unwrap_or(0);
        pixels.expect_shape("CLIP pixel values", &[n, 3, s, s])?;
        let pixels = be.upload(pixels)?;
        (0..n)
            .map(|b| {
                let cls = self.vision.pooled(&be.narrow(&pixels, 0, b, 1)?)?;
                Ok(be.to_host(&self.visual_projection.forward(be, &cls)?)?.into_data())
            })
            .collect()
    }
}
