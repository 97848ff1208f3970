//! The original Wan-Video release layout: tensors renamed to diffusers names by
//! [`crate::names`], configs inferred from the tensors and `config.json` (shared by loading and
//! `crate::convert`). `config.json`'s `model_type` says which model: text-to-video, Wan2.1's
//! image-to-video and first-last-frame (with the open-clip CLIP file) or Wan2.2 TI2V-5B (with
//! `Wan2.2_VAE.pth`); Wan2.2 A14B keeps its two experts in `high_noise_model/` and
//! `low_noise_model/`.

use super::{read_json, LoadOptions, ModelDefaults, WanModel};
use crate::clip::{ClipTowerConfig, ClipVisionModel};
use crate::image::ClipImageProcessor;
use crate::image_conditioning::ImageEncoder;
use crate::model::{gguf, Layout};
use crate::names;
use crate::names::ClipTensor;
use crate::scheduler::SchedulerConfig;
use crate::text::PromptTokenizer;
use crate::transformer::{TransformerConfig, WanTransformer};
use crate::umt5::{Umt5Config, Umt5Encoder};
use crate::vae::{VaeConfig, WanVae, WAN21_LATENTS_MEAN, WAN21_LATENTS_STD, WAN22_LATENTS_MEAN, WAN22_LATENTS_STD};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use wanrt_nn::WeightStore;

pub(crate) fn load(
    dir: &Path,
    defaults: ModelDefaults,
    opts: &LoadOptions,
    stage: &mut dyn FnMut(&str),
) -> Result<WanModel> {
    let experts = Experts::of(dir);
    super::check_loras_2(opts, matches!(experts, Experts::Two { .. }), dir)?;
    stage("text encoder");
    let (t5, te_cfg) = text_encoder(dir)?;
    let text_encoder = Umt5Encoder::load(&t5, te_cfg, opts.backend.clone())?;
    drop(t5);
    let tokenizer = PromptTokenizer::from_dir(&tokenizer_dir(dir))?;
    stage("transformer");
    let (mut dit, tr_cfg, release) = transformer(experts.first(), opts.transformer_file.as_deref())?;
    let loras = crate::lora::apply(&mut dit, &opts.loras, opts.lora_mode, opts.lora_unmatched)?;
    let transformer = WanTransformer::load(&dit, tr_cfg, opts.backend.clone())?;
    drop(dit);
    let mut loras_2 = vec![];
    let (transformer_2, boundary_ratio) = match &experts {
        Experts::One(_) => (None, None),
        Experts::Two { low_noise, .. } => {
            stage("transformer_2");
            let (mut ws, cfg, _) = self::transformer(low_noise, None)?;
            loras_2 = crate::lora::apply(&mut ws, &opts.loras_2, opts.lora_mode, opts.lora_unmatched)?;
            let boundary = boundary_ratio(release.model_type, &defaults)?;
            (Some(WanTransformer::load(&ws, cfg, opts.backend.clone())?), Some(boundary))
        }
    };
    // diffusers' image-to-video examples keep the image encoder in f32 beside the VAE.
    let image_encoder = if transformer.config.is_image_conditioned() {
        stage("image encoder");
        let (ws, config) = image_encoder(dir, &defaults)?;
        let processor = ClipImageProcessor::openai(config.image_size);
        let clip = ClipVisionModel::load(&ws, config, "", opts.vae_backend.clone())?;
        Some(ImageEncoder { clip, processor })
    } else {
        None
    };
    stage("vae");
    let (vae_ws, vae_cfg) = vae(dir, release.model_type, &defaults)?;
    // Image-to-video and TI2V models encode their images with the VAE.
    let encodes_images = release.model_type.takes_images();
    let vae = WanVae::load(&vae_ws, vae_cfg, opts.vae_backend.clone(), opts.vae_encoder || encodes_images)?;
    Ok(WanModel {
        dir: dir.to_path_buf(),
        layout: Layout::Original,
        tokenizer,
        text_encoder,
        transformer,
        transformer_2,
        boundary_ratio,
        expand_timesteps: release.model_type == ModelType::Ti2v,
        vae,
        image_encoder,
        scheduler: SchedulerConfig::original_release_default(),
        defaults,
        text_len: release.text_len,
        artifact: None,
        loras,
        loras_2,
    })
}

