//! A complete Wan2.1 T2V model folder: tokenizer, UMT5, transformer, VAE and
//! scheduler config, from either supported layout.
//!
//! - diffusers (`model_index.json`, `text_encoder/`, `tokenizer/`,
//!   `transformer/`, `vae/`, `scheduler/`; single or sharded safetensors);
//! - the original Wan-Video release (`config.json` of a `WanModel`,
//!   `diffusion_pytorch_model*.safetensors`, `Wan2.1_VAE.pth`,
//!   `models_t5_umt5-xxl-enc-bf16.pth`, `google/umt5-xxl/`), whose names are
//!   mapped by [`crate::names`] and whose sizes follow from tensor shapes.
//!
//! An optional `wanrt.json` beside the model gives its generate defaults.

use crate::artifact::Manifest;
use crate::names;
use crate::scheduler::SchedulerConfig;
use crate::text::PromptTokenizer;
use crate::transformer::{TransformerConfig, WanTransformer};
use crate::umt5::{Umt5Config, Umt5Encoder};
use crate::vae::{VaeConfig, WanVae, WAN21_LATENTS_MEAN, WAN21_LATENTS_STD};
use crate::{Error, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use wanrt_nn::{BackendRef, WeightStore};

/// `wanrt.json`: the model's own generate defaults (all optional).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ModelDefaults {
    pub height: Option<usize>,
    pub width: Option<usize>,
    pub num_frames: Option<usize>,
    pub num_inference_steps: Option<usize>,
    pub guidance_scale: Option<f64>,
    pub max_sequence_length: Option<usize>,
    pub negative_prompt: Option<String>,
    pub fps: Option<f64>,
    pub shift: Option<f64>,
    pub cache_threshold: Option<f64>,
    /// Latent statistics for an original-layout VAE whose z_dim is not 16.
    pub vae_latents_mean: Option<Vec<f32>>,
    pub vae_latents_std: Option<Vec<f32>>,
}

impl ModelDefaults {
    /// The folder's `wanrt.json`, or no defaults when there is none.
    pub fn read(dir: &Path) -> Result<ModelDefaults> {
        let path = dir.join(DEFAULTS_FILE);
        if path.is_file() {
            read_json(&path)
        } else {
            Ok(ModelDefaults::default())
        }
    }
}

/// The file of [`ModelDefaults`] in a model folder.
pub const DEFAULTS_FILE: &str = "wanrt.json";

/// How to hold the weights in memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Keep bf16/f16 checkpoint weights of the text encoder and transformer
    /// layers in half precision, widened inside each product: identical
    /// results, about half the resident memory, slightly slower.
    pub keep_half_weights: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Diffusers,
    Original,
}

pub struct WanModel {
    pub dir: PathBuf,
    pub layout: Layout,
    pub tokenizer: PromptTokenizer,
    pub text_encoder: Umt5Encoder,
    pub transformer: WanTransformer,
    pub vae: WanVae,
    pub scheduler: SchedulerConfig,
    pub defaults: ModelDefaults,
    /// The model's context length when its config states one (original `text_len`).
    pub text_len: Option<usize>,
    /// Present when the folder is an optimized artifact (`wanrt optimize`).
    pub artifact: Option<Manifest>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("invalid config: {e}")))
}

impl WanModel {
    pub fn detect_layout(dir: &Path) -> Result<Layout> {
        if !dir.is_dir() {
            return Err(Error::file(dir, "model folder not found"));
        }
        if dir.join("model_index.json").is_file() || dir.join("transformer").is_dir() {
            return Ok(Layout::Diffusers);
        }
        if dir.join("Wan2.1_VAE.pth").is_file() || dir.join("config.json").is_file() {
            return Ok(Layout::Original);
        }
        Err(Error::file(
            dir,
            "not a Wan model folder: expected a diffusers folder (model_index.json, transformer/, vae/ …) \
             or the original release layout (config.json, Wan2.1_VAE.pth, models_t5_umt5-xxl-enc-bf16.pth)",
        ))
    }

    /// Loads the model; `stage` is told which component is being read.
    pub fn load(dir: &Path, stage: impl FnMut(&str)) -> Result<Self> {
        Self::load_with(dir, LoadOptions::default(), stage)
    }

