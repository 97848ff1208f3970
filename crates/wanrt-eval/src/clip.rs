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
use wanrt_nn::ops::conv2d;
use wanrt_nn::HostTensor;

use crate::error::{EvalError, Result};
use crate::weights::StateDict;

/// One encoder stack's sizes.
#[derive(Clone, Debug)]
struct TowerConfig {
    hidden: usize,
    layers: usize,
    heads: usize,
    inter: usize,
    eps: f32,
    quick_gelu: bool,
}

fn tower_config(v: &Value, path: &Path) -> Result<TowerConfig> {
    let get = |k: &str| -> Result<usize> {
        v.get(k)
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .ok_or_else(|| EvalError::input(path, format!("config.json: missing integer `{k}` in a tower config")))
    };
    let act = v.get("hidden_act").and_then(Value::as_str).unwrap_or("quick_gelu");
    if act != "quick_gelu" && act != "gelu" {
        return Err(EvalError::input(path, format!("unsupported hidden_act `{act}`")));
    }
    Ok(TowerConfig {
        hidden: get("hidden_size")?,
        layers: get("num_hidden_layers")?,
        heads: get("num_attention_heads")?,
        inter: get("intermediate_size")?,
        eps: v.get("layer_norm_eps").and_then(Value::as_f64).unwrap_or(1e-5) as f32,
        quick_gelu: act == "quick_gelu",
    })
}

struct Linear {
    w: HostTensor,
    b: Option<Vec<f32>>,
}

impl Linear {
    fn load(sd: &StateDict, name: &str, out: usize, inp: usize, bias: bool) -> Result<Self> {
        Ok(Linear {
            w: sd.get(&format!("{name}.weight"), Some(&[out, inp]))?,
            b: if bias { Some(sd.vec(&format!("{name}.bias"), out)?) } else { None },
        })
    }
    /// `x: [L, in]` → `[L, out]`.
    fn forward(&self, x: &HostTensor) -> Result<HostTensor> {
        let mut y = wanrt_nn::ops::matmul_nt(x, &self.w)?;
        if let Some(b) = &self.b {
            y.add_row(b)?;
        }
        Ok(y)
    }
}

struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
    eps: f32,
}

impl Norm {
    fn load(sd: &StateDict, name: &str, n: usize, eps: f32) -> Result<Self> {
        Ok(Norm { w: sd.vec(&format!("{name}.weight"), n)?, b: sd.vec(&format!("{name}.bias"), n)?, eps })
    }
    fn forward(&self, x: &HostTensor) -> HostTensor {
        let n = self.w.len();
        let mut out = x.clone();
        for row in out.data_mut().chunks_mut(n) {
            let mean = row.iter().sum::<f32>() / n as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
            let inv = 1.0 / (var + self.eps).sqrt();
            for (i, v) in row.iter_mut().enumerate() {
                *v = (*v - mean) * inv * self.w[i] + self.b[i];
            }
        }
        out
    }
}

struct Layer {
    ln1: Norm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln2: Norm,
    fc1: Linear,
    fc2: Linear,
}

struct Encoder {
    cfg: TowerConfig,
    layers: Vec<Layer>,
}