/// Where a release keeps its DiT: in the folder, or (Wan2.2 A14B) as two experts in
/// `high_noise_model/` (run while `t ≥ boundary`; diffusers' `transformer`) and
/// `low_noise_model/` (after; `transformer_2`), each with its own `config.json`.
pub(crate) enum Experts {
    One(PathBuf),
    Two { high_noise: PathBuf, low_noise: PathBuf },
}

impl Experts {
    pub(crate) fn of(dir: &Path) -> Self {
        let (high_noise, low_noise) = (dir.join("high_noise_model"), dir.join("low_noise_model"));
        if high_noise.join("config.json").is_file() && low_noise.join("config.json").is_file() {
            Experts::Two { high_noise, low_noise }
        } else {
            Experts::One(dir.to_path_buf())
        }
    }

    /// The DiT that runs first (the only one, or the high-noise expert).
    pub(crate) fn first(&self) -> &Path {
        match self {
            Experts::One(dir) => dir,
            Experts::Two { high_noise, .. } => high_noise,
        }
    }
}

/// Where a two-expert release switches experts: `wanrt.json`'s `boundary_ratio`, else Wan's.
pub(crate) fn boundary_ratio(model_type: ModelType, defaults: &ModelDefaults) -> Result<f64> {
    defaults.boundary_ratio.map_or_else(|| model_type.a14b_boundary(), Ok)
}

/// The release's `config.json` `model_type`: which Wan model the folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModelType {
    /// Wan2.1 / Wan2.2 text-to-video.
    T2v,
    /// Image-to-video: image latent + mask channels, with CLIP image tokens (Wan2.1) or without
    /// (Wan2.2 A14B).
    I2v,
    /// Wan2.1 first-last-frame (I2V with the image position embedding).
    Flf2v,
    /// Wan2.2 TI2V-5B (Wan2.2 VAE, per-token timesteps).
    Ti2v,
}

impl ModelType {
    fn parse(raw: &serde_json::Value) -> Result<Self> {
        Ok(match raw.get("model_type").and_then(|v| v.as_str()) {
            None | Some("t2v") => ModelType::T2v,
            Some("i2v") => ModelType::I2v,
            Some("flf2v") => ModelType::Flf2v,
            Some("ti2v") => ModelType::Ti2v,
            Some(t) => {
                return Err(Error::Config(format!(
                    "original model_type {t:?} is not supported; expected \"t2v\", \"i2v\", \"flf2v\" or \"ti2v\""
                )))
            }
        })
    }

    fn takes_images(self) -> bool {
        self != ModelType::T2v
    }

    /// Where a two-expert release switches to its low-noise expert: `boundary` of Wan2.2's
    /// `wan/configs/wan_{t2v,i2v}_A14B.py` (the release files do not state it).
    fn a14b_boundary(self) -> Result<f64> {
        match self {
            ModelType::T2v => Ok(0.875),
            ModelType::I2v => Ok(0.9),
            other => Err(Error::Config(format!(
                "two experts (high_noise_model/, low_noise_model/) with model_type {other:?}: Wan2.2 A14B is \
                 \"t2v\" or \"i2v\" (set \"boundary_ratio\" in wanrt.json for another model)"
            ))),
        }
    }

    /// The VAE file the release ships for this model.
    pub(crate) fn vae_file(self) -> &'static str {
        if self == ModelType::Ti2v {
            "Wan2.2_VAE.pth"
        } else {
            "Wan2.1_VAE.pth"
        }
    }
}

/// The images the release's model must be given, from its `config.json` `model_type`.
pub(crate) fn required_images(dir: &Path) -> Result<usize> {
    let raw: serde_json::Value = read_json(&Experts::of(dir).first().join("config.json"))?;
    Ok(match ModelType::parse(&raw)? {
        ModelType::I2v => 1,
        ModelType::Flf2v => 2,
        ModelType::T2v | ModelType::Ti2v => 0,
    })
}

/// What the release's `config.json` says beyond the DiT's sizes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Release {
    pub model_type: ModelType,
    /// The context length (`text_len`).
    pub text_len: Option<usize>,
}

/// The open-clip XLM-RoBERTa ViT-H/14 file of the Wan2.1 I2V / FLF2V releases.
pub(crate) const CLIP_FILE: &str = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth";

/// The width of a head of Wan's ViT-H/14 (1280 wide, 16 heads: `clip_xlm_roberta_vit_h_14`).
const RELEASE_CLIP_HEAD_DIM: usize = 80;