    pub fn load_with(dir: &Path, opts: LoadOptions, mut stage: impl FnMut(&str)) -> Result<Self> {
        let layout = Self::detect_layout(dir)?;
        let defaults = ModelDefaults::read(dir)?;
        let mut model = match layout {
            Layout::Diffusers => Self::load_diffusers(dir, defaults, opts, &mut stage)?,
            Layout::Original => Self::load_original(dir, defaults, opts, &mut stage)?,
        };
        model.check_compatible()?;
        Ok(model)
    }

    /// Runs the text encoder, transformer and VAE on `backend` (the CPU by default).
    pub fn set_backend(&mut self, backend: BackendRef) {
        self.text_encoder.set_backend(backend.clone());
        self.transformer.set_backend(backend.clone());
        self.vae.set_backend(backend);
    }

    fn check_compatible(&mut self) -> Result<()> {
        let t = &self.transformer.config;
        let (z, d) = (self.vae.config.z_dim, self.text_encoder.config.d_model);
        if t.in_channels != z || t.out_channels() != z {
            return Err(Error::Config(format!(
                "transformer has {} input / {} output channels but the VAE's z_dim is {z}",
                t.in_channels,
                t.out_channels()
            )));
        }
        if t.text_dim != d {
            return Err(Error::Config(format!("transformer text_dim {} ≠ text encoder d_model {d}", t.text_dim)));
        }
        Ok(())
    }

    fn load_diffusers(
        dir: &Path,
        defaults: ModelDefaults,
        opts: LoadOptions,
        stage: &mut dyn FnMut(&str),
    ) -> Result<Self> {
        let store = |d: &Path, stem: &str| -> Result<WeightStore> {
            Ok(WeightStore::from_diffusers_dir(d, stem)?.with_half_storage(opts.keep_half_weights))
        };
        let artifact = Manifest::read(dir)?;
        stage("text encoder");
        let te_dir = dir.join("text_encoder");
        let te_cfg: Umt5Config = read_json(&te_dir.join("config.json"))?;
        let mut te_store = store(&te_dir, "model")?;
        if let Some(m) = &artifact {
            m.apply_text_encoder(&mut te_store)?;
        }
        let text_encoder = Umt5Encoder::load(&te_store, te_cfg)?;
        drop(te_store);
        let tokenizer = PromptTokenizer::from_dir(&dir.join("tokenizer"))?;
        stage("transformer");
        let tr_dir = dir.join("transformer");
        let mut tr_cfg: TransformerConfig = read_json(&tr_dir.join("config.json"))?;
        let mut tr_store = store(&tr_dir, "diffusion_pytorch_model")?;
        if let Some(m) = &artifact {
            m.apply(&mut tr_store)?;
            tr_cfg.int8_attention_blocks = m.int8_attention_blocks.clone();
        }
        let transformer = WanTransformer::load(&tr_store, tr_cfg)?;
        drop(tr_store);
        stage("vae");
        let vae_dir = dir.join("vae");
        let vae_cfg: VaeConfig = read_json(&vae_dir.join("config.json"))?;
        let vae = WanVae::load(&WeightStore::from_diffusers_dir(&vae_dir, "diffusion_pytorch_model")?, vae_cfg)?;
        let sched_path = dir.join("scheduler/scheduler_config.json");
        let scheduler = SchedulerConfig { json: read_json(&sched_path)? };
        scheduler.kind()?;
        Ok(WanModel {
            dir: dir.to_path_buf(),
            layout: Layout::Diffusers,
            tokenizer,
            text_encoder,
            transformer,
            vae,
            scheduler,
            defaults,
            text_len: None,
            artifact,
        })
    }

    fn load_original(
        dir: &Path,
        defaults: ModelDefaults,
        opts: LoadOptions,
        stage: &mut dyn FnMut(&str),
    ) -> Result<Self> {
        stage("text encoder");
        let (t5, te_cfg) = original::text_encoder(dir, opts)?;
        let text_encoder = Umt5Encoder::load(&t5, te_cfg)?;
        drop(t5);
        let tokenizer = PromptTokenizer::from_dir(&original::tokenizer_dir(dir))?;
        stage("transformer");
        let (dit, tr_cfg, text_len) = original::transformer(dir, opts)?;
        let transformer = WanTransformer::load(&dit, tr_cfg)?;
        drop(dit);
        stage("vae");
        let (vae_ws, vae_cfg) = original::vae(dir, &defaults)?;
        let vae = WanVae::load(&vae_ws, vae_cfg)?;
        Ok(WanModel {
            dir: dir.to_path_buf(),
            layout: Layout::Original,
            tokenizer,
            text_encoder,
            transformer,
            vae,
            scheduler: SchedulerConfig::original_release_default(),
            defaults,
            text_len,
            artifact: None,
        })
    }
}