impl Encoder {
    fn load(sd: &StateDict, prefix: &str, cfg: TowerConfig) -> Result<Self> {
        let (h, i) = (cfg.hidden, cfg.inter);
        let layers = (0..cfg.layers)
            .map(|l| {
                let p = format!("{prefix}.encoder.layers.{l}");
                Ok(Layer {
                    ln1: Norm::load(sd, &format!("{p}.layer_norm1"), h, cfg.eps)?,
                    q: Linear::load(sd, &format!("{p}.self_attn.q_proj"), h, h, true)?,
                    k: Linear::load(sd, &format!("{p}.self_attn.k_proj"), h, h, true)?,
                    v: Linear::load(sd, &format!("{p}.self_attn.v_proj"), h, h, true)?,
                    o: Linear::load(sd, &format!("{p}.self_attn.out_proj"), h, h, true)?,
                    ln2: Norm::load(sd, &format!("{p}.layer_norm2"), h, cfg.eps)?,
                    fc1: Linear::load(sd, &format!("{p}.mlp.fc1"), i, h, true)?,
                    fc2: Linear::load(sd, &format!("{p}.mlp.fc2"), h, i, true)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Encoder { cfg, layers })
    }

    /// `x: [L, hidden]`; `causal` masks future positions.
    #[allow(clippy::needless_range_loop)] // indices address q/k/v rows and the score row
    fn forward(&self, mut x: HostTensor, causal: bool) -> Result<HostTensor> {
        let (l, h, nh) = (x.dim(0), self.cfg.hidden, self.cfg.heads);
        let hd = h / nh;
        let scale = (hd as f32).powf(-0.5);
        for layer in &self.layers {
            let y = layer.ln1.forward(&x);
            let (q, k, v) = (layer.q.forward(&y)?, layer.k.forward(&y)?, layer.v.forward(&y)?);
            let mut att = vec![0.0f32; l * h];
            let mut w = vec![0.0f32; l];
            for hh in 0..nh {
                for i in 0..l {
                    let qi = &q.data()[i * h + hh * hd..][..hd];
                    let lim = if causal { i + 1 } else { l };
                    let mut m = f32::NEG_INFINITY;
                    for j in 0..lim {
                        let kj = &k.data()[j * h + hh * hd..][..hd];
                        w[j] = qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale;
                        m = m.max(w[j]);
                    }
                    let mut s = 0.0;
                    for wj in w.iter_mut().take(lim) {
                        *wj = (*wj - m).exp();
                        s += *wj;
                    }
                    let out = &mut att[i * h + hh * hd..][..hd];
                    for j in 0..lim {
                        let vj = &v.data()[j * h + hh * hd..][..hd];
                        let p = w[j] / s;
                        out.iter_mut().zip(vj).for_each(|(o, &vv)| *o += p * vv);
                    }
                }
            }
            let a = layer.o.forward(&HostTensor::new([l, h], att)?)?;
            x = x.add(&a)?;
            let y = layer.ln2.forward(&x);
            let quick = self.cfg.quick_gelu;
            let f = layer.fc1.forward(&y)?.map(|v| {
                if quick {
                    v / (1.0 + (-1.702 * v).exp())
                } else {
                    0.5 * v * (1.0 + libm_erf(v / std::f32::consts::SQRT_2))
                }
            });
            x = x.add(&layer.fc2.forward(&f)?)?;
        }
        Ok(x)
    }
}

/// erf for the exact GELU (`hidden_act="gelu"`), Abramowitz–Stegun 7.1.26 refined in f64.
fn libm_erf(x: f32) -> f32 {
    let x = x as f64;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let y = 1.0
        - t * (-x * x - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    (if x >= 0.0 { y } else { -y }) as f32
}

/// A CLIP model: both towers and projections.
pub struct Clip {
    // text
    tok_emb: HostTensor,
    pos_emb: HostTensor,
    text: Encoder,
    final_ln: Norm,
    text_proj: Linear,
    eos_token_id: i64,
    max_pos: usize,
    // vision
    patch: HostTensor,
    class_emb: Vec<f32>,
    vpos_emb: HostTensor,
    pre_ln: Norm,
    vision: Encoder,
    post_ln: Norm,
    visual_proj: Linear,
    pub image_size: usize,
    patch_size: usize,
}

impl Clip {
    /// Loads `config.json` + `model.safetensors` from a Hugging Face CLIP folder.
    pub fn load(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| EvalError::input(&cfg_path, e.to_string()))?;
        let cfg: Value =
            serde_json::from_str(&text).map_err(|e| EvalError::input(&cfg_path, format!("invalid JSON: {e}")))?;
        let tc = cfg.get("text_config").ok_or_else(|| EvalError::input(&cfg_path, "no `text_config`"))?;
        let vc = cfg.get("vision_config").ok_or_else(|| EvalError::input(&cfg_path, "no `vision_config`"))?;
        let tcfg = tower_config(tc, &cfg_path)?;
        let vcfg = tower_config(vc, &cfg_path)?;
        let proj = cfg.get("projection_dim").and_then(Value::as_u64).unwrap_or(512) as usize;
        let vocab = tc.get("vocab_size").and_then(Value::as_u64).unwrap_or(49408) as usize;
        let max_pos = tc.get("max_position_embeddings").and_then(Value::as_u64).unwrap_or(77) as usize;
        let eos_token_id = tc.get("eos_token_id").and_then(Value::as_i64).unwrap_or(2);
        let image_size = vc.get("image_size").and_then(Value::as_u64).unwrap_or(224) as usize;
        let patch_size = vc.get("patch_size").and_then(Value::as_u64).unwrap_or(32) as usize;
        let sd = StateDict::open(&dir.join("model.safetensors"))?;
        let (th, vh) = (tcfg.hidden, vcfg.hidden);
        let g = image_size / patch_size;
        Ok(Clip {
            tok_emb: sd.get("text_model.embeddings.token_embedding.weight", Some(&[vocab, th]))?,
            pos_emb: sd.get("text_model.embeddings.position_embedding.weight", Some(&[max_pos, th]))?,
            final_ln: Norm::load(&sd, "text_model.final_layer_norm", th, tcfg.eps)?,
            text_proj: Linear::load(&sd, "text_projection", proj, th, false)?,
            text: Encoder::load(&sd, "text_model", tcfg)?,
            eos_token_id,
            max_pos,
            patch: sd.get("vision_model.embeddings.patch_embedding.weight", Some(&[vh, 3, patch_size, patch_size]))?,
            class_emb: sd.vec("vision_model.embeddings.class_embedding", vh)?,
            vpos_emb: sd.get("vision_model.embeddings.position_embedding.weight", Some(&[g * g + 1, vh]))?,
            pre_ln: Norm::load(&sd, "vision_model.pre_layrnorm", vh, vcfg.eps)?,
            post_ln: Norm::load(&sd, "vision_model.post_layernorm", vh, vcfg.eps)?,
            visual_proj: Linear::load(&sd, "visual_projection", proj, vh, false)?,
            vision: Encoder::load(&sd, "vision_model", vcfg)?,
            image_size,
            patch_size,
        })
    }

    /// `get_text_features` for one tokenized caption (already truncated to 77 ids).
    pub fn text_features(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let l = ids.len();
        if l == 0 || l > self.max_pos {
            return Err(EvalError::mismatch("caption token count", format!("1..={}", self.max_pos), l));
        }
        let h = self.tok_emb.dim(1);
        let vocab = self.tok_emb.dim(0);
        let mut x = vec![0.0f32; l * h];
        for (i, &id) in ids.iter().enumerate() {
            let id = id as usize;
            if id >= vocab {
                return Err(EvalError::mismatch("token id", format!("< {vocab}"), id));
            }
            for j in 0..h {
                x[i * h + j] = self.tok_emb.data()[id * h + j] + self.pos_emb.data()[i * h + j];
            }
        }
        let y = self.final_ln.forward(&self.text.forward(HostTensor::new([l, h], x)?, true)?);
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
        let pooled = HostTensor::new([1, h], y.data()[pos * h..(pos + 1) * h].to_vec())?;
        Ok(self.text_proj.forward(&pooled)?.into_data())
    }

    /// `get_image_features` for `pixel_values: [1, 3, S, S]` (normalized).
    pub fn image_features(&self, pixels: &HostTensor) -> Result<Vec<f32>> {
        Ok(self.image_features_batch(pixels)?.pop().unwrap_or_default())
    }

    /// `get_image_features` for a batch `pixel_values: [N, 3, S, S]`, one vector per
    /// image. The patch convolution runs on the batch; the encoder image by image, so an
    /// image's embedding does not depend on the batch it is in.
    pub fn image_features_batch(&self, pixels: &HostTensor) -> Result<Vec<Vec<f32>>> {
        let p = self.patch_size;
        let e = conv2d(pixels, &self.patch, None, (p, p), ((0, 0), (0, 0)))?; // [N, h, g, g]
        let (nb, h, g2) = (e.dim(0), e.dim(1), e.dim(2) * e.dim(3));
        let n = g2 + 1;
        (0..nb)
            .map(|b| {
                let eb = &e.data()[b * h * g2..(b + 1) * h * g2];
                let mut x = vec![0.0f32; n * h];
                for j in 0..h {
                    x[j] = self.class_emb[j] + self.vpos_emb.data()[j];
                    for t in 0..g2 {
                        x[(t + 1) * h + j] = eb[j * g2 + t] + self.vpos_emb.data()[(t + 1) * h + j];
                    }
                }
                let x = self.pre_ln.forward(&HostTensor::new([n, h], x)?);
                let y = self.vision.forward(x, false)?;
                let cls = self.post_ln.forward(&HostTensor::new([1, h], y.data()[..h].to_vec())?);
                Ok(self.visual_proj.forward(&cls)?.into_data())
            })
            .collect()
    }
}