/// The visual tower of the release's CLIP file under transformers `CLIPVisionModel` names (the
/// fused QKV split into its three projections as views, the text tower left out) and its config,
/// inferred from the tensors: the file states no sizes.
pub(crate) fn image_encoder(dir: &Path, defaults: &ModelDefaults) -> Result<(WeightStore, ClipTowerConfig)> {
    let path = dir.join(CLIP_FILE);
    if !path.is_file() {
        return Err(Error::file(&path, "missing: an image-to-video release needs its CLIP image encoder file"));
    }
    let mut src = WeightStore::new(path.display().to_string());
    src.add_pth(&path)?;
    let mut ws = WeightStore::new(path.display().to_string());
    let unexpected = |n: &str| Error::file(&path, format!("unexpected CLIP tensor `{n}` for the original Wan layout"));
    let names: Vec<String> = src.names().map(str::to_string).collect();
    for name in &names {
        let raw = src.raw(name)?;
        match names::clip(name).ok_or_else(|| unexpected(name))? {
            ClipTensor::Unused => {}
            ClipTensor::Renamed(to) => {
                // open-clip keeps the class token `[1, 1, d]` and the positions `[1, n, d]`.
                let squeezed: Vec<usize> = match to.as_str() {
                    "embeddings.class_embedding" | "embeddings.position_embedding.weight" => {
                        raw.shape.iter().copied().skip_while(|&d| d == 1).collect()
                    }
                    _ => raw.shape.clone(),
                };
                ws.insert(to, raw.with_shape(squeezed)?);
            }
            ClipTensor::FusedQkv(layer, leaf) => {
                let rows = raw.shape.first().copied().unwrap_or(0);
                if rows == 0 || rows % 3 != 0 {
                    return Err(Error::file(&path, format!("`{name}` has {rows} rows: not a fused q, k, v")));
                }
                for (k, part) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                    let view = raw.narrow_rows(k * rows / 3, rows / 3)?;
                    ws.insert(format!("encoder.layers.{layer}.self_attn.{part}.{leaf}"), view);
                }
            }
        }
    }
    let config = infer_clip_config(&ws, defaults)?;
    Ok((ws, config))
}

fn infer_clip_config(ws: &WeightStore, defaults: &ModelDefaults) -> Result<ClipTowerConfig> {
    let patch = ws.shape_of("embeddings.patch_embedding.weight")?;
    let &[hidden, 3, p, pw] = patch else {
        return Err(Error::Config(format!("CLIP: patch embedding of shape {patch:?}, expected [d, 3, p, p]")));
    };
    let positions = ws.shape_of("embeddings.position_embedding.weight")?;
    let tokens = positions.first().copied().unwrap_or(0);
    let grid = (1..=tokens).take_while(|g| g * g < tokens).last().unwrap_or(0);
    if p != pw || grid * grid + 1 != tokens || positions.get(1) != Some(&hidden) {
        return Err(Error::Config(format!(
            "CLIP: {positions:?} position embeddings for {p}×{pw} patches of width {hidden}: expected a square grid              of patches plus the class token"
        )));
    }
    let layers = (0..).take_while(|i| ws.contains(&format!("encoder.layers.{i}.layer_norm1.weight"))).count();
    let intermediate = ws.shape_of("encoder.layers.0.mlp.fc1.weight")?[0];
    let heads = match defaults.image_encoder_heads {
        Some(h) => h,
        None if hidden % RELEASE_CLIP_HEAD_DIM == 0 => hidden / RELEASE_CLIP_HEAD_DIM,
        None => {
            return Err(Error::Config(format!(
                "CLIP of width {hidden}: its head count is not stored in the file and is not Wan's ViT-H/14 \
                 (heads of width {RELEASE_CLIP_HEAD_DIM}); set \"image_encoder_heads\" in wanrt.json"
            )))
        }
    };
    Ok(ClipTowerConfig {
        hidden_size: hidden,
        intermediate_size: intermediate,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        layer_norm_eps: 1e-5,
        // Wan's open-clip tower runs nn.GELU() (`activation='gelu'`), not QuickGELU.
        hidden_act: "gelu".into(),
        image_size: grid * p,
        patch_size: p,
    })
}

pub(crate) fn text_encoder(dir: &Path) -> Result<(WeightStore, Umt5Config)> {
    let t5_path = dir.join("models_t5_umt5-xxl-enc-bf16.pth");
    let mut t5 = WeightStore::new(t5_path.display().to_string());
    t5.add_pth(&require_file(&t5_path)?)?;
    let t5 = rename_all(t5, names::t5, "T5")?;
    let cfg = infer_t5_config(&t5)?;
    Ok((t5, cfg))
}