/// Readers of the original release's components: tensors renamed to diffusers names, configs
/// inferred from the tensors and `config.json` (shared by loading and `crate::convert`).
pub(crate) mod original {
    use super::*;

    pub(crate) fn text_encoder(dir: &Path, opts: LoadOptions) -> Result<(WeightStore, Umt5Config)> {
        let t5_path = dir.join("models_t5_umt5-xxl-enc-bf16.pth");
        let mut t5 = WeightStore::new(t5_path.display().to_string()).with_half_storage(opts.keep_half_weights);
        t5.add_pth(&require_file(&t5_path)?)?;
        let t5 = rename_all(t5, names::t5, "T5")?;
        let cfg = infer_t5_config(&t5)?;
        Ok((t5, cfg))
    }

    pub(crate) fn tokenizer_dir(dir: &Path) -> PathBuf {
        dir.join("google/umt5-xxl")
    }

    /// The DiT, its config and the release's context length (`text_len`).
    pub(crate) fn transformer(
        dir: &Path,
        opts: LoadOptions,
    ) -> Result<(WeightStore, TransformerConfig, Option<usize>)> {
        let files = original_dit_files(dir)?;
        let dit = rename_all(
            WeightStore::from_safetensors_files(&files)?.with_half_storage(opts.keep_half_weights),
            names::transformer,
            "DiT",
        )?;
        let raw: serde_json::Value = read_json(&dir.join("config.json"))?;
        let (cfg, text_len) = original_transformer_config(&raw, &dit)?;
        Ok((dit, cfg, text_len))
    }

    pub(crate) fn vae(dir: &Path, defaults: &ModelDefaults) -> Result<(WeightStore, VaeConfig)> {
        let vae_path = dir.join("Wan2.1_VAE.pth");
        let mut vae_ws = WeightStore::new(vae_path.display().to_string());
        vae_ws.add_pth(&require_file(&vae_path)?)?;
        let mut cfg = infer_vae_config(&vae_ws)?;
        let r = cfg.num_res_blocks;
        let vae_ws = rename_all(vae_ws, |n| names::vae(n, r), "VAE")?;
        match (&defaults.vae_latents_mean, &defaults.vae_latents_std) {
            (Some(m), Some(s)) => {
                cfg.latents_mean = m.clone();
                cfg.latents_std = s.clone();
            }
            _ if cfg.z_dim == 16 => {
                cfg.latents_mean = WAN21_LATENTS_MEAN.to_vec();
                cfg.latents_std = WAN21_LATENTS_STD.to_vec();
            }
            _ => {}
        }
        Ok((vae_ws, cfg))
    }
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

fn original_transformer_config(
    raw: &serde_json::Value,
    dit: &WeightStore,
) -> Result<(TransformerConfig, Option<usize>)> {
    let get = |k: &str| -> Result<usize> {
        raw.get(k)
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
            .ok_or_else(|| Error::Config(format!("original config.json lacks integer `{k}`")))
    };
    if let Some(t) = raw.get("model_type").and_then(|v| v.as_str()) {
        if t != "t2v" {
            return Err(Error::Config(format!("original model_type {t:?} is not supported; expected \"t2v\"")));
        }
    }
    let dim = get("dim")?;
    let heads = get("num_heads")?;
    if heads == 0 || dim % heads != 0 {
        return Err(Error::Config(format!("dim {dim} is not divisible by num_heads {heads}")));
    }
    // Release configs omit text_dim; the text embedding's shape states it.
    let text_dim = dit.shape_of("condition_embedder.text_embedder.linear_1.weight")?[1];
    let patch_size =
        raw.get("patch_size").and_then(|v| serde_json::from_value::<[usize; 3]>(v.clone()).ok()).unwrap_or([1, 2, 2]);
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
        image_dim: None,
        added_kv_proj_dim: None,
        rope_max_seq_len: 1024,
        self_attn_heads: None,
        int8_attention_blocks: Vec::new(),
    };
    Ok((cfg, get("text_len").ok()))
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
