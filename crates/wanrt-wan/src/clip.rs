//! CLIP's transformer towers, as transformers 5.24 `modeling_clip.py` computes them: the image
//! encoder of Wan2.1's image-to-video models (`CLIPVisionModel`, whose penultimate hidden states
//! condition the transformer) and the encoder stack wanrt-eval's CLIPScore builds its text tower
//! from.
//!
//! - `CLIPEncoderLayer`: pre-LN self-attention (`q/k/v/out_proj`, scale `head_dim^-0.5`) and
//!   MLP (`fc1`, `quick_gelu` or exact GELU, `fc2`), each added to the residual stream;
//! - `CLIPVisionTransformer`: patch embedding (a bias-free convolution whose kernel equals its
//!   stride), class token, position embeddings, `pre_layrnorm`, the encoder, `post_layernorm`
//!   of the class token.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use wanrt_nn::backend::{Activation, AttentionBias, AttentionPrecision, Backend, BinaryOp};
use wanrt_nn::{BackendRef, LayerNorm, Linear, Module, Param, ParamMut, Tensor, VarBuilder, WeightStore};

fn default_eps() -> f64 {
    1e-5
}
fn default_act() -> String {
    "quick_gelu".into()
}
fn default_image_size() -> usize {
    224
}
fn default_patch_size() -> usize {
    32
}

/// One tower's `config.json` section (`CLIPVisionConfig`, or `text_config` / `vision_config` of
/// a `CLIPConfig`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ClipTowerConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Vision towers only.
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    #[serde(default = "default_patch_size")]
    pub patch_size: usize,
}

impl ClipTowerConfig {
    pub fn activation(&self) -> Result<Activation> {
        match self.hidden_act.as_str() {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::GeluErf),
            other => Err(Error::Config(format!("CLIP hidden_act {other:?}: expected quick_gelu or gelu"))),
        }
    }

    fn validate(&self) -> Result<()> {
        let heads = self.num_attention_heads;
        if heads == 0 || !self.hidden_size.is_multiple_of(heads) || self.num_hidden_layers == 0 {
            return Err(Error::Config(format!(
                "CLIP: hidden_size {} must split into {heads} heads, with at least one layer",
                self.hidden_size
            )));
        }
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return Err(Error::Config(format!(
                "CLIP: image_size {} is not a multiple of patch_size {}",
                self.image_size, self.patch_size
            )));
        }
        Ok(())
    }
}