pub(crate) fn tokenizer_dir(dir: &Path) -> PathBuf {
    dir.join("google/umt5-xxl")
}

/// The DiT, its config and what the release's `config.json` says of the model: weights from `file`
/// (GGUF) when given, else the folder's safetensors, else the one `*.gguf` file in the folder.
pub(crate) fn transformer(dir: &Path, file: Option<&Path>) -> Result<(WeightStore, TransformerConfig, Release)> {
    let found = match file {
        Some(f) => Some(f.to_path_buf()),
        None if has_dit_safetensors(dir) => None,
        None => gguf::find_in(dir)?,
    };
    let dit = match found {
        Some(f) => gguf::transformer(&f)?,
        None => rename_all(WeightStore::from_safetensors_files(&original_dit_files(dir)?)?, names::transformer, "DiT")?,
    };
    let raw: serde_json::Value = read_json(&dir.join("config.json"))?;
    let (cfg, release) = original_transformer_config(&raw, &dit)?;
    Ok((dit, cfg, release))
}

/// The VAE the release ships for `model_type` (`Wan2.1_VAE.pth`, or Wan2.2's residual VAE for
/// TI2V) under diffusers names, with its config inferred from the tensors.
pub(crate) fn vae(dir: &Path, model_type: ModelType, defaults: &ModelDefaults) -> Result<(WeightStore, VaeConfig)> {
    let vae_path = dir.join(model_type.vae_file());
    let mut vae_ws = WeightStore::new(vae_path.display().to_string());
    vae_ws.add_pth(&require_file(&vae_path)?)?;
    let residual = vae_ws.contains("encoder.downsamples.0.downsamples.0.residual.0.gamma");
    let (mut cfg, vae_ws) = if residual {
        let cfg = infer_residual_vae_config(&vae_ws)?;
        (cfg, rename_all(vae_ws, names::vae_residual, "VAE")?)
    } else {
        let cfg = infer_vae_config(&vae_ws)?;
        let r = cfg.num_res_blocks;
        (cfg, rename_all(vae_ws, |n| names::vae(n, r), "VAE")?)
    };
    match (&defaults.vae_latents_mean, &defaults.vae_latents_std) {
        (Some(m), Some(s)) => {
            cfg.latents_mean = m.clone();
            cfg.latents_std = s.clone();
        }
        _ if cfg.z_dim == WAN21_LATENTS_MEAN.len() => {
            cfg.latents_mean = WAN21_LATENTS_MEAN.to_vec();
            cfg.latents_std = WAN21_LATENTS_STD.to_vec();
        }
        _ if cfg.z_dim == WAN22_LATENTS_MEAN.len() => {
            cfg.latents_mean = WAN22_LATENTS_MEAN.to_vec();
            cfg.latents_std = WAN22_LATENTS_STD.to_vec();
        }
        _ => {}
    }
    Ok((vae_ws, cfg))
}

fn require_file(path: &Path) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path.to_path_buf())
    } else {
        Err(Error::file(path, "missing file of the original Wan release layout"))
    }
}

/// Renames every tensor; an unknown name is an error naming it.
fn rename_all(ws: WeightStore, map: impl Fn(&str) -> Option<String>, what: &str) -> Result<WeightStore> {
    if let Some(unknown) = ws.names().find(|n| map(n).is_none()) {
        return Err(Error::file(
            ws.origin(),
            format!("unexpected {what} tensor `{unknown}` for the original Wan layout"),
        ));
    }
    Ok(ws.renamed(map))
}

fn has_dit_safetensors(dir: &Path) -> bool {
    original_dit_files(dir).is_ok()
}

fn original_dit_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("diffusion_pytorch_model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::file(dir, format!("cannot list: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("diffusion_pytorch_model") && name.ends_with(".safetensors")
        })
        .collect();
    shards.sort();
    if shards.is_empty() {
        return Err(Error::file(dir, "no diffusion_pytorch_model*.safetensors (the DiT weights) found"));
    }
    Ok(shards)
}