/// `CLIPEncoderLayer`.
struct ClipEncoderLayer {
    layer_norm1: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl ClipEncoderLayer {
    fn new(vb: &VarBuilder, cfg: &ClipTowerConfig) -> Result<Self> {
        let (h, i, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps as f32);
        let (attn, mlp) = (vb.pp("self_attn"), vb.pp("mlp"));
        Ok(ClipEncoderLayer {
            layer_norm1: LayerNorm::load(&vb.pp("layer_norm1"), h, eps)?,
            q_proj: attn.pp("q_proj").linear(h, h, true)?,
            k_proj: attn.pp("k_proj").linear(h, h, true)?,
            v_proj: attn.pp("v_proj").linear(h, h, true)?,
            out_proj: attn.pp("out_proj").linear(h, h, true)?,
            layer_norm2: LayerNorm::load(&vb.pp("layer_norm2"), h, eps)?,
            fc1: mlp.pp("fc1").linear(h, i, true)?,
            fc2: mlp.pp("fc2").linear(i, h, true)?,
        })
    }

    /// `x: [B, L, hidden]`; `mask`: an additive `[heads, L, L]` score mask (the causal text tower).
    fn forward(
        &self,
        be: &dyn Backend,
        mut x: Tensor,
        mask: Option<&Tensor>,
        heads: usize,
        act: Activation,
    ) -> Result<Tensor> {
        let (b, l, h) = (x.dim(0), x.dim(1), x.dim(2));
        let hd = h / heads;
        let y = self.layer_norm1.forward(be, x.clone())?;
        let q = self.q_proj.forward(be, &y)?.reshape([b, l, heads, hd])?;
        let k = self.k_proj.forward(be, &y)?.reshape([b, l, heads, hd])?;
        let v = self.v_proj.forward(be, &y)?.reshape([b, l, heads, hd])?;
        let bias = AttentionBias { per_head: mask, key_lengths: None };
        let att = be.attention(&q, &k, &v, (hd as f32).powf(-0.5), bias, AttentionPrecision::Full)?;
        be.add_assign(&mut x, &self.out_proj.forward(be, &att.reshape([b, l, h])?)?)?;
        let y = self.layer_norm2.forward(be, x.clone())?;
        let f = self.fc1.forward_activation(be, &y, act)?;
        be.add_assign(&mut x, &self.fc2.forward(be, &f)?)?;
        Ok(x)
    }

    fn linears(&self) -> [&Linear; 6] {
        [&self.q_proj, &self.k_proj, &self.v_proj, &self.out_proj, &self.fc1, &self.fc2]
    }

    fn linears_mut(&mut self) -> [&mut Linear; 6] {
        [&mut self.q_proj, &mut self.k_proj, &mut self.v_proj, &mut self.out_proj, &mut self.fc1, &mut self.fc2]
    }
}

/// `CLIPEncoder`: the layer stack of one tower.
pub struct ClipEncoder {
    layers: Vec<ClipEncoderLayer>,
    heads: usize,
    act: Activation,
}

impl ClipEncoder {
    /// The layers at `{vb}.layers.{i}`.
    pub fn new(vb: &VarBuilder, cfg: &ClipTowerConfig) -> Result<Self> {
        cfg.validate()?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| ClipEncoderLayer::new(&vb.pp("layers").pp(i), cfg))
            .collect::<Result<_>>()?;
        Ok(ClipEncoder { layers, heads: cfg.num_attention_heads, act: cfg.activation()? })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The hidden states after the first `layers` layers (`hidden_states[layers]` of
    /// `output_hidden_states`).
    pub fn forward(&self, be: &dyn Backend, x: Tensor, mask: Option<&Tensor>, layers: usize) -> Result<Tensor> {
        self.layers[..layers.min(self.layers.len())]
            .iter()
            .try_fold(x, |x, layer| layer.forward(be, x, mask, self.heads, self.act))
    }

    pub fn visit(&self, f: &mut dyn FnMut(Param<'_>)) {
        for l in &self.layers {
            l.layer_norm1.tensors().into_iter().chain(l.layer_norm2.tensors()).for_each(|t| f(Param::Tensor(t)));
            l.linears().into_iter().for_each(|x| f(Param::Linear(x)));
        }
    }

    pub fn visit_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_>)) {
        for l in &mut self.layers {
            l.linears_mut().into_iter().for_each(|x| f(ParamMut::Linear(x)));
        }
    }
}

/// `CLIPVisionTransformer` (the module of `CLIPVisionModel`).
pub struct ClipVisionModel {
    pub config: ClipTowerConfig,
    /// The patch convolution as one GEMM over flattened patches: `[hidden, 3·p·p]`.
    patch_embedding: Linear,
    /// `[1, 1, hidden]`.
    class_embedding: Tensor,
    /// `[patches + 1, hidden]`.
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    encoder: ClipEncoder,
    /// Absent in checkpoints saved without it (image encoders only read hidden states).
    post_layernorm: Option<LayerNorm>,
    backend: BackendRef,
}

impl ClipVisionModel {
    /// Loads the tower from `ws` at `prefix` (`vision_model` in `CLIPModel` / older
    /// `CLIPVisionModel` files, the root in transformers 5's `CLIPVisionModel` files).
    pub fn load(ws: &WeightStore, config: ClipTowerConfig, prefix: &str, backend: BackendRef) -> Result<Self> {
        config.validate()?;
        let root = VarBuilder::root(ws, &*backend);
        let vb = if prefix.is_empty() { root } else { root.pp(prefix) };
        let (h, p) = (config.hidden_size, config.patch_size);
        let grid = config.image_size / p;
        let emb = vb.pp("embeddings");
        let post = vb.pp("post_layernorm");
        Ok(ClipVisionModel {
            patch_embedding: emb.pp("patch_embedding").linear_flattened(&[3, p, p], h, false)?,
            class_embedding: emb.tensor("class_embedding", &[h])?.reshape([1, 1, h])?,
            position_embedding: emb.tensor("position_embedding.weight", &[grid * grid + 1, h])?,
            pre_layrnorm: LayerNorm::load(&vb.pp("pre_layrnorm"), h, config.layer_norm_eps as f32)?,
            encoder: ClipEncoder::new(&vb.pp("encoder"), &config)?,
            post_layernorm: if post.contains("weight") {
                Some(LayerNorm::load(&post, h, config.layer_norm_eps as f32)?)
            } else {
                None
            },
            config,
            backend,
        })
    }