fn original_transformer_config(raw: &serde_json::Value, dit: &WeightStore) -> Result<(TransformerConfig, Release)> {
    let get = |k: &str| -> Result<usize> {
        raw.get(k)
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
            .ok_or_else(|| Error::Config(format!("original config.json lacks integer `{k}`")))
    };
    let model_type = ModelType::parse(raw)?;
    let dim = get("dim")?;
    let heads = get("num_heads")?;
    if heads == 0 || dim % heads != 0 {
        return Err(Error::Config(format!("dim {dim} is not divisible by num_heads {heads}")));
    }
    // Release configs omit text_dim; the text embedding's shape states it.
    let text_dim = dit.shape_of("condition_embedder.text_embedder.linear_1.weight")?[1];
    let patch_size =
        raw.get("patch_size").and_then(|v| serde_json::from_value::<[usize; 3]>(v.clone()).ok()).unwrap_or([1, 2, 2]);
    // Image conditioning is stated by the tensors: the CLIP-token embedder's width, the added
    // K/V's input width and, for first-last-frame, the image position embedding's length.
    // Wan2.1 I2V embeds CLIP tokens, Wan2.2's I2V (A14B) conditions on the image latent alone.
    let image_norm = "condition_embedder.image_embedder.norm1.weight";
    let with_images = dit.contains(image_norm);
    let allowed = match model_type {
        ModelType::T2v | ModelType::Ti2v => !with_images,
        ModelType::I2v => true,
        ModelType::Flf2v => with_images,
    };
    if !allowed {
        return Err(Error::Config(format!(
            "original model_type {model_type:?} but the DiT {} an image embedder (img_emb.*)",
            if with_images { "has" } else { "has no" }
        )));
    }
    let (image_dim, added_kv_proj_dim, pos_embed_seq_len) = if with_images {
        let pos = "condition_embedder.image_embedder.pos_embed";
        let pos_len = if dit.contains(pos) { Some(dit.shape_of(pos)?.get(1).copied().unwrap_or(0)) } else { None };
        if (model_type == ModelType::Flf2v) != pos_len.is_some() {
            return Err(Error::Config(format!(
                "original model_type {model_type:?}: the image position embedding (img_emb.emb_pos) is {}",
                if pos_len.is_some() { "present (a first-last-frame model's)" } else { "missing" }
            )));
        }
        (
            Some(dit.shape_of(image_norm)?[0]),
            Some(dit.shape_of("blocks.0.attn2.add_k_proj.weight")?.get(1).copied().unwrap_or(0)),
            pos_len,
        )
    } else {
        (None, None, None)
    };
    let cfg = TransformerConfig {
        patch_size,
        num_attention_heads: heads,
        attention_head_dim: dim / heads,
        in_channels: get("in_dim")?,
        out_channels: Some(get("out_dim")?),
        text_dim,
        freq_dim: get("freq_dim").unwrap_or(256),
        ffn_dim: get("ffn_dim")?,
        num_layers: get("num_layers")?,
        cross_attn_norm: raw.get("cross_attn_norm").and_then(|v| v.as_bool()).unwrap_or(true),
        eps: raw.get("eps").and_then(|v| v.as_f64()).unwrap_or(1e-6) as f32,
        image_dim,
        added_kv_proj_dim,
        pos_embed_seq_len,
        rope_max_seq_len: 1024,
        self_attn_heads: None,
    };
    Ok((cfg, Release { model_type, text_len: get("text_len").ok() }))
}

fn infer_t5_config(ws: &WeightStore) -> Result<Umt5Config> {
    let emb = ws.shape_of("shared.weight")?;
    let (vocab, d_model) = (emb[0], emb[1]);
    let bias = ws.shape_of("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")?;
    let (buckets, heads) = (bias[0], bias[1]);
    let inner = ws.shape_of("encoder.block.0.layer.0.SelfAttention.q.weight")?[0];
    let d_ff = ws.shape_of("encoder.block.0.layer.1.DenseReluDense.wi_1.weight")?[0];
    let layers = (0..).take_while(|i| ws.contains(&format!("encoder.block.{i}.layer.0.layer_norm.weight"))).count();
    if heads == 0 || inner % heads != 0 {
        return Err(Error::Config(format!("T5: inner dim {inner} not divisible by {heads} heads")));
    }
    Ok(Umt5Config {
        vocab_size: vocab,
        d_model,
        d_kv: inner / heads,
        d_ff,
        num_layers: layers,
        num_heads: heads,
        relative_attention_num_buckets: buckets,
        relative_attention_max_distance: 128,
        layer_norm_epsilon: 1e-6,
        feed_forward_proj: "gated-gelu".into(),
    })
}

/// The original VAE file has no config: sizes follow from its tensors
/// (names still original here).
fn infer_vae_config(ws: &WeightStore) -> Result<VaeConfig> {
    let base_dim = ws.shape_of("encoder.conv1.weight")?[0];
    let z_dim = ws.shape_of("conv2.weight")?[0];
    let mut res_channels = Vec::new(); // output channels of each residual block, per stage
    let mut stage: Vec<usize> = Vec::new();
    let mut temporal = Vec::new();
    let mut num_res = None;
    for k in 0.. {
        let p = format!("encoder.downsamples.{k}.");
        if ws.contains(&format!("{p}resample.1.weight")) {
            temporal.push(ws.contains(&format!("{p}time_conv.weight")));
            num_res.get_or_insert(stage.len());
            res_channels.push(std::mem::take(&mut stage));
        } else if ws.contains(&format!("{p}residual.2.weight")) {
            stage.push(ws.shape_of(&format!("{p}residual.2.weight"))?[0]);
        } else {
            break;
        }
    }
    let num_res_blocks = num_res.unwrap_or(stage.len());
    res_channels.push(stage);
    let dim_mult = res_channels
        .iter()
        .map(|s| s.last().map(|c| c / base_dim).ok_or_else(|| Error::Config("VAE: empty encoder stage".into())))
        .collect::<Result<Vec<_>>>()?;
    let mut cfg = VaeConfig::wan2_1();
    cfg.base_dim = base_dim;
    cfg.z_dim = z_dim;
    cfg.dim_mult = dim_mult;
    cfg.num_res_blocks = num_res_blocks;
    cfg.temperal_downsample = temporal;
    cfg.latents_mean.clear();
    cfg.latents_std.clear();
    Ok(cfg)
}

/// Wan2.2's residual VAE: sizes from its tensors (names still original): the stem's input states
/// the patch folding, each stage's first residual block its width, the decoder's stem its width.
fn infer_residual_vae_config(ws: &WeightStore) -> Result<VaeConfig> {
    let stem = ws.shape_of("encoder.conv1.weight")?;
    let (base_dim, folded) = (stem[0], stem.get(1).copied().unwrap_or(0));
    let patch = (1..=4).find(|p| 3 * p * p == folded).ok_or_else(|| {
        Error::Config(format!("VAE: encoder stem takes {folded} channels, expected RGB folded by a patch (3·p²)"))
    })?;
    let z_dim = ws.shape_of("conv2.weight")?[0];
    let stage = |i: usize| format!("encoder.downsamples.{i}.downsamples.");
    let num_res_blocks = (0..).take_while(|j| ws.contains(&format!("{}{j}.residual.0.gamma", stage(0)))).count();
    let mut dim_mult = Vec::new();
    let mut temporal = Vec::new();
    while ws.contains(&format!("{}0.residual.2.weight", stage(dim_mult.len()))) {
        let i = dim_mult.len();
        let width = ws.shape_of(&format!("{}0.residual.2.weight", stage(i)))?[0];
        if base_dim == 0 || width % base_dim != 0 {
            return Err(Error::Config(format!("VAE: stage {i} width {width} is not a multiple of {base_dim}")));
        }
        dim_mult.push(width / base_dim);
        if ws.contains(&format!("{}{num_res_blocks}.resample.1.weight", stage(i))) {
            temporal.push(ws.contains(&format!("{}{num_res_blocks}.time_conv.weight", stage(i))));
        }
    }
    let top = *dim_mult.last().ok_or_else(|| Error::Config("VAE: no encoder stages".into()))?;
    let decoder_width = ws.shape_of("decoder.conv1.weight")?[0];
    if decoder_width % top != 0 {
        return Err(Error::Config(format!("VAE: decoder width {decoder_width} is not a multiple of {top}")));
    }
    let mut cfg = VaeConfig::wan2_1();
    cfg.base_dim = base_dim;
    cfg.decoder_base_dim = Some(decoder_width / top);
    cfg.z_dim = z_dim;
    cfg.dim_mult = dim_mult;
    cfg.num_res_blocks = num_res_blocks;
    cfg.temperal_downsample = temporal;
    cfg.is_residual = true;
    cfg.patch_size = Some(patch);
    cfg.in_channels = folded;
    cfg.out_channels = folded;
    cfg.latents_mean.clear();
    cfg.latents_std.clear();
    Ok(cfg)
}