    /// The prefix a `CLIPVisionModel` file stores the tower under.
    pub fn prefix_of(ws: &WeightStore) -> &'static str {
        if ws.contains("vision_model.embeddings.class_embedding") {
            "vision_model"
        } else {
            ""
        }
    }

    pub fn backend(&self) -> &BackendRef {
        &self.backend
    }

    /// `pixel_values: [N, 3, S, S]` → the hidden states after `layers` encoder layers,
    /// `[N, patches + 1, hidden]` (`layers = num_hidden_layers − 1`: `hidden_states[-2]`, what Wan's
    /// image-to-video pipeline conditions on).
    pub fn hidden_states(&self, pixels: &Tensor, layers: usize) -> Result<Tensor> {
        let be = &*self.backend;
        let (p, s) = (self.config.patch_size, self.config.image_size);
        let g = s / p;
        let n = pixels.shape().first().copied().unwrap_or(0);
        pixels.expect_shape("CLIP pixel values", &[n, 3, s, s])?;
        // [N, 3, g·p, g·p] → [N, g², 3·p·p]: patches in row-major grid order, each flattened as
        // the kernel is.
        let image = pixels.clone().reshape([n, 3, g, p, g, p])?;
        let patches = be.permute(&image, &[0, 2, 4, 1, 3, 5])?.reshape([n, g * g, 3 * p * p])?;
        let embedded = self.patch_embedding.forward(be, &patches)?;
        let h = self.config.hidden_size;
        let class = if n == 1 { self.class_embedding.clone() } else { be.cat(&vec![&self.class_embedding; n], 0)? };
        let tokens = be.cat(&[&class, &embedded], 1)?;
        let x = be.binary(BinaryOp::Add, &tokens, &self.position_embedding.clone().reshape([1, g * g + 1, h])?)?;
        let x = self.pre_layrnorm.forward(be, x)?;
        self.encoder.forward(be, x, None, layers)
    }

    /// Wan's image conditioning: `hidden_states[-2]` of `pixel_values`.
    pub fn image_embeds(&self, pixels: &Tensor) -> Result<Tensor> {
        self.hidden_states(pixels, self.encoder.num_layers() - 1)
    }

    /// `post_layernorm` of the class token after every layer: `pooler_output`, `[N, 1, hidden]`.
    pub fn pooled(&self, pixels: &Tensor) -> Result<Tensor> {
        let be = &*self.backend;
        let post = self.post_layernorm.as_ref().ok_or_else(|| {
            Error::Config("this CLIP vision checkpoint has no post_layernorm (it only gives hidden states)".into())
        })?;
        let y = self.hidden_states(pixels, self.encoder.num_layers())?;
        Ok(post.forward(be, be.narrow(&y, 1, 0, 1)?)?)
    }
}

impl Module for ClipVisionModel {
    fn visit(&self, f: &mut dyn FnMut(Param<'_>)) {
        f(Param::Linear(&self.patch_embedding));
        f(Param::Tensor(&self.class_embedding));
        f(Param::Tensor(&self.position_embedding));
        self.pre_layrnorm.tensors().into_iter().for_each(|t| f(Param::Tensor(t)));
        self.encoder.visit(f);
        if let Some(n) = &self.post_layernorm {
            n.tensors().into_iter().for_each(|t| f(Param::Tensor(t)));
        }
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(ParamMut<'_>)) {
        f(ParamMut::Linear(&mut self.patch_embedding));
        self.encoder.visit_mut(f);
    }
}
